"""Redis for every feature that keeps state there: `[redis]`, the connection, the failure policy.

`[redis]` is one table shared by the rate limiter, tenant records, session records, the notify
cap, backscatter and the verdict cache: `RedisTable` validates it as written, `RedisSettings` adds
what its files hold (`parse_redis`, at load; `shared_redis` for a feature that reads it too).

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

import functools
import ipaddress
import logging
import os
import stat
import threading
import time
from collections.abc import Callable
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import AfterValidator, BeforeValidator, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from quorum import metrics
from quorum.config.fields import Table
from quorum.config.schema import Duration, Settings, raise_at, validate

_URL_SCHEMES = ("redis", "rediss", "unix")
TLS_FILES = ("tls_ca_file", "tls_cert_file", "tls_key_file")
_FILES = ("password_file", "sentinel_password_file", "hmac_key_file", *TLS_FILES)


def _host_port(default_port: int, item: Any) -> Any:
    """(host, port) from "host:port", "[v6]:port" or a bare host (the default port)."""
    if isinstance(item, tuple):  # (host, port), from code
        return item
    if not isinstance(item, str):
        raise PydanticCustomError("quorum_type", 'expected "host:port"')
    host, sep, port = item.rpartition(":")
    if not sep:
        host, port = item, str(default_port)
    host = host.strip("[]")
    if not host or not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
        raise ValueError(f'{item!r} is not "host:port"; use e.g. "127.0.0.1:{default_port}"')
    return (host, int(port))


Node = Annotated[tuple[str, int], BeforeValidator(functools.partial(_host_port, 6379), json_schema_input_type=str)]
Sentinel = Annotated[tuple[str, int], BeforeValidator(functools.partial(_host_port, 26379), json_schema_input_type=str)]


def _no_hash_tag(prefix: str) -> str:
    if "{" in prefix or "}" in prefix:
        raise ValueError("must not contain '{' or '}' (Redis Cluster hash tags); remove them")
    return prefix


KeyPrefix = Annotated[str, AfterValidator(_no_hash_tag)]
"""A feature's Redis key prefix: a brace would make Redis Cluster hash only part of each key."""


class RedisTable(Settings):
    """`[redis]` as written: one table shared by every feature that keeps state in Redis."""

    url: str = "redis://127.0.0.1:6379/0"
    cluster: bool = False
    cluster_nodes: tuple[Node, ...] = ()
    sentinels: tuple[Sentinel, ...] = ()
    service_name: str = ""
    sentinel_password: str | None = Field(None, repr=False)
    sentinel_password_file: str | None = None
    timeout: Duration = Field(0.25, ge=0.01)
    connect_timeout: Annotated[Duration, Field(ge=0.01)] | None = None  # None: `timeout`
    password_file: str | None = None  # the ACL password (a password in `url` stays there)
    tls_ca_file: str | None = None  # TLS files, for rediss://
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    hmac_key_file: str | None = None  # authenticates what Quorum must trust when it reads it back

    @field_validator("url")
    @classmethod
    def _url(cls, url: str) -> str:
        if urlsplit(url).scheme.lower() not in _URL_SCHEMES:
            raise ValueError(
                f"{url!r}: use redis://HOST:PORT/DB, rediss://HOST:PORT/DB (TLS) or unix:///path/redis.sock"
            )
        from redis.connection import parse_url

        try:
            parse_url(url)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{url!r}: {exc}") from None
        return url

    @model_validator(mode="after")
    def _consistent(self) -> RedisTable:
        scheme = urlsplit(self.url).scheme.lower()
        tls = [name for name in TLS_FILES if getattr(self, name)]
        found = []
        if self.password_file is not None and _url_password(self.url):
            found.append(("password_file", "the url carries a password too; keep one (remove it from the url)"))
        if self.sentinel_password is not None and self.sentinel_password_file is not None:
            found.append(("sentinel_password_file", "sentinel_password is set too; keep one"))
        if tls and scheme != "rediss":
            found.append((tls[0], "TLS files need a rediss:// url (TLS); change the url or remove the key"))
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            found.append(("tls_cert_file", "a client certificate needs both tls_cert_file and tls_key_file"))
        if self.cluster and self.sentinels:
            found.append(("cluster", "a Redis Cluster is not used through Sentinel; remove sentinels or cluster"))
        if self.cluster and scheme == "unix":
            found.append(("url", "a Redis Cluster needs a redis:// or rediss:// seed node address"))
        if self.cluster_nodes and not self.cluster:
            found.append(("cluster_nodes", "only used with cluster = true; set it or remove cluster_nodes"))
        if self.sentinels and not self.service_name:
            found.append(("service_name", 'missing; set the master name the sentinels monitor (e.g. "quorum")'))
        if self.service_name and not self.sentinels:
            found.append(("sentinels", 'missing; list the sentinels, e.g. ["127.0.0.1:26379"]'))
        raise_at(found)
        return self


class RedisSettings(RedisTable):
    """What a feature connects with: `[redis]`, the connect timeout resolved, and the secrets its
    files hold (read at load by `parse_redis`). `RedisSettings(url=...)` for code and tests."""

    connect_timeout: Duration = Field(0.25, ge=0.01)
    password: str | None = Field(None, repr=False)
    hmac_key: bytes | None = Field(None, repr=False)

    @property
    def mode(self) -> str:
        return "cluster" if self.cluster else "sentinel" if self.sentinels else "single"

    @property
    def tls(self) -> bool:
        return self.url.lower().startswith("rediss:")

    def auth_kwargs(self) -> dict[str, str]:
        """redis-py keyword arguments for the password (from the file) and the TLS files."""
        found = {"password": self.password, "ssl_ca_certs": self.tls_ca_file}
        found.update(ssl_certfile=self.tls_cert_file, ssl_keyfile=self.tls_key_file)
        return {kwarg: value for kwarg, value in found.items() if value is not None}

    def warnings(self) -> list[tuple[str, str]]:
        """(key, text) for a Redis that whoever reaches it can rewrite, or read on the way."""
        if self.password is None and not _url_password(self.url):
            return [("url", UNAUTHENTICATED)]
        out = []
        if urlsplit(self.url).scheme.lower() == "redis" and not _loopback(self.url):
            out.append(("url", CLEAR_TEXT))
        if self.sentinels and self.sentinel_password is None:
            out.append(("sentinel_password", OPEN_SENTINELS))
        return out


def shared_redis(root: Table) -> RedisSettings | None:
    """`[redis]` for a feature that uses it (None when absent). Several features read the same
    table: its problems are reported once (Problems keeps one of each), whoever reads it first."""
    return parse_redis(root.table("redis")) if "redis" in root.data else None


def parse_redis(t: Table) -> RedisSettings:
    """`[redis]` validated (RedisTable), then the files it names read: the passwords, the HMAC key
    (problems recorded on `t`); the defaults when the table is not valid."""
    table = validate(RedisTable, t.data, t.path, t.problems)
    valid = table is not None
    if table is None:  # the files it names are still read: every problem in one run
        files: dict[str, Any] = {k: v for k, v in t.data.items() if k in _FILES and isinstance(v, str)}
        table = RedisTable.model_construct(**files)
    sentinel_password = _secret(t, "sentinel_password_file", table.sentinel_password_file)
    settings = RedisSettings.model_construct(
        **{
            **dict(table),
            "connect_timeout": table.timeout if table.connect_timeout is None else table.connect_timeout,
            "password": _secret(t, "password_file", table.password_file),
            "sentinel_password": sentinel_password if table.sentinel_password is None else table.sentinel_password,
            "hmac_key": _hmac_key(t, table.hmac_key_file),
            **{name: _readable(t, name, getattr(table, name)) for name in TLS_FILES},
        }
    )
    for key, text in settings.warnings() if valid else ():
        t.problems.warn(t.key(key), text)
    return settings


UNAUTHENTICATED = (
    "Redis without authentication: whoever can connect to it can change what Quorum trusts there "
    "(tenant records: policy per domain, with scanning; rate-limit counters; verdict-cache entries unless "
    "hmac_key_file is set). Give Quorum an ACL user and password: "
    'url = "redis://quorum@HOST:6379/0" and password_file = "/etc/quorum/redis-password", '
    "and TLS: rediss:// with tls_ca_file (see README, Redis)"
)
CLEAR_TEXT = "the Redis password and every entry cross the network in clear text; use rediss:// with tls_ca_file"
OPEN_SENTINELS = (
    "the sentinels take no password: whoever reaches them can name another master; "
    "set requirepass on the sentinels and sentinel_password_file here"
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


def _readable(t: Table, name: str, path: str | None) -> str | None:
    """A file the key names, checked to be readable now (the connection opens later)."""
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


def _read_secret_file(t: Table, name: str, path: str | None) -> bytes | None:
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


def _secret(t: Table, name: str, path: str | None) -> str | None:
    data = _read_secret_file(t, name, path)
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


def _hmac_key(t: Table, path: str | None) -> bytes | None:
    data = _read_secret_file(t, "hmac_key_file", path)
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
