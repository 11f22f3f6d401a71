"""Redis for every feature that keeps state there: `[redis]`, the connection, the failure policy.

`[redis]` is one table shared by the rate limiter, tenant records, session records, the notify
cap, backscatter and the verdict cache; `RedisSettings` is its parsed form (validated at load).

`connect(settings)` builds the redis-py client: a single server (`redis://`, `rediss://` for TLS,
`unix://`), a Sentinel-managed master (`sentinels` + `service_name`), or a Cluster
(`cluster = true`). redis-py retries failed commands up to 10 times with backoff by default; here
every retry is off and the socket timeouts are short, because a slow Redis must cost one short
timeout and then fail open (the feature backs off and retries later). Authentication and TLS come
from the url (`redis://USER:PASS@HOST:PORT/DB`, `rediss://`) and from `password_file` and
`tls_ca_file`/`tls_cert_file`/`tls_key_file`, for every deployment alike. With Sentinel and
rediss:// the sentinels are reached over TLS too (same CA and client certificate).

`RedisHealth` is the one "Redis down" policy: after a failure the feature leaves Redis alone for
`backoff` seconds, then one caller probes it while the others keep going without it; one warning
per `warn_interval`, one line when Redis is back, and `quorum_redis_failures_total{feature}`.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import stat
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from quorum import metrics
from quorum.config.fields import Problems, Table

_URL_SCHEMES = ("redis", "rediss", "unix")


@dataclass(frozen=True)
class RedisSettings:
    url: str = "redis://127.0.0.1:6379/0"
    cluster: bool = False
    cluster_nodes: tuple[tuple[str, int], ...] = ()
    sentinels: tuple[tuple[str, int], ...] = ()
    service_name: str = ""
    sentinel_password: str | None = field(default=None, repr=False)
    timeout: float = 0.25
    connect_timeout: float = 0.25
    # ACL password (from `password_file`; a password in `url` stays there), TLS files for rediss://
    password: str | None = field(default=None, repr=False)
    tls_ca_file: str | None = None
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    # `hmac_key_file`: authenticates what Quorum must trust when it reads it back (verdict cache)
    hmac_key: bytes | None = field(default=None, repr=False)

    @property
    def mode(self) -> str:
        return "cluster" if self.cluster else "sentinel" if self.sentinels else "single"

    @property
    def tls(self) -> bool:
        return self.url.lower().startswith("rediss:")

    def auth_kwargs(self) -> dict[str, str]:
        """redis-py keyword arguments for the password (from the file) and the TLS files."""
        out: dict[str, str] = {}
        if self.password is not None:
            out["password"] = self.password
        for kwarg, value in (
            ("ssl_ca_certs", self.tls_ca_file),
            ("ssl_certfile", self.tls_cert_file),
            ("ssl_keyfile", self.tls_key_file),
        ):
            if value is not None:
                out[kwarg] = value
        return out


def _host_port(t: Table, name: str, default_port: int) -> tuple[tuple[str, int], ...]:
    out = []
    for item in map(str, t.str_list(name)):
        host, sep, port = item.rpartition(":")
        if not sep:
            host, port = item, str(default_port)
        host = host.strip("[]")
        if not host or not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
            t.problems.error(t.key(name), f'{item!r} is not "host:port"; use e.g. "127.0.0.1:{default_port}"')
            continue
        out.append((host, int(port)))
    return tuple(out)


def shared_redis(root: Table) -> RedisSettings | None:
    """`[redis]` for a feature that uses it (None when absent). Several features read the same
    table: its problems are reported once, whoever reads it first."""
    if "redis" not in root.data:
        return None
    root.table("redis")  # mark it read for root.reject_unknown()
    mine = Problems()
    data = root.data["redis"]
    settings = parse_redis(Table(data if isinstance(data, Mapping) else {}, "redis", mine))
    for error in mine.errors:
        if error not in root.problems.errors:
            root.problems.errors.append(error)
    for warning in mine.warnings:
        if warning not in root.problems.warnings:
            root.problems.warnings.append(warning)
    return settings


def parse_redis(t: Table) -> RedisSettings:
    """`[redis]`: one table shared by every feature that keeps state in Redis."""
    d = RedisSettings()
    url = t.str("url", d.url)
    scheme = urlsplit(url).scheme.lower()
    if scheme not in _URL_SCHEMES:
        t.problems.error(
            t.key("url"), f"{url!r}: use redis://HOST:PORT/DB, rediss://HOST:PORT/DB (TLS) or unix:///path/redis.sock"
        )
    else:
        _check_url(t, url)
    timeout = t.duration("timeout", d.timeout, minimum=0.01)
    url_password = _url_password(url)
    password = _secret(t, "password_file")
    if password is not None and url_password:
        t.problems.error(t.key("password_file"), "the url carries a password too; keep one (remove it from the url)")
    sentinel_password = t.opt_str("sentinel_password")
    sentinel_password_file = _secret(t, "sentinel_password_file")
    if sentinel_password is not None and sentinel_password_file is not None:
        t.problems.error(t.key("sentinel_password_file"), "sentinel_password is set too; keep one")
    tls_files = {name: _readable(t, name) for name in ("tls_ca_file", "tls_cert_file", "tls_key_file")}
    if scheme != "rediss" and any(tls_files.values()):
        name = next(n for n, v in tls_files.items() if v)
        t.problems.error(t.key(name), "TLS files need a rediss:// url (TLS); change the url or remove the key")
    if bool(tls_files["tls_cert_file"]) != bool(tls_files["tls_key_file"]):
        t.problems.error(t.key("tls_cert_file"), "a client certificate needs both tls_cert_file and tls_key_file")
    hmac_key = _hmac_key(t)
    settings = RedisSettings(
        url=url,
        cluster=t.bool("cluster", d.cluster),
        cluster_nodes=_host_port(t, "cluster_nodes", 6379),
        sentinels=_host_port(t, "sentinels", 26379),
        service_name=t.str("service_name", d.service_name),
        sentinel_password=sentinel_password if sentinel_password is not None else sentinel_password_file,
        timeout=timeout,
        connect_timeout=t.duration("connect_timeout", timeout, minimum=0.01),
        password=password,
        tls_ca_file=tls_files["tls_ca_file"],
        tls_cert_file=tls_files["tls_cert_file"],
        tls_key_file=tls_files["tls_key_file"],
        hmac_key=hmac_key,
    )
    if scheme in _URL_SCHEMES:
        _warn_unauthenticated(t, settings, bool(url_password))
    if settings.cluster and settings.sentinels:
        t.problems.error(t.key("cluster"), "a Redis Cluster is not used through Sentinel; remove sentinels or cluster")
    if settings.cluster and scheme == "unix":
        t.problems.error(t.key("url"), "a Redis Cluster needs a redis:// or rediss:// seed node address")
    if settings.cluster_nodes and not settings.cluster:
        t.problems.error(t.key("cluster_nodes"), "only used with cluster = true; set it or remove cluster_nodes")
    if settings.sentinels and not settings.service_name:
        t.problems.error(t.key("service_name"), 'missing; set the master name the sentinels monitor (e.g. "quorum")')
    if settings.service_name and not settings.sentinels:
        t.problems.error(t.key("sentinels"), 'missing; list the sentinels, e.g. ["127.0.0.1:26379"]')
    t.reject_unknown()
    return settings


UNAUTHENTICATED = (
    "Redis without authentication: whoever can connect to it can change what Quorum trusts there "
    "(tenant records: policy per domain, with scanning; rate-limit counters; verdict-cache entries unless "
    "hmac_key_file is set). Give Quorum an ACL user and password: "
    'url = "redis://quorum@HOST:6379/0" and password_file = "/etc/quorum/redis-password", '
    "and TLS: rediss:// with tls_ca_file (see README, Redis)"
)
MIN_HMAC_KEY = 16


def _url_password(url: str) -> str | None:
    try:
        return urlsplit(url).password
    except ValueError:
        return None


def _loopback(url: str) -> bool:
    try:
        host = urlsplit(url).hostname or ""
    except ValueError:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _warn_unauthenticated(t: Table, s: RedisSettings, url_password: bool) -> None:
    if s.password is None and not url_password:
        t.problems.warn(t.key("url"), UNAUTHENTICATED)
        return
    scheme = urlsplit(s.url).scheme.lower()
    if scheme == "redis" and not _loopback(s.url):
        t.problems.warn(
            t.key("url"),
            "the Redis password and every entry cross the network in clear text; use rediss:// with tls_ca_file",
        )
    if s.sentinels and s.sentinel_password is None:
        t.problems.warn(
            t.key("sentinel_password"),
            "the sentinels take no password: whoever reaches them can name another master; "
            "set requirepass on the sentinels and sentinel_password_file here",
        )


def _readable(t: Table, name: str) -> str | None:
    """A file the key names, checked to be readable now (the connection opens later)."""
    path = t.opt_str(name)
    if path is None:
        return None
    try:
        with open(path, "rb"):
            pass
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else str(exc)
        t.problems.error(t.key(name), f"cannot read {path!r} ({reason}); fix the path or its permissions")
        return None
    return path


def _read_secret_file(t: Table, name: str) -> bytes | None:
    path = t.opt_str(name)
    if path is None:
        return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO must not block the load
        try:
            info = os.fstat(fd)
            data = os.read(fd, 65536) if stat.S_ISREG(info.st_mode) else b""
        finally:
            os.close(fd)
    except (OSError, ValueError) as exc:  # ValueError: a NUL in the path
        reason = exc.strerror if isinstance(exc, OSError) else str(exc)
        t.problems.error(t.key(name), f"cannot read {path!r} ({reason}); fix the path or its permissions")
        return None
    if not stat.S_ISREG(info.st_mode):
        t.problems.error(t.key(name), f"{path!r} is not a regular file")
        return None
    if info.st_mode & stat.S_IROTH:
        t.problems.warn(t.key(name), f"{path!r} is readable by every user; chmod o-r (e.g. 0640, group quorum)")
    return data.rstrip(b"\r\n")


def _secret(t: Table, name: str) -> str | None:
    data = _read_secret_file(t, name)
    if data is None:
        return None
    if not data:
        t.problems.error(t.key(name), "the file is empty; write the password into it")
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        t.problems.error(t.key(name), "the password is not UTF-8 text")
        return None


def _hmac_key(t: Table) -> bytes | None:
    data = _read_secret_file(t, "hmac_key_file")
    if data is None:
        return None
    if len(data) < MIN_HMAC_KEY:
        t.problems.error(
            t.key("hmac_key_file"),
            f"the key has {len(data)} bytes, at least {MIN_HMAC_KEY} are needed; "
            "create one with: head -c 32 /dev/urandom | base64 > FILE",
        )
        return None
    return data


def _check_url(t: Table, url: str) -> None:
    from redis.connection import parse_url

    try:
        parse_url(url)
    except (ValueError, TypeError) as exc:
        t.problems.error(t.key("url"), f"{url!r}: {exc}")


# -- the connection ----------------------------------------------------------------------------------
def connect(settings: RedisSettings) -> Any:
    """A redis-py client for `settings`: `redis.Redis` (single server or Sentinel-managed master) or
    `redis.cluster.RedisCluster`. A Cluster client reads the slot map here, so this may raise."""
    import redis  # redis-py is imported only by a feature that is on
    from redis.cluster import ClusterNode, RedisCluster

    timeouts: dict[str, Any] = {
        "socket_timeout": settings.timeout,
        "socket_connect_timeout": settings.connect_timeout,
    }
    auth = settings.auth_kwargs()
    if settings.mode == "cluster":
        nodes = [ClusterNode(host, port) for host, port in settings.cluster_nodes]
        return RedisCluster.from_url(settings.url, startup_nodes=nodes or None, retry=_no_retry(), **timeouts, **auth)
    if settings.mode == "sentinel":
        return _sentinel_master(settings, timeouts)
    return redis.Redis.from_url(settings.url, retry=_no_retry(), **timeouts, **auth)


def _no_retry() -> Any:
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return Retry(NoBackoff(), 0)


def _sentinel_master(settings: RedisSettings, timeouts: dict[str, Any]) -> Any:
    """The master of `service_name`; `url` supplies its db, credentials and TLS (not its address)."""
    from redis.connection import parse_url
    from redis.sentinel import Sentinel, SentinelManagedSSLConnection

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


# -- the failure policy --------------------------------------------------------------------------------
class RedisHealth:
    """One feature's view of its Redis; thread-safe.

    `available()` before a call: False while backing off; once `backoff` has passed after a failure
    it is True for one caller (the probe), the others keep backing off until the probe reports.
    `failed(exc)` after an error: counts it, backs off, warns at most once per `warn_interval`
    (`down`, formatted with `feature`, `reason`, `backoff` and `where`; the others log at debug). `ok()` after a
    success: when Redis was failing, logs `up` once (nothing if `up` is None).
    """

    def __init__(
        self,
        feature: str,
        log: logging.Logger,
        *,
        backoff: float = 1.0,
        warn_interval: float = 60.0,
        down: str = "{feature}: Redis unavailable ({reason}); retrying every {backoff:g}s",
        up: str | None = "{feature}: Redis reachable again",
        where: str = "",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.feature = feature
        self.where = where  # offered to `down` as {where}, e.g. "Redis single redis://127.0.0.1:6379/0"
        self.log = log
        self.backoff = backoff
        self.warn_interval = warn_interval
        self.down = down
        self.up = up
        self.clock = clock
        self.failures = 0  # Redis errors seen, for tests and stats
        self._failing = False
        self._down_until = 0.0
        self._last_warning: float | None = None
        self._lock = threading.Lock()

    @property
    def failing(self) -> bool:
        """Whether the last call failed (Redis is being backed off or probed)."""
        return self._failing

    def available(self) -> bool:
        if not self._failing:
            return True
        with self._lock:
            now = self.clock()
            if now < self._down_until:
                return False
            self._down_until = now + self.backoff  # this caller probes; the others wait for it
            return True

    def failed(self, exc: BaseException) -> None:
        metrics.REDIS_FAILURES.labels(self.feature).inc()
        with self._lock:
            now = self.clock()
            self.failures += 1
            self._failing = True
            self._down_until = now + self.backoff
            warn = self._last_warning is None or now - self._last_warning >= self.warn_interval
            if warn:
                self._last_warning = now
        reason = f"{type(exc).__name__}: {str(exc)[:200]}"
        if warn:
            text = self.down.format(feature=self.feature, reason=reason, backoff=self.backoff, where=self.where)
            self.log.warning(text)
        else:
            self.log.debug("%s: Redis still unavailable (%s)", self.feature, reason)

    def ok(self) -> None:
        if not self._failing:
            return
        with self._lock:
            was_failing, self._failing = self._failing, False
        if was_failing and self.up is not None:
            self.log.warning(self.up.format(feature=self.feature, where=self.where))
