"""Outbound Message-IDs in Redis: one `SET key 1 EX ttl` per outbound message, one `EXISTS` per inbound bounce.

Keys are `PREFIX{sha256(normalised Message-ID)}`: fixed length whatever the sender wrote, and the
whole hash is the Cluster hash tag, so keys spread over all masters. The client comes from
`quorum.redisconn.connect` (single server, Sentinel-managed master or Cluster). Redis trouble costs
one short timeout and then `backoff` seconds without trying: the answer is None ("cannot tell").
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from quorum.backscatter.dsn import normalise
from quorum.redisconn import RedisHealth, RedisSettings, connect

log = logging.getLogger("quorum.backscatter")


class MessageIdStore:
    def __init__(
        self,
        client_factory: Callable[[], Any],
        ttl: float = 14 * 86400,
        prefix: str = "quorum:bs:mid:",
        backoff: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._factory = client_factory
        self._client: Any = None
        self.ttl = max(1, int(ttl))
        self.prefix = prefix
        self.health = RedisHealth(
            "backscatter",
            log,
            backoff=backoff,
            clock=clock,
            down="backscatter: Redis unavailable ({reason}); bounces go unchecked, retrying every {backoff:.0f}s",
        )
        self._lock = threading.Lock()

    def key(self, msgid: str) -> str | None:
        norm = normalise(msgid)
        if not norm:
            return None
        return f"{self.prefix}{{{hashlib.sha256(norm.encode('utf-8', 'surrogateescape')).hexdigest()[:40]}}}"

    def record(self, msgid: str) -> bool | None:
        """Remember an outbound Message-ID for `ttl`; None if Redis could not be asked."""
        key = self.key(msgid)
        if key is None:
            return False
        return self._call(lambda c: bool(c.set(key, b"1", ex=self.ttl)))

    def known(self, msgids: Sequence[str]) -> bool | None:
        """Whether any of `msgids` was recorded; None if Redis could not be asked."""
        keys = [k for k in (self.key(m) for m in msgids) if k]
        if not keys:
            return False
        return self._call(lambda c: int(c.exists(*keys)) > 0)

    def _call(self, command: Callable[[Any], bool]) -> bool | None:
        if not self.health.available():
            return None
        try:
            with self._lock:
                if self._client is None:
                    self._client = self._factory()
                client = self._client
            answer = command(client)
        except Exception as exc:  # noqa: BLE001 - redis errors, timeouts, a Cluster without a reachable node
            self.health.failed(exc)
            return None
        self.health.ok()
        return answer

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()


def redis_client_factory(redis_settings: RedisSettings) -> Callable[[], Any]:
    """A factory for the redis-py client of `[redis]` (quorum.redisconn.connect)."""
    return lambda: connect(redis_settings)
