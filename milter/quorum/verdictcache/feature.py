"""`[verdict_cache]` as a feature: parsed at load; the pipeline hands the cache to antivirus runners."""

from __future__ import annotations

from typing import Any

from quorum.config.fields import Table
from quorum.verdictcache.cached import CachedScan
from quorum.verdictcache.settings import VerdictCacheSettings, parse_settings
from quorum.verdictcache.store import VerdictStore


def parse(root: Table) -> VerdictCacheSettings | None:
    return parse_settings(root)


def build(config: Any, settings: VerdictCacheSettings) -> list[Any]:
    return []


def make_cache(settings: VerdictCacheSettings) -> CachedScan:
    factory = None
    if settings.redis is not None:
        redis_settings = settings.redis

        def factory() -> Any:
            from quorum.ratelimit.connect import connect

            backend = connect(redis_settings)
            return getattr(backend, "client", backend)

    store = VerdictStore(factory, settings.ttl, settings.local_entries, settings.key_prefix)
    return CachedScan(store, settings.max_parts, settings.max_size)
