"""A local LRU in front of Redis; one `MGET` per message for all of its keys, writes pipelined.

Redis keys share one hash tag, so on a Cluster every lookup of a message is one slot and one round
trip (the cache lives on one master: it is small and disposable). Redis down → the local LRU only,
retried after a backoff; a cache never blocks or fails a scan.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

log = logging.getLogger("quorum.verdictcache")

BACKOFF = 5.0


class VerdictStore:
    def __init__(self, client_factory: Callable[[], Any] | None, ttl: float, local_entries: int, prefix: str) -> None:
        self.ttl = ttl
        self.prefix = prefix + "{vc}:"
        self.local_entries = local_entries
        self._local: OrderedDict[str, tuple[float, str]] = OrderedDict()
        self._lock = threading.Lock()
        self._factory = client_factory
        self._client: Any = None
        self._down_until = 0.0
        self.round_trips = 0

    def get_many(self, keys: list[str]) -> dict[str, str]:
        """Known entries among `keys` (value: "clean" or "infected:NAME")."""
        found: dict[str, str] = {}
        now = time.monotonic()
        with self._lock:
            for key in keys:
                entry = self._local.get(key)
                if entry is not None and entry[0] > now:
                    self._local.move_to_end(key)
                    found[key] = entry[1]
        missing = [k for k in keys if k not in found]
        client = self._redis() if missing else None
        if client is not None:
            try:
                self.round_trips += 1
                values = client.mget([self.prefix + k for k in missing])
            except Exception as exc:  # noqa: BLE001
                self._failed(exc)
                return found
            for key, value in zip(missing, values, strict=True):
                if value is not None:
                    text = value.decode() if isinstance(value, bytes) else str(value)
                    found[key] = text
                    self._remember(key, text)
        return found

    def put_many(self, entries: dict[str, str]) -> None:
        if not entries:
            return
        for key, value in entries.items():
            self._remember(key, value)
        client = self._redis()
        if client is None:
            return
        try:
            pipe = client.pipeline(transaction=False)
            for key, value in entries.items():
                pipe.set(self.prefix + key, value, ex=max(1, int(self.ttl)))
            pipe.execute()
        except Exception as exc:  # noqa: BLE001
            self._failed(exc)

    def _remember(self, key: str, value: str) -> None:
        if self.local_entries <= 0:
            return
        with self._lock:
            self._local[key] = (time.monotonic() + self.ttl, value)
            self._local.move_to_end(key)
            while len(self._local) > self.local_entries:
                self._local.popitem(last=False)

    def _redis(self) -> Any:
        if self._factory is None or time.monotonic() < self._down_until:
            return None
        if self._client is None:
            try:
                self._client = self._factory()
            except Exception as exc:  # noqa: BLE001
                self._failed(exc)
                return None
        return self._client

    def _failed(self, exc: Exception) -> None:
        if time.monotonic() >= self._down_until:
            log.warning("verdict cache: Redis unavailable (%s); local cache only for %.0fs", exc, BACKOFF)
        self._down_until = time.monotonic() + BACKOFF
        self._client = None

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except Exception:  # noqa: BLE001
                log.debug("closing the verdict cache's Redis client failed", exc_info=True)
