"""The notice as bytes: our own headers and a text/plain body, never any part of the refused message."""

from __future__ import annotations

import email.policy
import time
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid, parseaddr

NOTICE_HEADER = "X-Quorum-Notice"


def build_notice(
    from_header: str, to: str, subject: str, body: str, event: str, now: float | None = None
) -> tuple[bytes, str, bool]:
    """(message bytes with CRLF line ends, its Message-ID, whether it needs SMTPUTF8)."""
    smtputf8 = not to.isascii() or not from_header.isascii()
    policy = email.policy.SMTPUTF8 if smtputf8 else email.policy.SMTP
    msg = EmailMessage(policy=policy)
    domain = parseaddr(from_header)[1].rpartition("@")[2] or "localhost"
    message_id = make_msgid(domain=domain)
    when = datetime.fromtimestamp(time.time() if now is None else now, UTC)
    msg["From"] = from_header
    msg["To"] = to
    msg["Subject"] = subject  # encoded as RFC 2047 words by the policy when not ASCII
    msg["Date"] = format_datetime(when)
    msg["Message-ID"] = message_id
    msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: auto-responders must not answer this
    msg[NOTICE_HEADER] = event
    if not body.endswith("\n"):
        body += "\n"
    plain = body.isascii() and all(len(line) <= 78 for line in body.splitlines())
    msg.set_content(body, subtype="plain", charset="utf-8", cte="7bit" if plain else "quoted-printable")
    return msg.as_bytes(), message_id, smtputf8
