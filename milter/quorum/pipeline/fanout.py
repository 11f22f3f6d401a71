"""Run every engine and every stage's end-of-data check in parallel under one deadline.

The caller's thread (a libmilter connection thread) only waits and calls `progress()` so
Postfix's content timeout does not fire; all I/O happens on the shared worker pool.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Executor, Future, wait
from typing import Any

from quorum.engines.base import ScanCall
from quorum.message import Message
from quorum.pipeline.runner import EngineRunner
from quorum.pipeline.stages import ScanContext, Session, Stage
from quorum.verdict import Status, Verdict

log = logging.getLogger("quorum.pipeline")


def fan_out(
    pool: Executor,
    runners: list[EngineRunner],
    stages: list[Stage],
    session: Session,
    message: Message,
    ctx: ScanContext,
    deadline: float,
    settled: Callable[[list[Verdict], ScanContext], bool],
    progress: Callable[[], None] | None = None,
    progress_interval: float = 10.0,
) -> list[Verdict]:
    start = time.monotonic()
    calls: dict[Future[Verdict], tuple[EngineRunner, ScanCall]] = {}
    for runner in runners:
        call = ScanCall(min(deadline, start + runner.settings.timeout))
        calls[pool.submit(runner.run, message, call)] = (runner, call)
    checks: dict[Future[None], Stage] = {
        pool.submit(_examine, stage, session, message, ctx, deadline): stage for stage in stages
    }
    done: dict[str, Verdict] = {}
    pending: set[Future[Any]] = set(calls) | set(checks)
    early_exit = False
    next_progress = start + progress_interval
    while pending:
        now = time.monotonic()
        if now >= deadline:
            break
        finished, pending = wait(pending, timeout=min(deadline, next_progress) - now, return_when=FIRST_COMPLETED)
        for fut in finished:
            if fut in calls:
                runner, _ = calls[fut]
                done[runner.name] = fut.result()
        if progress and time.monotonic() >= next_progress:
            _safe(progress)
            next_progress = time.monotonic() + progress_interval
        if finished and settled(list(done.values()), ctx):
            early_exit = True
            break
    verdicts = []
    for _fut, (runner, call) in calls.items():
        if runner.name in done:
            verdicts.append(done[runner.name])
            continue
        call.cancel()
        elapsed = time.monotonic() - start
        if early_exit:
            verdicts.append(runner.engine.verdict(Status.CANCELLED, elapsed=elapsed))
        else:
            verdicts.append(runner.engine.verdict(Status.ERROR, error="timeout", elapsed=elapsed))
    for check_fut, stage in checks.items():
        if not check_fut.done() and not early_exit:
            log.warning("stage %s did not finish before the scan deadline", stage.name)
            ctx.log[f"{stage.name}_timeout"] = "yes"
    return verdicts


def _examine(stage: Stage, session: Session, message: Message, ctx: ScanContext, deadline: float) -> None:
    try:
        stage.examine(session, message, ctx, deadline)
    except Exception:  # noqa: BLE001 - a stage bug must not reach the milter
        log.exception("stage %s failed at end-of-data", stage.name)
        ctx.log[f"{stage.name}_error"] = "yes"


def _safe(fn: Callable[[], None]) -> None:
    try:
        fn()
    except Exception:  # noqa: BLE001 - progress is best effort
        log.debug("progress() failed", exc_info=True)
