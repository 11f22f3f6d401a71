"""`[verdict_cache]` as a feature: parsed at load; the pipeline hands the cache to antivirus runners."""

from __future__ import annotations

import logging
from typing import Any

from quorum.config.fields import Table
from quorum.verdictcache.cached import CachedScan
from quorum.verdictcache.settings import VerdictCacheSettings, VerdictCacheTable, parse_settings
from quorum.verdictcache.store import VerdictStore, entry_key

log = logging.getLogger("quorum.verdictcache")

TABLES: dict[str, Any] = {"verdict_cache": VerdictCacheTable}


def parse(root: Table) -> VerdictCacheSettings | None:
    return parse_settings(root)


def build(config: Any, settings: VerdictCacheSettings) -> list[Any]:
    return []


def make_cache(settings: VerdictCacheSettings) -> CachedScan:
    """Redis only with `[redis] hmac_key_file` (entries are signed); otherwise this process's LRU."""
    factory = None
    key = None
    if settings.redis is not None and settings.redis.hmac_key is None:
        log.warning("verdict cache: [redis] has no hmac_key_file, so Redis is not used (local cache only)")
    elif settings.redis is not None:
        redis_settings = settings.redis
        key = entry_key(redis_settings.hmac_key or b"")

        def factory() -> Any:
            from quorum.redisconn import connect

            return connect(redis_settings)

    store = VerdictStore(factory, settings.ttl, settings.local_entries, settings.key_prefix, key)
    return CachedScan(store, settings.max_parts, settings.max_size)
