"""Stages: checks that act at SMTP time (access lists, DNSBL, rate limits) or add facts at
end-of-data (SPF/DKIM/DMARC). A stage never talks to Postfix itself: it returns a `Reply`
or writes to the `ScanContext`; the pipeline turns that into one answer.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from quorum.message import Envelope, Message
from quorum.verdict import Verdict


class Action(StrEnum):
    ACCEPT = "accept"
    TAG = "tag"
    QUARANTINE = "quarantine"
    REJECT = "reject"
    DISCARD = "discard"
    TEMPFAIL = "tempfail"


@dataclass(frozen=True)
class Reply:
    """An SMTP answer: `Reply.reject("554", "5.7.1", "...")`. Text is sanitised when sent."""

    action: Action
    code: str = ""
    xcode: str = ""
    text: str = ""

    @classmethod
    def reject(cls, code: str, xcode: str, text: str) -> Reply:
        return cls(Action.REJECT, code, xcode, text)

    @classmethod
    def tempfail(cls, code: str, xcode: str, text: str) -> Reply:
        return cls(Action.TEMPFAIL, code, xcode, text)

    def __str__(self) -> str:
        return f"{self.code} {self.xcode} {self.text}".strip() if self.code else str(self.action)


@dataclass
class Session:
    """One SMTP connection as seen by the stages. `envelope` is reset per transaction.

    `state` is each stage's private per-transaction scratch space, keyed by stage name
    (e.g. a rate-limit reservation to give back); `conn_state` lives for the connection.
    """

    envelope: Envelope = field(default_factory=Envelope)
    state: dict[str, Any] = field(default_factory=dict)
    conn_state: dict[str, Any] = field(default_factory=dict)

    def new_transaction(self) -> None:
        env = self.envelope
        keep = {k: v for k, v in env.macros.items() if k in _CONNECTION_MACROS}
        self.envelope = Envelope(env.client_ip, env.client_name, env.helo, macros=keep)
        self.state = {}


_CONNECTION_MACROS = {"j", "_", "{daemon_name}", "{daemon_addr}", "{client_addr}", "{client_name}", "v"}


@dataclass
class ScanContext:
    """What stages add at end-of-data, next to the engines' verdicts.

    - `votes`: extra antispam votes (e.g. a DNSBL `score` listing), weighted like engines.
    - `skip_spam`: an access rule said OK: spam verdicts are ignored, virus scanning is not.
    - `spam_flag`: treat as spam whatever the engines say (e.g. DMARC p=quarantine).
    - `hold`: put the message in the hold queue (e.g. dmarc_quarantine_action = "hold").
    - `reply`: a final answer (e.g. DMARC p=reject enforced); engines still scan for viruses
      only if nothing decides before them, the first reply wins.
    - `headers`: headers to add; `remove`: (name, predicate on the raw value) to delete first.
    - `log`: key=value facts for the per-message log line and `quorum scan` output.
    """

    votes: list[Verdict] = field(default_factory=list)
    skip_spam: bool = False
    spam_flag: bool = False
    hold: bool = False
    reply: Reply | None = None
    reasons: list[str] = field(default_factory=list)
    headers: list[tuple[str, str]] = field(default_factory=list)
    remove: list[tuple[str, Any]] = field(default_factory=list)
    log: dict[str, str] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def decide(self, reply: Reply, reason: str) -> None:
        """Set the final answer unless an earlier stage already did."""
        with self._lock:
            if self.reply is None:
                self.reply = reply
                self.reasons.append(reason)


@dataclass(frozen=True)
class Outcome:
    """What happened to the transaction, for stages that must undo work (quota give-back)."""

    action: Action
    reply: Reply | None = None


class Stage:
    """Base class: override only what the stage needs. Hooks run in the milter thread and must
    be quick and never raise (the pipeline still guards them); `examine` runs in a worker
    thread in parallel with the engines and must respect `deadline` (time.monotonic())."""

    name = "stage"

    def connect(self, session: Session) -> Reply | None:
        return None

    def helo(self, session: Session) -> Reply | None:
        return None

    def mail_from(self, session: Session) -> Reply | None:
        return None

    def rcpt(self, session: Session, recipient: str) -> Reply | None:
        """Called before `recipient` is added to session.envelope.recipients."""
        return None

    def data(self, session: Session) -> Reply | None:
        return None

    def examine(self, session: Session, message: Message, ctx: ScanContext, deadline: float) -> None:
        return None

    def finished(self, session: Session, outcome: Outcome) -> None:
        """End of a transaction that reached end-of-data, after the decision."""
        return None

    def aborted(self, session: Session) -> None:
        """The transaction ended without end-of-data (RSET, QUIT mid-way, lost connection, or an
        earlier reply refused it)."""
        return None

    def close(self) -> None:
        """The pipeline is being replaced (reload) or stopped: release connections."""
        return None
