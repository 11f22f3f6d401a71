"""The records stage: at the end of every transaction, one record to the background writer.

It only reports: no hook returns a reply, nothing it does can delay or change an SMTP answer.
A transaction refused before end-of-data is recorded from what the pipeline noted on it: a refusal
at MAIL FROM or DATA (`txn.refusal`: stage, hook, reply, e.g. a rate limit), else the recipients
refused at RCPT (`txn.rcpt_refusals`: DNSBL, access rules, limits; also listed in the record of a
transaction that went on with other recipients). RSET or QUIT before DATA with nothing refused
leaves no record: no message was offered and Quorum said no to nothing.
"""

from __future__ import annotations

import logging
from typing import Any

from quorum import metrics
from quorum.pipeline.stages import Outcome, Stage
from quorum.pipeline.transaction import Transaction
from quorum.records import record
from quorum.records.writer import RecordWriter

log = logging.getLogger("quorum.records")


class RecordsStage(Stage):
    name = "records"

    def __init__(self, writer: RecordWriter) -> None:
        self.writer = writer

    def finished(self, txn: Transaction, outcome: Outcome) -> None:
        if not txn.dry_run:
            self.writer.submit(record.from_outcome(txn, outcome))

    def aborted(self, txn: Transaction) -> None:
        if txn.dry_run:  # `quorum scan`: not a session
            return
        refusal = txn.refusal
        if refusal is not None:
            self.writer.submit(record.from_refusal(txn, refusal.reply, refusal.stage, refusal.hook, refusal.detail))
        elif txn.rcpt_refusals:
            self.writer.submit(record.from_rcpt_refusals(txn))

    def close(self) -> None:
        self.writer.close()


def tenant_domains(config: Any) -> list[str]:
    """Tenant domains named in the config (`[tenants]` file entries), to reserve their metric series."""
    settings = config.feature("tenants")
    domains = getattr(settings, "domains", None) or {}
    return [str(d) for d in domains]


def reserve_tenant_series(config: Any, limit: int) -> None:
    metrics.TENANTS.limit = limit
    try:
        metrics.TENANTS.allow(tenant_domains(config))
    except Exception:  # noqa: BLE001 - metrics are best effort
        log.debug("could not read the tenant domains", exc_info=True)
