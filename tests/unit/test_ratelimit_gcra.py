"""Bucket arithmetic against a reference model, with an injected clock (no sleeping).

The model is a token bucket written independently of the GCRA code: each bucket holds up to
`limit * T` microseconds of credit, refills one microsecond per microsecond, a unit costs T.
`replay` is shared with the integration test that runs the same scenarios through script.lua
on a real Redis.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from quorum.ratelimit.backend import Answer, Backend
from quorum.ratelimit.buckets import Charge
from quorum.ratelimit.fallback import LocalBuckets
from quorum.ratelimit.settings import Rule

EPOCH_US = 1_700_000_000_000_000  # realistic magnitudes: the script does its arithmetic in doubles


class Clock:
    def __init__(self, now: int = EPOCH_US) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


@dataclass(frozen=True)
class Spec:
    limit: int
    interval: int


def charge(key: str, spec: Spec, cost: int) -> Charge:
    # Rule only labels the charge here: the arithmetic uses the exact interval below.
    rule = Rule("messages", spec.limit, spec.limit * spec.interval / 1e6)
    return _ExactCharge("sender_domain", key, rule, key, cost, exact_interval=spec.interval)


@dataclass(frozen=True)
class _ExactCharge(Charge):
    exact_interval: int = 1

    @property
    def interval(self) -> int:
        return self.exact_interval


class Model:
    """Token bucket: credit in microseconds, capped at limit * T."""

    def __init__(self, specs: dict[str, Spec]) -> None:
        self.specs = specs
        self.credit = {k: s.limit * s.interval for k, s in specs.items()}

    def advance(self, dt: int) -> None:
        for k, s in self.specs.items():
            self.credit[k] = min(s.limit * s.interval, self.credit[k] + dt)

    def ask(self, op: str, items: list[tuple[str, int]]) -> Answer:
        waits = [cost * self.specs[k].interval - self.credit[k] for k, cost in items]
        worst = max(waits, default=0)
        if worst > 0:
            return Answer(False, waits.index(worst), worst)
        if op == "reserve":
            for k, cost in items:
                self.credit[k] -= cost * self.specs[k].interval
        return Answer(True)

    def release(self, items: list[tuple[str, int]]) -> None:
        for k, cost in items:
            s = self.specs[k]
            self.credit[k] = min(s.limit * s.interval, self.credit[k] + cost * s.interval)

    def tat(self, key: str, now: int) -> int:
        s = self.specs[key]
        debt = s.limit * s.interval - self.credit[key]
        return now + debt if debt > 0 else 0


INTERVALS = st.sampled_from([1, 3, 7, 1000, 16_667, 514_285_714, 7_200_000_000])
SPECS = st.lists(st.builds(Spec, st.integers(1, 6), INTERVALS), min_size=1, max_size=3)
DT = st.one_of(st.integers(0, 20), st.integers(0, 20_000), st.integers(0, 30_000_000_000))


@st.composite
def scenarios(draw: Any) -> tuple[list[Spec], list[tuple[Any, ...]]]:
    specs = draw(SPECS)
    keys = list(range(len(specs)))
    ops: list[tuple[Any, ...]] = []
    for _ in range(draw(st.integers(1, 40))):
        kind = draw(st.sampled_from(["advance", "reserve", "reserve", "reserve", "check", "release"]))
        if kind == "advance":
            ops.append(("advance", draw(DT)))
        elif kind == "release":
            ops.append(("release", draw(st.integers(0, 1000))))
        else:
            chosen = draw(st.lists(st.sampled_from(keys), min_size=1, max_size=len(keys), unique=True))
            ops.append((kind, [(i, draw(st.integers(1, specs[i].limit + 1))) for i in chosen]))
    return specs, ops


def replay(backend: Backend, clock: Clock, specs: list[Spec], ops: list[tuple[Any, ...]], prefix: str = "k") -> None:
    """Run `ops` on `backend` and on the model; every answer and every bucket must agree."""
    names = {i: f"{prefix}{i}" for i in range(len(specs))}
    model = Model({names[i]: s for i, s in enumerate(specs)})
    by_name = {names[i]: s for i, s in enumerate(specs)}
    admitted: list[list[tuple[str, int]]] = []
    for step, op in enumerate(ops):
        if op[0] == "advance":
            clock.now += op[1]
            model.advance(op[1])
        elif op[0] == "release":
            if admitted:
                items = admitted.pop(op[1] % len(admitted))
                backend.run("release", [charge(k, by_name[k], c) for k, c in items])
                model.release(items)
        else:
            items = [(names[i], cost) for i, cost in op[1]]
            got = backend.run(op[0], [charge(k, by_name[k], c) for k, c in items])
            want = model.ask(op[0], items)
            assert got == want, f"step {step} {op}: got {got}, model {want}"
            if got.admitted and op[0] == "reserve":
                admitted.append(items)
        now, tats = backend.peek(list(by_name))
        assert now == clock.now
        assert [t if t > now else 0 for t in tats] == [model.tat(k, now) for k in by_name], f"after step {step} {op}"


@settings(max_examples=300, deadline=None)
@given(scenarios())
def test_local_buckets_match_the_model(scenario: tuple[list[Spec], list[tuple[Any, ...]]]) -> None:
    clock = Clock()
    replay(LocalBuckets(clock), clock, *scenario)


@given(st.integers(1, 50), INTERVALS)
def test_exact_boundary_from_empty(limit: int, interval: int) -> None:
    clock = Clock()
    buckets = LocalBuckets(clock)
    one = [charge("b", Spec(limit, interval), 1)]
    assert all(buckets.run("reserve", one).admitted for _ in range(limit))
    refused = buckets.run("reserve", one)
    assert refused == Answer(False, 0, interval)  # the next unit frees up after exactly T


@given(SPECS, st.lists(st.tuples(st.integers(0, 2), st.integers(1, 3), DT), max_size=60))
def test_never_more_than_limit_plus_refill(specs: list[Spec], steps: list[tuple[int, int, int]]) -> None:
    """Whatever the arrival pattern, a bucket admits at most limit + elapsed / T units."""
    clock = Clock()
    buckets = LocalBuckets(clock)
    taken = [0] * len(specs)
    for idx, cost, dt in steps:
        clock.now += dt
        i = idx % len(specs)
        s = specs[i]
        if buckets.run("reserve", [charge(f"b{i}", s, min(cost, s.limit))]).admitted:
            taken[i] += min(cost, s.limit)
        assert taken[i] <= s.limit + (clock.now - EPOCH_US) // s.interval


@given(st.integers(1, 8), INTERVALS, st.integers(1, 8), DT)
def test_retry_after_is_exact(limit: int, interval: int, cost: int, dt: int) -> None:
    clock = Clock()
    buckets = LocalBuckets(clock)
    spec = Spec(limit, interval)
    cost = min(cost, limit)
    for _ in range(limit):
        buckets.run("reserve", [charge("b", spec, 1)])
    clock.now += dt
    answer = buckets.run("check", [charge("b", spec, cost)])
    if answer.admitted:
        return
    clock.now += answer.wait_us - 1
    assert not buckets.run("check", [charge("b", spec, cost)]).admitted
    clock.now += 1
    assert buckets.run("reserve", [charge("b", spec, cost)]).admitted


def test_all_or_none() -> None:
    clock = Clock()
    buckets = LocalBuckets(clock)
    roomy, tight = Spec(10, 1000), Spec(1, 1000)
    assert buckets.run("reserve", [charge("tight", tight, 1)]).admitted
    refused = buckets.run("reserve", [charge("roomy", roomy, 1), charge("tight", tight, 1)])
    assert refused == Answer(False, 1, 1000)
    assert buckets.peek(["roomy"])[1] == [0]  # nothing was taken from the bucket that had room


def test_release_gives_back_and_never_below_empty() -> None:
    clock = Clock()
    buckets = LocalBuckets(clock)
    spec = Spec(2, 1000)
    one = [charge("b", spec, 1)]
    buckets.run("reserve", one)
    buckets.run("reserve", one)
    assert not buckets.run("check", one).admitted
    buckets.run("release", one)
    assert buckets.run("check", one).admitted
    buckets.run("release", one)
    buckets.run("release", one)  # more than was taken: the bucket is just empty
    assert len(buckets) == 0
    assert all(buckets.run("reserve", one).admitted for _ in range(2))
    assert not buckets.run("reserve", one).admitted


def test_local_memory_stays_bounded() -> None:
    clock = Clock()
    buckets = LocalBuckets(clock, max_keys=100)
    spec = Spec(5, 1_000_000)
    for i in range(5000):
        buckets.run("reserve", [charge(f"ip{i}", spec, 1)])
        clock.now += 10
    assert len(buckets) <= 100 + 1
