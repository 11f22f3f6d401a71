"""One session record: a plain dict of JSON types, built in the milter thread from the transaction
and its outcome (copies only, so the writer thread may serialise it later).

Schema (version 1); absent facts are null or empty:
  v, ts (epoch s), txn, instance, stage ("eom", or the hook that refused: "mail_from" | "rcpt" | "data"),
  qid, sender, sender_domain, recipients, recipient_domains, client_ip, client_name, helo, auth_user,
  tenant, size, verdict (clean | spam | virus | unchecked | refused), action (what Postfix was
  answered), decided (the policy's action), reply, reply_code, score, elapsed_ms,
  engines: [{engine, category, status, score, threshold, elapsed_ms, error, detail, names}],
  degraded, left_out, reasons, spf, dkim, dmarc, dnsbl, rules,
  ratelimit: {source, buckets} (what was charged) or {refused: KIND}, refused_by, facts,
  refused_recipients: [{recipient, stage, reply}] (refused at RCPT, the first 100),
  refused_recipient_count, accepted_recipients (stage "rcpt" only: accepted before the client gave up).
A "rcpt" record lists the refused recipients under `recipients`: they are what it is about.
"""

from __future__ import annotations

import dataclasses
import os
import re
import socket
import time
from typing import TYPE_CHECKING, Any

from quorum.message import domain_of

if TYPE_CHECKING:
    from quorum.pipeline.stages import Outcome, Reply
    from quorum.pipeline.transaction import Scan, Transaction
    from quorum.verdict import Verdict

VERSION = 1
INSTANCE = f"{socket.gethostname()}:{os.getpid()}"
_RATE_KIND = re.compile(r"\brate limit exceeded for (sender_domain|recipient_domain|client_ip|auth_user)\b")


def from_outcome(txn: Transaction, outcome: Outcome) -> dict[str, Any]:
    """The record of a transaction that reached end-of-data."""
    record = _envelope(txn, "eom")
    d = outcome.decision
    record.update(
        size=outcome.size,
        verdict=d.label if d is not None else "unchecked",
        action=str(outcome.action),
        decided=str(d.action) if d is not None else None,
        score=_round(d.score) if d is not None else None,
        elapsed_ms=round(outcome.elapsed * 1000, 1),
        engines=[engine(v) for v in d.verdicts] if d is not None else [],
        degraded=list(d.degraded) if d is not None else [],
        left_out=list(d.left_out) if d is not None else [],
        reasons=list(d.reasons) if d is not None else [],
    )
    _reply(record, outcome.reply)
    if outcome.scan is not None:
        _scan(record, outcome.scan)
    for key, value in txn.results.record_fields().items():  # SMTP-time results: SPF at MAIL, the reservation
        if record.get(key) is None:
            record[key] = value
    _refused_recipients(record, txn)
    return record


def from_refusal(txn: Transaction, reply: Reply, stage: str, hook: str, detail: str = "") -> dict[str, Any]:
    """The record of a transaction a stage refused before end-of-data (e.g. a rate limit at DATA)."""
    record = _envelope(txn, hook)
    record.update(verdict="refused", action=str(reply.action), decided=str(reply.action), refused_by=stage)
    _reply(record, reply)
    record.update(txn.results.record_fields())  # what the stages found so far (SPF at MAIL, the bucket kind)
    noted = record.get("ratelimit")
    refused = noted.get("refused", "") if isinstance(noted, dict) else ""
    kind = detail or refused or (_ratelimit_kind(reply) if stage == "ratelimit" else "")
    if kind:
        record["ratelimit"] = {"refused": kind}
    _refused_recipients(record, txn)
    return record


def from_rcpt_refusals(txn: Transaction) -> dict[str, Any]:
    """The record of a transaction that ended before DATA after recipients were refused at RCPT
    (a DNSBL listing, an access rule, a limit): the refusals are what a complaint asks about."""
    last = txn.rcpt_refusals[-1]
    record = from_refusal(txn, last.reply, last.stage, "rcpt", last.detail)
    refused = [r.recipient for r in txn.rcpt_refusals]
    if txn.envelope.recipients:  # some were accepted, then the client gave up before DATA
        record["accepted_recipients"] = list(txn.envelope.recipients)
    record["recipients"] = refused  # the refusal counts against these recipients' domains in `quorum stats`
    record["recipient_domains"] = sorted({domain_of(r) for r in refused if domain_of(r)})
    return record


def _refused_recipients(record: dict[str, Any], txn: Transaction) -> None:
    if txn.rcpt_refused:
        record["refused_recipients"] = [
            {"recipient": r.recipient, "stage": r.stage, "reply": str(r.reply)} for r in txn.rcpt_refusals
        ]
        record["refused_recipient_count"] = txn.rcpt_refused


def engine(v: Verdict) -> dict[str, Any]:
    return {
        "engine": v.engine,
        "category": str(v.category),
        "status": str(v.status),
        "score": _round(v.score),
        "threshold": _round(v.threshold),
        "elapsed_ms": round(v.elapsed * 1000, 1),
        "error": v.error,
        "detail": v.detail,
        "names": list(v.names),
    }


def _envelope(txn: Transaction, stage: str) -> dict[str, Any]:
    env = txn.envelope
    recipients = list(env.recipients)
    return {
        "v": VERSION,
        "ts": round(time.time(), 3),
        "txn": txn.id,
        "instance": INSTANCE,
        "stage": stage,
        "qid": env.queue_id or None,
        "sender": env.sender,
        "sender_domain": env.sender_domain or None,
        "recipients": recipients,
        "recipient_domains": sorted({domain_of(r) for r in recipients if domain_of(r)}),
        "client_ip": env.client_ip or None,
        "client_name": env.client_name or None,
        "helo": env.helo or None,
        "auth_user": env.auth_user or None,
        "tenant": txn.tenant.domain if txn.tenant is not None else None,
    }


def _reply(record: dict[str, Any], reply: Reply | None) -> None:
    record["reply"] = str(reply) if reply is not None else None
    record["reply_code"] = reply.code or None if reply is not None else None


def _scan(record: dict[str, Any], scan: Scan) -> None:
    record.update({k: _plain(v) for k, v in scan.results.record_fields().items()})  # SPF/DKIM/DMARC, DNSBL, rules
    if scan.log:
        record["facts"] = dict(scan.log)


def _ratelimit_kind(reply: Reply) -> str:
    m = _RATE_KIND.search(reply.text)
    return m.group(1) if m else "unknown"


def _plain(value: Any) -> Any:
    """A JSON-able copy of a stage's result object."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {k: _plain(v) for k, v in dataclasses.asdict(value).items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)
