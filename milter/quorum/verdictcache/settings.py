"""`[verdict_cache]`: off by default; uses the shared `[redis]` table when present.

Entries in Redis are signed with `[redis] hmac_key_file` (see store.py). Without that key Redis is
not used at all and check-config says so: an unsigned cache in Redis lets anyone who can write to
Redis mark malware clean.
"""

from __future__ import annotations

from dataclasses import dataclass

from quorum.config.fields import Table
from quorum.redisconn import RedisSettings, shared_redis


@dataclass(frozen=True)
class VerdictCacheSettings:
    ttl: float = 3600.0
    local_entries: int = 10000
    key_prefix: str = "quorum:vc:"
    max_parts: int = 100  # attachments looked at per message; more -> no caching for that message
    max_size: int = 10 * 1024 * 1024  # larger messages are scanned as a whole, not split (memory stays bounded)
    redis: RedisSettings | None = None  # None: local LRU only (one process)


def parse_settings(root: Table) -> VerdictCacheSettings | None:
    if "verdict_cache" not in root.data:
        return None
    t = root.table("verdict_cache")
    d = VerdictCacheSettings()
    enabled = t.bool("enabled", True)
    settings = VerdictCacheSettings(
        ttl=t.duration("ttl", d.ttl, minimum=1.0),
        local_entries=t.int("local_entries", d.local_entries, minimum=0, maximum=10_000_000),
        key_prefix=t.str("key_prefix", d.key_prefix),
        max_parts=t.int("max_parts", d.max_parts, minimum=1, maximum=10000),
        max_size=t.size("max_size", d.max_size, minimum=1024),
        redis=shared_redis(root),
    )
    t.reject_unknown()
    if enabled and settings.redis is not None and settings.redis.hmac_key is None:
        t.problems.warn(
            t.path,
            "not shared through Redis: [redis] has no hmac_key_file, and unsigned entries would let whoever can "
            "write to Redis mark malware clean; each process keeps its own cache. To share it, create a key "
            "(head -c 32 /dev/urandom | base64 > /etc/quorum/redis-hmac.key, mode 0640, group quorum), "
            "copy it to every gateway and set redis.hmac_key_file",
        )
    return settings if enabled else None
