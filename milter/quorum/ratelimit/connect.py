"""The rate limiter's backend from `[redis]`: the client from `quorum.redisconn.connect` (single
server, Sentinel-managed master or Cluster; no retries, short timeouts) wrapped in the script runner."""

from __future__ import annotations

from collections.abc import Callable

from redis.cluster import RedisCluster

from quorum.ratelimit.backend import Backend, RedisBackend
from quorum.ratelimit.cluster import ClusterBackend
from quorum.redisconn import RedisSettings
from quorum.redisconn import connect as client


def connect(settings: RedisSettings, clock: Callable[[], int] | None = None) -> Backend:
    """A backend for `settings`; its redis-py client is `.client`. A Cluster reads its slot map here: may raise."""
    redis = client(settings)
    if isinstance(redis, RedisCluster):
        return ClusterBackend(redis, clock)
    return RedisBackend(redis, clock)
