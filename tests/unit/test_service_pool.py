"""quorum.service.pool: the milter pokes its own socket only while a callback runs long."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator

import pytest

from quorum.service.pool import Nudger


@pytest.fixture
def nudger() -> Iterator[tuple[Nudger, list[float]]]:
    pokes: list[float] = []
    n = Nudger(after=0.1, every=0.2)
    n.start(lambda: pokes.append(time.monotonic()))
    yield n, pokes
    n.stop()


def test_short_callbacks_never_poke(nudger: tuple[Nudger, list[float]]) -> None:
    n, pokes = nudger
    quick = n.watched(lambda x: x + 1)
    for i in range(200):
        assert quick(i) == i + 1
    time.sleep(0.3)
    assert pokes == []


def test_a_long_callback_pokes_after_a_while_then_every_period_until_it_returns(
    nudger: tuple[Nudger, list[float]],
) -> None:
    n, pokes = nudger
    release = threading.Event()
    started = time.monotonic()
    t = threading.Thread(target=n.watched(release.wait), args=(5,))
    t.start()
    time.sleep(0.75)
    release.set()
    t.join()
    count = len(pokes)
    assert 2 <= count <= 5, pokes  # first after 0.1 s, then one per 0.2 s
    assert pokes[0] - started >= 0.09
    assert all(b - a >= 0.19 for a, b in itertools.pairwise(pokes)), pokes
    time.sleep(0.4)
    assert len(pokes) == count  # nothing in flight: quiet again


def test_an_exception_still_ends_the_callback(nudger: tuple[Nudger, list[float]]) -> None:
    n, pokes = nudger

    def boom() -> None:
        raise ValueError("x")

    with pytest.raises(ValueError):
        n.watched(boom)()
    assert n.due(time.monotonic(), float("-inf")) == -1.0
    time.sleep(0.3)
    assert pokes == []


def test_a_failing_poke_is_retried_and_stop_ends_the_thread() -> None:
    calls: list[int] = []

    def poke() -> None:
        calls.append(1)
        raise OSError("refused")

    n = Nudger(after=0.05, every=0.05)
    n.start(poke)
    token = n.enter()
    time.sleep(0.3)
    n.leave(token)
    n.stop()
    assert len(calls) >= 2
    assert n._thread is None
