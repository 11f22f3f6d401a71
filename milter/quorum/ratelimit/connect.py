"""Build the Redis backend from `[redis]`: single server, Sentinel-managed master, or Cluster.

redis-py retries failed commands up to 10 times with backoff by default; here every retry is
off and the socket timeouts are short, because a slow Redis must cost one short timeout and
then fail open (the limiter backs off and retries on a later message).

Authentication and TLS come from the url (`redis://USER:PASS@HOST:PORT/DB`, `rediss://`) and from
`password_file` and `tls_ca_file`/`tls_cert_file`/`tls_key_file`, for every deployment alike. With
Sentinel and rediss:// the sentinels are reached over TLS too (same CA and client certificate).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.connection import parse_url
from redis.retry import Retry
from redis.sentinel import Sentinel, SentinelManagedSSLConnection

from quorum.ratelimit.backend import Backend, RedisBackend
from quorum.ratelimit.cluster import ClusterBackend
from quorum.ratelimit.settings import RedisSettings


def _no_retry() -> Retry:
    return Retry(NoBackoff(), 0)


def connect(settings: RedisSettings, clock: Callable[[], int] | None = None) -> Backend:
    """A backend for `settings`. A Cluster client reads the slot map here, so this may raise."""
    timeouts: dict[str, Any] = {
        "socket_timeout": settings.timeout,
        "socket_connect_timeout": settings.connect_timeout,
    }
    auth = settings.auth_kwargs()
    if settings.mode == "cluster":
        nodes = [ClusterNode(host, port) for host, port in settings.cluster_nodes]
        cluster = RedisCluster.from_url(
            settings.url, startup_nodes=nodes or None, retry=_no_retry(), **timeouts, **auth
        )
        return ClusterBackend(cluster, clock)
    if settings.mode == "sentinel":
        return RedisBackend(_sentinel_master(settings, timeouts), clock)
    return RedisBackend(redis.Redis.from_url(settings.url, retry=_no_retry(), **timeouts, **auth), clock)


def _sentinel_master(settings: RedisSettings, timeouts: dict[str, Any]) -> redis.Redis:
    """The master of `service_name`; `url` supplies its db, credentials and TLS (not its address)."""
    options = parse_url(settings.url)
    master: dict[str, Any] = {k: options[k] for k in ("db", "username", "password") if k in options}
    auth = settings.auth_kwargs()
    master.update(auth)
    sentinel_kwargs: dict[str, Any] = {**timeouts, "retry": _no_retry()}
    if settings.tls:
        master["connection_class"] = SentinelManagedSSLConnection
        sentinel_kwargs["ssl"] = True
        sentinel_kwargs.update({k: v for k, v in auth.items() if k.startswith("ssl_")})
    if settings.sentinel_password:
        sentinel_kwargs["password"] = settings.sentinel_password
    sentinel = Sentinel(list(settings.sentinels), sentinel_kwargs=sentinel_kwargs, **timeouts)
    return sentinel.master_for(settings.service_name, retry=_no_retry(), **timeouts, **master)
