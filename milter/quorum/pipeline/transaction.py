"""The one owner of per-message state: a `Transaction`, created at MAIL FROM.

A transaction carries the envelope, the tenant policy (fixed by the first accepted recipient),
and the typed results the SMTP-time hooks recorded (`results`, one slot per result type, each
written by the one stage that owns it). Hooks run in the milter thread; end-of-data checks run in
worker threads and never write here: they *return* `Findings` (with results of their own), which
the pipeline merges into one `Scan` in the milter thread. A check that outlives
its fan-out (deadline, early exit) has its findings dropped and counted, so nothing a late task
does can reach the next transaction.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from quorum.message import Envelope
from quorum.pipeline.answer import Action, Reply
from quorum.pipeline.results import Results
from quorum.verdict import Verdict

if TYPE_CHECKING:
    from quorum.pipeline.tenancy import TenantPolicy

_IDS = itertools.count(1)
_PREFIX = f"{os.getpid():x}"

CONNECTION_MACROS = frozenset({"j", "_", "{daemon_name}", "{daemon_addr}", "{client_addr}", "{client_name}", "v"})


@dataclass
class Connection:
    """One SMTP connection: client facts and per-connection caches of stages (by stage name)."""

    client_ip: str = ""
    client_name: str = ""
    helo: str = ""
    macros: dict[str, str] = field(default_factory=dict)
    cache: dict[str, object] = field(default_factory=dict)

    def envelope(self) -> Envelope:
        keep = {k: v for k, v in self.macros.items() if k in CONNECTION_MACROS}
        return Envelope(self.client_ip, self.client_name, self.helo, macros=keep)


@dataclass(frozen=True)
class AccessClass:
    """A recipient's access-table result: "ok" (spam checks skipped) or "default", and the rule."""

    name: str = "default"
    source: str = ""


@dataclass(frozen=True)
class Refusal:
    """A stage refused the transaction (or, at RCPT, one recipient) before end-of-data (for session records)."""

    stage: str
    hook: str
    reply: Reply
    detail: str = ""
    recipient: str = ""  # the recipient a refusal at RCPT was for


RCPT_REFUSALS_KEPT = 100  # a client may try 100,000 recipients: the record keeps the first ones and the count


@dataclass
class Transaction:
    """One message's life from MAIL FROM to its end (end-of-data, RSET, QUIT or a refusal)."""

    connection: Connection
    envelope: Envelope
    id: str = field(default_factory=lambda: f"{_PREFIX}.{next(_IDS)}")
    tenant: TenantPolicy | None = None  # set by the pipeline at the first accepted recipient
    dry_run: bool = False  # `quorum scan`: every stage runs, nothing is recorded as a session
    # The tenant policy of any address (the From: or envelope sender's domain, for what outbound
    # mail gets: a domain's footer, its signing keys); set by the pipeline.
    policy_of: Callable[[str], TenantPolicy] | None = field(default=None, repr=False, compare=False)
    # Each stage's recipient class (Stage.recipient_class) that every recipient must share, like
    # the tenant policy; fixed by the first accepted recipient (pipeline.rcpt keeps the rule).
    partition: tuple[str | None, ...] = ()
    # Set by SMTP-time hooks in the milter thread:
    results: Results = field(default_factory=Results)  # each stage's own typed results (SPF at MAIL, ...)
    log: dict[str, str] = field(default_factory=dict)  # SMTP-time facts for the log line (spf=pass)
    access: dict[str, AccessClass] = field(default_factory=dict)  # lower-cased recipient -> class
    sender_rewrite: str | None = None  # new envelope sender (BATV signing), applied at end-of-message
    recipient_rewrites: dict[str, str] = field(default_factory=dict)  # recipient as received -> replacement
    refusal: Refusal | None = None  # the first refusal at MAIL FROM or DATA
    rcpt_refusals: list[Refusal] = field(default_factory=list)  # recipients refused at RCPT (the first ones)
    rcpt_refused: int = 0  # how many recipients were refused at RCPT
    open: bool = True

    def refused_recipient(self, refusal: Refusal) -> None:
        self.rcpt_refused += 1
        if len(self.rcpt_refusals) < RCPT_REFUSALS_KEPT:
            self.rcpt_refusals.append(refusal)

    def access_class(self, recipient: str | None = None) -> AccessClass:
        """The access result of `recipient`, by default of the transaction (its first recipient)."""
        if recipient is None:
            if not self.envelope.recipients:
                return AccessClass()
            recipient = self.envelope.recipients[0]
        return self.access.get(recipient.lower(), AccessClass())


@dataclass
class Findings:
    """What one stage's end-of-data check returns. The pipeline merges them in stage order.

    - `votes`: extra antispam votes (a DNSBL `score` listing, DMARC p=quarantine), weighted like engines.
    - `skip_spam`: an access rule said OK: spam verdicts are ignored, virus scanning is not.
    - `spam_flag`: treat as spam whatever the engines say.  `hold`: put it in the hold queue.
    - `reply` (+ `reply_reason`): a final answer (DMARC p=reject, a header rule); the first stage's wins.
    - `headers`: headers to add.  `log`: key=value facts for the log line and `quorum scan`.
    - `results`: the stage's typed results (SPF/DKIM/DMARC, DNSBL listings, rule hits), for the
      stages' `finished` hooks and the session record.
    """

    stage: str = ""
    votes: list[Verdict] = field(default_factory=list)
    skip_spam: bool = False
    spam_flag: bool = False
    hold: bool = False
    reply: Reply | None = None
    reply_reason: str = ""
    reasons: list[str] = field(default_factory=list)
    headers: list[tuple[str, str]] = field(default_factory=list)
    log: dict[str, str] = field(default_factory=dict)
    results: Results = field(default_factory=Results)

    def decide(self, reply: Reply, reason: str) -> None:
        if self.reply is None:
            self.reply, self.reply_reason = reply, reason


@dataclass
class Scan(Findings):
    """Everything the stages found about one message, merged in stage order (read by the policy
    and the output): the first stage's reply wins, its reason joins the others. `unfinished`: the
    stages whose check could refuse the message and did not finish before the deadline (set by
    the fan-out): the message was not checked whole."""

    unfinished: list[str] = field(default_factory=list)

    @classmethod
    def merge(cls, findings: Iterable[Findings]) -> Scan:
        scan = cls()
        for f in findings:
            scan.votes.extend(f.votes)
            scan.skip_spam |= f.skip_spam
            scan.spam_flag |= f.spam_flag
            scan.hold |= f.hold
            if f.reply is not None and scan.reply is None:
                scan.reply = f.reply
                scan.reasons.append(f.reply_reason)
            scan.reasons.extend(f.reasons)
            scan.headers.extend(f.headers)
            scan.log.update(f.log)
            scan.results.update(f.results)
        return scan

    def decide(self, reply: Reply, reason: str) -> None:
        """Set the final answer unless a stage already did."""
        if self.reply is None:
            self.reply = reply
            self.reasons.append(reason)

    @property
    def final(self) -> bool:
        """A stage already gave a final refusal (no engine can change the answer)."""
        return self.reply is not None and self.reply.action in (Action.REJECT, Action.TEMPFAIL)
