"""The bucket arithmetic of script.lua in Python: the in-process limiter used while Redis is away.

Per process and forgotten on restart, so only approximate across processes and hosts; its clock
is injectable (microseconds) so tests can drive it without sleeping.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

from quorum.ratelimit.backend import OPS, Answer
from quorum.ratelimit.buckets import Charge


def monotonic_us() -> int:
    return time.monotonic_ns() // 1000


class LocalBuckets:
    """GCRA buckets in a dict, one lock; expired buckets are pruned so memory stays bounded."""

    name = "local"

    def __init__(self, clock: Callable[[], int] = monotonic_us, max_keys: int = 100_000) -> None:
        self.clock = clock
        self.max_keys = max_keys
        self._tats: dict[str, int] = {}
        self._lock = threading.Lock()
        self._ops = 0

    def __len__(self) -> int:
        return len(self._tats)

    def run(self, op: str, charges: Sequence[Charge]) -> Answer:
        if op not in OPS:
            raise ValueError(f"unknown op {op!r}")
        with self._lock:
            now = self.clock()
            if op == "release":
                for c in charges:
                    if c.key in self._tats:
                        self._store(c.key, self._tats[c.key] - c.cost * c.interval, now)
                return Answer(True)
            new = []
            worst, wait = -1, 0
            for i, c in enumerate(charges):
                tat = max(self._tats.get(c.key, now), now) + c.cost * c.interval
                over = tat - now - c.limit * c.interval
                if over > wait:
                    worst, wait = i, over
                new.append(tat)
            if worst >= 0:
                return Answer(False, worst, wait)
            if op == "reserve":
                for c, tat in zip(charges, new, strict=True):
                    self._store(c.key, tat, now)
                self._maybe_prune(now)
            return Answer(True)

    def peek(self, keys: Sequence[str]) -> tuple[int, list[int]]:
        with self._lock:
            return self.clock(), [self._tats.get(k, 0) for k in keys]

    def delete(self, keys: Sequence[str]) -> int:
        with self._lock:
            return sum(self._tats.pop(k, None) is not None for k in keys)

    def close(self) -> None:
        return None

    def _store(self, key: str, tat: int, now: int) -> None:
        if tat <= now:
            self._tats.pop(key, None)
        else:
            self._tats[key] = tat

    def _maybe_prune(self, now: int) -> None:
        self._ops += 1
        if self._ops % 1024 and len(self._tats) <= self.max_keys:
            return
        self._tats = {k: v for k, v in self._tats.items() if v > now}
        if len(self._tats) > self.max_keys:
            # Still too many live buckets (a flood of distinct IPs): forget them all rather than grow.
            self._tats.clear()
