"""The rate-limit feature's metrics (declared on its Feature: quorum.features)."""

from __future__ import annotations

from prometheus_client import Counter

REFUSED = Counter(
    "quorum_ratelimit_refused_total",
    "Transactions refused by a rate limit, by the kind of the refusing bucket",
    ["kind"],
)
