"""Template variables from the facts: decoded, single-line, length-capped text only."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from email.header import decode_header, make_header
from email.utils import format_datetime
from typing import Any

from quorum.notify.facts import NoticeFacts

MAX_VALUE = 998  # one header line's worth per value
MAX_LISTED = 500  # messages listed in one digest; `message_count` still says how many there are
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


def clean(text: str, limit: int = MAX_VALUE) -> str:
    """One line of printable text: 8-bit bytes (surrogate escapes) as UTF-8, controls as spaces, capped."""
    text = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return _CONTROL.sub(" ", text).strip()[:limit]


def decode_text(raw: str) -> str:
    """A header value with RFC 2047 encoded words decoded; undecodable words are kept as they are."""
    text = clean(raw, 4 * MAX_VALUE)
    try:
        text = str(make_header(decode_header(text)))
    except (LookupError, UnicodeError, ValueError, TypeError, AssertionError):
        pass
    return clean(text)


def client_text(facts: NoticeFacts) -> str:
    """Client as "name [ip]"; just the ip where the name is unknown (libmilter then gets "[ip]" as the name)."""
    ip, name = clean(facts.client_ip, 64), clean(facts.client_name, 255)
    if name.startswith("[") or name.lower() in ("unknown", "[unavailable]"):
        name = ""
    if name and ip:
        return f"{name} [{ip}]"
    return name or ip


def variables(event: str, audience: str, to: str, recipients: tuple[str, ...], facts: NoticeFacts) -> dict[str, Any]:
    """What a template sees. Lists are plain lists of strings; nothing else is reachable from here."""
    when = datetime.fromtimestamp(facts.received_at, UTC)
    viruses = [clean(v, 200) for v in facts.virus_names[:20]]
    return {
        "event": event,
        "audience": audience,
        "to": clean(to, 254),
        "sender": clean(facts.sender, 254),
        "recipients": [clean(r, 254) for r in recipients[:1000]],
        "subject": decode_text(facts.subject),
        "client": client_text(facts),
        "client_ip": clean(facts.client_ip, 64),
        "queue_id": clean(facts.queue_id, 64),
        "verdict": clean(facts.verdict, 64),
        "virus_name": ", ".join(viruses),
        "virus_names": viruses,
        "rule": clean(facts.rule, 200),
        "reason": clean(facts.reason),
        "date": format_datetime(when),
        "tenant": clean(facts.tenant, 255),
        "headers": [[clean(name, 64), decode_text(value)] for name, value in facts.summary()],
        "messages": [
            {
                "queue_id": clean(m.queue_id, 64),
                "date": clean(m.date, 64),
                "sender": clean(m.sender, 254),
                "subject": decode_text(m.subject),
                "reason": clean(m.reason),
            }
            for m in facts.held[:MAX_LISTED]
        ],
        "message_count": len(facts.held),
    }
