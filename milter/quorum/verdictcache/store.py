"""A local LRU in front of Redis; one `MGET` per message for all of its keys, writes pipelined.

Redis keys share one hash tag, so on a Cluster every lookup of a message is one slot and one round
trip (the cache lives on one master: it is small and disposable). Redis down → the local LRU only,
retried after a backoff; a cache never blocks or fails a scan.

Whoever can write to Redis could otherwise whitelist malware (a `clean` entry under its hash), so
every entry in Redis carries an HMAC-SHA256 over its full Redis key and its value, with a key that
only the gateways have (`[redis] hmac_key_file`): `v1:<mac>:<value>`. An entry whose MAC does not
verify (forged, moved from another key, written with another key, or unsigned) is ignored: the
content is scanned as if nothing were cached, the entry is then overwritten, and it is counted
(`quorum_verdict_cache_entries_total{result="forged"}`) and logged (once a minute at most). Without a
key nothing is read from or written to Redis: the cache is this process's LRU only.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from cachetools import TTLCache
from prometheus_client import Counter

from quorum.redisconn import RedisHealth

log = logging.getLogger("quorum.verdictcache")

BACKOFF = 5.0
FORGED_LOG_INTERVAL = 60.0
FORMAT = "v1"

ENTRIES = Counter(
    "quorum_verdict_cache_entries_total",
    "Verdict-cache lookups by key: local (LRU hit), redis (verified Redis hit), forged (a Redis entry "
    "whose HMAC did not verify: ignored, the content is scanned), miss",
    ["result"],
)


def entry_key(master: bytes) -> bytes:
    """The verdict cache's own key, derived from `[redis] hmac_key_file` (other uses get others)."""
    return hmac.new(master, b"quorum verdict-cache v1", hashlib.sha256).digest()


def sign(key: bytes, redis_key: str, value: str) -> str:
    mac = hmac.new(key, redis_key.encode() + b"\0" + value.encode(), hashlib.sha256).hexdigest()
    return f"{FORMAT}:{mac}:{value}"


def verify(key: bytes, redis_key: str, stored: str) -> str | None:
    """The value of a signed entry, or None when it is not one this key signed for this Redis key."""
    form, sep, rest = stored.partition(":")
    mac, sep2, value = rest.partition(":")
    if form != FORMAT or not sep or not sep2 or len(mac) != 64:
        return None
    expected = hmac.new(key, redis_key.encode() + b"\0" + value.encode(), hashlib.sha256).hexdigest()
    return value if hmac.compare_digest(mac, expected) else None


class VerdictStore:
    def __init__(
        self,
        client_factory: Callable[[], Any] | None,
        ttl: float,
        local_entries: int,
        prefix: str,
        hmac_key: bytes | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`hmac_key` (see entry_key) signs and verifies what goes through Redis; None: no Redis."""
        self.ttl = ttl
        self.prefix = prefix + "{vc}:"
        self.local_entries = local_entries
        # LRU bounded to `local_entries`, each entry for `ttl` seconds; not thread-safe: under _lock
        self._local: TTLCache[str, str] = TTLCache(max(1, local_entries), ttl, timer=clock)
        self._lock = threading.Lock()
        self._key = hmac_key
        self._factory = client_factory if hmac_key is not None else None
        self._client: Any = None
        self.health = RedisHealth(
            "verdict_cache",
            log,
            backoff=BACKOFF,
            clock=clock,
            down="verdict cache: Redis unavailable ({reason}); local cache only, retrying every {backoff:.0f}s",
            up="verdict cache: Redis reachable again",
        )
        self.round_trips = 0
        self.forged = 0
        self._forged_logged = -FORGED_LOG_INTERVAL

    def get_many(self, keys: list[str]) -> dict[str, str]:
        """Known entries among `keys` (value: "clean" or "infected:NAME")."""
        found: dict[str, str] = {}
        with self._lock:
            for key in keys:
                value = self._local.get(key)  # None when expired; marks it recently used
                if value is not None:
                    found[key] = value
        if found:
            ENTRIES.labels("local").inc(len(found))
        missing = [k for k in keys if k not in found]
        client = self._redis() if missing else None
        if client is None or self._key is None:
            ENTRIES.labels("miss").inc(len(missing))
            return found
        try:
            self.round_trips += 1
            values = client.mget([self.prefix + k for k in missing])
        except Exception as exc:  # noqa: BLE001
            self._failed(exc)
            ENTRIES.labels("miss").inc(len(missing))
            return found
        self.health.ok()
        forged: list[str] = []
        for key, value in zip(missing, values, strict=True):
            if value is None:
                ENTRIES.labels("miss").inc()
                continue
            try:
                stored = value.decode() if isinstance(value, bytes) else str(value)
            except UnicodeDecodeError:
                stored = ""
            text = verify(self._key, self.prefix + key, stored)
            if text is None:
                forged.append(key)
                continue
            ENTRIES.labels("redis").inc()
            found[key] = text
            self._remember(key, text)
        if forged:
            self._forged(forged)
        return found

    def _forged(self, keys: list[str]) -> None:
        ENTRIES.labels("forged").inc(len(keys))
        with self._lock:
            self.forged += len(keys)
            now = time.monotonic()
            if now - self._forged_logged < FORGED_LOG_INTERVAL:
                return
            self._forged_logged = now
            total = self.forged
        log.error(
            "verdict cache: ignored %d Redis entr%s whose HMAC does not verify (e.g. %s%s; %d so far): "
            "forged, written with another hmac_key_file, or from an older Quorum; the content is scanned. "
            "If not an upgrade, someone with write access to Redis tried to plant a verdict",
            len(keys),
            "y" if len(keys) == 1 else "ies",
            self.prefix,
            keys[0],
            total,
        )

    def put_many(self, entries: dict[str, str]) -> None:
        if not entries:
            return
        for key, value in entries.items():
            self._remember(key, value)
        client = self._redis()
        if client is None or self._key is None:
            return
        try:
            pipe = client.pipeline(transaction=False)
            for key, value in entries.items():
                redis_key = self.prefix + key
                pipe.set(redis_key, sign(self._key, redis_key, value), ex=max(1, int(self.ttl)))
            pipe.execute()
        except Exception as exc:  # noqa: BLE001
            self._failed(exc)
            return
        self.health.ok()

    def _remember(self, key: str, value: str) -> None:
        if self.local_entries <= 0:
            return
        with self._lock:
            self._local[key] = value  # evicts the least recently used entry when full

    def _redis(self) -> Any:
        if self._factory is None or not self.health.available():
            return None
        if self._client is None:
            try:
                self._client = self._factory()
            except Exception as exc:  # noqa: BLE001
                self._failed(exc)
                return None
        return self._client

    def _failed(self, exc: Exception) -> None:
        self._client = None  # connect again after the backoff
        self.health.failed(exc)

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except Exception:  # noqa: BLE001
                log.debug("closing the verdict cache's Redis client failed", exc_info=True)
