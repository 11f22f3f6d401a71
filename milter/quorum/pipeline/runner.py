"""Runs one engine for one message: size limit, breaker, timing, and every failure turned into an
`error` verdict. Nothing raises out of `run`.

Each engine has its own bounded executor (its `concurrency` is its pool), so a slow engine queues
only its own calls and cannot starve the others. A scan with nothing to run beside it may run in
the caller's thread instead (`run_inline`), when one of the engine's `concurrency` slots is free:
every scan holds a slot, wherever it runs, so the bound on the engine holds either way. A call that
had not started by the time its fan-out ended is cancelled unstarted; a call cancelled by the
pipeline (deadline or early exit) that started too late to have had a fair budget never counts
against the breaker.
"""

from __future__ import annotations

import logging
import re
import socket
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Protocol

from quorum import metrics
from quorum.engines.base import Engine, EngineError, ScanCall
from quorum.message import Message
from quorum.pipeline.breaker import BreakerState, CircuitBreaker
from quorum.verdict import Category, Status, Verdict

log = logging.getLogger("quorum.engines")
_UNSAFE = re.compile(r"[\x00-\x1f\x7f]+")
# A call that started with less than this share of the budget it was submitted with (it queued
# behind other calls of its engine) is not a fair trial: its timeout does not count as a failure.
FAIR_SHARE = 0.5


class ScanCache(Protocol):
    """Answers an antivirus scan from known verdicts, else calls the engine (the verdict cache feature)."""

    def scan(self, engine: Engine, message: Message, call: ScanCall) -> Verdict: ...


class EngineRunner:
    def __init__(self, engine: Engine, cache: ScanCache | None = None) -> None:
        self.engine = engine
        self.cache = cache if engine.category is Category.ANTIVIRUS else None  # spam verdicts: never
        s = engine.settings
        self.settings = s
        self.breaker = CircuitBreaker(s.breaker_failures, s.breaker_cooldown)
        self.cost = engine.prior_cost  # seconds per answered scan, EWMA (cascade order)
        self.executor = ThreadPoolExecutor(max_workers=s.concurrency, thread_name_prefix=f"quorum-{engine.name}")
        self._slots = threading.BoundedSemaphore(s.concurrency)  # scans running now, pooled or inline

    @property
    def name(self) -> str:
        return self.engine.name

    def submit(self, message: Message, call: ScanCall) -> Future[Verdict]:
        try:
            return self.executor.submit(self._pooled, message, call, call.remaining())
        except RuntimeError:  # shut down (stopping, or a replaced pipeline): an answer, not a traceback
            done: Future[Verdict] = Future()
            done.set_result(self.engine.verdict(Status.ERROR, error="stopping"))
            return done

    def run_inline(self, message: Message, call: ScanCall) -> Verdict | None:
        """The scan in the caller's thread (no hand-off to a worker and back), or None when every
        slot is taken: then the caller submits it and it queues like any other."""
        if not self._slots.acquire(blocking=False):
            return None
        try:
            return self.run(message, call, call.remaining())
        finally:
            self._slots.release()

    def _pooled(self, message: Message, call: ScanCall, budget: float) -> Verdict:
        # A worker is free but inline scans may hold the slots: wait for one within the budget.
        if not self._slots.acquire(timeout=max(0.0, call.remaining())):
            return self._unstarted(call)
        try:
            return self.run(message, call, budget)
        finally:
            self._slots.release()

    def run(self, message: Message, call: ScanCall, budget: float | None = None) -> Verdict:
        engine = self.engine
        if message.size > self.settings.max_size:
            return engine.verdict(Status.SKIPPED, detail="too-large")
        if message.truncated:
            return engine.verdict(Status.SKIPPED, detail="too-large")
        if call.cancelled or call.remaining() <= 0:
            return self._unstarted(call)
        if not self.breaker.allow():
            return engine.verdict(Status.SKIPPED, detail="circuit-open")
        start = time.monotonic()
        fair = budget is None or call.remaining() >= FAIR_SHARE * budget
        try:
            verdict = self.cache.scan(engine, message, call) if self.cache else engine.scan(message, call)
        except (TimeoutError, EngineError, OSError, ValueError) as exc:
            verdict = engine.verdict(Status.ERROR, error=self._reason(exc, call))
        except Exception as exc:  # noqa: BLE001 - an adapter bug must not reach the milter
            log.exception("engine %s raised", engine.name)
            verdict = engine.verdict(Status.ERROR, error=f"internal {type(exc).__name__}")
        verdict = verdict.with_(elapsed=time.monotonic() - start)
        if call.cancelled and not fair and not verdict.status.answered:
            self.breaker.release()  # started too late to have had a fair budget
            return verdict.with_(status=Status.ERROR, error="timeout", detail=None)
        if call.cancelled and call.remaining() > 0:
            # Early exit: the answer was settled without this engine. Not its failure.
            self.breaker.release()
            return (
                verdict.with_(status=Status.CANCELLED, detail=None, error=None)
                if not verdict.status.answered
                else verdict
            )
        if call.cancelled and not verdict.status.answered:
            # Cancelled at the scan deadline: a timeout like any other, so a hung engine trips the breaker.
            verdict = verdict.with_(status=Status.ERROR, error="timeout", detail=None)
        self._account(verdict)
        return verdict

    def _unstarted(self, call: ScanCall) -> Verdict:
        """A scan that never started. `cancelled` only when its fan-out was decided without it (an
        early exit leaves budget on the call); a scan that queued past its deadline never ran, and
        that is a failure like a timeout (fail-closed policies tempfail), though not the engine's:
        the breaker is not told."""
        if call.cancelled and call.remaining() > 0:
            return self.engine.verdict(Status.CANCELLED)
        return self.engine.verdict(Status.ERROR, error="queued")

    def _reason(self, exc: BaseException, call: ScanCall) -> str:
        if call.cancelled and call.remaining() > 0:
            return "cancelled"
        if isinstance(exc, (socket.timeout, TimeoutError)) or call.remaining() <= 0:
            return "timeout"
        text = str(exc) or type(exc).__name__
        return _UNSAFE.sub(" ", text)[:200]

    def _account(self, verdict: Verdict) -> None:
        if verdict.status is Status.ERROR:
            before = self.breaker.state
            after = self.breaker.failure()
            if after is BreakerState.OPEN and before is not BreakerState.OPEN:
                log.warning(
                    "engine %s: circuit open after %s (skipped for %.0fs)",
                    self.name,
                    verdict.error,
                    self.settings.breaker_cooldown,
                )
                metrics.CIRCUIT_OPEN.labels(self.name).set(1)
        elif verdict.status.answered:
            self.cost = 0.9 * self.cost + 0.1 * verdict.elapsed
            if self.breaker.state is not BreakerState.CLOSED:
                log.info("engine %s: answered again, circuit closed", self.name)
                metrics.CIRCUIT_OPEN.labels(self.name).set(0)
            self.breaker.success()
        else:
            self.breaker.release()

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.engine.close()
