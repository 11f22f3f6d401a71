"""Tells people what happened to a message, after its answer was settled: one `Notifier.submit`
per event, from the transaction's tenant policy (`[domains."d".notify]`). Never blocks the reply:
the notifier only queues.

Events: `virus` (a virus refused or discarded), `quarantine` (held), `rule` (a content rule
refused it), `spam_reject` (refused as spam).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from email.header import decode_header, make_header

from quorum.auth.findings import AuthFindings, spf_of
from quorum.message import Message
from quorum.notify.facts import NoticeFacts
from quorum.notify.notifier import Notifier
from quorum.notify.settings import DomainNotify
from quorum.pipeline.stages import Action, Outcome, Stage
from quorum.pipeline.transaction import Transaction

log = logging.getLogger("quorum.notify")

SUMMARY = ("from", "to", "cc", "subject", "date", "message-id")


def event_of(outcome: Outcome) -> str | None:
    d = outcome.decision
    if d is None:
        return None
    if outcome.action is Action.QUARANTINE:
        return "quarantine"
    if outcome.action not in (Action.REJECT, Action.DISCARD):
        return None
    if d.label == "virus":
        return "virus"
    if d.label == "spam":
        return "spam_reject"
    if any(r.startswith("rule ") for r in d.reasons):
        return "rule"
    return None


@dataclass(frozen=True)
class AuthChecks:
    """Which sender checks the auth feature runs, so a missing result can be told from one never asked."""

    spf: bool = False
    dmarc: bool = False


def facts_of(txn: Transaction, outcome: Outcome, message: Message, checks: AuthChecks = AuthChecks()) -> NoticeFacts:
    env = txn.envelope
    d = outcome.decision
    scan = outcome.scan
    auth = scan.results.get(AuthFindings) if scan is not None else None
    spf = spf_of(txn, scan)  # the scan's, else the one of MAIL FROM (spf_at = "mail")
    dmarc = auth.dmarc if auth is not None else None
    # Authenticated sessions are not checked (their sender is ours); otherwise a check that is
    # configured but has no result was cut short when the verdict settled early.
    unknown = not env.auth_user and (
        (checks.spf and bool(env.client_ip) and spf is None) or (checks.dmarc and dmarc is None)
    )
    first = {h.name.lower(): h.value for h in reversed(message.headers)}
    rule = next((r.removeprefix("rule ").split(" ")[0] for r in (d.reasons if d else []) if r.startswith("rule ")), "")
    return NoticeFacts(
        sender=env.sender,
        recipients=tuple(env.recipients),
        subject=_decoded(first.get("subject", "")),
        client_ip=env.client_ip,
        client_name=env.client_name,
        queue_id=env.queue_id,
        verdict=d.label if d else "",
        virus_names=tuple(dict.fromkeys(n for v in (d.verdicts if d else []) for n in v.names)),
        rule=rule,
        reason="; ".join(d.reasons) if d else "",
        tenant=(txn.tenant.domain or "") if txn.tenant is not None else "",
        spf=spf.result if spf is not None else "",
        dmarc=dmarc.result if dmarc is not None else "",
        header_summary=tuple((h.name, h.value) for h in message.headers if h.name.lower() in SUMMARY),
        auto_submitted=first.get("auto-submitted"),
        precedence=first.get("precedence"),
        auth_unknown=unknown,
    )


def _decoded(value: str) -> str:
    try:
        return str(make_header(decode_header(value)))
    except Exception:  # noqa: BLE001 - a broken encoded-word keeps its raw text
        return value


class NotifyStage(Stage):
    name = "notify"

    def __init__(self, notifier: Notifier, checks: AuthChecks = AuthChecks()) -> None:
        self.notifier = notifier
        self.checks = checks

    def finished(self, txn: Transaction, outcome: Outcome) -> None:
        policy = txn.tenant.extensions.get("notify") if txn.tenant is not None else None
        if not isinstance(policy, DomainNotify) or outcome.message is None:
            return
        event = event_of(outcome)
        if event is None or not policy.wants(event):
            return
        self.notifier.submit(event, facts_of(txn, outcome, outcome.message, self.checks), policy)

    def close(self) -> None:
        self.notifier.close(5.0)
