"""Concurrency slots in Redis (slots.lua): take all-or-none, renew, give back; one script call each.

Keys: `{key_prefix}{slots}:{kind}:{sha256 of the subject}`: a subject of any shape (`*`, `{}`,
newlines, 10 KB) becomes 64 hex digits, so no account can reach another's key; the `{slots}` hash
tag puts every flow key in one Redis Cluster slot, so one call takes a message's slots atomically
on a Cluster too (the flow keys are small: one sorted set per subject in flight).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

from redis.exceptions import NoScriptError

SCRIPT = resources.files("quorum.flow").joinpath("slots.lua").read_text(encoding="utf-8")
SHA = hashlib.sha1(SCRIPT.encode()).hexdigest()


@dataclass(frozen=True)
class Subject:
    kind: str  # auth_user | sender | sender_domain | client_ip | recipient_domain
    value: str  # as shown in replies and logs
    limit: int

    def key(self, prefix: str) -> str:
        digest = hashlib.sha256(self.value.encode("utf-8", "surrogateescape")).hexdigest()
        return f"{prefix}{{slots}}:{self.kind}:{digest}"


@dataclass(frozen=True)
class Taken:
    admitted: bool
    refused: Subject | None = None
    held: int = 0  # slots the refusing subject held


class Slots:
    def __init__(self, client: Callable[[], Any], prefix: str, lease: float) -> None:
        self._factory = client
        self._client: Any = None
        self.prefix = prefix
        self.lease_ms = max(1, int(lease * 1000))

    def client(self) -> Any:
        if self._client is None:
            self._client = self._factory()
        return self._client

    def _eval(self, keys: Sequence[str], args: Sequence[str | int]) -> Any:
        client = self.client()
        try:
            return client.evalsha(SHA, len(keys), *keys, *args)
        except NoScriptError:
            return client.eval(SCRIPT, len(keys), *keys, *args)

    def take(self, slot: str, subjects: Sequence[Subject]) -> Taken:
        keys = [s.key(self.prefix) for s in subjects]
        reply = self._eval(keys, ["take", slot, self.lease_ms, *(s.limit for s in subjects)])
        if int(reply[0]) == 1:
            return Taken(True)
        return Taken(False, subjects[int(reply[1]) - 1], int(reply[2]))

    def renew(self, slot: str, keys: Sequence[str]) -> int:
        return int(self._eval(keys, ["renew", slot, self.lease_ms])[0]) if keys else 0

    def give(self, slot: str, keys: Sequence[str]) -> int:
        return int(self._eval(keys, ["give", slot, self.lease_ms])[0]) if keys else 0

    def held(self, subject: Subject) -> int:
        """Slots `subject` holds now (live leases), for `quorum flow show` and the tests."""
        client = self.client()
        key = subject.key(self.prefix)
        now_s, now_us = client.time()
        return int(client.zcount(key, f"({int(now_s) * 1000 + int(now_us) // 1000}", "+inf"))

    def close(self) -> None:
        if self._client is not None:
            try:
                self._client.close()
            except Exception:  # noqa: BLE001
                pass
