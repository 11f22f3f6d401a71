"""Hot reload and graceful stop of `quorum run` behind real Postfix: SIGHUP and `quorum reload`
switch engines, thresholds and actions for new messages without dropping SMTP sessions in flight;
an invalid file is refused and the old config keeps working; SIGTERM lets sessions in flight finish."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator

import pytest
from tests.conftest import MailStack
from tests.harness.clamd import Clamd
from tests.harness.fake_engine import FakeEngine
from tests.harness.messages import GTUBE, HAM, SPAMD_HAM, mail
from tests.harness.quorum import QuorumProcess, engine_table
from tests.harness.rspamd import Rspamd
from tests.harness.sink import Delivered, delivered, engines_header
from tests.harness.smtp_client import Reply, SendResult, send, session

pytestmark = pytest.mark.integration

RELOAD_DONE = re.compile(r"reloaded \S+: engines|reload refused")


def submit(stack: MailStack, body: bytes = HAM) -> tuple[str, SendResult]:
    token = uuid.uuid4().hex
    return token, send(stack.postfix.smtp_port, "alice@example.com", ["bob@example.org"], mail(token, body))


def accepted(stack: MailStack, body: bytes = HAM) -> Delivered:
    token, result = submit(stack, body)
    assert result.accepted, result
    return delivered(stack.sink, token)


def reload(quorum: QuorumProcess, body: str | None = None, cli: bool = False) -> str:
    """Rewrite the config, reload by SIGHUP (or `quorum reload`), and return the log line that
    says how the worker took it ("reloaded ..." or "reload refused ...")."""
    done = len(RELOAD_DONE.findall(quorum.log_text()))
    if cli:
        if body is not None:
            quorum.write_config(body)
        argv = [sys.executable, "-m", "quorum", "reload", "-c", str(quorum.config_path)]
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=True).stdout
        assert out.startswith(f"sent SIGHUP to {quorum.pid}"), out
    else:
        quorum.reload(body, wait=False)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        lines = [line for line in quorum.log_text().splitlines() if RELOAD_DONE.search(line)]
        if len(lines) > done:
            return lines[done]
        time.sleep(0.05)
    raise AssertionError(f"no reload outcome in the log:\n{quorum.log_text()[-3000:]}")


@pytest.fixture
def counter() -> Iterator[FakeEngine]:
    """A spamd stand-in answering "ham, 0.5/5.0" that counts the requests it gets."""
    with FakeEngine("reply", reply=SPAMD_HAM) as engine:
        yield engine


def config(
    clamd: Clamd, rspamd: Rspamd, counter: FakeEngine, policy: str = "", counter_on: bool = True, rspamd_extra: str = ""
) -> str:
    return (
        f"[policy]\n{policy}\n\n"
        + engine_table("clamav", "clamav", address=clamd.address)
        + engine_table("rspamd", "rspamd", url=rspamd.url)
        + rspamd_extra
        + "\n"
        + engine_table("counter", "spamassassin", address=counter.address, enabled=counter_on)
    )


def test_sighup_disables_and_cli_reload_enables_an_engine(
    mail_stack: MailStack, clamd: Clamd, rspamd: Rspamd, counter: FakeEngine
) -> None:
    quorum = mail_stack.start(config(clamd, rspamd, counter))
    workers = quorum.worker_pids()
    assert engines_header(accepted(mail_stack))["counter"] == "clean(0.50/5.00)"
    assert counter.requests == 1

    line = reload(quorum, config(clamd, rspamd, counter, counter_on=False))
    assert line.endswith(f"reloaded {quorum.config_path}: engines clamav, rspamd"), line
    for _ in range(2):
        items = engines_header(accepted(mail_stack))
        assert list(items) == ["clamav", "rspamd"]
    assert counter.requests == 1 and counter.connections == 1  # never contacted again

    line = reload(quorum, config(clamd, rspamd, counter), cli=True)
    assert line.endswith("engines clamav, rspamd, counter"), line
    assert "counter" in engines_header(accepted(mail_stack))
    assert counter.requests == 2
    assert quorum.worker_pids() == workers  # reloaded in place, not restarted
    assert "Traceback" not in quorum.log_text()


def test_thresholds_and_actions_change_for_new_messages(
    mail_stack: MailStack, clamd: Clamd, rspamd: Rspamd, counter: FakeEngine
) -> None:
    quorum = mail_stack.start(config(clamd, rspamd, counter, policy='on_spam = "tag"'))
    assert accepted(mail_stack, GTUBE).header("X-Spam-Flag") == "YES"

    reload(quorum, config(clamd, rspamd, counter, policy='on_spam = "reject"'))
    _, result = submit(mail_stack, GTUBE)
    assert (result.code, result.text) == (550, "5.7.1 message classified as spam"), result

    reload(quorum, config(clamd, rspamd, counter, policy='on_spam = "reject"', rspamd_extra="threshold = 500\n"))
    msg = accepted(mail_stack, GTUBE)
    assert re.fullmatch(r"clean\([\d.]+/500\.00\)", engines_header(msg)["rspamd"]), engines_header(msg)
    assert msg.header("X-Quorum-Verdict") == "clean" and msg.header("X-Spam-Flag") is None


def test_session_open_across_a_reload_completes(
    mail_stack: MailStack, clamd: Clamd, rspamd: Rspamd, counter: FakeEngine
) -> None:
    """MAIL/RCPT before the reload, DATA after: that transaction finishes under the config it
    started with; the next transaction on the same connection gets the new one."""
    quorum = mail_stack.start(config(clamd, rspamd, counter, policy='on_spam = "tag"'))
    first, second = uuid.uuid4().hex, uuid.uuid4().hex
    with session(mail_stack.postfix.smtp_port) as smtp:
        assert smtp.ehlo().code == 250
        assert smtp.mail("alice@example.com").code == 250
        assert smtp.rcpt("bob@example.org").code == 250
        reload(quorum, config(clamd, rspamd, counter, policy='on_spam = "reject"', counter_on=False))
        reply = smtp.data(mail(first, GTUBE))
        assert reply.code == 250, reply
        assert smtp.mail("alice@example.com").code == 250
        assert smtp.rcpt("bob@example.org").code == 250
        reply = smtp.data(mail(second, GTUBE))
        assert (reply.code, reply.text) == (550, "5.7.1 message classified as spam"), reply
    msg = delivered(mail_stack.sink, first)
    assert msg.header("X-Spam-Flag") == "YES" and "counter" in engines_header(msg)
    assert "Traceback" not in quorum.log_text()


def test_transaction_longer_than_the_old_pipeline_grace(
    mail_stack: MailStack, clamd: Clamd, rspamd: Rspamd, counter: FakeEngine
) -> None:
    """A slow client still in its transaction long after the reload (beyond scan_deadline + 5 s):
    the old pipeline's engines must still work for it, not fail as closed."""
    quorum = mail_stack.start(config(clamd, rspamd, counter), milter_extra="scan_deadline = 2")
    token = uuid.uuid4().hex
    with session(mail_stack.postfix.smtp_port) as smtp:
        assert smtp.ehlo().code == 250
        assert smtp.mail("alice@example.com").code == 250
        assert smtp.rcpt("bob@example.org").code == 250
        reload(quorum, config(clamd, rspamd, counter, counter_on=False))
        time.sleep(8.5)
        reply = smtp.data(mail(token, HAM))
        assert reply.code == 250, reply
    msg = delivered(mail_stack.sink, token)
    items = engines_header(msg)
    assert items["rspamd"].startswith("clean(") and items["clamav"] == "clean", items
    assert msg.header("X-Quorum-Verdict") == "clean"
    assert "Traceback" not in quorum.log_text()


@pytest.mark.parametrize(
    ("broken", "reason"),
    [
        ('[policy]\nspam_combine = "majority"\n', r"policy\.spam_combine"),
        ("[policy\non_spam = tag\n", r"TOML syntax error"),
        ('[engines.extra]\ntype = "clamav"\naddress = "nowhere"\n', r"engines\.extra\.address"),
        ("[policy]\non_spam = 'reject'\nspam_quorum = 0\n", r"policy\.spam_quorum"),
    ],
)
def test_invalid_config_is_refused_and_the_old_one_keeps_working(
    mail_stack: MailStack, clamd: Clamd, rspamd: Rspamd, counter: FakeEngine, broken: str, reason: str
) -> None:
    quorum = mail_stack.start(config(clamd, rspamd, counter, policy='on_spam = "tag"'))
    workers = quorum.worker_pids()
    line = reload(quorum, broken)
    assert "reload refused, keeping the running config" in line and re.search(reason, line), line
    msg = accepted(mail_stack, GTUBE)  # still tagged (not rejected), still scanned by all three
    assert msg.header("X-Spam-Flag") == "YES"
    assert list(engines_header(msg)) == ["clamav", "rspamd", "counter"]
    assert quorum.worker_pids() == workers and quorum.service.running


# Debian's libmilter runs sessions on a workers pool whose controller stops reading every open
# connection as soon as smfi_stop() is called, so the worker drains *before* stopping libmilter.
def test_sigterm_lets_sessions_in_flight_finish(mail_stack: MailStack, clamd: Clamd, rspamd: Rspamd) -> None:
    """One message is being scanned (a 3 s engine) and another session has only said MAIL/RCPT
    when SIGTERM arrives: both messages still get their answer, then Quorum exits."""
    slow = FakeEngine("slow", delay=3.0, reply=SPAMD_HAM)
    try:
        body = engine_table("clamav", "clamav", address=clamd.address) + engine_table(
            "slow", "spamassassin", address=slow.address, timeout=20
        )
        quorum = mail_stack.start(body, milter_extra="scan_deadline = 20")
        scanning_token, waiting_token = uuid.uuid4().hex, uuid.uuid4().hex
        replies: dict[str, Reply] = {}

        def scanning() -> None:
            result = send(
                mail_stack.postfix.smtp_port, "alice@example.com", ["bob@example.org"], mail(scanning_token, HAM)
            )
            replies["scanning"] = result.final

        with session(mail_stack.postfix.smtp_port) as smtp:
            assert smtp.ehlo().code == 250
            assert smtp.mail("alice@example.com").code == 250
            assert smtp.rcpt("bob@example.org").code == 250
            sender = threading.Thread(target=scanning)
            sender.start()
            deadline = time.monotonic() + 10
            while slow.requests < 1 and time.monotonic() < deadline:
                time.sleep(0.02)
            assert slow.requests == 1  # the first message is inside its scan now
            stopped_at = time.monotonic()
            quorum.service.signal(signal.SIGTERM)
            quorum.wait_for_log(r"stopping: no new connections")
            late = send(mail_stack.postfix.smtp_port, "alice@example.com", ["bob@example.org"], mail("late", HAM))
            replies["waiting"] = smtp.data(mail(waiting_token, HAM))
            sender.join(30)
        assert late.code == 421 and not late.accepted, late  # a new client is turned away (4xx) meanwhile
        assert replies["scanning"].code == 250, replies
        assert replies["waiting"].code == 250, replies
        for token in (scanning_token, waiting_token):
            assert engines_header(delivered(mail_stack.sink, token))["slow"] == "clean(0.50/5.00)"
        proc = quorum.service.proc
        assert proc is not None
        assert proc.wait(20) == 0
        assert time.monotonic() - stopped_at < 15
        assert "stopping with" not in quorum.log_text()  # nobody was cut off at stop_timeout
        assert "Traceback" not in quorum.log_text()
    finally:
        slow.stop()
