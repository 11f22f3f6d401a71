"""`[verdict_cache]`: off by default; uses the shared `[redis]` table when present.

Entries in Redis are signed with `[redis] hmac_key_file` (see store.py). Without that key Redis is
not used at all and check-config says so: an unsigned cache in Redis lets anyone who can write to
Redis mark malware clean.
"""

from __future__ import annotations

from pydantic import Field

from quorum.config.fields import Table
from quorum.config.schema import Duration, Int, Settings, Size, validate
from quorum.redisconn import KeyPrefix, RedisSettings, shared_redis


class VerdictCacheTable(Settings):
    """`[verdict_cache]` as written."""

    enabled: bool = True
    ttl: Duration = Field(3600.0, ge=1.0)
    local_entries: Int = Field(10000, ge=0, le=10_000_000)
    key_prefix: KeyPrefix = "quorum:vc:"
    max_parts: Int = Field(100, ge=1, le=10000)  # attachments looked at per message; more -> no caching for it
    max_size: Size = Field(10 * 1024 * 1024, ge=1024)  # larger messages are scanned whole, not split (bounded memory)


class VerdictCacheSettings(VerdictCacheTable):
    """What the cache runs with: `[verdict_cache]` and the shared `[redis]`."""

    redis: RedisSettings | None = None  # None: local LRU only (one process)


def parse_settings(root: Table) -> VerdictCacheSettings | None:
    if "verdict_cache" not in root.data:
        return None
    t = root.table("verdict_cache")
    table = validate(VerdictCacheTable, t.data, t.path, t.problems)
    settings = VerdictCacheSettings.model_construct(**dict(table or VerdictCacheTable()), redis=shared_redis(root))
    if table is not None and settings.enabled and settings.redis is not None and settings.redis.hmac_key is None:
        t.problems.warn(
            t.path,
            "not shared through Redis: [redis] has no hmac_key_file, and unsigned entries would let whoever can "
            "write to Redis mark malware clean; each process keeps its own cache. To share it, create a key "
            "(head -c 32 /dev/urandom | base64 > /etc/quorum/redis-hmac.key, mode 0640, group quorum), "
            "copy it to every gateway and set redis.hmac_key_file",
        )
    return settings if settings.enabled else None
