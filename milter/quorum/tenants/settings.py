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
from dataclasses import dataclass, field
from typing import Any

from quorum.config.fields import Problems, Table
from quorum.redisconn import RedisSettings, shared_redis
from quorum.tenants.schema import DomainEntry, EngineInfo, SchemaContext, parse_domains

STORES = ("file", "redis")


@dataclass(frozen=True)
class TenantSettings:
    store: str = "file"
    refresh: float = 5.0
    key_prefix: str = "quorum:tenant:"
    cache_size: int = 10_000
    backoff: float = 1.0
    warn_interval: float = 60.0
    redis: RedisSettings | None = None  # set when store = "redis"
    domains: Mapping[str, DomainEntry] = field(default_factory=dict)  # the file's, by normalised pattern


def parse_settings(root: Table) -> TenantSettings | None:
    """None when the config has neither `[tenants]` nor `[domains]`."""
    if "tenants" not in root.data and "domains" not in root.data:
        return None
    t = root.table("tenants")
    d = TenantSettings()
    store = t.choice("store", d.store, STORES)
    key_prefix = t.str("key_prefix", d.key_prefix)
    if "{" in key_prefix or "}" in key_prefix:
        t.problems.error(t.key("key_prefix"), "must not contain '{' or '}' (Redis Cluster hash tags); remove them")
    settings = TenantSettings(
        store=store,
        refresh=t.duration("refresh", d.refresh, minimum=0.05),
        key_prefix=key_prefix,
        cache_size=t.int("cache_size", d.cache_size, minimum=16, maximum=10_000_000),
        backoff=t.duration("backoff", d.backoff, minimum=0.05),
        warn_interval=t.duration("warn_interval", d.warn_interval, minimum=1.0),
        redis=(shared_redis(root) or RedisSettings()) if store == "redis" else None,
        domains=parse_domains(root.table("domains"), context_from_root(root)),
    )
    t.reject_unknown()
    return settings


def context_from_root(root: Table) -> SchemaContext:
    """The global engines and policy, read again from the raw tables (the loader reports their problems)."""
    from quorum.config.model import PolicySettings
    from quorum.engines.settings import parse_engines

    scratch = Problems()
    raw_policy = root.data.get("policy", {})
    raw_engines = root.data.get("engines", {})
    policy = Table(raw_policy if isinstance(raw_policy, Mapping) else {}, "policy", scratch).as_model(PolicySettings)
    engines = parse_engines(Table(raw_engines if isinstance(raw_engines, Mapping) else {}, "engines", scratch), scratch)
    infos: dict[str, EngineInfo] = {}
    from quorum.engines import adapter_class
    from quorum.verdict import Category

    for e in engines:
        infos[e.name] = EngineInfo(e.enabled, adapter_class(e.type).category is Category.ANTISPAM, e.mode)
    raw_auth: Any = root.data.get("auth")
    auth_enabled = isinstance(raw_auth, Mapping) and raw_auth.get("enabled", True) is not False
    return SchemaContext(infos, policy, bool(root.data.get("dnsbl")), auth_enabled)
