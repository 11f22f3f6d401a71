"""Fail-open behaviour: fallback, backoff, one probe at a time, warnings at most once per interval."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence

import pytest
import redis

from quorum.ratelimit.backend import Answer
from quorum.ratelimit.buckets import Charge
from quorum.ratelimit.fallback import LocalBuckets
from quorum.ratelimit.limiter import Limiter, Reservation
from quorum.ratelimit.settings import Rule

RULE = Rule("messages", 2, 1.0)


def charges(key: str = "k") -> list[Charge]:
    return [Charge("sender_domain", "example.com", RULE, key, 1)]


class Ticker:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FlakyBackend:
    """A working in-memory backend that can be switched to raise like a dead Redis."""

    name = "fake"

    def __init__(self) -> None:
        self.buckets = LocalBuckets()
        self.down = False
        self.calls: list[str] = []
        self.closed = False

    def run(self, op: str, items: Sequence[Charge]) -> Answer:
        self.calls.append(op)
        if self.down:
            raise redis.ConnectionError("Connection refused")
        return self.buckets.run(op, items)

    def peek(self, keys: Sequence[str]) -> tuple[int, list[int]]:
        return self.buckets.peek(keys)

    def delete(self, keys: Sequence[str]) -> int:
        return self.buckets.delete(keys)

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def ticker() -> Ticker:
    return Ticker()


@pytest.fixture
def backend() -> FlakyBackend:
    return FlakyBackend()


@pytest.fixture
def limiter(backend: FlakyBackend, ticker: Ticker) -> Limiter:
    return Limiter(lambda: backend, LocalBuckets(), backoff=1.0, warn_interval=60.0, clock=ticker)


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "quorum.ratelimit" and r.levelno == logging.WARNING]


def test_healthy_redis_counts_there(limiter: Limiter, backend: FlakyBackend) -> None:
    assert limiter.reserve(charges()).source == "redis"
    assert limiter.reserve(charges()).admitted
    refused = limiter.reserve(charges())
    assert (
        not refused.admitted and refused.refused == charges()[0] and refused.retry_after == pytest.approx(0.5, abs=0.01)
    )
    assert backend.calls == ["reserve"] * 3


def test_no_charges_no_call(limiter: Limiter, backend: FlakyBackend) -> None:
    assert limiter.reserve([]).admitted and backend.calls == []


def test_fail_open_backoff_probe_and_resume(
    limiter: Limiter, backend: FlakyBackend, ticker: Ticker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, "quorum.ratelimit")
    backend.down = True
    first = limiter.reserve(charges())
    assert first.admitted and first.source == "local" and limiter.degraded
    assert len(warnings(caplog)) == 1 and "fail open" in warnings(caplog)[0]
    # Within the backoff Redis is not tried at all: a dead Redis costs one timeout per period.
    for _ in range(5):
        assert limiter.reserve(charges("other")).source == "local"
    assert backend.calls == ["reserve"]
    # The local limiter still limits.
    assert not limiter.reserve(charges()).admitted or not limiter.reserve(charges()).admitted
    # After the backoff one probe; it fails again, no new warning within warn_interval.
    ticker.now += 1.0
    assert limiter.reserve(charges("x")).source == "local"
    assert backend.calls == ["reserve", "reserve"]
    assert len(warnings(caplog)) == 1
    # A later failure after warn_interval warns again.
    ticker.now += 61
    limiter.reserve(charges("y"))
    assert len(warnings(caplog)) == 2
    # Redis back: the next probe succeeds and counting resumes there.
    backend.down = False
    ticker.now += 1.0
    assert limiter.reserve(charges("z")).source == "redis"
    assert not limiter.degraded
    assert "reachable again" in warnings(caplog)[-1]
    assert limiter.reserve(charges("z")).source == "redis"


def test_release_goes_where_the_reservation_was_made(limiter: Limiter, backend: FlakyBackend, ticker: Ticker) -> None:
    local = Reservation(tuple(charges()), "local")
    limiter.fallback.run("reserve", local.charges)
    limiter.release(local)
    assert len(limiter.fallback) == 0 and backend.calls == []
    remote = limiter.reserve(charges()).reservation
    assert remote is not None and remote.source == "redis"
    limiter.release(remote)
    assert backend.calls == ["reserve", "release"]
    assert backend.buckets.peek(["k"])[1] == [0]
    # Redis down at give-back time: the reservation drains with time, nothing raises.
    remote = limiter.reserve(charges()).reservation
    assert remote is not None
    backend.down = True
    limiter.release(remote)
    limiter.release(remote)  # backing off: not even tried
    assert backend.calls == ["reserve", "release", "reserve", "release"]


def test_connect_failure_is_retried_after_backoff(ticker: Ticker, caplog: pytest.LogCaptureFixture) -> None:
    attempts: list[int] = []
    backend = FlakyBackend()

    def connect() -> FlakyBackend:
        attempts.append(1)
        if len(attempts) == 1:
            raise redis.ConnectionError("no cluster node answered")
        return backend

    limiter = Limiter(connect, LocalBuckets(), backoff=1.0, clock=ticker)
    assert limiter.reserve(charges()).source == "local"
    assert limiter.reserve(charges()).source == "local"
    assert len(attempts) == 1
    ticker.now += 1.5
    assert limiter.reserve(charges()).source == "redis"
    limiter.close()
    assert backend.closed


def test_one_probe_at_a_time() -> None:
    """While Redis hangs, only one caller per backoff period waits for it; the others count locally."""
    in_flight: list[int] = []
    peak = [0]
    lock = threading.Lock()

    class Hanging(FlakyBackend):
        def run(self, op: str, items: Sequence[Charge]) -> Answer:
            with lock:
                in_flight.append(1)
                peak[0] = max(peak[0], len(in_flight))
            time.sleep(0.05)
            with lock:
                in_flight.pop()
            raise redis.TimeoutError("Timeout reading from socket")

    limiter = Limiter(Hanging, LocalBuckets(), backoff=0.2)
    limiter.reserve(charges())  # the first failure: backing off from now on
    time.sleep(0.25)  # the backoff is over: the next caller probes, everyone else counts locally
    barrier = threading.Barrier(16)

    def send(i: int) -> None:
        barrier.wait()
        limiter.reserve(charges(f"t{i}"))

    threads = [threading.Thread(target=send, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert peak[0] == 1
    assert limiter.failures == 2


def test_one_client_cannot_use_up_a_recipient_domain() -> None:
    """Client A floods d.test: refused after its share (2 of 10), all-or-none, so the domain's
    bucket keeps 8 for everyone else; B, C, D each get their own share."""
    from quorum.assembly import parse_config
    from quorum.message import Envelope
    from quorum.ratelimit.buckets import Planner
    from quorum.ratelimit.settings import RateLimitSettings

    table = {"recipient_domain": {"messages": 10, "per": "1h"}, "recipient_domain_share": 0.2}
    s = parse_config({"ratelimit": table}).feature("ratelimit")
    assert isinstance(s, RateLimitSettings)
    planner = Planner(s)
    limiter = Limiter(lambda: LocalBuckets(clock=lambda: 10**12), LocalBuckets(), backoff=1.0)

    def one(ip: str) -> bool:
        env = Envelope(client_ip=ip, sender="x@spam.test", recipients=["u@d.test"])
        decision = limiter.reserve(planner.message(env, sender_trusted=False))
        if not decision.admitted:
            assert decision.refused is not None
            assert decision.refused.label in (
                f"recipient_domain d.test, share of client_ip {ip}",
                "recipient_domain d.test",
            )
        return decision.admitted

    assert [one("192.0.2.1") for _ in range(50)] == [True, True] + [False] * 48
    assert [one("192.0.2.2") for _ in range(3)] == [True, True, False]
    assert [one(f"192.0.2.{10 + i}") for i in range(7)] == [True] * 6 + [False]  # the domain's own 10
