"""The post-decision edit hook: after the decision and before the milter applies the edits, stages
may amend the message that will leave (banners, outbound signing, ARC sealing).

A stage overrides `Stage.amend(txn, final)` and returns an `Amendment`: header fields to put above
every other header (a DKIM-Signature, ARC sets), header fields to replace, a new body (a banner), or
a refusal (a signing failure under a fail-closed policy). `final` is the message as it will leave:
the inbound header block less the removals, with Quorum's own header fields and those earlier
stages added or changed, and the body as the earlier stages left it; `final.results` holds what the
checks found (each feature's typed slot: the auth feature's SPF/DKIM/DMARC/ARC results).

Stages run by phase (`Stage.amend_phase`: content edits first, then signatures, then seals, so a
signature covers every change and an ARC seal covers the DKIM signature), in registration order
within a phase, and each sees what the ones before it did. Only mail Quorum delivers reaches the
hook (accept, tag, quarantine: `final.action` says which); refused, tempfailed or discarded mail
never does. A stage that raises refuses the message with 451: an amendment that silently did not
happen (an unsigned message from a domain that signs) is the kind of 250 Quorum never gives.
"""

from __future__ import annotations

import dataclasses
import io
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO, Protocol

from quorum.message import Header, Message
from quorum.pipeline import replies
from quorum.pipeline.answer import Action, Reply
from quorum.pipeline.headers import sanitise_header
from quorum.pipeline.results import Results

if TYPE_CHECKING:
    from quorum.pipeline.output import Edits
    from quorum.pipeline.transaction import Transaction

log = logging.getLogger("quorum.pipeline")

CONTENT, SIGNATURE, SEAL = 0, 1, 2  # the phases (Stage.amend_phase)


@dataclass(frozen=True)
class Amendment:
    """What one stage's `amend` returns. `headers`: (name, value) pairs, value without the leading
    space, folded with "\\n\\t" where long; they go above every other header, in this order.
    `change`: (name, value) replacing the topmost field of that name (added when there is none).
    `body`: the whole new body (the stage keeps every byte it does not mean to change)."""

    headers: tuple[tuple[str, str], ...] = ()
    refuse: Reply | None = None
    note: str = ""  # a short fact for the log line ("signed d=example.com s=sel")
    change: tuple[tuple[str, str], ...] = ()
    body: bytes | None = None


class FinalMessage:
    """The message as it will leave the gateway (read-only for stages)."""

    def __init__(self, message: Message, edits: Edits, results: Results | None = None) -> None:
        self.message = message
        self.action: Action = edits.action
        self.results = results if results is not None else Results()
        self._headers = _final_headers(message, edits)
        self._body = edits.body

    @property
    def headers(self) -> list[Header]:
        """The final header block in order, values as the receiver gets them (leading space, CRLF)."""
        return list(self._headers)

    def header_bytes(self) -> bytes:
        return b"".join(h.to_bytes() for h in self._headers) + b"\r\n"

    @property
    def body_changed(self) -> bool:
        return self._body is not None

    def body(self) -> BinaryIO:
        """A fresh reader over the body as it will leave."""
        if self._body is not None:
            return io.BytesIO(self._body)
        return self.message.body.reader()

    def chunks(self, size: int = 65536) -> Iterator[bytes]:
        """The whole final message, header block then body."""
        yield self.header_bytes()
        with self.body() as f:
            while chunk := f.read(size):
                yield chunk


class Amender(Protocol):
    """A stage that overrides `Stage.amend`."""

    name: str
    amend_phase: int

    def amend(self, txn: Transaction, final: FinalMessage) -> Amendment | None: ...


def ordered(stages: Sequence[Amender]) -> list[Amender]:
    """Content edits, then signatures, then seals; registration order within a phase."""
    return sorted(stages, key=lambda s: s.amend_phase)


def run(
    stages: Sequence[Amender], txn: Transaction, message: Message, edits: Edits, results: Results | None = None
) -> tuple[Edits, list[str]]:
    """`edits` with every stage's amendment applied (or a refusal), and the stages' notes."""
    notes: list[str] = []
    for stage in ordered(stages):
        final = FinalMessage(message, edits, results)
        try:
            amendment = stage.amend(txn, final)
        except Exception:  # noqa: BLE001 - see the module docstring: 451, never a silent skip
            log.exception("stage %s failed to amend the message; answering 451", stage.name)
            notes.append(f"{stage.name}: amending failed, answered 451")
            return dataclasses.replace(edits, action=Action.TEMPFAIL, reply=replies.INTERNAL_ERROR), notes
        if amendment is None:
            continue
        if amendment.note:
            notes.append(f"{stage.name}: {amendment.note}")
        if amendment.refuse is not None:
            notes.append(f"{stage.name}: refused after the decision: {amendment.refuse}")
            return dataclasses.replace(edits, action=amendment.refuse.action, reply=amendment.refuse), notes
        edits = _applied(edits, message, amendment)
    return edits, notes


def _applied(edits: Edits, message: Message, amendment: Amendment) -> Edits:
    # each stage's new fields go above those of the stages before it
    add = [(name, sanitise_header(value)) for name, value in amendment.headers] + list(edits.add)
    change = list(edits.change)
    for name, value in amendment.change:
        clean = sanitise_header(value)
        ours = next((i for i, (n, _) in enumerate(add) if n.lower() == name.lower()), None)
        inbound = _topmost_kept(message, edits, name)
        if ours is not None:
            add[ours] = (add[ours][0], clean)
        elif inbound is not None:
            change = [c for c in change if (c[0].lower(), c[1]) != (name.lower(), inbound)]
            change.append((name, inbound, clean))
        else:
            add.append((name, clean))
    body = amendment.body if amendment.body is not None else edits.body
    return dataclasses.replace(edits, add=tuple(add), change=tuple(change), body=body)


def _topmost_kept(message: Message, edits: Edits, name: str) -> int | None:
    """The 1-based index (among fields of `name`) of the topmost inbound field not removed."""
    removed = {(n.lower(), i) for n, i in edits.remove}
    index = 0
    for h in message.headers:
        if h.name.lower() == name.lower():
            index += 1
            if (name.lower(), index) not in removed:
                return index
    return None


def _final_headers(message: Message, edits: Edits) -> list[Header]:
    removed = {(name.lower(), index) for name, index in edits.remove}
    changed = {(name.lower(), index): value for name, index, value in edits.change}
    seen: dict[str, int] = {}
    kept: list[Header] = []
    for h in message.headers:
        key = h.name.lower()
        seen[key] = seen.get(key, 0) + 1
        if (key, seen[key]) in removed:
            continue
        value = changed.get((key, seen[key]))
        kept.append(h if value is None else _header(h.name, value))
    return [_header(name, value) for name, value in edits.add] + kept


def _header(name: str, value: str) -> Header:
    """A field as the MTA writes it from a milter's addheader: a leading space, LF folds as CRLF."""
    raw = (" " + value).encode("utf-8", "surrogateescape").replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    return Header(name, raw)
