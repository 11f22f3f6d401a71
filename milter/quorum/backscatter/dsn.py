"""Which message a bounce is about: the Message-ID of the bounced message, from a DSN or a bounce's text.

Looks, in this order, at RFC 3464 reports' `message/rfc822` and `text/rfc822-headers` (or
`message/rfc822-headers`) parts, then at the text of non-standard bounces that quote the original
headers (Exim "This is a copy of the message", qmail "Below this line is a copy", Exchange NDRs
with "Original message headers", quoted or HTML). Bounded in size and parts; never raises.
"""

from __future__ import annotations

import html
import re
from email import message_from_bytes
from email.message import Message
from email.policy import compat32

MAX_BYTES = 1 << 20
MAX_PARTS = 64
MAX_IDS = 4
MAX_ID_LENGTH = 250
_HEADER_PARTS = ("text/rfc822-headers", "message/rfc822-headers")
_LEAVES = ("message/rfc822", *_HEADER_PARTS)
_MSGID_LINE = re.compile(r"^[ \t>]*Message-I[Dd][ \t]*:[ \t]*(?:\r?\n[ \t]+)?(<[^<>\s]{3,250}>)", re.I | re.M)
_TAGS = re.compile(r"<(?:br|p|div|/p|/div|tr|/tr)\b[^>]*>", re.I)
_ANY_TAG = re.compile(r"<[a-z/!][^>]*>", re.I)


def normalise(msgid: str) -> str:
    """`<local@domain>` trimmed, domain lower-cased; "" for something that is not a Message-ID."""
    value = msgid.strip()
    m = re.search(r"<([^<>\s]+)>", value)
    core = m.group(1) if m else value
    if not core or len(core) > MAX_ID_LENGTH or any(c.isspace() or ord(c) < 33 for c in core):
        return ""
    local, at, domain = core.rpartition("@")
    return f"<{local}@{domain.lower()}>" if at else f"<{core}>"


def bounced_message_ids(raw: bytes, max_bytes: int = MAX_BYTES, max_parts: int = MAX_PARTS) -> list[str]:
    """Candidate Message-IDs of the bounced message, best first (at most MAX_IDS); [] if none or on garbage."""
    try:
        return _find(raw[:max_bytes], max_parts)
    except Exception:  # noqa: BLE001 - hostile MIME must cost a verdict of "unknown", never a crash
        return []


def _find(raw: bytes, max_parts: int) -> list[str]:
    top = message_from_bytes(raw, policy=compat32)
    own = normalise(str(top.get("Message-ID", "")))
    structured: list[str] = []
    texts: list[str] = []
    for part in _parts(top, max_parts):
        ctype = part.get_content_type()
        if ctype == "message/rfc822":
            inner = part.get_payload(0) if part.is_multipart() else None
            if isinstance(inner, Message):
                structured.append(normalise(str(inner.get("Message-ID", ""))))
        elif ctype in _HEADER_PARTS:
            inner = part.get_payload(0) if part.is_multipart() else None  # message/* is parsed as a message
            if isinstance(inner, Message):
                structured.append(normalise(str(inner.get("Message-ID", ""))))
                continue
            text = _text(part)
            headers = message_from_bytes(text.encode("utf-8", "surrogateescape"), policy=compat32)
            structured.append(normalise(str(headers.get("Message-ID", ""))))
            texts.append(text)
        elif ctype in ("text/plain", "text/html"):
            text = _text(part)
            texts.append(_unhtml(text) if ctype == "text/html" else text)
    found = [*structured]
    for text in texts:
        found += [normalise(m.group(1)) for m in _MSGID_LINE.finditer(text)]
    out: list[str] = []
    for msgid in found:
        if msgid and msgid != own and msgid not in out:
            out.append(msgid)
    return out[:MAX_IDS]


def _parts(top: Message, limit: int) -> list[Message]:
    """Leaf parts and message/rfc822 parts, depth first, without descending into an attached message."""
    out: list[Message] = []
    stack = [top]
    while stack and len(out) < limit:
        part = stack.pop()
        if part.get_content_type() not in _LEAVES and part.is_multipart():
            children = part.get_payload()
            if isinstance(children, list):
                stack.extend(reversed([c for c in children[:limit] if isinstance(c, Message)]))
            continue
        out.append(part)
    return out


def _text(part: Message) -> str:
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        payload = str(part.get_payload()).encode("utf-8", "surrogateescape")
    charset = part.get_content_charset() or "utf-8"
    try:
        return payload[:MAX_BYTES].decode(charset, "replace")
    except LookupError:
        return payload[:MAX_BYTES].decode("utf-8", "replace")


def _unhtml(text: str) -> str:
    return html.unescape(_ANY_TAG.sub("", _TAGS.sub("\n", text)))
