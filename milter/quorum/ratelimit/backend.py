"""Where buckets live: the script call on one Redis (single server or Sentinel-managed master).

Every operation is one EVALSHA of script.lua; after NOSCRIPT (a restarted or flushed Redis) it
is sent once as EVAL, which runs it and caches it again, still one round trip.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, Protocol

import redis
from redis.exceptions import NoScriptError

from quorum.ratelimit.buckets import Charge

OPS = ("reserve", "check", "release")
SCRIPT = resources.files("quorum.ratelimit").joinpath("script.lua").read_text(encoding="utf-8")
SHA = hashlib.sha1(SCRIPT.encode()).hexdigest()


@dataclass(frozen=True)
class Answer:
    """`refused`: index of the charge that refused (the one that frees up last), -1 if admitted."""

    admitted: bool
    refused: int = -1
    wait_us: int = 0


class Backend(Protocol):
    name: str

    def run(self, op: str, charges: Sequence[Charge]) -> Answer: ...

    def peek(self, keys: Sequence[str]) -> tuple[int, list[int]]: ...

    def delete(self, keys: Sequence[str]) -> int: ...

    def close(self) -> None: ...


def script_call(op: str, charges: Sequence[Charge], now: str) -> tuple[list[str], list[str | int]]:
    """KEYS and ARGV of one script call (see script.lua)."""
    args: list[str | int] = [op, now]
    for c in charges:
        args += [c.interval, c.limit, c.cost]
    return [c.key for c in charges], args


def parse_answer(reply: Any) -> Answer:
    admitted, index, wait = int(reply[0]), int(reply[1]), int(reply[2])
    return Answer(bool(admitted), index - 1, wait)


class RedisBackend:
    """One Redis: `client` from `redis.Redis.from_url` or `Sentinel.master_for`.

    `clock` (microseconds) replaces the server's TIME: for the reference-model tests only.
    """

    name = "redis"

    def __init__(self, client: redis.Redis, clock: Callable[[], int] | None = None) -> None:
        self.client = client
        self.clock = clock

    def _now(self) -> str:
        return str(self.clock()) if self.clock is not None else ""

    def _eval(self, keys: Sequence[str], args: Sequence[str | int]) -> Any:
        try:
            return self.client.evalsha(SHA, len(keys), *keys, *args)
        except NoScriptError:
            return self.client.eval(SCRIPT, len(keys), *keys, *args)

    def run(self, op: str, charges: Sequence[Charge]) -> Answer:
        if op not in OPS:
            raise ValueError(f"unknown op {op!r}")
        return parse_answer(self._eval(*script_call(op, charges, self._now())))

    def peek(self, keys: Sequence[str]) -> tuple[int, list[int]]:
        reply = self._eval(keys, ["peek", self._now()])
        return int(reply[0]), [int(v) for v in reply[1:]]

    def delete(self, keys: Sequence[str]) -> int:
        return int(self.client.delete(*keys)) if keys else 0

    def close(self) -> None:
        self.client.close()
