"""Per-domain rate limits in Redis: config parsing and stage construction."""

from __future__ import annotations

from typing import Any

from quorum.config.fields import Table
from quorum.ratelimit.fallback import LocalBuckets
from quorum.ratelimit.limiter import Limiter
from quorum.ratelimit.settings import RateLimitSettings, RateLimitTable, parse_settings
from quorum.ratelimit.stage import RateLimitStage
from quorum.redisconn import RedisTable

TABLES: dict[str, Any] = {"ratelimit": RateLimitTable, "redis": RedisTable}


def parse(root: Table) -> RateLimitSettings | None:
    """Reads `[redis]` and `[ratelimit]`; None when rate limiting is absent or `enabled = false`."""
    return parse_settings(root)


def make_limiter(settings: RateLimitSettings) -> Limiter:
    from quorum.ratelimit.connect import connect  # imports redis-py only when the feature is on

    return Limiter(
        lambda: connect(settings.redis),
        LocalBuckets(max_keys=settings.max_local_buckets),
        backoff=settings.backoff,
        warn_interval=settings.warn_interval,
    )


def build(config: Any, settings: RateLimitSettings) -> list[RateLimitStage]:
    return [RateLimitStage(settings, make_limiter(settings))]
