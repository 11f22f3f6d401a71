"""The daily cap's in-process counting, and the fall back to it when Redis is unreachable."""

from __future__ import annotations

import logging

import pytest

from quorum.notify.cap import DailyCap

DAY = 86400.0


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class DeadRedis:
    """A client whose every command fails like a Redis that is down."""

    calls = 0

    def pipeline(self, transaction: bool = True) -> DeadRedis:
        return self

    def incr(self, key: str) -> None:
        pass

    def expire(self, key: str, ttl: int) -> None:
        pass

    def execute(self) -> list[int]:
        DeadRedis.calls += 1
        raise ConnectionError("Connection refused")

    def close(self) -> None:
        pass


def test_cap_counts_per_address_per_day() -> None:
    clock = Clock()
    cap = DailyCap(2, clock=clock)
    assert [cap.allow("a@example.com") for _ in range(3)] == [True, True, False]
    assert cap.allow("b@example.com")
    assert not cap.allow("A@EXAMPLE.COM")  # addresses are counted case-insensitively
    clock.now += DAY
    assert cap.allow("a@example.com")


def test_zero_means_unlimited() -> None:
    cap = DailyCap(0)
    assert all(cap.allow("a@example.com") for _ in range(1000))


def test_redis_down_falls_back_to_process_counting_and_warns_once(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    DeadRedis.calls = 0
    cap = DailyCap(2, DeadRedis, retry_after=30.0, clock=clock)
    with caplog.at_level(logging.INFO, "quorum.notify"):
        answers = [cap.allow("a@example.com") for _ in range(3)]
        clock.now += 31  # Redis is tried again after retry_after, still down: no second warning
        answers.append(cap.allow("a@example.com"))
    assert answers == [True, True, False, False]
    assert DeadRedis.calls == 2  # one try, then in-process counting until retry_after passed
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "Redis is unreachable" in warnings[0].getMessage()


def test_a_factory_that_raises_is_a_redis_outage() -> None:
    def broken() -> object:
        raise OSError("no route")

    cap = DailyCap(1, broken, clock=Clock())
    assert cap.allow("a@example.com")
    assert not cap.allow("a@example.com")
