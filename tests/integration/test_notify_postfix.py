"""Issue 11, notices, end to end: client -> Postfix -> `quorum run` (clamd, SPF via NSD, Redis cap)
-> 554 at once; notices -> the Postfix notice listener (postfix-conf/master.cf.notify, no milter)
-> the sink.

Every tenant domain below turns sender notices for viruses ON (`sender = true, sender_virus =
true`), so when no sender notice arrives it is the loop guard that stopped it, not the default.
Each test uses its own domain, so the daily cap (4 per address) only bites where it is tested.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from tests.harness.clamd import Clamd
from tests.harness.dns import DnsServer
from tests.harness.messages import EICAR
from tests.harness.notice_listener import NoticeListenerPostfix
from tests.harness.ports import wait_for_port_closed
from tests.harness.quorum import QuorumProcess, engine_table
from tests.harness.redis_server import RedisAuth, RedisServer
from tests.harness.sink import Delivered, Sink
from tests.harness.smtp_client import SendResult, send
from tests.zones import auth as z

pytestmark = pytest.mark.integration

NOTICE_FROM = "Mail Filter <postmaster@mx.quorum.test>"
DAILY_CAP = 4
DOMAINS = ("basic.test", "guards.test", "cap.test", "down.test")
EICAR_TOKEN = b"EICAR-STANDARD-ANTIVIRUS-TEST-FILE"


def admin_of(domain: str) -> str:
    return f"pm@{domain}"


def config_body(clamd: Clamd, dns: DnsServer, redis: RedisServer, notify_port: int) -> str:
    domains = "".join(
        f'\n[domains."{d}".notify]\nadmin = ["{admin_of(d)}"]\nrecipient = {"false" if d == "cap.test" else "true"}\n'
        'sender = true\nsender_virus = true\nevents = ["virus"]\n'
        for d in DOMAINS
    )
    return (
        '[policy]\non_virus = "reject"\n\n'
        + engine_table("clamav", "clamav", address=clamd.address)
        + f"""
[dns]
nameservers = ["127.0.0.1"]
port = {dns.port}
timeout = 1
cache_size = 0

[auth]
enabled = true
spf_at = "mail"                  # SPF known at MAIL FROM, whatever ends the scan

[redis]
url = "{redis.url}"

[notify]
relay = "127.0.0.1:{notify_port}"
from = "{NOTICE_FROM}"
daily_cap = {DAILY_CAP}
retry_backoff = "300ms"
retry_backoff_max = "1s"
timeout = "5s"
"""
        + domains
    )


def infected(sender: str, rcpt: str, token: str, extra: str = "") -> bytes:
    """`extra` header lines; one of them may be the From: (else From: is the envelope sender)."""
    author = "" if extra.startswith("From:") else f"From: <{sender or 'mailer-daemon@relay.example'}>\r\n"
    head = (
        f"{author}To: <{rcpt}>\r\nSubject: invoice {token}\r\n"
        f"Date: Mon, 01 Jan 2024 12:00:00 +0000\r\nMessage-ID: <{token}@quorum.test>\r\n{extra}"
        "MIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\n"
    )
    return head.encode() + b"open me: " + EICAR + b"\r\n"


@dataclass
class Stack:
    postfix: NoticeListenerPostfix
    quorum: QuorumProcess
    sink: Sink
    redis: RedisServer

    def send(self, sender: str, rcpt: str, raw: bytes, client: str = z.CLIENT_GOOD, login: str = "") -> SendResult:
        xclient = {"ADDR": client, "NAME": "[UNAVAILABLE]", "HELO": "client.example"}
        if login:
            xclient["LOGIN"] = login
        return send(self.postfix.smtp_port, sender, [rcpt], raw, xclient=xclient)

    def virus(self, sender: str, rcpt: str, client: str = z.CLIENT_GOOD, extra: str = "", login: str = "") -> str:
        """Send an infected message; assert the refusal at end of DATA; its token."""
        token = uuid.uuid4().hex
        result = self.send(sender, rcpt, infected(sender, rcpt, token, extra), client=client, login=login)
        assert result.data is not None and result.data.code == 554, result
        assert "5.7.1" in result.data.text and "virus" in result.data.text, result
        return token

    def notices(self, token: str, count: int, timeout: float = 30.0) -> list[Delivered]:
        """The `count` notices about the message `token` (its subject is quoted in each one)."""
        deadline = time.monotonic() + timeout
        while True:
            found = [m for m in self.sink.messages() if token.encode() in m.raw]
            if len(found) >= count:
                return found
            assert time.monotonic() < deadline, f"{len(found)} of {count} notices about {token} arrived"
            time.sleep(0.05)

    def suppressed(self, token_qid: str, guard: str) -> None:
        self.quorum.wait_for_log(rf"notice to sender <[^>]*> for queue id {token_qid} suppressed by {guard}")


def qid_of(quorum: QuorumProcess, rcpt: str, timeout: float = 10.0) -> str:
    """The queue id Quorum logged for the (last) infected message to `rcpt`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in reversed(quorum.message_lines()):
            m = re.search(r"qid=(\S+) from=.*verdict=virus", line)
            if m and f"<{rcpt}>" in line:
                return m.group(1)
        time.sleep(0.05)
    raise AssertionError(f"no message line for <{rcpt}>")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, clamd: Clamd) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("notify-stack")
    dns = DnsServer(root / "nsd", z.zones(z.make_keys())).start()
    redis = RedisServer(root / "redis", auth=RedisAuth()).start()
    sink = Sink(root / "sink")
    sink.start()
    postfix = NoticeListenerPostfix(root / "postfix", sink.port)
    quorum = QuorumProcess(root / "quorum", config_body(clamd, dns, redis, postfix.notify_port)).start()
    postfix.milter = quorum.postfix_address
    try:
        postfix.start()
        yield Stack(postfix, quorum, sink, redis)
    finally:
        postfix.stop()
        quorum.stop()
        sink.stop()
        redis.stop()
        dns.stop()


def _common(notice: Delivered, token: str) -> None:
    assert notice.mail_from in ("", "<>"), notice.mail_from  # null envelope sender
    assert notice.header("Auto-Submitted") == "auto-generated"
    assert notice.header("From") == NOTICE_FROM
    assert notice.header("X-Quorum-Notice") == "virus"
    assert re.fullmatch(r"<[^<>@]+@mx\.quorum\.test>", notice.header("Message-ID") or ""), notice.header("Message-ID")
    assert f"<{token}@quorum.test>" != notice.header("Message-ID")
    assert EICAR_TOKEN not in notice.raw  # never the refused content
    assert notice.header("Content-Type") == 'text/plain; charset="utf-8"'
    assert "multipart" not in (notice.header("Content-Type") or "")


def test_virus_refused_at_once_and_admin_recipient_and_sender_notified(stack: Stack) -> None:
    """The sender is one of ours (SMTP AUTH via XCLIENT LOGIN): the one sender a virus notice may go to."""
    stack.sink.clear()
    sender, rcpt = "alice@spf-pass.test", f"bob-{uuid.uuid4().hex[:8]}@basic.test"
    token = stack.virus(sender, rcpt, login="alice")  # 554 at end of DATA, before any notice went out
    qid = qid_of(stack.quorum, rcpt)
    notices = stack.notices(token, 3)
    by_rcpt = {m.rcpt_tos[0]: m for m in notices}
    assert sorted(by_rcpt) == sorted([admin_of("basic.test"), rcpt, sender])
    assert len({m.header("Message-ID") for m in notices}) == 3
    for notice in notices:
        _common(notice, token)
    admin = by_rcpt[admin_of("basic.test")].body.decode()
    assert "Eicar" in admin and qid in admin and rcpt in admin
    assert re.search(r"^Client: +192\.0\.2\.10\r?$", admin, re.MULTILINE), admin  # not "[192.0.2.10] [192.0.2.10]"
    # they came through the listener that runs no milter (Quorum would have scanned them again)
    stack.postfix.wait_for_log(r"postfix/quorum-notify/smtpd\[\d+\]: connect from")
    stack.quorum.wait_for_log(rf"notify: sent event=virus audience=admin to=<{admin_of('basic.test')}> queue_id={qid}")
    assert not [line for line in stack.quorum.message_lines() if f"<{admin_of('basic.test')}>" in line]


@pytest.mark.parametrize(
    ("case", "sender", "client", "extra", "guard"),
    [
        ("null sender", "", z.CLIENT_GOOD, "", "null_sender"),
        ("precedence bulk", "news@spf-pass.test", z.CLIENT_GOOD, "Precedence: bulk\r\n", "precedence"),
        ("spf fail", "ceo@spf-fail.test", z.CLIENT_BAD, "", "spf_fail"),
        # DMARC runs at end of data beside clamd: when the virus is found first the scan ends without a
        # DMARC result, and the sender, possibly forged, is not notified either ("auth_unknown").
        ("dmarc fail", "bulk@spf-pass.test", z.CLIENT_GOOD, "From: <ceo@none.test>\r\n", "(dmarc_fail|auth_unknown)"),
    ],
)
def test_guarded_senders_never_get_a_notice_admin_and_recipient_do(
    stack: Stack, case: str, sender: str, client: str, extra: str, guard: str
) -> None:
    stack.sink.clear()
    rcpt = f"carol-{uuid.uuid4().hex[:8]}@guards.test"
    token = stack.virus(sender, rcpt, client=client, extra=extra)
    qid = qid_of(stack.quorum, rcpt)
    notices = stack.notices(token, 2)
    stack.suppressed(qid, guard)  # decided after admin and recipient: nothing more is coming
    time.sleep(0.5)
    notices = [m for m in stack.sink.messages() if token.encode() in m.raw]
    assert sorted(m.rcpt_tos[0] for m in notices) == sorted([admin_of("guards.test"), rcpt]), case
    for notice in notices:
        _common(notice, token)
    if guard == "spf_fail":
        assert any("spf=fail" in line and qid in line for line in stack.quorum.message_lines())


def test_daily_cap_stops_the_cap_plus_first_notice(stack: Stack) -> None:
    stack.sink.clear()
    admin = admin_of("cap.test")
    tokens = [stack.virus("", f"dave{i}@cap.test") for i in range(DAILY_CAP + 1)]
    last_qid = qid_of(stack.quorum, f"dave{DAILY_CAP}@cap.test")
    stack.quorum.wait_for_log(rf"notice to admin <{re.escape(admin)}> for queue id {last_qid} suppressed by daily_cap")
    time.sleep(0.5)
    to_admin = [m for m in stack.sink.messages() if m.rcpt_tos == [admin]]
    assert len(to_admin) == DAILY_CAP
    for token in tokens[:DAILY_CAP]:
        assert [m for m in to_admin if token.encode() in m.raw], token
    assert not [m for m in to_admin if tokens[-1].encode() in m.raw]
    with stack.redis.client() as client:
        [key] = [k for k in client.keys("quorum:notify:cap:*") if k.decode().endswith(":" + admin)]
        assert int(client.get(key) or 0) == DAILY_CAP + 1


def test_relay_down_mail_flows_notice_retried_and_delivered_when_it_returns(stack: Stack) -> None:
    stack.sink.clear()
    postfix = stack.postfix
    postfix.listener_enabled = False
    postfix.reload()
    wait_for_port_closed(postfix.notify_port)
    try:
        rcpt = f"erin-{uuid.uuid4().hex[:8]}@down.test"
        token = stack.virus("", rcpt)  # still refused at once: the reply never waits for a notice
        qid = qid_of(stack.quorum, rcpt)
        stack.quorum.wait_for_log(
            rf"event=virus audience=admin to=<pm@down\.test> queue_id={qid} \S+ not sent .*retry 2"
        )
        clean = send(
            postfix.smtp_port, "frank@spf-pass.test", ["frank@elsewhere.example"], b"Subject: hi\r\n\r\nhello\r\n"
        )
        assert clean.accepted, clean  # ordinary mail keeps flowing
        stack.sink.wait_for(1, timeout=30)
        assert not [m for m in stack.sink.messages() if token.encode() in m.raw]
    finally:
        postfix.listener_enabled = True
        postfix.reload()
    notices = stack.notices(token, 2, timeout=60)
    assert sorted(m.rcpt_tos[0] for m in notices) == sorted([admin_of("down.test"), rcpt])
    for notice in notices:
        _common(notice, token)
    stack.quorum.wait_for_log(
        rf"notify: sent event=virus audience=admin to=<pm@down\.test> queue_id={qid} .*attempt [2-9]"
    )


def test_notices_carry_only_summary_headers(stack: Stack) -> None:
    """The admin notice of the first test quotes From/Subject/Message-ID, never a body line or other header."""
    stack.sink.clear()
    token = stack.virus("alice@spf-pass.test", "x@basic.test", extra="X-Secret: do-not-quote-me\r\n")
    admin = next(m for m in stack.notices(token, 2) if m.rcpt_tos == [admin_of("basic.test")])
    assert b"do-not-quote-me" not in admin.raw and b"open me" not in admin.raw
