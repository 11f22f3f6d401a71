"""Stages: checks that act at SMTP time (access lists, DNSBL, rate limits) or examine the message
at end-of-data (SPF/DKIM/DMARC, rules). A stage never talks to Postfix itself: a hook returns a
`Reply` (or None), `examine` returns `Findings`; the pipeline turns them into one answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from quorum.pipeline.answer import Action, HeaderPredicate, Reply

__all__ = ["Action", "HeaderPredicate", "Outcome", "Reply", "Stage"]

if TYPE_CHECKING:
    from quorum.message import Message
    from quorum.pipeline.amend import Amendment, FinalMessage
    from quorum.pipeline.policy import Decision
    from quorum.pipeline.transaction import Connection, Findings, Scan, Transaction


@dataclass(frozen=True)
class Outcome:
    """How the transaction ended: `action` is what Postfix was finally answered (a failed header
    edit turns an accept into a tempfail). For stages that undo work (quota give-back) or report
    (session records, notices): the decision, what the stages found, message size and time."""

    action: Action
    reply: Reply | None = None
    decision: Decision | None = None
    scan: Scan | None = None
    size: int = 0
    elapsed: float = 0.0
    message: Message | None = None  # headers only are safe to keep: the body is released right after


class Stage:
    """Base class: override only what the stage needs.

    Hooks run in the milter thread, must be quick and never raise (the pipeline still guards
    them); they may record typed results on the transaction. `examine` runs in a worker thread
    in parallel with the engines, must respect `deadline` (time.monotonic()) and must not write
    to the transaction: it returns its `Findings`. `removals` are (header name, predicate on the
    raw value) of inbound headers to delete, fixed when the stage is built, so they apply even
    when `examine` never ran (deadline, early exit).
    """

    name = "stage"
    removals: tuple[tuple[str, HeaderPredicate], ...] = ()
    amend_phase = 1  # when `amend` runs: 0 content edits (banners), 1 signatures (DKIM), 2 seals (ARC)

    def connect(self, conn: Connection) -> Reply | None:
        return None

    def helo(self, conn: Connection) -> Reply | None:
        return None

    def mail_from(self, txn: Transaction) -> Reply | None:
        return None

    def rcpt(self, txn: Transaction, recipient: str) -> Reply | None:
        """Called before `recipient` is added to txn.envelope.recipients."""
        return None

    def recipient_class(self, txn: Transaction, recipient: str) -> str | None:
        """What this stage treats differently per recipient (an access class: spam checks skipped
        or not). The recipients of one transaction share every stage's class and the tenant policy:
        the pipeline answers another one 452 4.5.3 and the client sends it in a new transaction.
        None: no class to compare (e.g. the stage's `rcpt` will refuse this recipient anyway)."""
        return None

    def data(self, txn: Transaction) -> Reply | None:
        return None

    def wants(self, txn: Transaction) -> bool:
        """Whether `examine` has anything to do for this transaction: a check that would return
        nothing is not handed to a worker thread at all (the hand-off costs more than it does)."""
        return type(self).examine is not Stage.examine

    def examine(self, txn: Transaction, message: Message, deadline: float) -> Findings | None:
        return None

    def enforces(self, txn: Transaction) -> bool:
        """Whether `examine` could refuse or hold this transaction's message (DMARC enforcement, a
        content rule). A check that could and did not finish before the deadline leaves the message
        not checked whole: the policy treats that like an engine failure. False for checks that
        only add votes or facts."""
        return True

    def complete(self, txn: Transaction, findings: Findings) -> bool:
        """Whether `findings` is a full answer. Asked only of a check that started late (queued
        behind others until less than half its budget was left): an answer such as DMARC
        `temperror` may then be the queueing's doing, and counts as not finished."""
        return True

    def amend(self, txn: Transaction, final: FinalMessage) -> Amendment | None:
        """The post-decision edit hook (see quorum.pipeline.amend): add or change header fields or
        replace the body of the message that will leave, seeing it as it will leave, or refuse it.
        Runs in the milter thread after the decision, only for mail Quorum delivers, in the order
        of `amend_phase` (0 content edits such as banners, 1 signatures, 2 seals)."""
        return None

    def finished(self, txn: Transaction, outcome: Outcome) -> None:
        """End of a transaction that reached end-of-data, after its answer was settled."""
        return None

    def aborted(self, txn: Transaction) -> None:
        """The transaction ended without end-of-data (RSET, QUIT mid-way, lost connection, or an
        earlier reply refused it)."""
        return None

    def close(self) -> None:
        """The pipeline is being replaced (reload) or stopped: release connections."""
        return None
