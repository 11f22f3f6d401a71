"""Prometheus series of flow control (same registry as quorum.metrics, served with it)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

from quorum.flow.settings import KINDS

REFUSED = Counter(
    "quorum_flow_refused_total", "Transactions or recipients deferred (451) by a concurrency limit", ["kind"]
)
UNCOUNTED = Counter(
    "quorum_flow_uncounted_total",
    "Transactions admitted without a slot because Redis was unavailable (on_redis_failure = open)",
)
HELD = Gauge("quorum_flow_slots_held", "Transactions of this instance holding concurrency slots")
for _kind in KINDS:
    REFUSED.labels(_kind)
