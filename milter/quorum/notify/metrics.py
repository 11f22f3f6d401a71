"""Prometheus counters of the notice machinery (same registry as quorum.metrics, served with it)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

NOTICES = Counter("quorum_notices_total", "Notices by final outcome", ["event", "result"])  # sent|failed|dropped
SUPPRESSED = Counter("quorum_notices_suppressed_total", "Notices not sent, by the guard that stopped them", ["guard"])
RETRIES = Counter("quorum_notice_retries_total", "Notice send attempts scheduled again after a failure")
TEMPLATE_ERRORS = Counter("quorum_notice_template_errors_total", "Operator templates that failed (default used)")
PENDING = Gauge("quorum_notices_pending", "Notices queued or waiting for a retry")
