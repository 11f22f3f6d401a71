"""The daily cap: at most N notices per notified address per UTC day.

Counted in Redis (one INCR+EXPIRE round trip per notice, shared by every Quorum process); while
Redis is unreachable the count is kept in this process (approximate, forgotten on restart), with
one warning a minute at most (quorum.redisconn.RedisHealth). It runs on the notifier's thread, never on the SMTP path.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from quorum.redisconn import RedisHealth

log = logging.getLogger("quorum.notify")

_KEY_TTL = 2 * 86400  # a day's counter outlives the day, whatever the clock skew between hosts


class DailyCap:
    """`allow(address)` counts one notice for `address` today and says whether it is within `limit`."""

    def __init__(
        self,
        limit: int,
        redis_factory: Callable[[], Any] | None = None,
        key_prefix: str = "quorum:notify:",
        retry_after: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.limit = limit
        self.key_prefix = key_prefix
        self.retry_after = retry_after
        self.clock = clock
        self._factory = redis_factory
        self._client: Any = None
        self.health = RedisHealth(
            "notify",
            log,
            backoff=retry_after,
            clock=clock,
            down="notify: daily cap counted in this process while Redis is unreachable: {reason}",
            up="notify: daily cap counted in Redis again",
        )
        self._local: dict[str, int] = {}
        self._local_day = ""
        self._lock = threading.Lock()

    def day(self) -> str:
        return time.strftime("%Y%m%d", time.gmtime(self.clock()))

    def key(self, address: str, day: str) -> str:
        return f"{self.key_prefix}cap:{day}:{address.lower()}"

    def allow(self, address: str) -> bool:
        if self.limit <= 0:
            return True
        day = self.day()
        count = self._count_redis(address, day)
        if count is None:
            count = self._count_local(address, day)
        return count <= self.limit

    def _count_redis(self, address: str, day: str) -> int | None:
        if self._factory is None or not self.health.available():
            return None
        key = self.key(address, day)
        try:
            if self._client is None:
                self._client = self._factory()
            pipe = self._client.pipeline(transaction=False)
            pipe.incr(key)
            pipe.expire(key, _KEY_TTL)
            count = int(pipe.execute()[0])
        except Exception as exc:  # redis errors, OSError, cluster slot-map failures: count locally
            self.health.failed(exc)
            return None
        self.health.ok()
        return count

    def _count_local(self, address: str, day: str) -> int:
        with self._lock:
            if day != self._local_day:
                self._local.clear()
                self._local_day = day
            key = address.lower()
            self._local[key] = self._local.get(key, 0) + 1
            return self._local[key]

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except Exception:  # closing a broken connection is best effort
                pass
