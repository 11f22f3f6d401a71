"""The pipeline: built from one Config, immutable afterwards (a reload builds a new one).

Flow per transaction: `begin` at MAIL FROM, the SMTP-stage hooks, then at end-of-data `check`
(fan-out, one decision, one `Edits`), then `finish` once the milter applied the edits (or failed
to), which tells the stages, logs one line and counts it. `abort` ends a transaction that never
reached end-of-data.

The pipeline knows no feature: the composition root (`quorum.assembly.build_pipeline`) builds its
`Parts` from the config (engine runners, every feature's stages, the tenant directory, the JSON
log line) and hands them over.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from quorum import metrics
from quorum.config.model import Config
from quorum.message import Message, printable
from quorum.pipeline import amend, output, replies
from quorum.pipeline.fanout import fan_out
from quorum.pipeline.output import Edits
from quorum.pipeline.policy import Decision, Policy
from quorum.pipeline.runner import EngineRunner
from quorum.pipeline.stages import Action, Outcome, Reply, Stage
from quorum.pipeline.tenancy import TenantDirectory, TenantPolicy
from quorum.pipeline.transaction import Connection, Refusal, Scan, Transaction
from quorum.verdict import Category

log = logging.getLogger("quorum.pipeline")
msglog = logging.getLogger("quorum.message")


@dataclass
class Result:
    """The decision, what the stages found, and the edits that carry it out."""

    decision: Decision
    scan: Scan
    edits: Edits
    elapsed: float = 0.0
    outcome: Action | None = None  # what was finally answered (set by `finish`)
    notes: list[str] = field(default_factory=list)


@dataclass
class Parts:
    """What the composition root builds from the config for one pipeline."""

    runners: list[EngineRunner]
    stages: list[Stage]  # every feature's, in the order their hooks run
    tenants: TenantDirectory  # the policy of each recipient domain
    json_line: Callable[[Transaction, Outcome, list[str]], str]  # `[milter] log_format = "json"`
    closers: list[Callable[[], None]] = field(default_factory=list)  # shared resources (the verdict cache's Redis)

    def close(self) -> None:
        for close in (self.tenants.close, *self.closers):
            try:
                close()
            except Exception:  # noqa: BLE001
                log.debug("closing a pipeline part failed", exc_info=True)
        for runner in self.runners:
            try:
                runner.close()
            except Exception:  # noqa: BLE001
                log.debug("closing engine %s failed", runner.name, exc_info=True)
        for stage in self.stages:
            try:
                stage.close()
            except Exception:  # noqa: BLE001
                log.debug("closing stage %s failed", stage.name, exc_info=True)


class Pipeline:
    def __init__(self, config: Config, parts: Parts) -> None:
        self.config = config
        self.parts = parts
        self.runners = parts.runners
        self.stages = parts.stages
        self.tenants = parts.tenants
        self.removals = tuple(r for stage in self.stages for r in stage.removals)
        self.amenders = [s for s in self.stages if type(s).amend is not Stage.amend]  # post-decision hook
        self.classifiers = [s for s in self.stages if type(s).recipient_class is not Stage.recipient_class]
        self.stage_pool = ThreadPoolExecutor(max_workers=config.milter.workers, thread_name_prefix="quorum-stage")
        self._policies: dict[str, Policy] = {}

    # -- SMTP-time hooks: first Reply wins; a failing stage is logged and skipped. -------------
    def hook(self, name: str, *args: object) -> Reply | None:
        for stage in self.stages:
            try:
                reply: Reply | None = getattr(stage, name)(*args)
            except Exception:  # noqa: BLE001 - a stage bug must not break the SMTP session
                log.exception("stage %s failed in %s", stage.name, name)
                continue
            if reply is not None:
                txn = args[0] if args else None
                if name in ("mail_from", "data") and isinstance(txn, Transaction) and txn.refusal is None:
                    txn.refusal = Refusal(stage.name, name, reply)
                elif name == "rcpt" and isinstance(txn, Transaction) and reply.code:
                    txn.refused_recipient(Refusal(stage.name, name, reply, recipient=str(args[1])))
                return reply
        return None

    def _notify(self, name: str, *args: object) -> None:
        for stage in self.stages:
            try:
                getattr(stage, name)(*args)
            except Exception:  # noqa: BLE001
                log.exception("stage %s failed in %s", stage.name, name)

    def begin(self, conn: Connection, sender: str, dry_run: bool = False) -> Transaction:
        txn = Transaction(conn, conn.envelope(), dry_run=dry_run, policy_of=self.tenants.policy_for)
        txn.envelope.sender = sender
        return txn

    def rcpt(self, txn: Transaction, recipient: str) -> Reply | None:
        """A recipient: the transaction limit, its tenant policy, then the stages. Accepted ones
        join the envelope. The first accepted recipient fixes the transaction's policy; one whose
        effective policy differs (by fingerprint, not by domain name) gets 452 4.5.3 and the
        sending MTA delivers it in another transaction, so nothing is lost or scanned twice. The
        same holds for each stage's recipient class (`Stage.recipient_class`): this is the one
        place that rule is kept."""
        if len(txn.envelope.recipients) >= self.config.milter.max_recipients:
            metrics.LIMITS_HIT.labels("recipients").inc()
            txn.refused_recipient(Refusal("limits", "rcpt", replies.TOO_MANY_RECIPIENTS, recipient=recipient))
            return replies.TOO_MANY_RECIPIENTS
        tenant = self.tenants.policy_for(recipient)
        first = txn.tenant is None or not txn.envelope.recipients
        if first:
            txn.tenant = tenant  # visible to the stages' rcpt hooks and classes (DNSBL on/off per domain)
        elif txn.tenant is not None and txn.tenant.fingerprint != tenant.fingerprint:
            return self._separate(txn, recipient, "tenants", "policy", tenant.domain, txn.tenant.domain)
        classes = self._classes(txn, recipient)
        for stage, ours, kept in zip(self.classifiers, classes, txn.partition if not first else (), strict=False):
            if ours is not None and kept is not None and ours != kept:
                return self._separate(txn, recipient, stage.name, f"{stage.name} class", ours, kept)
        reply = self.hook("rcpt", txn, recipient)
        if reply is None:
            txn.envelope.recipients.append(recipient)
            if first:
                txn.partition = tuple(classes)
        elif first:
            txn.tenant = None
        return reply

    def _separate(
        self, txn: Transaction, recipient: str, owner: str, what: str, ours: str | None, kept: str | None
    ) -> Reply:
        log.info(
            "qid=%s recipient <%s> has another %s (%s) than the transaction (%s): 452 4.5.3",
            txn.envelope.queue_id or "-",
            printable(recipient),
            what,
            ours or "global",
            kept or "global",
        )
        txn.refused_recipient(Refusal(owner, "rcpt", replies.SEPARATE_TRANSACTION, recipient=recipient))
        return replies.SEPARATE_TRANSACTION

    def _classes(self, txn: Transaction, recipient: str) -> list[str | None]:
        out: list[str | None] = []
        for stage in self.classifiers:
            try:
                out.append(stage.recipient_class(txn, recipient))
            except Exception:  # noqa: BLE001 - a stage bug must not break the SMTP session
                log.exception("stage %s failed in recipient_class", stage.name)
                out.append(None)
        return out

    def policy_of(self, txn: Transaction) -> tuple[TenantPolicy, Policy]:
        """The transaction's tenant policy and its decision rules (built once per fingerprint)."""
        effective = txn.tenant or self.tenants.global_policy
        rules = self._policies.get(effective.fingerprint)
        if rules is None:
            rules = Policy(
                effective.policy,
                effective.engine_settings(self.config.engines),
                effective.replies,
                self.config.milter.on_oversize,
            )
            if len(self._policies) > 10000:
                self._policies.clear()
            self._policies[effective.fingerprint] = rules
        return effective, rules

    def abort(self, txn: Transaction) -> None:
        if txn.open:
            txn.open = False
            self._notify("aborted", txn)

    # -- end of data ---------------------------------------------------------------------------
    def check(self, txn: Transaction, message: Message, progress: Callable[[], None] | None = None) -> Result:
        """Scan and decide. Never raises: an internal failure becomes a tempfail."""
        start = time.monotonic()
        try:
            result = self._check(txn, message, progress, start)
        except Exception:  # noqa: BLE001 - the safe answer to our own bug is "try again later"
            log.exception("pipeline failed for %s", txn.envelope.queue_id or "message")
            result = refused(replies.INTERNAL_ERROR, "unchecked", "internal error")
        result.elapsed = time.monotonic() - start
        return result

    def _check(self, txn: Transaction, message: Message, progress: Callable[[], None] | None, start: float) -> Result:
        m = self.config.milter
        if message.truncated or message.size > m.max_message_size:
            decision = self._oversize(message)
            if decision is not None:
                return Result(decision, Scan(), output.plan(decision, Scan(), message, ()))
        effective, policy = self.policy_of(txn)
        runners = [] if effective.bypass else [r for r in self.runners if effective.uses_engine(r.name)]
        found = fan_out(
            self.stage_pool,
            runners,
            self.stages,
            txn,
            message,
            start + m.scan_deadline,
            policy.settled,
            progress,
            m.progress_interval,
            later=expensive(runners) if policy.settings.cascade else None,
            can_change=lambda v, scan, rs: policy.can_change(v, scan, [r.settings for r in rs]),
        )
        decision = policy.decide(found.verdicts, found.scan)
        if effective.bypass and decision.action in output.DELIVERED:
            decision.label = "unchecked"
            decision.reasons.append(f"content scanning bypassed for {effective.domain or 'this domain'}")
        for key, value in txn.log.items():  # SMTP-time facts (spf at MAIL FROM), unless the scan has newer
            found.scan.log.setdefault(key, value)
        if effective.domain:
            found.scan.log["tenant"] = effective.domain
        edits = output.plan(decision, found.scan, message, self.removals, txn)
        notes: list[str] = []
        if self.amenders and edits.delivers:
            edits, notes = amend.run(self.amenders, txn, message, edits, found.scan.results)
        return Result(decision, found.scan, edits, notes=notes)

    def _oversize(self, message: Message) -> Decision | None:
        m = self.config.milter
        reason = f"message size {message.size} exceeds max_message_size {m.max_message_size}"
        if m.on_oversize == "reject":
            return Decision(Action.REJECT, "unchecked", replies.TOO_BIG, reasons=[reason])
        if m.on_oversize == "tempfail":
            return Decision(Action.TEMPFAIL, "unchecked", replies.TOO_BIG_NOW, reasons=[reason])
        return None  # accept: engines skip it by size and the verdict says "unchecked"

    def finish(self, txn: Transaction, message: Message, result: Result, outcome: Action, reply: Reply | None) -> None:
        """The milter answered `outcome` (the edits applied, or a 451 because they failed)."""
        result.outcome = outcome
        d = result.decision
        size = message.size  # joins every header: computed once per message
        ended = Outcome(outcome, reply, d, result.scan, size, result.elapsed, message)
        if txn.open:
            txn.open = False
            self._notify("finished", txn, ended)
        if self.config.milter.log_format == "json":
            msglog.info("%s", self.parts.json_line(txn, ended, result.notes))
        else:
            self._log(txn, size, result, reply)
        if result.edits.quarantine and outcome is Action.QUARANTINE:
            msglog.warning("qid=%s quarantined: %s", txn.envelope.queue_id or "-", result.edits.quarantine)
        tenant = txn.tenant.domain if txn.tenant is not None else None
        metrics.observe(d.label, str(outcome), d.verdicts, result.elapsed, tenant=tenant)

    def _log(self, txn: Transaction, size: int, result: Result, reply: Reply | None) -> None:
        env = txn.envelope
        d = result.decision
        engines = ",".join(f"{v.engine}:{v.label()}:{v.elapsed * 1000:.0f}ms" for v in d.verdicts)
        facts = " ".join(f"{k}={_printable(v)}" for k, v in result.scan.log.items())
        reasons = d.reasons + result.notes
        msglog.info(
            "qid=%s from=<%s> to=%s client=%s size=%d verdict=%s action=%s%s engines=%s%s%s reason=%r%s"
            " time=%.0fms txn=%s",
            env.queue_id or "-",
            _printable(env.sender),
            _recipients(env.recipients),
            env.client_ip or "-",
            size,
            d.label,
            result.outcome or d.action,
            f" reply={printable(str(reply))!r}" if reply else "",
            engines or "-",
            f" degraded={','.join(d.degraded)}" if d.degraded else "",
            f" left_out={','.join(d.left_out)}" if d.left_out else "",
            "; ".join(reasons),
            f" {facts}" if facts else "",
            result.elapsed * 1000,
            txn.id,
        )

    def close(self) -> None:
        close_parts(self.parts, self.stage_pool)


def expensive(runners: list[EngineRunner], factor: float = 3.0) -> list[EngineRunner]:
    """The cascade's second tier: antispam engines costing `factor` times the cheapest one or more
    (measured per answered scan; SpamAssassin ~30x rspamd). Antivirus engines always go first."""
    spam = sorted((r for r in runners if r.engine.category is Category.ANTISPAM), key=lambda r: r.cost)
    if len(spam) < 2:
        return []
    cheapest = spam[0].cost
    return [r for r in spam[1:] if r.cost >= factor * cheapest]


def _recipients(recipients: list[str], shown: int = 20) -> str:
    """The log line's recipients: the first `shown`, then how many more (10,000 would drown it)."""
    text = ",".join(f"<{_printable(r)}>" for r in recipients[:shown]) or "-"
    return text + (f",+{len(recipients) - shown} more" if len(recipients) > shown else "")


def _printable(value: str) -> str:
    """`printable` with a fast path for the common case, plain printable ASCII (nothing to escape)."""
    return value if value.isascii() and value.isprintable() else printable(value)


def refused(reply: Reply, label: str, reason: str) -> Result:
    """A result that answers `reply` without scanning (internal failure, body not stored, limits)."""
    decision = Decision(reply.action, label, reply, reasons=[reason])
    return Result(decision, Scan(), Edits(reply.action, reply))


def close_parts(parts: Parts, stage_pool: ThreadPoolExecutor) -> None:
    """Release engines', stages' and pools' resources (also used on a replaced pipeline, see App.reload)."""
    parts.close()
    stage_pool.shutdown(wait=False, cancel_futures=True)
