"""The notice queue with a fake relay: audiences, guards, cap, retries with backoff, drops, shutdown."""

from __future__ import annotations

import email
import email.policy
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import replace

import pytest

from quorum.notify.cap import DailyCap
from quorum.notify.facts import NoticeFacts
from quorum.notify.notifier import Notifier, audiences
from quorum.notify.settings import DomainNotify, NotifySettings
from quorum.notify.transport import SendError

SETTINGS = NotifySettings(
    from_address="Mail Filter <postmaster@example.net>",
    daily_cap=0,
    queue_size=100,
    retry_backoff=0.02,
    retry_backoff_max=0.1,
    max_attempts=4,
)
FACTS = NoticeFacts(
    sender="alice@example.org",
    recipients=("bob@example.com", "carol@example.com"),
    subject="hello",
    queue_id="4XyZ1A",
    verdict="virus",
    virus_names=("Eicar-Signature",),
    tenant="example.com",
    spf="pass",
)
EVERYONE = DomainNotify(admin=("postmaster@example.com",), recipient=True, sender=True, events=("rule", "virus"))


class Relay:
    """Records what it is given; `fail` decides per call whether to raise."""

    def __init__(self, fail: Callable[[int], SendError | None] = lambda n: None) -> None:
        self.fail = fail
        self.calls = 0
        self.sent: list[tuple[str, bytes]] = []
        self.lock = threading.Lock()

    def __call__(self, to: str, data: bytes, smtputf8: bool) -> None:
        with self.lock:
            self.calls += 1
            error = self.fail(self.calls)
            if error is not None:
                raise error
            self.sent.append((to, data))


def wait(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def body(data: bytes) -> str:
    msg = email.message_from_bytes(data, policy=email.policy.default)
    return str(msg.get_content())  # type: ignore[attr-defined]


def test_audiences_admin_first_one_notice_per_address() -> None:
    policy = EVERYONE.model_copy(update={"admin": ("bob@example.com", "pm@example.com")})
    assert audiences(FACTS, policy) == [
        ("admin", "bob@example.com", FACTS.recipients),
        ("admin", "pm@example.com", FACTS.recipients),
        ("recipient", "carol@example.com", ("carol@example.com",)),
        ("sender", "alice@example.org", FACTS.recipients),
    ]


def test_virus_notices_go_to_admin_and_recipients_never_the_sender() -> None:
    relay = Relay()
    notifier = Notifier(SETTINGS, send=relay)
    assert notifier.submit("virus", FACTS, EVERYONE)
    notifier.close(5.0)
    assert sorted(to for to, _ in relay.sent) == ["bob@example.com", "carol@example.com", "postmaster@example.com"]
    assert notifier.counts.sent == 3
    assert notifier.counts.suppressed == {"virus_sender": 1}
    to_bob = next(data for to, data in relay.sent if to == "bob@example.com")
    assert "carol@example.com" not in body(to_bob)  # a recipient learns of no other recipient


def test_rule_notice_reaches_the_sender_when_configured() -> None:
    relay = Relay()
    notifier = Notifier(SETTINGS, send=relay)
    notifier.submit("rule", FACTS, DomainNotify(sender=True, events=("rule",)))
    notifier.close(5.0)
    assert [to for to, _ in relay.sent] == ["alice@example.org"]


@pytest.mark.parametrize(
    ("change", "guard"),
    [
        ({"sender": ""}, "null_sender"),
        ({"precedence": "bulk"}, "precedence"),
        ({"spf": "fail"}, "spf_fail"),
        ({"auto_submitted": "auto-replied"}, "auto_submitted"),
        ({"sender": "not an address"}, "invalid_address"),
    ],
)
def test_guarded_sender_notice_is_counted_by_guard_name(change: dict[str, str], guard: str) -> None:
    relay = Relay()
    notifier = Notifier(SETTINGS, send=relay)
    notifier.submit("rule", replace(FACTS, **change), EVERYONE.model_copy(update={"admin": ()}))  # type: ignore[arg-type]
    notifier.close(5.0)
    assert sorted(to for to, _ in relay.sent) == ["bob@example.com", "carol@example.com"]
    assert notifier.counts.suppressed == {guard: 1}


def test_daily_cap_stops_the_notice_after_the_cap() -> None:
    relay = Relay()
    notifier = Notifier(SETTINGS, send=relay, cap=DailyCap(2))
    policy = DomainNotify(admin=("postmaster@example.com",), events=("virus",))
    for _ in range(3):
        notifier.submit("virus", FACTS, policy)
    notifier.close(5.0)
    assert len(relay.sent) == 2
    assert notifier.counts.suppressed == {"daily_cap": 1}


def test_nothing_to_do_is_not_queued() -> None:
    notifier = Notifier(SETTINGS, send=Relay(), start=False)
    assert not notifier.submit("virus", FACTS, DomainNotify())  # nobody configured
    assert not notifier.submit("rule", FACTS, EVERYONE.model_copy(update={"events": ("virus",)}))  # event not chosen
    assert not notifier.submit("no-such-event", FACTS, EVERYONE)
    assert notifier.stats()["pending"] == 0


def test_transient_failures_are_retried_with_backoff(caplog: pytest.LogCaptureFixture) -> None:
    relay = Relay(lambda n: SendError("relay down") if n <= 2 else None)
    notifier = Notifier(SETTINGS, send=relay)
    with caplog.at_level(logging.WARNING, "quorum.notify"):
        notifier.submit("virus", FACTS, DomainNotify(admin=("pm@example.com",), events=("virus",)))
        wait(lambda: notifier.counts.sent == 1)
    notifier.close(5.0)
    assert (notifier.counts.retried, notifier.counts.failed, relay.calls) == (2, 0, 3)
    retries = [r.getMessage() for r in caplog.records if "retry" in r.getMessage()]
    assert len(retries) == 2 and "relay down" in retries[0] and "pm@example.com" in retries[0]


def test_permanent_refusal_is_not_retried_and_logged_with_the_address(caplog: pytest.LogCaptureFixture) -> None:
    relay = Relay(lambda n: SendError("550 5.1.1 no such user", permanent=True))
    notifier = Notifier(SETTINGS, send=relay)
    with caplog.at_level(logging.ERROR, "quorum.notify"):
        notifier.submit("virus", FACTS, DomainNotify(admin=("pm@example.com",), events=("virus",)))
        wait(lambda: notifier.counts.failed == 1)
    notifier.close(5.0)
    assert relay.calls == 1
    assert any("NOT SENT" in r.getMessage() and "<pm@example.com>" in r.getMessage() for r in caplog.records)


def test_after_max_attempts_the_notice_is_logged_as_not_sent(caplog: pytest.LogCaptureFixture) -> None:
    relay = Relay(lambda n: SendError("connection refused"))
    notifier = Notifier(SETTINGS, send=relay)
    with caplog.at_level(logging.ERROR, "quorum.notify"):
        notifier.submit("virus", FACTS, DomainNotify(admin=("pm@example.com",), events=("virus",)))
        wait(lambda: notifier.counts.failed == 1)
    notifier.close(5.0)
    assert relay.calls == SETTINGS.max_attempts
    assert notifier.counts.retried == SETTINGS.max_attempts - 1
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert errors and "gave up after 4 attempts" in errors[0] and "<pm@example.com>" in errors[0]


def test_a_crashing_transport_does_not_kill_the_thread() -> None:
    relay = Relay(lambda n: RuntimeError("bug") if n == 1 else None)  # type: ignore[arg-type,return-value]
    notifier = Notifier(SETTINGS, send=relay)
    notifier.submit("virus", FACTS, DomainNotify(admin=("pm@example.com",), events=("virus",)))
    wait(lambda: notifier.counts.sent == 1)
    notifier.close(5.0)


def test_submit_never_blocks_a_full_queue_drops_and_logs(caplog: pytest.LogCaptureFixture) -> None:
    release = threading.Event()

    def stuck(to: str, data: bytes, smtputf8: bool) -> None:
        release.wait(10)

    notifier = Notifier(SETTINGS.model_copy(update={"queue_size": 3}), send=stuck)
    policy = DomainNotify(admin=("pm@example.com",), events=("virus",))
    with caplog.at_level(logging.ERROR, "quorum.notify"):
        answers = [notifier.submit("virus", replace(FACTS, queue_id=f"Q{i}"), policy) for i in range(50)]
    assert answers.count(True) <= 4  # three queued and perhaps one taken by the (stuck) sender thread
    assert notifier.counts.dropped == answers.count(False) >= 46
    dropped = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert len(dropped) == notifier.counts.dropped and "bob@example.com" in dropped[0]
    release.set()
    notifier.close(5.0)


def test_close_flushes_the_queue() -> None:
    relay = Relay()
    notifier = Notifier(SETTINGS, send=relay, start=False)
    policy = DomainNotify(admin=("pm@example.com",), events=("virus",))
    for i in range(20):
        notifier.submit("virus", replace(FACTS, queue_id=f"Q{i}"), policy)
    notifier.start()
    notifier.close(10.0)
    assert len(relay.sent) == 20
    assert notifier.stats()["pending"] == 0


def test_close_gives_pending_retries_a_last_try_and_logs_the_rest(caplog: pytest.LogCaptureFixture) -> None:
    relay = Relay(lambda n: SendError("relay down"))
    notifier = Notifier(SETTINGS.model_copy(update={"retry_backoff": 60.0, "retry_backoff_max": 60.0}), send=relay)
    notifier.submit("virus", FACTS, DomainNotify(admin=("pm@example.com",), events=("virus",)))
    wait(lambda: notifier.counts.retried == 1)
    with caplog.at_level(logging.ERROR, "quorum.notify"):
        notifier.close(2.0)
    assert relay.calls == 2  # the first attempt and the last try at shutdown
    assert notifier.counts.failed == 1
    assert any("shutting down" in r.getMessage() and "<pm@example.com>" in r.getMessage() for r in caplog.records)
    assert not notifier.submit("virus", FACTS, DomainNotify(admin=("pm@example.com",), events=("virus",)))
