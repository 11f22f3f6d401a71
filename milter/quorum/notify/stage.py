"""Tells people what happened to a message, after its answer was settled: one `Notifier.submit`
per event, from the transaction's tenant policy (`[domains."d".notify]`). Never blocks the reply:
the notifier only queues.

Events: `virus` (a virus refused or discarded), `quarantine` (held), `rule` (a content rule
refused it), `spam_reject` (refused as spam).
"""

from __future__ import annotations

import logging
from email.header import decode_header, make_header

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


def facts_of(txn: Transaction, outcome: Outcome, message: Message) -> NoticeFacts:
    env = txn.envelope
    d = outcome.decision
    scan = outcome.scan
    auth = scan.auth if scan is not None else None
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
        tenant=(txn.policy.domain or "") if txn.policy is not None else "",
        spf=auth.spf.result if auth is not None and auth.spf is not None else "",
        dmarc=auth.dmarc.result if auth is not None and auth.dmarc is not None else "",
        header_summary=tuple((h.name, h.value) for h in message.headers if h.name.lower() in SUMMARY),
        auto_submitted=first.get("auto-submitted"),
        precedence=first.get("precedence"),
    )


def _decoded(value: str) -> str:
    try:
        return str(make_header(decode_header(value)))
    except Exception:  # noqa: BLE001 - a broken encoded-word keeps its raw text
        return value


class NotifyStage(Stage):
    name = "notify"

    def __init__(self, notifier: Notifier) -> None:
        self.notifier = notifier

    def finished(self, txn: Transaction, outcome: Outcome) -> None:
        policy = txn.policy.extensions.get("notify") if txn.policy is not None else None
        if not isinstance(policy, DomainNotify) or outcome.message is None:
            return
        event = event_of(outcome)
        if event is None or not policy.wants(event):
            return
        self.notifier.submit(event, facts_of(txn, outcome, outcome.message), policy)

    def close(self) -> None:
        self.notifier.close(5.0)
