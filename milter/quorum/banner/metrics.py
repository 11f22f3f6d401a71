"""Prometheus counters of banners (same registry as quorum.metrics, served with it)."""

from __future__ import annotations

from prometheus_client import Counter

ADDED = Counter("quorum_banner_added_total", "Banners inserted into delivered mail, by kind", ["kind"])
SKIPPED = Counter(
    "quorum_banner_skipped_total",
    "Banners due but not inserted, by kind and reason (signed, encrypted, present, too_large, charset, "
    "malformed, no_text_part, truncated)",
    ["kind", "reason"],
)
for _kind in ("external_warning", "footer"):
    ADDED.labels(_kind)
