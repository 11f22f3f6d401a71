"""The pipeline: built from one Config, immutable afterwards (a reload builds a new one)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field

from quorum import metrics
from quorum.config.model import Config
from quorum.engines import build_engine
from quorum.features import FEATURES
from quorum.message import Message, printable
from quorum.pipeline.fanout import fan_out
from quorum.pipeline.headers import headers_to_add, is_ours
from quorum.pipeline.policy import Decision, Policy
from quorum.pipeline.runner import EngineRunner
from quorum.pipeline.stages import Action, Outcome, Reply, ScanContext, Session, Stage

log = logging.getLogger("quorum.pipeline")
msglog = logging.getLogger("quorum.message")


@dataclass
class Result:
    """The decision plus the header edits that carry it out."""

    decision: Decision
    ctx: ScanContext
    add: list[tuple[str, str]] = field(default_factory=list)
    remove: list[tuple[str, int]] = field(default_factory=list)  # (name, 1-based index), highest first
    elapsed: float = 0.0


class Pipeline:
    def __init__(self, config: Config, pool: Executor) -> None:
        self.config = config
        self.pool = pool
        self.runners = [EngineRunner(build_engine(s)) for s in config.enabled_engines]
        self.policy = Policy(config.policy, {s.name: s for s in config.engines})
        self.stages: list[Stage] = [stage for feature in FEATURES for stage in feature.build(config)]

    # SMTP-stage hooks: first Reply wins; a failing stage is logged and skipped.
    def hook(self, name: str, session: Session, *args: str) -> Reply | None:
        for stage in self.stages:
            try:
                reply: Reply | None = getattr(stage, name)(session, *args)
            except Exception:  # noqa: BLE001 - a stage bug must not break the SMTP session
                log.exception("stage %s failed in %s", stage.name, name)
                continue
            if reply is not None:
                return reply
        return None

    def notify(self, name: str, session: Session, *args: object) -> None:
        for stage in self.stages:
            try:
                getattr(stage, name)(session, *args)
            except Exception:  # noqa: BLE001
                log.exception("stage %s failed in %s", stage.name, name)

    def check(self, session: Session, message: Message, progress: Callable[[], None] | None = None) -> Result:
        """Scan and decide. Never raises: an internal failure becomes a tempfail."""
        start = time.monotonic()
        ctx = ScanContext()
        try:
            result = self._check(session, message, ctx, progress, start)
        except Exception:  # noqa: BLE001 - the safe answer to our own bug is "try again later"
            log.exception("pipeline failed for %s", session.envelope.queue_id or "message")
            reply = Reply.tempfail("451", "4.3.0", "internal error, please try again later")
            result = Result(Decision(Action.TEMPFAIL, "unchecked", reply, reasons=["internal error"]), ctx)
        result.elapsed = time.monotonic() - start
        self.notify("finished", session, Outcome(result.decision.action, result.decision.reply))
        self._log(session, message, result)
        metrics.observe(result.decision.label, str(result.decision.action), result.decision.verdicts, result.elapsed)
        return result

    def _check(
        self,
        session: Session,
        message: Message,
        ctx: ScanContext,
        progress: Callable[[], None] | None,
        start: float,
    ) -> Result:
        m = self.config.milter
        if message.truncated or message.size > m.max_message_size:
            decision = self._oversize(message)
            if decision is not None:
                return Result(decision, ctx)
        verdicts = fan_out(
            self.pool,
            self.runners,
            self.stages,
            session,
            message,
            ctx,
            start + m.scan_deadline,
            self.policy.settled,
            progress,
            m.progress_interval,
        )
        decision = self.policy.decide(verdicts, ctx)
        if decision.action not in (Action.ACCEPT, Action.TAG, Action.QUARANTINE):
            return Result(decision, ctx)
        return Result(decision, ctx, headers_to_add(decision, ctx), self._removals(message, ctx))

    def _oversize(self, message: Message) -> Decision | None:
        m = self.config.milter
        reason = f"message size {message.size} exceeds max_message_size {m.max_message_size}"
        if m.on_oversize == "reject":
            reply = Reply.reject("552", "5.3.4", "message too big for content scanning")
            return Decision(Action.REJECT, "unchecked", reply, reasons=[reason])
        if m.on_oversize == "tempfail":
            reply = Reply.tempfail("452", "4.3.4", "message too big for content scanning now")
            return Decision(Action.TEMPFAIL, "unchecked", reply, reasons=[reason])
        return None  # accept: engines skip it by size and the verdict says "unchecked"

    @staticmethod
    def _removals(message: Message, ctx: ScanContext) -> list[tuple[str, int]]:
        seen: dict[str, int] = {}
        out: list[tuple[str, int]] = []
        for h in message.headers:
            key = h.name.lower()
            seen[key] = seen.get(key, 0) + 1
            if is_ours(h.name) or any(key == name.lower() and _matches(pred, h.raw_value) for name, pred in ctx.remove):
                out.append((h.name, seen[key]))
        return sorted(out, key=lambda x: (x[0].lower(), -x[1]))

    def _log(self, session: Session, message: Message, result: Result) -> None:
        env = session.envelope
        d = result.decision
        engines = ",".join(f"{v.engine}:{v.label()}:{v.elapsed * 1000:.0f}ms" for v in d.verdicts)
        facts = " ".join(f"{k}={printable(v)}" for k, v in result.ctx.log.items())
        msglog.info(
            "qid=%s from=<%s> to=%s client=%s size=%d verdict=%s action=%s%s engines=%s%s%s reason=%r%s time=%.0fms",
            env.queue_id or "-",
            printable(env.sender),
            ",".join(f"<{printable(r)}>" for r in env.recipients) or "-",
            env.client_ip or "-",
            message.size,
            d.label,
            d.action,
            f" reply={printable(str(d.reply))!r}" if d.reply else "",
            engines or "-",
            f" degraded={','.join(d.degraded)}" if d.degraded else "",
            f" left_out={','.join(d.left_out)}" if d.left_out else "",
            "; ".join(d.reasons),
            f" {facts}" if facts else "",
            result.elapsed * 1000,
        )
        if d.quarantine_reason:
            msglog.warning("qid=%s quarantined: %s", env.queue_id or "-", d.quarantine_reason)

    def close(self) -> None:
        close_parts(self.runners, self.stages)


def close_parts(runners: list[EngineRunner], stages: list[Stage]) -> None:
    """Release engines' and stages' connections (also used on a replaced pipeline, see App.reload)."""
    for runner in runners:
        try:
            runner.engine.close()
        except Exception:  # noqa: BLE001
            log.debug("closing engine %s failed", runner.name, exc_info=True)
    for stage in stages:
        try:
            stage.close()
        except Exception:  # noqa: BLE001
            log.debug("closing stage %s failed", stage.name, exc_info=True)


def _matches(pred: object, raw: bytes) -> bool:
    try:
        return bool(pred(raw))  # type: ignore[operator]
    except Exception:  # noqa: BLE001
        return False
