"""The stage: reservation at DATA, 451 naming the bucket, give-back on refusal/abort, SPF trust."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from quorum.assembly import parse_config
from quorum.auth.spf import SpfResult
from quorum.features import FEATURES
from quorum.message import Envelope
from quorum.pipeline.stages import Action, Outcome, Reply
from quorum.pipeline.transaction import Connection, Transaction
from quorum.ratelimit.fallback import LocalBuckets
from quorum.ratelimit.limiter import Limiter, Reservation
from quorum.ratelimit.settings import RateLimitSettings
from quorum.ratelimit.stage import RateLimitStage


class Clock:
    def __init__(self) -> None:
        self.now = 10**15

    def __call__(self) -> int:
        return self.now


def make_stage(table: dict[str, Any], **extra: Any) -> tuple[RateLimitStage, LocalBuckets, Clock]:
    s = parse_config({"ratelimit": table, **extra}).feature("ratelimit")
    assert isinstance(s, RateLimitSettings)
    clock = Clock()
    store = LocalBuckets(clock)  # stands in for Redis: same arithmetic, injectable clock
    return RateLimitStage(s, Limiter(lambda: store, LocalBuckets(clock))), store, clock


def session(macros: dict[str, str] | None = None, sender: str = "alice@example.com") -> Transaction:
    env = Envelope(client_ip="192.0.2.1", sender=sender, recipients=["bob@dest.test"], macros=dict(macros or {}))
    return Transaction(Connection("192.0.2.1"), env)


def spf(result: str) -> SpfResult:
    return SpfResult(result, "mailfrom", "example.com", "alice@example.com")


AUTH = {"{auth_authen}": "alice"}
LIMITS = {"sender_domain": {"messages": 2, "per": "1h"}}


def test_boundary_and_451_text() -> None:
    stage, _, _ = make_stage(LIMITS)
    for _ in range(2):
        assert stage.data(session(AUTH)) is None
    reply = stage.data(session(AUTH))
    assert reply == Reply.tempfail("451", "4.7.1", "rate limit exceeded for sender_domain example.com; retry in 1800s")


def test_unauthenticated_sender_domain_is_not_counted_unless_spf_passed() -> None:
    stage, _, _ = make_stage(LIMITS)
    for _ in range(5):
        assert stage.data(session()) is None  # could be forged: not counted
    for _ in range(2):
        s = session()
        s.results.put(spf("pass"), by="auth")
        assert stage.data(s) is None
    s = session()
    s.results.put(spf("softfail"), by="auth")
    assert stage.data(s) is None  # not counted
    s = session()
    s.results.put(spf("pass"), by="auth")
    assert stage.data(s) is not None  # the third trusted message


@pytest.mark.parametrize(
    ("action", "given_back"), [(a, a in (Action.REJECT, Action.TEMPFAIL, Action.DISCARD)) for a in Action]
)
def test_give_back_when_not_delivered(action: Action, given_back: bool) -> None:
    stage, store, _ = make_stage(LIMITS)
    s = session(AUTH)
    assert stage.data(s) is None
    assert isinstance(s.results.get(Reservation), Reservation)
    stage.finished(s, Outcome(action))
    assert s.results.get(Reservation) is None
    stage.finished(s, Outcome(action))  # twice: nothing more is given back
    assert (store.peek(["quorum:rl:sd:m1h:{example.com}"])[1] == [0]) is given_back


def test_aborted_gives_back() -> None:
    stage, _, _ = make_stage(LIMITS)
    for _ in range(2):
        s = session(AUTH)
        assert stage.data(s) is None
    stage.aborted(s)
    assert stage.data(session(AUTH)) is None  # the aborted one's slot is free again
    assert stage.data(session(AUTH)) is not None
    stage.aborted(session())  # no reservation: nothing happens


def test_refused_message_reserves_nothing_anywhere() -> None:
    stage, store, _ = make_stage(
        {"sender_domain": {"messages": 5, "per": "1h"}, "recipient_domain": {"messages": 1, "per": "1h"}}
    )
    assert stage.data(session(AUTH)) is None
    reply = stage.data(session(AUTH))
    assert reply is not None and "recipient_domain dest.test" in reply.text
    used = store.peek(["quorum:rl:sd:m1h:{example.com}"])
    assert used[1][0] - used[0] == 720_000_000  # one message (T = 12 min), not two


def test_window_expiry_with_injected_clock() -> None:
    stage, _, clock = make_stage({"client_ip": {"messages": 3, "per": "10m"}})
    for _ in range(3):
        assert stage.data(session()) is None
    reply = stage.data(session())
    assert reply is not None and "client_ip 192.0.2.1" in reply.text and "retry in 200s" in reply.text
    clock.now += 200_000_000
    assert stage.data(session()) is None
    assert stage.data(session()) is not None
    clock.now += 600_000_000
    assert all(stage.data(session()) is None for _ in range(3))


def test_connect_check_takes_nothing() -> None:
    stage, store, _ = make_stage({"client_ip": {"messages": 1, "per": "1h"}, "check_at_connect": True})
    assert stage.connect(session().connection) is None
    assert stage.connect(session().connection) is None
    assert len(store) == 0
    assert stage.data(session()) is None
    reply = stage.connect(session().connection)
    assert reply is not None and reply.code == "451"


def test_local_fallback_is_logged_in_the_message_facts(caplog: pytest.LogCaptureFixture) -> None:
    s = parse_config({"ratelimit": LIMITS}).feature("ratelimit")

    def dead() -> LocalBuckets:
        raise ConnectionError("refused")

    stage = RateLimitStage(s, Limiter(dead, LocalBuckets()))
    sess = session(AUTH)
    with caplog.at_level(logging.WARNING, "quorum.ratelimit"):
        assert stage.data(sess) is None
    found = stage.examine(sess, None, 0.0)  # type: ignore[arg-type]
    assert found is not None and found.log == {"ratelimit": "local"}
    assert "fail open" in caplog.text


def test_feature_builds_the_stage() -> None:
    config = parse_config({"redis": {"url": "redis://127.0.0.1:1/0"}, "ratelimit": LIMITS})
    stages = [st for f in FEATURES for st in f.build(config)]
    assert [st.name for st in stages if st.name != "rules"] == ["ratelimit"]  # rules: always (tenants bring theirs)
    for st in stages:
        st.close()
