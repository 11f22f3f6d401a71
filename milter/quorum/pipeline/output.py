"""The decision turned into what the milter does: one `Edits` object, sanitised once here.

`session.eom` applies it (reply, header removals, additions, quarantine) and only then tells the
stages how the transaction ended, so a failed header edit becomes a 451 and a rate-limit refund
instead of an unscanned 250.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from quorum.message import Message
from quorum.pipeline.answer import Action, HeaderPredicate, Reply
from quorum.pipeline.headers import headers_to_add, is_ours, sanitise_header, sanitise_reply
from quorum.pipeline.policy import Decision
from quorum.pipeline.transaction import Scan, Transaction

DELIVERED = (Action.ACCEPT, Action.TAG, Action.QUARANTINE)


@dataclass(frozen=True)
class Edits:
    action: Action
    reply: Reply | None = None  # REJECT / TEMPFAIL (with code) or DISCARD
    remove: tuple[tuple[str, int], ...] = ()  # (name, 1-based index among that name), highest first
    add: tuple[tuple[str, str], ...] = ()  # (name, sanitised value without the leading space)
    quarantine: str | None = None  # sanitised hold reason
    sender: str | None = None  # new envelope sender (SMFIF_CHGFROM)
    recipients: tuple[tuple[str, str], ...] = ()  # (as received, replacement): SMFIF_DELRCPT + SMFIF_ADDRCPT
    # From the post-decision hook (quorum.pipeline.amend): inbound fields replaced (name, 1-based
    # index among that name, sanitised value; SMFIF_CHGHDRS), and a new body (SMFIF_CHGBODY).
    change: tuple[tuple[str, int, str], ...] = ()
    body: bytes | None = None

    @property
    def delivers(self) -> bool:
        return self.action in DELIVERED


def plan(
    decision: Decision,
    scan: Scan,
    message: Message,
    removals: Sequence[tuple[str, HeaderPredicate]],
    txn: Transaction | None = None,
) -> Edits:
    if decision.action not in DELIVERED:
        return Edits(decision.action, decision.reply or Reply(decision.action))
    add = tuple((name, sanitise_header(value)) for name, value in headers_to_add(decision, scan))
    quarantine = None
    if decision.action is Action.QUARANTINE:
        quarantine = sanitise_reply(decision.quarantine_reason or "held by Quorum", double_percent=False)
    sender: str | None = None
    recipients: tuple[tuple[str, str], ...] = ()
    if txn is not None:
        sender = _address(txn.sender_rewrite) if txn.sender_rewrite else None
        accepted = set(txn.envelope.recipients)
        recipients = tuple(
            (_address(old), _address(new)) for old, new in txn.recipient_rewrites.items() if old in accepted
        )
    return Edits(decision.action, None, _removals(message, removals), add, quarantine, sender, recipients)


def _address(addr: str) -> str:
    """An envelope address for libmilter: in angle brackets, no control characters."""
    return "<" + sanitise_reply(addr.strip().strip("<>"), double_percent=False).replace(" ", "") + ">"


def _removals(message: Message, removals: Sequence[tuple[str, HeaderPredicate]]) -> tuple[tuple[str, int], ...]:
    seen: dict[str, int] = {}
    out: list[tuple[str, int]] = []
    for h in message.headers:
        key = h.name.lower()
        seen[key] = seen.get(key, 0) + 1
        if is_ours(h.name) or any(key == name.lower() and _matches(pred, h.raw_value) for name, pred in removals):
            out.append((h.name, seen[key]))
    return tuple(sorted(out, key=lambda x: (x[0].lower(), -x[1])))


def _matches(pred: HeaderPredicate, raw: bytes) -> bool:
    try:
        return bool(pred(raw))
    except Exception:  # noqa: BLE001 - a predicate bug keeps the header rather than failing the message
        return False
