"""`[tenants]` and the file's `[domains]`, validated at load.

```toml
[tenants]
store = "redis"              # "file" (default): only [domains] tables; "redis": also one record per domain
refresh = "5s"               # a changed record applies to the next transaction after at most this long
key_prefix = "quorum:tenant:"
cache_size = 10000           # domains kept in memory (records and "no record" answers)
backoff = "1s"               # after a Redis error, no lookup for this long (last known records apply)
warn_interval = "60s"        # at most one "Redis unreachable" warning per interval
```

The Redis server is the one of `[redis]` (single, Sentinel or Cluster), parsed by
`quorum.redisconn` like every feature's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field

from quorum.config.fields import Problems, Table
from quorum.config.model import PolicySettings
from quorum.config.schema import Duration, Int, Settings
from quorum.redisconn import KeyPrefix, RedisSettings, shared_redis
from quorum.tenants.schema import DomainEntry, EngineInfo, SchemaContext, parse_domains


class TenantTable(Settings):
    """`[tenants]` as written."""

    store: Literal["file", "redis"] = "file"
    refresh: Duration = Field(5.0, ge=0.05)
    key_prefix: KeyPrefix = "quorum:tenant:"
    cache_size: Int = Field(10_000, ge=16, le=10_000_000)
    backoff: Duration = Field(1.0, ge=0.05)
    warn_interval: Duration = Field(60.0, ge=1.0)


class TenantSettings(TenantTable):
    """What the resolver runs with: `[tenants]`, the `[redis]` of its records and the file's domains."""

    redis: RedisSettings | None = None  # set when store = "redis"
    domains: Mapping[str, DomainEntry] = Field(default_factory=dict)  # the file's, by normalised pattern


def parse_settings(root: Table) -> TenantSettings | None:
    """None when the config has neither `[tenants]` nor `[domains]`."""
    if "tenants" not in root.data and "domains" not in root.data:
        return None
    table = root.model("tenants", TenantTable)
    return TenantSettings.model_construct(
        **dict(table),
        redis=(shared_redis(root) or RedisSettings()) if table.store == "redis" else None,
        domains=parse_domains(root.table("domains"), context_from_root(root)),
    )


def context_from_root(root: Table) -> SchemaContext:
    """The global engines and policy, read again from the raw tables (the loader reports their problems)."""
    from quorum.engines.settings import parse_engines

    scratch = Problems()
    raw_policy, raw_engines = root.data.get("policy", {}), root.data.get("engines", {})
    policy = Table(raw_policy if isinstance(raw_policy, Mapping) else {}, "policy", scratch).as_model(PolicySettings)
    engines = parse_engines(Table(raw_engines if isinstance(raw_engines, Mapping) else {}, "engines", scratch), scratch)
    raw_auth: Any = root.data.get("auth")
    auth_enabled = isinstance(raw_auth, Mapping) and raw_auth.get("enabled", True) is not False
    return SchemaContext(EngineInfo.of(engines), policy, bool(root.data.get("dnsbl")), auth_enabled)
