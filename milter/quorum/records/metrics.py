"""The session records' metrics (declared on its Feature: quorum.features)."""

from __future__ import annotations

from prometheus_client import Counter

WRITTEN = Counter("quorum_records_written_total", "Session records written to the Redis Stream")
DROPPED = Counter(
    "quorum_records_dropped_total", "Session records dropped (queue_full, redis_down, closed)", ["reason"]
)
