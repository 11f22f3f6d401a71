"""Rate-limit configuration: `[redis]` and `[ratelimit]`, validated at load.

A limit is `{ messages = N, per = "1h" }` and/or `{ recipients = N, per = "1h" }` (both may be set:
two counters), or a list of such tables for several windows. `0` means unlimited.
"""

from __future__ import annotations

import ipaddress
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from quorum.config.fields import Problems, Table

KINDS = ("sender_domain", "recipient_domain", "client_ip", "auth_user")
DOMAIN_KINDS = ("sender_domain", "recipient_domain", "auth_user")  # may be overridden per domain
UNITS = ("messages", "recipients")
SHARE_BY = ("client_ip", "sender")  # what one unauthenticated share of a recipient domain is counted by
MIN_WINDOW = 0.05
MAX_WINDOW = 366 * 86400.0
_URL_SCHEMES = ("redis", "rediss", "unix")

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Rule:
    """`limit` units (messages or recipients) per `per` seconds, as a GCRA bucket."""

    unit: str
    limit: int
    per: float

    @property
    def interval_us(self) -> int:
        """Emission interval T in whole microseconds, so the script's arithmetic stays exact."""
        return max(1, round(self.per * 1_000_000 / self.limit))

    def describe(self) -> str:
        return f"{self.limit} {self.unit} per {format_duration(self.per)}"


@dataclass(frozen=True)
class Override:
    """Limits for one domain or client network; kinds not set keep the defaults."""

    exempt: bool = False
    kinds: Mapping[str, tuple[Rule, ...]] = field(default_factory=dict)
    share: float | None = None  # recipient_domain_share for this domain; None: the [ratelimit] one


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


@dataclass(frozen=True)
class RateLimitSettings:
    redis: RedisSettings = field(default_factory=RedisSettings)
    defaults: Mapping[str, tuple[Rule, ...]] = field(default_factory=dict)
    domains: Mapping[str, Override] = field(default_factory=dict)
    networks: tuple[tuple[IPNetwork, Override], ...] = ()  # longest prefix first
    key_prefix: str = "quorum:rl:"
    ipv6_prefix: int = 64
    check_at_connect: bool = False
    backoff: float = 1.0
    warn_interval: float = 60.0
    max_local_buckets: int = 100_000
    # The most of a recipient domain's bucket one unauthenticated client (or sender) may use;
    # 1.0 = no guard: one client can fill the bucket and so refuse the domain's whole inbound mail.
    recipient_domain_share: float = 1.0
    recipient_domain_share_by: str = "client_ip"

    def share(self, override: Override | None) -> float:
        if override is not None and override.share is not None:
            return override.share
        return self.recipient_domain_share

    def rules(self, kind: str, override: Override | None) -> tuple[Rule, ...]:
        if override is not None:
            if override.exempt:
                return ()
            if kind in override.kinds:
                return override.kinds[kind]
        return self.defaults.get(kind, ())


def format_duration(seconds: float) -> str:
    """The shortest exact form: 3600 -> "1h", 90 -> "90s", 0.5 -> "500ms"."""
    ms = round(seconds * 1000)
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms >= size and ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


def parse_settings(root: Table) -> RateLimitSettings | None:
    """None when `[ratelimit]` is absent or `enabled = false`; problems are recorded on `root`."""
    redis_table = root.table("redis")  # always read, so an unused [redis] is not "unknown"
    if "ratelimit" not in root.data:
        return None
    t = root.table("ratelimit")
    if not t.bool("enabled", True):
        return None
    d = RateLimitSettings()
    defaults = {kind: _rules(t, kind) for kind in KINDS if kind in t.data}
    domains = _domains(t.table("domains"))
    networks = _networks(t.table("networks"))
    key_prefix = t.str("key_prefix", d.key_prefix)
    if "{" in key_prefix or "}" in key_prefix:
        t.problems.error(t.key("key_prefix"), "must not contain '{' or '}' (Redis Cluster hash tags); remove them")
    settings = RateLimitSettings(
        redis=_redis(redis_table),
        defaults=defaults,
        domains=domains,
        networks=networks,
        key_prefix=key_prefix,
        ipv6_prefix=t.int("ipv6_prefix", d.ipv6_prefix, minimum=32, maximum=128),
        check_at_connect=t.bool("check_at_connect", d.check_at_connect),
        backoff=t.duration("backoff", d.backoff, minimum=0.05),
        warn_interval=t.duration("warn_interval", d.warn_interval, minimum=1.0),
        max_local_buckets=t.int("max_local_buckets", d.max_local_buckets, minimum=100),
        recipient_domain_share=_share(t) or d.recipient_domain_share,
        recipient_domain_share_by=_share_by(t, d.recipient_domain_share_by),
    )
    t.reject_unknown()
    _warn_shareless(t, settings)
    if not any(defaults.values()) and not any(o.kinds for o in domains.values()) and not networks:
        t.problems.warn(t.path, "no limits configured: nothing is counted; set e.g. sender_domain or client_ip")
    return settings


def _rules(parent: Table, name: str) -> tuple[Rule, ...]:
    """A kind's value: one limit table or a list of them."""
    value = parent.raw(name)
    key = parent.key(name)
    problems = parent.problems
    if isinstance(value, Mapping):
        tables = [Table(value, key, problems)]
    elif isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
        tables = [Table(v, f"{key}[{i}]", problems) for i, v in enumerate(value)]
    else:
        example = '{ messages = 500, per = "1h" }'
        problems.error(key, f"expected a table such as {example} or a list of them, got {value!r}")
        return ()
    rules: list[Rule] = []
    for lt in tables:
        rules.extend(_limit(lt))
    seen: set[tuple[str, float]] = set()
    for rule in rules:
        if (rule.unit, rule.per) in seen:
            problems.error(key, f"two limits count {rule.unit} per {format_duration(rule.per)}; keep one")
        seen.add((rule.unit, rule.per))
    return tuple(rules)


def _limit(t: Table) -> list[Rule]:
    counts = {unit: t.int(unit, 0, minimum=0, maximum=1_000_000_000) for unit in UNITS if unit in t.data}
    if not counts:
        t.problems.error(t.path, 'set messages and/or recipients, e.g. { messages = 500, per = "1h" } (0 = unlimited)')
    limited = {unit: n for unit, n in counts.items() if n > 0}
    if "per" not in t.data:
        if limited:
            t.problems.error(t.key("per"), 'missing; set the window, e.g. per = "1h"')
        t.reject_unknown()
        return []
    per = t.duration("per", 3600.0, minimum=MIN_WINDOW)
    t.reject_unknown()
    if per > MAX_WINDOW:
        t.problems.error(t.key("per"), f"at most {format_duration(MAX_WINDOW)}; shorten the window")
        return []
    if abs(per * 1000 - round(per * 1000)) > 1e-6:
        t.problems.error(t.key("per"), "must be whole milliseconds; round the window")
        return []
    rules = []
    for unit, n in limited.items():
        if per * 1_000_000 / n < 1:
            t.problems.error(t.key(unit), f"{n} per {format_duration(per)} is more than one per microsecond; lower it")
            continue
        rules.append(Rule(unit, n, per))
    return rules


def _domains(t: Table) -> dict[str, Override]:
    out: dict[str, Override] = {}
    for name in t.data:
        dt = t.table(name)
        domain = name.strip().lower().rstrip(".")
        if not domain or "@" in domain or any(c.isspace() for c in domain):
            t.problems.error(dt.path, 'not a domain name; use the bare domain, e.g. [ratelimit.domains."example.com"]')
            continue
        if "client_ip" in dt.data:
            dt.raw("client_ip")
            t.problems.error(
                dt.key("client_ip"), 'client IP limits are overridden per network: [ratelimit.networks."192.0.2.0/24"]'
            )
        if domain in out:
            t.problems.error(dt.path, f"{domain} is configured twice (names are case-insensitive); merge the tables")
        out[domain] = _override(dt, DOMAIN_KINDS, share=True)
    return out


def _networks(t: Table) -> tuple[tuple[IPNetwork, Override], ...]:
    out: list[tuple[IPNetwork, Override]] = []
    for name in t.data:
        nt = t.table(name)
        try:
            net = ipaddress.ip_network(name.strip(), strict=False)
        except ValueError:
            t.problems.error(nt.path, 'not an IP address or network; use e.g. "192.0.2.0/24" or "2001:db8::/48"')
            continue
        out.append((net, _override(nt, ("client_ip",))))
    out.sort(key=lambda item: item[0].prefixlen, reverse=True)
    return tuple(out)


def _override(t: Table, kinds: tuple[str, ...], share: bool = False) -> Override:
    exempt = t.bool("exempt", False)
    rules = {kind: _rules(t, kind) for kind in kinds if kind in t.data}
    domain_share = _share(t) if share else None
    t.reject_unknown()
    return Override(exempt, rules, domain_share)


def _share(t: Table) -> float | None:
    """`recipient_domain_share`: a fraction in (0, 1]; 1 = no per-client guard; None when unset."""
    if "recipient_domain_share" not in t.data:
        return None
    value = t.float("recipient_domain_share", 1.0, minimum=0.0, maximum=1.0)
    if value <= 0.0:
        t.problems.error(
            t.key("recipient_domain_share"),
            "must be above 0 (a fraction of the bucket, e.g. 0.2); 1 turns the guard off",
        )
        return 1.0
    return value


def _share_by(t: Table, default: str) -> str:
    value = t.str("recipient_domain_share_by", default)
    if value not in SHARE_BY:
        t.problems.error(
            t.key("recipient_domain_share_by"),
            f'{value!r} is not one of {", ".join(repr(v) for v in SHARE_BY)}; use "client_ip" (cannot be forged)',
        )
        return default
    return value


def _warn_shareless(t: Table, settings: RateLimitSettings) -> None:
    """A recipient_domain bucket without a share is a tenant's inbound kill switch."""
    limited = [
        name
        for name, override in [("", None), *settings.domains.items()]
        if settings.rules("recipient_domain", override) and settings.share(override) >= 1.0
    ]
    if limited:
        where = "recipient_domain" if "" in limited else f"recipient_domain of {', '.join(sorted(limited)[:3])}"
        t.problems.warn(
            t.key("recipient_domain_share"),
            f"{where} limits can be used up by any single sender: one client filling a domain's bucket gets "
            "all its inbound mail refused (451) for the window; set recipient_domain_share (e.g. 0.2) so "
            "one unauthenticated client may use at most that fraction",
        )


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


def parse_redis(t: Table) -> RedisSettings:
    """`[redis]`: one table shared by every feature that keeps state in Redis."""
    return _redis(t)


def shared_redis(root: Table) -> RedisSettings | None:
    """`[redis]` for a feature that uses it (None when absent). Several features read the same
    table: its problems are reported once, whoever reads it first."""
    if "redis" not in root.data:
        return None
    root.table("redis")  # mark it read for root.reject_unknown()
    mine = Problems()
    data = root.data["redis"]
    settings = _redis(Table(data if isinstance(data, Mapping) else {}, "redis", mine))
    for error in mine.errors:
        if error not in root.problems.errors:
            root.problems.errors.append(error)
    for warning in mine.warnings:
        if warning not in root.problems.warnings:
            root.problems.warnings.append(warning)
    return settings


def _redis(t: Table) -> RedisSettings:
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
