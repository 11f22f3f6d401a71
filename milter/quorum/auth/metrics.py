"""Prometheus counters of ARC (same registry as quorum.metrics, served with it)."""

from __future__ import annotations

from prometheus_client import Counter

VERIFIED = Counter(
    "quorum_arc_verified_total", "Incoming ARC chains judged, by result (none: no ARC header fields)", ["result"]
)
SEALED = Counter("quorum_arc_sealed_total", "Delivered messages Quorum added an ARC set to, by its cv=", ["cv"])
UNSEALED = Counter(
    "quorum_arc_unsealed_total",
    "Delivered inbound messages not sealed with [arc] seal = true, by reason: quarantined, chain_failed (the "
    "latest incoming seal already says cv=fail), unverified (chain not verified or temperror), too_long "
    "(50 sets), no_results (no Authentication-Results of Quorum's), failed",
    ["reason"],
)
OVERRIDDEN = Counter(
    "quorum_dmarc_arc_overrides_total", "DMARC failures not enforced because a trusted sealer's ARC chain passed"
)
for _result in ("none", "pass", "fail", "temperror"):
    VERIFIED.labels(_result)
for _cv in ("none", "pass", "fail"):
    SEALED.labels(_cv)
for _reason in ("quarantined", "chain_failed", "unverified", "too_long", "no_results", "failed"):
    UNSEALED.labels(_reason)
