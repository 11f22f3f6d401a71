"""The post-decision edit hook: after the decision and before the milter applies the edits, stages
may amend the message that will leave (outbound signing, banners).

A stage overrides `Stage.amend(txn, final)` and returns an `Amendment`: header fields to put above
every other header (a DKIM-Signature, ARC sets), or a refusal (a signing failure under a fail-closed
policy). `final` is the message as it will leave: the inbound header block less the removals,
with Quorum's own header fields and those earlier stages added, and the body. Stages run in
registration order and each sees what the ones before it added. Only mail Quorum delivers reaches
the hook (accept, tag, quarantine: `final.action` says which); refused, tempfailed or discarded
mail never does. A stage that raises refuses the message with 451: an amendment that silently did
not happen (an unsigned message from a domain that signs) is the kind of 250 Quorum never gives.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO, Protocol

from quorum.message import Header, Message
from quorum.pipeline import replies
from quorum.pipeline.answer import Action, Reply
from quorum.pipeline.headers import sanitise_header

if TYPE_CHECKING:
    from quorum.pipeline.output import Edits
    from quorum.pipeline.transaction import Transaction

log = logging.getLogger("quorum.pipeline")


@dataclass(frozen=True)
class Amendment:
    """What one stage's `amend` returns. `headers`: (name, value) pairs, value without the leading
    space, folded with "\\n\\t" where long; they go above every other header, in this order."""

    headers: tuple[tuple[str, str], ...] = ()
    refuse: Reply | None = None
    note: str = ""  # a short fact for the log line ("signed d=example.com s=sel")


class FinalMessage:
    """The message as it will leave the gateway (read-only for stages)."""

    def __init__(self, message: Message, edits: Edits) -> None:
        self.message = message
        self.action: Action = edits.action
        self._headers = _final_headers(message, edits)

    @property
    def headers(self) -> list[Header]:
        """The final header block in order, values as the receiver gets them (leading space, CRLF)."""
        return list(self._headers)

    def header_bytes(self) -> bytes:
        return b"".join(h.to_bytes() for h in self._headers) + b"\r\n"

    def body(self) -> BinaryIO:
        """A fresh reader over the body as it will leave (Quorum does not change the body)."""
        return self.message.body.reader()

    def chunks(self, size: int = 65536) -> Iterator[bytes]:
        """The whole final message, header block then body."""
        yield self.header_bytes()
        with self.body() as f:
            while chunk := f.read(size):
                yield chunk

    def _prepend(self, headers: Sequence[tuple[str, str]]) -> None:
        self._headers[:0] = [_header(name, value) for name, value in headers]


class Amender(Protocol):
    """A stage that overrides `Stage.amend`."""

    name: str

    def amend(self, txn: Transaction, final: FinalMessage) -> Amendment | None: ...


def run(stages: Sequence[Amender], txn: Transaction, message: Message, edits: Edits) -> tuple[Edits, list[str]]:
    """`edits` with every stage's amendment applied (or a refusal), and the stages' notes."""
    final = FinalMessage(message, edits)
    added: list[tuple[str, str]] = []
    notes: list[str] = []
    for stage in stages:
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
        clean = tuple((name, sanitise_header(value)) for name, value in amendment.headers)
        final._prepend(clean)
        added[:0] = clean  # each stage's fields go above those of the stages before it
    if not added:
        return edits, notes
    return dataclasses.replace(edits, add=(*added, *edits.add)), notes


def _final_headers(message: Message, edits: Edits) -> list[Header]:
    removed = {(name.lower(), index) for name, index in edits.remove}
    seen: dict[str, int] = {}
    kept: list[Header] = []
    for h in message.headers:
        key = h.name.lower()
        seen[key] = seen.get(key, 0) + 1
        if (key, seen[key]) not in removed:
            kept.append(h)
    return [_header(name, value) for name, value in edits.add] + kept


def _header(name: str, value: str) -> Header:
    """A field as the MTA writes it from a milter's addheader: a leading space, LF folds as CRLF."""
    raw = (" " + value).encode("utf-8", "surrogateescape").replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    return Header(name, raw)
