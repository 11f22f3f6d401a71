"""The circuit breaker's state machine, driven by an injected clock."""

from __future__ import annotations

import threading

from quorum.pipeline.breaker import BreakerState, CircuitBreaker


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def breaker(failures: int = 3, cooldown: float = 30.0) -> tuple[CircuitBreaker, Clock]:
    clock = Clock()
    return CircuitBreaker(failures, cooldown, clock=clock), clock


def test_closed_until_n_consecutive_failures() -> None:
    b, _ = breaker(3)
    assert b.state is BreakerState.CLOSED and b.allow()
    assert b.failure() is BreakerState.CLOSED
    assert b.failure() is BreakerState.CLOSED
    assert b.allow()
    assert b.failure() is BreakerState.OPEN
    assert b.state is BreakerState.OPEN
    assert not b.allow()


def test_a_success_resets_the_count() -> None:
    b, _ = breaker(3)
    b.failure()
    b.failure()
    assert b.success() is BreakerState.CLOSED
    b.failure()
    b.failure()
    assert b.state is BreakerState.CLOSED  # 2 consecutive, not 4 in total
    assert b.failure() is BreakerState.OPEN


def test_open_skips_for_the_cooldown_then_lets_one_probe_through() -> None:
    b, clock = breaker(1, cooldown=30)
    b.failure()
    clock.advance(29.9)
    assert b.state is BreakerState.OPEN and not b.allow()
    clock.advance(0.1)
    assert b.state is BreakerState.HALF_OPEN
    assert b.allow()  # the probe
    assert not b.allow() and not b.allow()  # everybody else is still skipped while it is out
    assert b.state is BreakerState.HALF_OPEN


def test_probe_success_closes() -> None:
    b, clock = breaker(2, cooldown=10)
    b.failure()
    b.failure()
    clock.advance(10)
    assert b.allow()
    assert b.success() is BreakerState.CLOSED
    assert b.allow() and b.allow()
    assert b.failure() is BreakerState.CLOSED  # the count started again from zero


def test_probe_failure_reopens_for_a_full_cooldown() -> None:
    b, clock = breaker(5, cooldown=10)
    for _ in range(5):
        b.failure()
    clock.advance(10)
    assert b.allow()
    assert b.failure() is BreakerState.OPEN  # one failed probe is enough, not another 5
    clock.advance(9.9)
    assert not b.allow()
    clock.advance(0.1)
    assert b.allow()


def test_release_lets_another_probe_go() -> None:
    """A probe cancelled by an early exit said nothing about the engine: the next message probes."""
    b, clock = breaker(1, cooldown=5)
    b.failure()
    clock.advance(5)
    assert b.allow()
    assert not b.allow()
    b.release()
    assert b.state is BreakerState.HALF_OPEN
    assert b.allow()


def test_release_in_closed_state_changes_nothing() -> None:
    b, _ = breaker(2)
    b.failure()
    b.release()
    assert b.state is BreakerState.CLOSED
    assert b.failure() is BreakerState.OPEN


def test_one_probe_among_many_threads() -> None:
    b, clock = breaker(1, cooldown=1)
    b.failure()
    clock.advance(1)
    allowed: list[bool] = []
    lock = threading.Lock()
    start = threading.Barrier(16)

    def attempt() -> None:
        start.wait()
        ok = b.allow()
        with lock:
            allowed.append(ok)

    threads = [threading.Thread(target=attempt) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    assert sorted(allowed) == [False] * 15 + [True]
