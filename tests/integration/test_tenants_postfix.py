"""Issue 10's acceptance through real Postfix, real engines and a second real Postfix as the
sending MTA: per-domain policies (spam reject with the tenant's text, engine choice, keyword rules),
one policy per SMTP transaction with 452 4.5.3 splitting, and Redis records applied without reload."""

from __future__ import annotations

import base64
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.conftest import MailStack
from tests.harness.clamd import Clamd
from tests.harness.messages import GTUBE, HAM, mail
from tests.harness.postfix import PostfixInstance
from tests.harness.quorum import engine_table
from tests.harness.redis_server import RedisAuth, RedisServer
from tests.harness.rspamd import Rspamd
from tests.harness.sink import Delivered, Sink, engines_header
from tests.harness.smtp_client import send
from tests.harness.spamd import Spamd

pytestmark = pytest.mark.integration

A_TEXT = "A does not take spam"


def body(clamd: Clamd, rspamd: Rspamd, spamd: Spamd, redis: RedisServer) -> str:
    return (
        '[policy]\non_virus = "reject"\non_spam = "tag"\non_engine_failure = "tempfail"\n\n'
        + engine_table("clamav", "clamav", address=clamd.address, timeout=20)
        + engine_table("rspamd", "rspamd", url=rspamd.url, timeout=20)
        + engine_table("spamassassin", "spamassassin", address=spamd.address, timeout=20)
        + f'\n[redis]\nurl = "{redis.url}"\n\n[tenants]\nstore = "redis"\nrefresh = "1s"\n\n'
        + "".join(
            f'[domains."{d}".policy]\non_spam = "reject"\n[domains."{d}".replies]\nspam = "{A_TEXT}"\n\n'
            for d in ("a.test", "twin.test")  # identical policies: one transaction may hold both
        )
        + '[domains."b.test"]\nengines = ["clamav", "rspamd"]\n[domains."b.test".policy]\non_spam = "tag"\n\n'
        + '[[domains."c.test".rules]]\nname = "casino"\nwhere = "body"\npattern = "(?i)free spins"\n'
        + 'action = "reject"\n'
    )


@pytest.fixture(scope="module")
def redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with RedisServer(tmp_path_factory.mktemp("tenant-redis"), auth=RedisAuth()) as server:
        yield server


@pytest.fixture(scope="module")
def stack(mail_stack: MailStack, clamd: Clamd, rspamd: Rspamd, spamd: Spamd, redis: RedisServer) -> Iterator[MailStack]:
    mail_stack.start(body(clamd, rspamd, spamd, redis))
    yield mail_stack
    mail_stack.stop()


@pytest.fixture(scope="module")
def sender_mta(tmp_path_factory: pytest.TempPathFactory, stack: MailStack) -> Iterator[PostfixInstance]:
    """A second Postfix that relays everything to the filtering one, retrying fast."""
    instance = PostfixInstance(tmp_path_factory.mktemp("sender-mta"), stack.postfix.smtp_port)
    instance.start()
    yield instance
    instance.stop()


def html_mail(token: str, text: str) -> bytes:
    html = base64.b64encode(f"<html><body><p>{text}</p></body></html>".encode()).decode()
    return (
        "From: Alice <alice@example.com>\r\nTo: friends@example.org\r\nSubject: Weekend\r\n"
        f"Message-ID: <{token}@example.com>\r\nMIME-Version: 1.0\r\n"
        "Content-Type: multipart/alternative; boundary=xx\r\n\r\n"
        "--xx\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nSee the HTML part.\r\n"
        f"--xx\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n{html}\r\n"
        "--xx--\r\n"
    ).encode()


def deliveries(sink: Sink, token: str, want: int, timeout: float = 30.0) -> list[Delivered]:
    deadline = time.monotonic() + timeout
    while True:
        found = [m for m in sink.messages() if token.encode() in m.raw]
        if len(found) >= want or time.monotonic() > deadline:
            time.sleep(0.5)  # anything more (a duplicate) would show up now
            return [m for m in sink.messages() if token.encode() in m.raw]
        time.sleep(0.1)


def spamd_saw(spamd: Spamd, token: str) -> bool:
    return token in spamd.service.log_path.read_text(errors="replace")


def quorum_cli(stack: MailStack, *args: str) -> subprocess.CompletedProcess[str]:
    assert stack.quorum is not None
    return subprocess.run(
        [sys.executable, "-m", "quorum", *args, "-c", str(stack.quorum.config_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_gtube_to_a_is_refused_with_as_own_text(stack: MailStack) -> None:
    token = uuid.uuid4().hex
    result = send(stack.postfix.smtp_port, "alice@example.com", ["bob@a.test"], mail(token, GTUBE))
    assert (result.code, result.text) == (550, f"5.7.1 {A_TEXT}")


def test_gtube_to_b_is_tagged_and_spamassassin_never_asked(stack: MailStack, spamd: Spamd) -> None:
    control = uuid.uuid4().hex  # the same spam to a domain on the global policy: spamd is asked
    assert send(stack.postfix.smtp_port, "alice@example.com", ["x@global.test"], mail(control, GTUBE)).accepted
    token = uuid.uuid4().hex
    assert send(stack.postfix.smtp_port, "alice@example.com", ["bob@b.test"], mail(token, GTUBE)).accepted
    (msg,) = deliveries(stack.sink, token, 1)
    assert msg.header("X-Spam-Flag") == "YES" and (msg.header("X-Quorum-Verdict") or "").startswith("spam")
    assert set(engines_header(msg)) == {"clamav", "rspamd"}
    (other,) = deliveries(stack.sink, control, 1)
    assert "spamassassin" in engines_header(other)
    assert spamd_saw(spamd, control) and not spamd_saw(spamd, token)


def test_keyword_in_base64_html_refused_for_c_only(stack: MailStack) -> None:
    token = uuid.uuid4().hex
    refused = send(stack.postfix.smtp_port, "alice@example.com", ["carol@c.test"], html_mail(token, "Get FREE spins"))
    assert refused.code == 554 and refused.text.startswith("5.7.1")
    for rcpt in ("bob@a.test", "bill@b.test"):
        t = uuid.uuid4().hex
        assert send(stack.postfix.smtp_port, "alice@example.com", [rcpt], html_mail(t, "Get FREE spins")).accepted
        assert len(deliveries(stack.sink, t, 1)) == 1


def test_one_message_to_three_policies_from_a_real_mta(stack: MailStack, sender_mta: PostfixInstance) -> None:
    token = uuid.uuid4().hex
    rcpts = ["ann@a.test", "bill@b.test", "tom@twin.test"]
    assert send(sender_mta.smtp_port, "alice@example.com", rcpts, mail(token, HAM)).accepted
    got = deliveries(stack.sink, token, 2, timeout=60)
    per_rcpt = sorted(r for m in got for r in m.rcpt_tos)
    assert per_rcpt == sorted(rcpts), f"each recipient exactly once: {[m.rcpt_tos for m in got]}"
    assert len(got) == 2  # a.test and twin.test share one transaction, b.test got its own
    for m in got:
        engines = set(engines_header(m))
        if m.rcpt_tos == ["bill@b.test"]:
            assert engines == {"clamav", "rspamd"}
        else:
            assert sorted(m.rcpt_tos) == ["ann@a.test", "tom@twin.test"] and "spamassassin" in engines
        assert m.header("X-Quorum-Verdict") == "clean"
    sender_mta.wait_for_log(r"452 4\.5\.3", timeout=30)
    assert stack.quorum is not None
    stack.quorum.wait_for_log(r"has another policy", timeout=10)


def test_redis_record_applies_without_reload_and_survives_redis_down(
    stack: MailStack, redis: RedisServer, tmp_path: Path
) -> None:
    fragment = tmp_path / "b.toml"
    fragment.write_text('[policy]\non_spam = "reject"\n[replies]\nspam = "B changed its mind"\n')
    done = quorum_cli(stack, "domain", "set", "b.test", "--file", str(fragment))
    assert done.returncode == 0, done.stderr
    deadline = time.monotonic() + 10
    while True:
        token = uuid.uuid4().hex
        result = send(stack.postfix.smtp_port, "alice@example.com", ["bob@b.test"], mail(token, GTUBE))
        if result.code == 550 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert (result.code, result.text) == (550, "5.7.1 B changed its mind")
    redis.stop()
    try:
        time.sleep(1.5)  # past the refresh interval: the record can no longer be re-read
        token = uuid.uuid4().hex
        result = send(stack.postfix.smtp_port, "alice@example.com", ["bob@b.test"], mail(token, GTUBE))
        assert (result.code, result.text) == (550, "5.7.1 B changed its mind")
    finally:
        redis.start()  # an empty Redis again (no persistence): b.test falls back to the file's policy


def test_an_invalid_fragment_is_refused_naming_the_key(stack: MailStack, tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[policy]\non_spam = "shred"\n')
    done = quorum_cli(stack, "domain", "set", "d.test", "--file", str(bad))
    assert done.returncode != 0
    assert "policy.on_spam" in done.stdout + done.stderr
