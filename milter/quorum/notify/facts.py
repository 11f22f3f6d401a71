"""What the pipeline knows about a refused or held message, as the notice machinery needs it."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

SUMMARY_HEADERS = ("from", "to", "cc", "subject", "date", "message-id")


@dataclass(frozen=True)
class HeldItem:
    """One held message in a digest: header facts only (the subject raw, possibly RFC 2047 encoded)."""

    queue_id: str
    date: str
    sender: str
    subject: str
    reason: str


@dataclass(frozen=True)
class NoticeFacts:
    """Filled by the pipeline at end of message. Never holds the body: notices carry headers at most.

    `sender` is the envelope sender without angle brackets ("" for the null sender `<>`);
    `auto_submitted` / `precedence` are the raw header values, None when the header is absent;
    `spf` / `dmarc` are result words ("pass", "fail", "softfail", "none", ...; "" when not checked);
    `header_summary` is (name, raw value) pairs of the original; only From/To/Cc/Subject/Date/Message-ID are used.
    `held` lists the messages of a digest (event "digest"); empty for notices about one message.
    `auth_unknown`: SPF/DMARC are configured but their result is missing for this message (the verdict
    settled before they finished, e.g. a virus found first), so the sender cannot be told from a forgery.
    """

    sender: str
    recipients: tuple[str, ...]
    subject: str = ""
    client_ip: str = ""
    client_name: str = ""
    queue_id: str = ""
    verdict: str = ""
    virus_names: tuple[str, ...] = ()
    rule: str = ""
    reason: str = ""
    tenant: str = ""
    spf: str = ""
    dmarc: str = ""
    header_summary: tuple[tuple[str, str], ...] = ()
    auto_submitted: str | None = None
    precedence: str | None = None
    received_at: float = field(default_factory=time.time)
    held: tuple[HeldItem, ...] = ()
    auth_unknown: bool = False

    def summary(self) -> tuple[tuple[str, str], ...]:
        """The header summary limited to the allowed names (and 6 values each at most)."""
        kept: list[tuple[str, str]] = []
        for name, value in self.header_summary:
            if name.lower() in SUMMARY_HEADERS and sum(1 for n, _ in kept if n.lower() == name.lower()) < 6:
                kept.append((name, value))
        return tuple(kept)
