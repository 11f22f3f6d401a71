"""Prometheus metrics (prometheus-client, the standard exporter library): served by the milter
worker on `[metrics] listen`, updated once per decision from the pipeline."""

from __future__ import annotations

import logging

from prometheus_client import Counter, Gauge, Histogram, start_http_server

from quorum.verdict import Verdict

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
    "quorum_late_results_total", "Engine or stage results that arrived after their transaction's fan-out ended (dropped)"
)
LIMITS_HIT = Counter("quorum_input_limits_total", "Transactions that hit an input limit", ["limit"])
CIRCUIT_OPEN = Gauge("quorum_engine_circuit_open", "1 while the engine's circuit breaker is open", ["engine"])


def observe(label: str, action: str, verdicts: list[Verdict], elapsed: float) -> None:
    MESSAGES.labels(label, action).inc()
    DECISION_SECONDS.observe(elapsed)
    for v in verdicts:
        ENGINE_SCANS.labels(v.engine, str(v.status)).inc()
        if v.status.answered:
            ENGINE_SECONDS.labels(v.engine).observe(v.elapsed)


def serve(listen: str) -> None:
    """Start the HTTP exporter on "host:port"; a failure is logged, never fatal."""
    host, _, port = listen.rpartition(":")
    try:
        start_http_server(int(port), addr=host.strip("[]") or "127.0.0.1")
        log.info("metrics on http://%s/metrics", listen)
    except OSError as exc:
        log.error("cannot serve metrics on %s: %s", listen, exc)
