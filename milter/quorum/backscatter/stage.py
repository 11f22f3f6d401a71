"""The backscatter stage: record outbound Message-IDs (and BATV-sign senders); check inbound bounces.

- MAIL FROM of an outbound transaction (SMTP AUTH or a trusted network): the sender is BATV-signed
  when a key is set; the output applies it with SMFIF_CHGFROM (`envelope_edits`).
- RCPT of a null-sender transaction: a `prvs=` recipient with a valid tag is marked verified and
  rewritten to the plain address (SMFIF_DELRCPT + SMFIF_ADDRCPT); a forged or expired tag is refused
  at once unless the domain's action is softer.
- End-of-data: outbound → one `SET` of its Message-ID; an unverified inbound bounce → its bounced
  Message-ID is looked up with one `EXISTS`; unknown → the domain's action (reject = 550 5.7.1).
  Ordinary inbound mail costs nothing. Redis unavailable → the bounce is accepted and logged.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from quorum.auth.trust import trust_of
from quorum.backscatter import batv
from quorum.backscatter.dsn import bounced_message_ids
from quorum.backscatter.settings import ACTIONS, BackscatterSettings
from quorum.backscatter.store import MessageIdStore
from quorum.message import domain_of
from quorum.pipeline.stages import Outcome, Reply, Stage

if TYPE_CHECKING:
    import ipaddress

    from quorum.message import Message
    from quorum.pipeline.transaction import Connection, Findings, Transaction

REASON = "bounce does not refer to a message sent from here (backscatter)"
HEADER = "X-Quorum-Backscatter"


@dataclass(frozen=True)
class EnvelopeEdits:
    """What the output must change in the envelope: a new sender, and recipients to swap."""

    sender: str | None = None  # SMFIF_CHGFROM
    recipients: tuple[tuple[str, str], ...] = ()  # (as received, replacement): SMFIF_DELRCPT + SMFIF_ADDRCPT


@dataclass
class _State:
    outbound: bool
    bounce: bool
    signed_sender: str | None = None
    verified: dict[str, str] = field(default_factory=dict)  # tagged recipient -> plain address
    unverified: list[str] = field(default_factory=list)  # recipients a bounce reached without a valid tag


class BackscatterStage(Stage):
    name = "backscatter"

    def __init__(
        self,
        settings: BackscatterSettings,
        store: MessageIdStore,
        trusted_networks: Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network] = (),
        action_for: Callable[[Transaction, str], str] | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.trusted = tuple(trusted_networks)
        self._action_for = action_for or self.domain_action
        self._states: dict[str, _State] = {}
        self._lock = threading.Lock()

    # -- per-domain action --------------------------------------------------------------------------
    def domain_action(self, txn: Transaction, domain: str) -> str:
        """`[domains."d"] backscatter` from the transaction's effective policy, else `[backscatter] action`."""
        value = txn.tenant.extensions.get("backscatter") if txn.tenant is not None else None
        return value if isinstance(value, str) and value in ACTIONS else self.settings.action

    # -- hooks ----------------------------------------------------------------------------------------
    def mail_from(self, txn: Transaction) -> Reply | None:
        env = txn.envelope
        sender = env.sender.strip("<>")
        state = _State(outbound=bool(trust_of(txn, self.trusted)), bounce=not sender)
        if state.outbound and sender and self.settings.batv_key:
            signed = batv.sign(
                sender, self.settings.batv_key, self.settings.batv_key_number, self.settings.batv_validity_days
            )
            state.signed_sender = signed if signed != sender else None
            txn.sender_rewrite = state.signed_sender
        with self._lock:
            self._states[txn.id] = state
        return None

    def rcpt(self, txn: Transaction, recipient: str) -> Reply | None:
        state = self._state(txn)
        if state is None or state.outbound or not state.bounce:
            return None
        address = recipient.strip().strip("<>")
        action = self._action_for(txn, domain_of(batv.strip(address)))
        if action == "off":
            return None
        if batv.is_tagged(address) and self.settings.batv_keys:
            check = batv.validate(address, self.settings.batv_keys, self.settings.batv_validity_days)
            if check.valid:
                state.verified[recipient] = check.address
                txn.recipient_rewrites[recipient] = check.address
                return None
            if action == "reject":
                return Reply.reject("550", "5.7.1", f"{check.reason}: {REASON}")
        state.unverified.append(recipient)
        return None

    def wants(self, txn: Transaction) -> bool:
        state = self._state(txn)
        return state is not None and (state.outbound or state.bounce)  # ordinary inbound mail: nothing

    def examine(self, txn: Transaction, message: Message, deadline: float) -> Findings | None:
        from quorum.pipeline.transaction import Findings

        state = self._state(txn)
        if state is None:
            return None
        findings = Findings(stage=self.name)
        if state.outbound:
            findings.log["backscatter"] = "no-message-id"
            for header in message.get_headers("Message-ID")[:1]:
                recorded = self.store.record(header.value)
                findings.log["backscatter"] = {True: "recorded", False: "no-message-id", None: "not-recorded"}[recorded]
            if state.signed_sender:
                findings.log["batv"] = "signed"  # the log line says why the envelope sender changed
            return findings
        if not state.bounce:
            return None
        accepted = set(txn.envelope.recipients)
        pending = [r for r in state.unverified if r in accepted or not accepted]
        if not pending:
            findings.log["backscatter"] = "batv-ok" if state.verified else "off"
            return findings
        ids = bounced_message_ids(_head(message, self.settings.max_bounce_size))
        known = self.store.known(ids) if ids else False
        if known:
            findings.log["backscatter"] = "dsn-ok"
            return findings
        if known is None:
            findings.log["backscatter"] = "unchecked-redis-down"
            return findings
        actions = {self._action_for(txn, domain_of(batv.strip(r.strip("<>")))) for r in pending}
        action = next((a for a in ("reject", "quarantine", "tag") if a in actions), "off")
        why = f"{REASON}; bounced Message-ID {ids[0] if ids else 'not found'}"
        findings.log["backscatter"] = f"unknown-{action}"
        if action == "reject":
            findings.decide(Reply.reject("550", "5.7.1", REASON), why)
        elif action == "quarantine":
            findings.hold = True
            findings.reasons.append(why)
        elif action == "tag":
            findings.headers.append((HEADER, "unverified bounce"))
            findings.spam_flag = True
        return findings

    def envelope_edits(self, txn: Transaction) -> EnvelopeEdits | None:
        """For the output at end-of-message: BATV sender to set, prvs= recipients to rewrite."""
        state = self._state(txn)
        if state is None or (state.signed_sender is None and not state.verified):
            return None
        return EnvelopeEdits(state.signed_sender, tuple(state.verified.items()))

    def finished(self, txn: Transaction, outcome: Outcome) -> None:
        self._forget(txn)

    def aborted(self, txn: Transaction) -> None:
        self._forget(txn)

    def connect(self, conn: Connection) -> Reply | None:
        return None

    def close(self) -> None:
        self.store.close()

    # -- helpers -------------------------------------------------------------------------------------
    def _state(self, txn: Transaction) -> _State | None:
        with self._lock:
            return self._states.get(txn.id)

    def _forget(self, txn: Transaction) -> None:
        with self._lock:
            self._states.pop(txn.id, None)


def _head(message: Any, limit: int) -> bytes:
    """At most `limit` bytes of the message: the parts that name the bounced message come first."""
    with message.open() as f:
        data: bytes = f.read(limit)
    return data
