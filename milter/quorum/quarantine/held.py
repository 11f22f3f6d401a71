"""What Quorum holds: hold-queue messages carrying the `X-Quorum-Quarantine` header Quorum adds."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from quorum.quarantine.postfix import PostfixQueue

REASON_HEADER = "X-Quorum-Quarantine"
_FOLD = re.compile(r"\r?\n[ \t]+")


@dataclass(frozen=True)
class HeldMessage:
    queue_id: str
    arrival_time: int
    size: int
    sender: str
    recipients: tuple[str, ...]
    reason: str
    headers: str

    @property
    def domains(self) -> frozenset[str]:
        return frozenset(domain_of(r) for r in self.recipients if "@" in r)

    @property
    def date(self) -> str:
        return datetime.fromtimestamp(self.arrival_time, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")

    def age(self, now: float | None = None) -> float:
        return (time.time() if now is None else now) - self.arrival_time

    def for_domain(self, domain: str) -> bool:
        return normalise_domain(domain) in self.domains

    def for_recipient(self, recipient: str) -> bool:
        return recipient.strip().lower() in (r.lower() for r in self.recipients)

    def summary(self) -> dict[str, Any]:
        return {
            "queue_id": self.queue_id,
            "date": datetime.fromtimestamp(self.arrival_time, UTC).isoformat(),
            "arrival_time": self.arrival_time,
            "size": self.size,
            "sender": self.sender,
            "recipients": list(self.recipients),
            "reason": self.reason,
        }


def normalise_domain(domain: str) -> str:
    return domain.strip().lower().rstrip(".")


def domain_of(address: str) -> str:
    return normalise_domain(address.rpartition("@")[2])


def header_values(headers: str, name: str) -> list[str]:
    """Unfolded values of every `name` field in a header block."""
    unfolded = _FOLD.sub(" ", headers)
    prefix = name.lower() + ":"
    return [line[len(prefix) :].strip() for line in unfolded.splitlines() if line.lower().startswith(prefix)]


def quarantine_reason(headers: str) -> str | None:
    """The reason Quorum recorded (the last such field: Quorum appends it, inbound copies are stripped)."""
    values = header_values(headers, REASON_HEADER)
    return values[-1] if values else None


def held_messages(queue: PostfixQueue) -> list[HeldMessage]:
    """Every message in the hold queue that Quorum put there, oldest first."""
    held = [e for e in queue.entries() if e.queue_name == "hold"]
    headers = queue.headers([e.queue_id for e in held])
    out = []
    for e in held:
        text = headers.get(e.queue_id)
        reason = quarantine_reason(text) if text is not None else None
        if text is None or reason is None:
            continue
        out.append(HeldMessage(e.queue_id, e.arrival_time, e.size, e.sender, e.recipients, reason, text))
    out.sort(key=lambda m: (m.arrival_time, m.queue_id))
    return out


def select(
    messages: list[HeldMessage], domain: str | None = None, older_than: float | None = None, now: float | None = None
) -> list[HeldMessage]:
    out = messages
    if domain:
        out = [m for m in out if m.for_domain(domain)]
    if older_than is not None:
        out = [m for m in out if m.age(now) >= older_than]
    return out


def held_for(recipient: str, queue: PostfixQueue) -> list[HeldMessage]:
    """What Quorum holds for one recipient (for a per-recipient digest notice)."""
    return [m for m in held_messages(queue) if m.for_recipient(recipient)]
