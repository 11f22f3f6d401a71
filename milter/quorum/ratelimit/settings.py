"""Rate-limit configuration: `[ratelimit]`, validated at load (`[redis]`: quorum.redisconn).

A limit is `{ messages = N, per = "1h" }` and/or `{ recipients = N, per = "1h" }` (both may be set:
two counters), or a list of such tables for several windows. `0` means unlimited.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    field_validator,
    model_validator,
)
from pydantic.json_schema import SkipJsonSchema

from quorum.config.fields import Table
from quorum.config.problems import shown
from quorum.config.schema import Duration, Int, Settings, dotted, explain, raise_at
from quorum.redisconn import KeyPrefix  # `[redis]` moved there; old names kept
from quorum.redisconn import RedisSettings as RedisSettings
from quorum.redisconn import parse_redis as parse_redis
from quorum.redisconn import shared_redis as shared_redis

KINDS = ("sender_domain", "recipient_domain", "client_ip", "auth_user")
UNITS = ("messages", "recipients")
MIN_WINDOW = 0.05
MAX_WINDOW = 366 * 86400.0
EXAMPLE = '{ messages = 500, per = "1h" }'
SHARELESS = (
    "{where} limits can be used up by any single sender: one client filling a domain's bucket gets all its "
    "inbound mail refused (451) for the window; set recipient_domain_share (e.g. 0.2) so one unauthenticated "
    "client may use at most that fraction"
)

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


def format_duration(seconds: float) -> str:
    """The shortest exact form: 3600 -> "1h", 90 -> "90s", 0.5 -> "500ms"."""
    ms = round(seconds * 1000)
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms >= size and ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


Count = Annotated[int, Field(ge=0, le=1_000_000_000)]


class Limit(Settings):
    """One window: `{ messages = N, recipients = N, per = "1h" }`, either count or both (0 = unlimited)."""

    messages: Count | None = None
    recipients: Count | None = None
    per: Annotated[Duration, Field(ge=MIN_WINDOW)] | None = None

    @field_validator("per")
    @classmethod
    def _window(cls, per: float | None) -> float | None:
        if per is not None and per > MAX_WINDOW:
            raise ValueError(f"at most {format_duration(MAX_WINDOW)}; shorten the window")
        if per is not None and abs(per * 1000 - round(per * 1000)) > 1e-6:
            raise ValueError("must be whole milliseconds; round the window")
        return per

    @model_validator(mode="after")
    def _counted(self) -> Limit:
        if self.messages is None and self.recipients is None:
            raise ValueError(f"set messages and/or recipients, e.g. {EXAMPLE} (0 = unlimited)")
        if self.per is None and (self.messages or self.recipients):
            raise_at([("per", 'missing; set the window, e.g. per = "1h"')])
        per = self.per or 1.0
        too_many = [(unit, n) for unit in UNITS if (n := getattr(self, unit)) and per * 1_000_000 / n < 1]
        raise_at(
            (unit, f"{n} per {format_duration(per)} is more than one per microsecond; lower it") for unit, n in too_many
        )
        return self

    def rules(self) -> tuple[Rule, ...]:
        return tuple(Rule(unit, n, self.per) for unit in UNITS if (n := getattr(self, unit)) and self.per is not None)


def _listed(value: Any) -> Any:
    """One limit table or a list of them: validated as a list (a single table's errors keep its key)."""
    if isinstance(value, Mapping):
        return (value,)
    if isinstance(value, list | tuple) and value:
        return tuple(value)
    got = shown(list(value) if isinstance(value, tuple) else value)  # a TOML array arrives as a tuple
    raise ValueError(f"expected a table such as {EXAMPLE} or a list of them, got {got}")


def _distinct(limits: tuple[Limit, ...]) -> tuple[Limit, ...]:
    windows = [(rule.unit, rule.per) for limit in limits for rule in limit.rules()]
    for unit, per in sorted({w for w in windows if windows.count(w) > 1}):
        raise ValueError(f"two limits count {unit} per {format_duration(per)}; keep one")
    return limits


Limits = Annotated[
    tuple[Limit, ...],
    BeforeValidator(_listed, json_schema_input_type=Limit | list[Limit]),
    AfterValidator(_distinct),
]


def _above_zero(share: float) -> float:
    if share <= 0.0:
        raise ValueError("must be above 0 (a fraction of the bucket, e.g. 0.2); 1 turns the guard off")
    return share


# The most of a recipient domain's bucket one unauthenticated client (or sender) may use;
# 1.0 = no guard: one client can fill the bucket and so refuse the domain's whole inbound mail.
Share = Annotated[float, Field(ge=0.0, le=1.0), AfterValidator(_above_zero)]


def _kinds(table: Settings) -> dict[str, tuple[Rule, ...]]:
    """The limits a table sets, as GCRA rules (a kind set to 0 is there, with no rule)."""
    return {
        kind: tuple(r for lim in limits for r in lim.rules())
        for kind in KINDS
        if (limits := getattr(table, kind, None))
    }


class Override(Settings):
    """Limits for one domain or client network; kinds not set keep the defaults."""

    exempt: bool = False

    @functools.cached_property
    def kinds(self) -> dict[str, tuple[Rule, ...]]:
        return _kinds(self)

    @property
    def share(self) -> float | None:
        """recipient_domain_share for this domain; None: the [ratelimit] one."""
        return None


class DomainLimits(Override):
    """`[ratelimit.domains."example.com"]`."""

    sender_domain: Limits | None = None
    recipient_domain: Limits | None = None
    auth_user: Limits | None = None
    recipient_domain_share: Share | None = None
    client_ip: SkipJsonSchema[Any] = None  # refused, with where it goes

    @field_validator("client_ip")
    @classmethod
    def _per_network(cls, value: Any) -> Any:
        raise ValueError('client IP limits are overridden per network: [ratelimit.networks."192.0.2.0/24"]')

    @property
    def share(self) -> float | None:
        return self.recipient_domain_share


class NetworkLimits(Override):
    """`[ratelimit.networks."192.0.2.0/24"]`."""

    client_ip: Limits | None = None


def _domain(name: str) -> str:
    return name.strip().lower().rstrip(".")


def _domain_name(name: str) -> str:
    domain = _domain(name)
    if not domain or "@" in domain or any(c.isspace() for c in domain):
        raise ValueError('not a domain name; use the bare domain, e.g. [ratelimit.domains."example.com"]')
    return name


def _by_domain(tables: dict[str, DomainLimits]) -> dict[str, DomainLimits]:
    """Names as the planner looks them up (lower case, no trailing dot); each once."""
    out: dict[str, DomainLimits] = {}
    twice = []
    for name, limits in tables.items():
        if _domain(name) in out:
            twice.append((name, f"{_domain(name)} is configured twice (names are case-insensitive); merge the tables"))
        out[_domain(name)] = limits
    raise_at(twice)
    return out


def _network(name: Any) -> Any:
    if not isinstance(name, str):
        return name
    try:
        return ipaddress.ip_network(name.strip(), strict=False)
    except ValueError:
        raise ValueError('not an IP address or network; use e.g. "192.0.2.0/24" or "2001:db8::/48"') from None


def _longest_first(raw: Any, handler: ValidatorFunctionWrapHandler) -> dict[IPNetwork, NetworkLimits]:
    """Each network once, the longest prefix first: the first that holds an address is its most
    specific one."""
    tables: dict[IPNetwork, NetworkLimits] = handler(raw)
    seen: dict[IPNetwork, str] = {}  # two names of one network are refused
    raise_at(
        (name, f"{_network(name)} is configured twice ({first!r} too); merge the tables")
        for name in raw
        if (first := seen.setdefault(_network(name), name)) != name
    )
    return dict(sorted(tables.items(), key=lambda item: item[0].prefixlen, reverse=True))


class RateLimitTable(Settings):
    """`[ratelimit]` as written."""

    enabled: bool = True
    sender_domain: Limits | None = None
    recipient_domain: Limits | None = None
    client_ip: Limits | None = None
    auth_user: Limits | None = None
    domains: Annotated[dict[Annotated[str, AfterValidator(_domain_name)], DomainLimits], AfterValidator(_by_domain)] = (
        Field(default_factory=dict)
    )
    networks: Annotated[
        dict[Annotated[IPNetwork, BeforeValidator(_network, json_schema_input_type=str)], NetworkLimits],
        WrapValidator(_longest_first),
    ] = Field(default_factory=dict)
    key_prefix: KeyPrefix = "quorum:rl:"
    ipv6_prefix: Int = Field(64, ge=32, le=128)
    check_at_connect: bool = False
    backoff: Duration = Field(1.0, ge=0.05)
    warn_interval: Duration = Field(60.0, ge=1.0)
    max_local_buckets: Int = Field(100_000, ge=100)
    recipient_domain_share: Share = 1.0
    recipient_domain_share_by: Literal["client_ip", "sender"] = "client_ip"  # what one share is counted by


class RateLimitSettings(RateLimitTable):
    """What the stage runs with: `[ratelimit]` and the `[redis]` it counts in."""

    redis: RedisSettings = Field(default_factory=RedisSettings)

    @functools.cached_property
    def defaults(self) -> dict[str, tuple[Rule, ...]]:
        return _kinds(self)

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

    def warnings(self) -> list[tuple[str, str]]:
        """(key, text): a recipient_domain bucket without a share (a tenant's inbound kill switch), or
        nothing counted at all."""
        out = []
        limited = [
            name
            for name, override in [("", None), *self.domains.items()]
            if self.rules("recipient_domain", override) and self.share(override) >= 1.0
        ]
        if limited:
            where = "recipient_domain" if "" in limited else f"recipient_domain of {', '.join(sorted(limited)[:3])}"
            out.append(("recipient_domain_share", SHARELESS.format(where=where)))
        if not any(self.defaults.values()) and not any(o.kinds for o in self.domains.values()) and not self.networks:
            out.append(("", "no limits configured: nothing is counted; set e.g. sender_domain or client_ip"))
        return out


def parse_settings(root: Table) -> RateLimitSettings | None:
    """None when `[ratelimit]` is absent or `enabled = false`; problems are recorded on `root`."""
    redis_table = root.table("redis")  # always read, so an unused [redis] is not "unknown"
    if "ratelimit" not in root.data:
        return None
    t = root.table("ratelimit")
    if t.data.get("enabled") is False:  # a table switched off is not checked
        return None
    table = _validated(t)
    settings = RateLimitSettings.model_construct(**dict(table or RateLimitTable()), redis=parse_redis(redis_table))
    for key, text in settings.warnings() if table is not None else ():
        t.problems.warn(t.key(key) if key else t.path, text)
    return settings


def _validated(t: Table) -> RateLimitTable | None:
    """`[ratelimit]` validated; each problem under the key as the operator wrote it."""
    try:
        return RateLimitTable.model_validate(dict(t.data))
    except ValidationError as exc:
        for error in exc.errors(include_url=False):
            loc = tuple(error["loc"])
            t.problems.error(dotted(t.path, _as_written(t.data, loc)), explain(error, RateLimitTable, loc))
        return None


def _as_written(data: Any, loc: tuple[Any, ...]) -> tuple[Any, ...]:
    """`loc` without the `[0]` of a single limit table (checked as a list of one) and without
    pydantic's `[key]` after a domain or network name it refused."""
    out = []
    for part in loc:
        if part == "[key]" or (isinstance(part, int) and isinstance(data, Mapping)):
            continue
        out.append(part)
        try:
            data = data[part]
        except (LookupError, TypeError):
            data = None
    return tuple(out)
