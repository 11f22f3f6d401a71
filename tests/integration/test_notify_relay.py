"""Notices end to end: through a real Postfix notice listener (postfix-conf/master.cf.notify) to the
sink; relay outages with retries; the daily cap in a real Redis; submit() never waits on the relay.
"""

from __future__ import annotations

import logging
import smtplib
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from tests.harness.ports import free_port, wait_for_port
from tests.harness.postfix import MASTER_CF, PostfixInstance, _write_cool
from tests.harness.redis_server import RedisAuth, RedisServer
from tests.harness.sink import Sink

from quorum.notify.cap import DailyCap
from quorum.notify.facts import NoticeFacts
from quorum.notify.feature import make_cap
from quorum.notify.notifier import Notifier
from quorum.notify.settings import DomainNotify, NotifySettings
from quorum.ratelimit.settings import RedisSettings

pytestmark = pytest.mark.integration

SNIPPET = Path(__file__).resolve().parents[2] / "postfix-conf" / "master.cf.notify"
SNIPPET_ADDRESS = "127.0.0.1:10026"
EICAR_TOKEN = "EICAR-STANDARD-ANTIVIRUS-TEST-FILE"

FACTS = NoticeFacts(
    sender="alice@example.org",
    recipients=("bob@example.com", "carol@example.com"),
    subject="=?utf-8?q?Rechnung_f=C3=BCr_M=C3=A4rz?=",
    client_ip="192.0.2.9",
    client_name="mx.example.org",
    queue_id="4XyZ1A",
    verdict="virus",
    virus_names=("Eicar-Signature",),
    tenant="example.com",
    spf="pass",
    header_summary=(("From", "Alice <alice@example.org>"), ("Subject", "x"), ("X-Payload", EICAR_TOKEN)),
)
ADMIN_AND_RECIPIENTS = DomainNotify(admin=("postmaster@example.com",), recipient=True, sender=True, events=("virus",))


def settings(port: int, **change: object) -> NotifySettings:
    base = NotifySettings(
        from_address="Mail Filter <postmaster@example.net>",
        relay=("127.0.0.1", port),
        daily_cap=0,
        retry_backoff=0.2,
        retry_backoff_max=0.5,
        max_attempts=100,
        timeout=5.0,
    )
    return base.model_copy(update=change)


def wait(predicate: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)


def listener_lines(port: int) -> str:
    """The snippet's service lines (comments dropped) on `port`."""
    lines = [line for line in SNIPPET.read_text().splitlines() if line.strip() and not line.lstrip().startswith("#")]
    text = "\n".join(lines) + "\n"
    assert SNIPPET_ADDRESS in text
    return text.replace(SNIPPET_ADDRESS, f"127.0.0.1:{port}")


class NoticeRelayPostfix(PostfixInstance):
    """The harness Postfix plus the notice listener exactly as postfix-conf/master.cf.notify has it."""

    def __init__(self, workdir: Path, sink_port: int, milter: str) -> None:
        super().__init__(workdir, sink_port, milter=milter)
        self.notify_port = free_port()

    def write_config(self) -> None:
        super().write_config()
        master = MASTER_CF.format(port=self.smtp_port) + listener_lines(self.notify_port)
        _write_cool(self.config_dir / "master.cf", master)


@pytest.fixture(scope="module")
def relay_postfix(tmp_path_factory: pytest.TempPathFactory, sink: Sink) -> Iterator[NoticeRelayPostfix]:
    """smtpd_milters points at a milter that is down (default_action=tempfail): the main port answers 4xx,
    so a notice can only arrive if the listener really runs no milter."""
    dead_milter = f"inet:127.0.0.1:{free_port()}"
    instance = NoticeRelayPostfix(tmp_path_factory.mktemp("notify-postfix"), sink.port, dead_milter)
    instance.start()
    wait_for_port(instance.notify_port)
    yield instance
    instance.stop()


def test_virus_notices_reach_admin_and_recipients_through_the_listener(
    relay_postfix: NoticeRelayPostfix, sink: Sink
) -> None:
    with smtplib.SMTP("127.0.0.1", relay_postfix.smtp_port, "client.test", timeout=30) as smtp:
        code, _ = smtp.mail("")
    assert 400 <= code < 500  # the milter is down: ordinary mail is tempfailed on the main port

    sink.clear()
    notifier = Notifier(settings(relay_postfix.notify_port))
    assert notifier.submit("virus", FACTS, ADMIN_AND_RECIPIENTS)
    messages = sink.wait_for(3, timeout=60)
    notifier.close(10.0)

    assert sorted(m.rcpt_tos[0] for m in messages) == ["bob@example.com", "carol@example.com", "postmaster@example.com"]
    assert notifier.counts.suppressed == {"virus_sender": 1}  # no sender notice for a virus
    assert len({m.header("Message-ID") for m in messages}) == 3
    for m in messages:
        assert m.mail_from in ("", "<>")  # null envelope sender
        assert m.header("Auto-Submitted") == "auto-generated"
        assert m.header("From") == "Mail Filter <postmaster@example.net>"
        assert m.header("X-Quorum-Notice") == "virus"
        assert m.header("Content-Type") == 'text/plain; charset="utf-8"'
        assert EICAR_TOKEN.encode() not in m.raw  # only the allowed summary headers are quoted
        assert m.header("Date")
    admin = next(m for m in messages if m.rcpt_tos == ["postmaster@example.com"])
    text = admin.body.decode("utf-8", "replace")
    assert "Eicar-Signature" in text and "4XyZ1A" in text and "bob@example.com, carol@example.com" in text
    relay_postfix.wait_for_log(r"postfix/quorum-notify/smtpd\[\d+\]: connect from")


def test_guarded_senders_never_get_a_notice_but_admin_and_recipients_do(
    relay_postfix: NoticeRelayPostfix, sink: Sink
) -> None:
    sink.clear()
    notifier = Notifier(settings(relay_postfix.notify_port))
    policy = ADMIN_AND_RECIPIENTS.model_copy(
        update={"sender_virus": True}
    )  # even with sender notices for viruses allowed
    cases = [replace(FACTS, sender=""), replace(FACTS, precedence="bulk"), replace(FACTS, spf="fail")]
    for i, facts in enumerate(cases):
        notifier.submit("virus", replace(facts, queue_id=f"Q{i}"), policy)
    sink.wait_for(9, timeout=60)
    notifier.close(10.0)
    time.sleep(0.5)
    delivered = [m.rcpt_tos[0] for m in sink.messages()]
    assert len(delivered) == 9 and "alice@example.org" not in delivered
    assert notifier.counts.suppressed == {"null_sender": 1, "precedence": 1, "spf_fail": 1}


def test_relay_down_mail_flow_unaffected_notice_retried_and_delivered_later(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    later = Sink(tmp_path / "sink", port=free_port())  # the relay, not started yet
    notifier = Notifier(settings(later.port))
    with caplog.at_level(logging.WARNING, "quorum.notify"):
        assert notifier.submit("virus", FACTS, DomainNotify(admin=("pm@example.com",), events=("virus",)))
        wait(lambda: notifier.counts.retried >= 2)
        assert later.count() == 0 and notifier.counts.sent == 0
        later.start()
        try:
            [message] = later.wait_for(1, timeout=30)
        finally:
            notifier.close(5.0)
            later.stop()
    assert message.rcpt_tos == ["pm@example.com"] and message.header("Auto-Submitted") == "auto-generated"
    assert notifier.counts.sent == 1 and notifier.counts.failed == 0
    assert any("retry" in r.getMessage() and "<pm@example.com>" in r.getMessage() for r in caplog.records)


def test_submit_never_waits_for_a_relay_that_hangs(caplog: pytest.LogCaptureFixture) -> None:
    """The relay accepts TCP connections and never greets: the sender thread hangs, submit() does not."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(100)
        notifier = Notifier(settings(silent.getsockname()[1], timeout=3.0, queue_size=5, max_attempts=1))
        policy = DomainNotify(admin=("pm@example.com",), events=("virus",))
        with caplog.at_level(logging.ERROR, "quorum.notify"):
            answers = [notifier.submit("virus", replace(FACTS, queue_id=f"Q{i}"), policy) for i in range(200)]
            assert answers[:5] == [True] * 5
            assert notifier.counts.dropped == answers.count(False) >= 190
            notifier.close(0.5)
    assert sum("dropped" in r.getMessage() for r in caplog.records) >= 190


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("notify-redis"), auth=RedisAuth()).start()
    yield server
    server.stop()


def test_daily_cap_is_shared_in_redis_and_stops_the_cap_plus_first_notice(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    with Sink(tmp_path / "sink") as direct:
        config = settings(direct.port, daily_cap=2, redis=RedisSettings(url=redis_server.url), key_prefix="t1:")
        first, second = Notifier(config, cap=make_cap(config)), Notifier(config, cap=make_cap(config))  # two processes
        policy = DomainNotify(admin=("pm@example.com",), events=("virus",))
        first.submit("virus", replace(FACTS, queue_id="Q1"), policy)
        first.close(10.0)
        second.submit("virus", replace(FACTS, queue_id="Q2"), policy)
        second.submit("virus", replace(FACTS, queue_id="Q3"), policy)
        second.close(10.0)
        direct.wait_for(2)
        time.sleep(0.3)
        assert direct.count() == 2
    assert second.counts.suppressed == {"daily_cap": 1}
    with redis_server.client() as client:
        [key] = client.keys("t1:cap:*")
        assert key.decode().endswith(":pm@example.com")
        assert int(client.get(key) or 0) == 3
        assert 86400 < client.ttl(key) <= 2 * 86400


def test_daily_cap_survives_a_redis_outage(redis_server: RedisServer, caplog: pytest.LogCaptureFixture) -> None:
    config = settings(1, daily_cap=3, redis=RedisSettings(url=redis_server.url), key_prefix="t2:", redis_retry=0.2)
    cap = make_cap(config)
    assert isinstance(cap, DailyCap)
    assert cap.allow("x@example.com")
    redis_server.kill()
    try:
        with caplog.at_level(logging.INFO, "quorum.notify"):
            assert [cap.allow("x@example.com") for _ in range(4)] == [True, True, True, False]  # counted locally
            time.sleep(0.3)
            assert not cap.allow("x@example.com")
            warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
            assert len(warnings) == 1 and "Redis is unreachable" in warnings[0].getMessage()
    finally:
        redis_server.start()
    time.sleep(0.3)
    with caplog.at_level(logging.INFO, "quorum.notify"):
        assert cap.allow("y@example.com")
    assert any("counted in Redis again" in r.getMessage() for r in caplog.records)
    with redis_server.client() as client:
        assert client.get("t2:cap:" + cap.day() + ":y@example.com") == b"1"
    cap.close()
