"""The quarantine actions. Release and delete report a message as done only once Postfix's queue shows it."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from quorum.quarantine.audit import audit_line
from quorum.quarantine.held import HeldMessage, held_messages, select
from quorum.quarantine.postfix import QUEUE_ID, PostfixCommandError, PostfixQueue
from quorum.quarantine.settings import QuarantineSettings

NOT_HELD = "not held by Quorum (not in the hold queue, or no X-Quorum-Quarantine header)"


@dataclass
class ActionResult:
    action: str
    done: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # queue id -> why
    notes: dict[str, str] = field(default_factory=dict)  # queue id -> where it went / warnings

    @property
    def ok(self) -> bool:
        return not self.failed

    def describe(self) -> str:
        return f"{len(self.done)} {self.action}d" + (f", {len(self.failed)} failed" if self.failed else "")

    @property
    def outcome(self) -> str:
        return "ok" if not self.failed else "partial" if self.done else "failed"


def tenant_retention(config: Any, domain: str) -> float | None:
    """`[domains."d"] quarantine_retention` from the tenants feature, when it is configured.

    Accepts a settings object with `quarantine_retention(domain)`, or with `domains[d].quarantine_retention`.
    """
    tenants = config.feature("tenants") if config is not None and hasattr(config, "feature") else None
    if tenants is None:
        return None
    lookup = getattr(tenants, "quarantine_retention", None)
    if callable(lookup):
        value = lookup(domain)
    else:
        domains = getattr(tenants, "domains", None)
        entry = domains.get(domain) if isinstance(domains, Mapping) else None
        value = getattr(entry, "quarantine_retention", None)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


class Quarantine:
    """Quorum's quarantine on one Postfix instance; every action writes one audit line."""

    def __init__(
        self,
        settings: QuarantineSettings,
        audit: logging.Logger | None = None,
        who: str = "unknown",
        retention_for: Callable[[str], float | None] | None = None,
        queue: PostfixQueue | None = None,
    ) -> None:
        self.settings = settings
        self.queue = queue or PostfixQueue(settings.postfix_config_dir, settings.command_timeout)
        self.audit = audit or logging.getLogger("quorum.audit")
        self.who = who
        self._retention_for = retention_for or (lambda _domain: None)

    # -- reading ---------------------------------------------------------------------------------
    def messages(self, domain: str | None = None, older_than: float | None = None) -> list[HeldMessage]:
        return select(held_messages(self.queue), domain, older_than)

    def held_for(self, recipient: str) -> list[HeldMessage]:
        """What Quorum holds for one recipient (for a per-recipient digest notice)."""
        return [m for m in held_messages(self.queue) if m.for_recipient(recipient)]

    def list_held(self, domain: str | None = None, older_than: float | None = None) -> list[HeldMessage]:
        found = self.messages(domain, older_than)
        scope = " ".join(f"{k}={v}" for k, v in (("domain", domain), ("older_than", older_than)) if v is not None)
        self._log("list", [m.queue_id for m in found], "ok", f"listed={len(found)}" + (f" {scope}" if scope else ""))
        return found

    def show(self, queue_id: str) -> HeldMessage | None:
        found = {m.queue_id: m for m in held_messages(self.queue)}.get(queue_id)
        self._log("show", [queue_id], "ok" if found else "failed", "" if found else "not-held")
        return found

    # -- changing --------------------------------------------------------------------------------
    def release(self, queue_ids: Sequence[str] = (), domain: str | None = None) -> ActionResult:
        result, targets = self._targets("release", queue_ids, domain)
        if targets:
            self._apply(result, targets, self.queue.release, lambda name: name != "hold")
            for qid in result.done:
                if result.notes.get(qid) != "delivered":
                    warning = self.queue.deliver_now(qid)
                    if warning:
                        result.notes[qid] += f" (immediate delivery not scheduled: {warning}; qmgr retries it)"
        self._finish(result, domain)
        return result

    def delete(self, queue_ids: Sequence[str] = (), domain: str | None = None, action: str = "delete") -> ActionResult:
        result, targets = self._targets(action, queue_ids, domain)
        if targets:
            self._apply(result, targets, self.queue.delete, lambda name: False)
        self._finish(result, domain)
        return result

    def expire(self, older_than: float | None = None, now: float | None = None) -> ActionResult:
        """Delete what is older than `older_than`, else than its domains' retention (the longest of them)."""
        now = time.time() if now is None else now
        try:
            held = held_messages(self.queue)
        except PostfixCommandError as exc:
            result = ActionResult("expire", failed={"-": str(exc)})
            self._finish(result, None)
            return result
        old = []
        for m in held:
            limit = self.retention(m, older_than)
            if limit is not None and m.age(now) >= limit:
                old.append(m.queue_id)
        return self.delete(old, action="expire")

    def retention(self, message: HeldMessage, older_than: float | None = None) -> float | None:
        """How long `message` is kept: None (forever) if any of its domains has no retention at all."""
        if older_than is not None:
            return older_than
        limits = [self._retention_for(d) or self.settings.retention for d in message.domains or {""}]
        if any(limit is None for limit in limits):
            return None
        return max(limit for limit in limits if limit is not None)

    # -- helpers ---------------------------------------------------------------------------------
    def _targets(self, action: str, queue_ids: Sequence[str], domain: str | None) -> tuple[ActionResult, list[str]]:
        result = ActionResult(action)
        try:
            held = {m.queue_id: m for m in held_messages(self.queue)}
        except PostfixCommandError as exc:
            result.failed.update({q: str(exc) for q in queue_ids} or {"-": str(exc)})
            return result, []
        wanted = list(dict.fromkeys(queue_ids))
        if domain:
            wanted += [m.queue_id for m in select(list(held.values()), domain) if m.queue_id not in wanted]
        for qid in wanted:
            if not QUEUE_ID.match(qid):
                result.failed[qid] = "not a Postfix queue id"
            elif qid not in held:
                result.failed[qid] = NOT_HELD
        return result, [q for q in wanted if q not in result.failed]

    def _apply(
        self,
        result: ActionResult,
        targets: list[str],
        command: Callable[[Sequence[str]], list[str]],
        left_hold: Callable[[str], bool],
    ) -> None:
        """Run postsuper, then confirm each id from the queue itself; anything unconfirmed is a failure."""
        try:
            claimed = set(command(targets))
        except PostfixCommandError as exc:
            result.failed.update(dict.fromkeys(targets, str(exc)))
            return
        try:
            where = {e.queue_id: e.queue_name for e in self.queue.entries()}
        except PostfixCommandError as exc:
            result.failed.update(dict.fromkeys(targets, f"postsuper answered, but the queue could not be read: {exc}"))
            return
        for qid in targets:
            queue_name = where.get(qid)
            if qid not in claimed:
                result.failed[qid] = f"postsuper did not {result.action} it (it was in the {queue_name or 'no'} queue)"
            elif queue_name is None or left_hold(queue_name):
                result.done.append(qid)
                result.notes[qid] = queue_name or ("delivered" if result.action == "release" else "removed")
            else:
                result.failed[qid] = f"still in the {queue_name} queue"

    def _finish(self, result: ActionResult, domain: str | None) -> None:
        ids = [*result.done, *result.failed]
        detail = f"done={len(result.done)}" + (f" domain={domain}" if domain else "")
        if result.failed:
            detail += " failed=" + ",".join(f"{q}:{why!r}" for q, why in result.failed.items())
        self._log(result.action, ids, result.outcome, detail)

    def record(self, action: str, queue_ids: Sequence[str], result: str, detail: str = "") -> None:
        """The audit line of an action run outside this class (the digest)."""
        self._log(action, queue_ids, result, detail)

    def _log(self, action: str, queue_ids: Sequence[str], result: str, detail: str = "") -> None:
        self.audit.info(audit_line(self.who, action, queue_ids, result, detail))
