"""Prometheus metrics (prometheus-client, the standard exporter library): served by the milter
worker on `[milter] metrics_listen`, updated once per decision from the pipeline.

Label values are bounded: engines and stages come from the config, verdicts/actions/reasons are
fixed sets, and tenants go through `BoundedLabels` (the first `limit` tenant domains seen get their
own series, the rest share "_other"). monitoring/ holds the Grafana dashboard and alert rules
built on these names (tests/unit/test_monitoring.py keeps them in step).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from prometheus_client import Counter, Gauge, Histogram, start_http_server

from quorum.verdict import Category, Status, Verdict

log = logging.getLogger("quorum.metrics")

MESSAGES = Counter("quorum_messages_total", "Messages decided", ["verdict", "action"])
ENGINE_SCANS = Counter("quorum_engine_scans_total", "Engine results", ["engine", "status"])
ENGINE_SECONDS = Histogram(
    "quorum_engine_scan_seconds",
    "Time per engine scan",
    ["engine"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
DECISION_SECONDS = Histogram(
    "quorum_decision_seconds",
    "Time from end-of-data to the answer",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
SESSIONS = Gauge("quorum_smtp_sessions", "SMTP sessions in flight")
LATE_RESULTS = Counter(
    "quorum_late_results_total",
    "Engine or stage results that arrived after their transaction's fan-out ended (dropped)",
)
LIMITS_HIT = Counter("quorum_input_limits_total", "Transactions that hit an input limit", ["limit"])
CIRCUIT_OPEN = Gauge("quorum_engine_circuit_open", "1 while the engine's circuit breaker is open", ["engine"])
ENGINE_FAILURES = Counter(
    "quorum_engine_failures_total",
    "Engine scans without an answer: timeout, queued (no free slot in time), error, or circuit open",
    ["engine", "category", "reason"],
)
ANTIVIRUS_UNAVAILABLE = Counter(
    "quorum_antivirus_unavailable_total", "Messages on which no antivirus engine answered (every one failed)"
)
REDIS_FAILURES = Counter(
    "quorum_redis_failures_total",
    "Redis calls that failed (error, timeout, refused), by the feature that made them; the feature backs off",
    ["feature"],
)
TENANT_MESSAGES = Counter(
    "quorum_tenant_messages_total",
    'Messages by tenant domain (a bounded set; the rest count as "_other") and action',
    ["tenant", "action"],
)
OTHER = "_other"
NO_TENANT = "_global"


class BoundedLabels:
    """The first `limit` distinct values keep their own label; later ones map to `OTHER`."""

    def __init__(self, limit: int = 50) -> None:
        self.limit = limit
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def admit(self, value: str) -> str:
        if value in self._seen:
            return value
        with self._lock:
            if len(self._seen) >= self.limit:
                return OTHER
            self._seen.add(value)
            return value

    def allow(self, values: list[str]) -> None:
        """Reserve series for configured tenants (up to the limit) before traffic picks them."""
        for value in values:
            self.admit(value)


TENANTS = BoundedLabels()


_CHILDREN: dict[tuple[object, ...], Any] = {}


def _child(metric: Any, *labels: str) -> Any:
    """`metric.labels(*labels)`, remembered: labels() validates and locks on every call (~3 us), and
    the label values here are bounded sets (see the module docstring)."""
    key = (metric, *labels)
    child = _CHILDREN.get(key)
    if child is None:
        child = _CHILDREN[key] = metric.labels(*labels)
    return child


def observe(label: str, action: str, verdicts: list[Verdict], elapsed: float, tenant: str | None = None) -> None:
    _child(MESSAGES, label, action).inc()
    DECISION_SECONDS.observe(elapsed)
    av_failed = av_answered = False
    for v in verdicts:
        _child(ENGINE_SCANS, v.engine, str(v.status)).inc()
        if v.status.answered:
            _child(ENGINE_SECONDS, v.engine).observe(v.elapsed)
        reason = failure_reason(v)
        if reason:
            _child(ENGINE_FAILURES, v.engine, str(v.category), reason).inc()
        if v.category is Category.ANTIVIRUS:
            av_answered |= v.status.answered
            av_failed |= reason is not None
    if av_failed and not av_answered:
        ANTIVIRUS_UNAVAILABLE.inc()
    if TENANTS.limit:
        _child(TENANT_MESSAGES, TENANTS.admit(tenant or NO_TENANT), action).inc()


def failure_reason(v: Verdict) -> str | None:
    """The failure label (timeout, queued, error, circuit_open) of a scan that should have answered
    and did not; `queued`: it waited for a free slot of its engine past its deadline (saturation)."""
    if v.status is Status.ERROR:
        return v.error if v.error in ("timeout", "queued") else "error"
    if v.detail == "circuit-open":
        return "circuit_open"
    return None


def serve(listen: str) -> None:
    """Start the HTTP exporter on "host:port"; a failure is logged, never fatal."""
    host, _, port = listen.rpartition(":")
    try:
        start_http_server(int(port), addr=host.strip("[]") or "127.0.0.1")
        log.info("metrics on http://%s/metrics", listen)
    except OSError as exc:
        log.error("cannot serve metrics on %s: %s", listen, exc)
