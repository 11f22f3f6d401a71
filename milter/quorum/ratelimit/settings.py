"""Rate-limit configuration: `[ratelimit]`, validated at load (`[redis]`: quorum.redisconn).

A limit is `{ messages = N, per = "1h" }` and/or `{ recipients = N, per = "1h" }` (both may be set:
two counters), or a list of such tables for several windows. `0` means unlimited.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field

from quorum.config.fields import Table
from quorum.redisconn import RedisSettings as RedisSettings  # `[redis]` moved there; old names kept
from quorum.redisconn import parse_redis as parse_redis
from quorum.redisconn import shared_redis as shared_redis

KINDS = ("sender_domain", "recipient_domain", "client_ip", "auth_user")
DOMAIN_KINDS = ("sender_domain", "recipient_domain", "auth_user")  # may be overridden per domain
UNITS = ("messages", "recipients")
SHARE_BY = ("client_ip", "sender")  # what one unauthenticated share of a recipient domain is counted by
MIN_WINDOW = 0.05
MAX_WINDOW = 366 * 86400.0

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
        redis=parse_redis(redis_table),
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
