"""The headers and body of a notice: our own, RFC 3834 marked, never the refused content."""

from __future__ import annotations

import email
import email.policy
from email.message import EmailMessage

from quorum.notify.message import build_notice


def parse(data: bytes) -> EmailMessage:
    msg = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def test_notice_headers() -> None:
    data, message_id, smtputf8 = build_notice(
        "Mail Filter <postmaster@example.net>", "bob@example.com", "Virus found", "body\n", "virus", now=1_800_000_000
    )
    msg = parse(data)
    assert msg["From"] == "Mail Filter <postmaster@example.net>"
    assert msg["To"] == "bob@example.com"
    assert msg["Subject"] == "Virus found"
    assert msg["Auto-Submitted"] == "auto-generated"
    assert msg["Message-ID"] == message_id and message_id.endswith("@example.net>")
    assert msg["Date"] == "Fri, 15 Jan 2027 08:00:00 +0000"
    assert msg["X-Quorum-Notice"] == "virus"
    assert msg.get_content_type() == "text/plain"
    assert msg.get_content_charset() == "utf-8"
    assert not msg.is_multipart()
    assert msg.get_content().replace("\r\n", "\n") == "body\n"
    assert b"\r\n" in data and b"\n" not in data.replace(b"\r\n", b"")
    assert not smtputf8


def test_every_notice_has_its_own_message_id() -> None:
    ids = {build_notice("pm@example.net", "a@example.com", "s", "b", "rule")[1] for _ in range(100)}
    assert len(ids) == 100


def test_non_ascii_subject_is_rfc2047_encoded_and_body_is_utf8() -> None:
    data, _, smtputf8 = build_notice("pm@example.net", "a@example.com", "Grüße „Köln“", "Grüße\n" + "x" * 200, "rule")
    assert data.isascii() and not smtputf8
    raw_subject = next(line for line in data.split(b"\r\n") if line.startswith(b"Subject:"))
    assert b"=?utf-8?" in raw_subject
    msg = parse(data)
    assert msg["Subject"] == "Grüße „Köln“"
    assert msg.get_content().replace("\r\n", "\n") == "Grüße\n" + "x" * 200 + "\n"
    assert max(len(line) for line in data.split(b"\r\n")) <= 78


def test_header_injection_through_the_subject_is_impossible() -> None:
    data, _, _ = build_notice("pm@example.net", "a@example.com", "hi Bcc: evil@example.org", "b", "rule")
    assert b"\r\nBcc:" not in data


def test_utf8_address_needs_smtputf8() -> None:
    data, _, smtputf8 = build_notice("pm@example.net", "jörg@example.com", "s", "b", "rule")
    assert smtputf8
    assert "To: jörg@example.com".encode() in data
