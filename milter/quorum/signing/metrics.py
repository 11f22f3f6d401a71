"""Prometheus counters of DKIM signing (same registry as quorum.metrics, served with it)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

SIGNATURES = Counter(
    "quorum_dkim_signatures_total", "DKIM signatures added to delivered mail, by algorithm", ["algorithm"]
)
SIGNED = Counter("quorum_dkim_signed_total", "Delivered messages Quorum signed (one or more signatures)")
UNSIGNED = Counter(
    "quorum_dkim_unsigned_total",
    "Delivered messages not signed, by reason: untrusted (neither authenticated nor from [signing] "
    "networks), quarantined, no_from, multiple_from, no_key (no key for the From: domain), failed",
    ["reason"],
)
SIGN_SECONDS = Histogram(
    "quorum_dkim_sign_seconds",
    "Time to sign one message (body hash and every signature)",
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
)
REASONS = ("untrusted", "quarantined", "no_from", "multiple_from", "no_key", "failed")
for _reason in REASONS:  # every series exists from the start (rate() of a missing series is nothing)
    UNSIGNED.labels(_reason)
for _algorithm in ("rsa-sha256", "ed25519-sha256"):
    SIGNATURES.labels(_algorithm)
