"""What a cached antivirus verdict is keyed by: the decoded content, never the headers or envelope.

- single-part mail: the SHA-256 of the whole (transfer-decoded) body;
- multipart mail: the SHA-256 of each decoded attachment (a part with a file name or
  `Content-Disposition: attachment`). What is left once the attachments are emptied — the headers,
  the MIME structure and every other part, still encoded as received — is `rest`: the message as
  clamd should see it when every attachment is already known clean (it parses it as mail, as it
  would the whole message).

The MIME walk is bounded (`max_parts`); a message past it, or one that fails to parse or to be
written back, is simply not cached (scanned as a whole, as without the cache).
"""

from __future__ import annotations

import email
import email.policy
import hashlib
from dataclasses import dataclass, field

from quorum.message import Message


@dataclass
class Content:
    single: str | None = None  # key of the whole body of a single-part message
    attachments: list[tuple[str, bytes]] = field(default_factory=list)  # (key, decoded bytes)
    rest: bytes = b""  # the message with every attachment's body emptied (multipart only)


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def content_of(message: Message, max_parts: int) -> Content | None:
    """The keys of `message`, or None when it cannot be split safely (then: no caching)."""
    try:
        parsed = email.message_from_bytes(message.raw(), policy=email.policy.compat32)
        if not parsed.is_multipart():
            body = parsed.get_payload(decode=True)
            return Content(single=digest(body if isinstance(body, bytes) else b""))
        out = Content()
        for n, part in enumerate(parsed.walk()):
            if n > max_parts:
                return None
            if part.is_multipart():
                continue
            if part.get_filename() or part.get_content_disposition() == "attachment":
                data = part.get_payload(decode=True)
                data = data if isinstance(data, bytes) else b""
                out.attachments.append((digest(data), data))
                part.set_payload("")
        if out.attachments:
            out.rest = parsed.as_bytes(policy=email.policy.compat32)
        return out
    except Exception:  # noqa: BLE001 - malformed MIME: scan the whole message, cache nothing
        return None
