"""Test messages shared by the integration tests and the demo."""

from __future__ import annotations

import email.utils

EICAR = rb"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
GTUBE = b"XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
HAM = b"shall we have lunch tomorrow at noon? The usual place is fine, I booked a table for two."
SPAMD_HAM = b"SPAMD/1.1 0 EX_OK\r\nContent-length: 9\r\nSpam: False ; 0.5 / 5.0\r\n\r\nNO_RELAYS"


def mail(token: str, body: bytes, subject: str = "Lunch tomorrow") -> bytes:
    """A plain personal message with a current Date and a Message-ID (rspamd scores ham by both)."""
    return (
        b"From: Alice <alice@example.com>\r\n"
        b"To: Bob <bob@example.org>\r\n"
        + f"Subject: {subject}\r\n".encode()
        + f"Date: {email.utils.formatdate(localtime=True)}\r\n".encode()
        + f"Message-ID: <{token}@example.com>\r\n".encode()
        + b"MIME-Version: 1.0\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n"
        b"\r\n"
        b"Hi Bob,\r\n\r\n" + body + b"\r\n\r\nCheers,\r\nAlice\r\n"
    )
