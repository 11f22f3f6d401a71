"""Issue 19, banners end to end: client -> Postfix -> `quorum run` -> sink, with DKIM signing on.

Outbound (XCLIENT LOGIN) mail gets its domain's footer and a DKIM signature over it, verified by
Perl's Mail::DKIM asking the test NSD; inbound mail gets the external-sender warning of its
recipients' domain. What the sink received is parsed as a MIME tree (Python's email package):
the banner is in the text parts, once, attachments are byte for byte as sent, and signed or
encrypted mail is left untouched.
"""

from __future__ import annotations

import base64
import email
import email.policy
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage

import pytest
from tests.harness.dkim_keys import KeyFile, write_rsa
from tests.harness.dkim_verifier import mail_dkim
from tests.harness.sink import Delivered
from tests.zones import auth as z
from tests.zones.auth_stack import AUTH_BASE, AuthStack, auth_stack

pytestmark = pytest.mark.integration

FOOTER = "Signer Ltd - registered in Testland, no. 12345"
WARNING = "CAUTION: this message came from outside your organisation."
RCPT_WARNING = "Achtung: externe Nachricht - prüfen Sie Links."  # non-ASCII: charset handling


@dataclass
class Stack:
    auth: AuthStack
    key: KeyFile

    def received(self, raw: bytes, sender: str, login: str = "", client: str = z.CLIENT_GOOD) -> Delivered:
        result = self.auth.send(raw, sender, client=client, login=login)
        assert result.accepted, result
        (got,) = self.auth.delivered(1)
        return got


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("banner-stack")
    key = write_rsa(root / "keys" / "signer.test.s1.pem", 2048)
    body = (
        AUTH_BASE
        + f"""
[signing]
[[signing.keys]]
domain = "signer.test"
selector = "s1"
key = "{key.path}"

[banner]
external_warning = {{ text = "{WARNING}" }}
footer = {{ text = "generic footer", html = "<p>generic footer</p>" }}

[domains."signer.test".banner]
footer = {{ text = "{FOOTER}", html = "<p style='color:gray'>{FOOTER}</p>" }}

[domains."rcpt.test".banner]
external_warning = {{ text = "{RCPT_WARNING}" }}
"""
    )
    with auth_stack(root, body, [("s1._domainkey.signer.test", "TXT", key.record)]) as s:
        yield Stack(s, key)


def head(sender: str, subject: str, content_type: str) -> str:
    return (
        f"From: Alice <{sender}>\r\nTo: Bob <user@rcpt.test>\r\nSubject: {subject}\r\n"
        f"Date: Mon, 07 Dec 2026 12:00:00 +0000\r\nMessage-ID: <{abs(hash(subject))}@signer.test>\r\n"
        f"MIME-Version: 1.0\r\nContent-Type: {content_type}\r\n"
    )


PDF = b"%PDF-1.4\n" + bytes(range(256)) * 40


def gmail_alternative(sender: str, subject: str) -> bytes:
    return (
        head(sender, subject, 'multipart/alternative; boundary="000000000000abc"')
        + '\r\n--000000000000abc\r\nContent-Type: text/plain; charset="UTF-8"\r\n'
        "Content-Transfer-Encoding: quoted-printable\r\n\r\nHi Bob,=0D=0A\r\n\r\nsee you at 10.\r\n"
        '\r\n--000000000000abc\r\nContent-Type: text/html; charset="UTF-8"\r\n'
        'Content-Transfer-Encoding: quoted-printable\r\n\r\n<div dir=3D"ltr">Hi Bob,<br>see you at 10.</div>\r\n'
        "\r\n--000000000000abc--\r\n"
    ).encode()


def mixed_with_pdf(sender: str, subject: str) -> bytes:
    pdf = base64.encodebytes(PDF).decode().replace("\n", "\r\n")
    return (
        head(sender, subject, 'multipart/mixed; boundary="------------mixed"')
        + "\r\nThis is a multi-part message in MIME format.\r\n--------------mixed\r\n"
        "Content-Type: text/plain; charset=ISO-8859-1; format=flowed\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
        + "Grüße, the report is attached.\r\n".encode("latin-1").decode("latin-1")
        + '\r\n--------------mixed\r\nContent-Type: application/pdf; name="report.pdf"\r\n'
        'Content-Disposition: attachment; filename="report.pdf"\r\nContent-Transfer-Encoding: base64\r\n\r\n'
        + pdf
        + "\r\n--------------mixed--\r\n"
    ).encode("latin-1")


def smime_signed(sender: str, subject: str) -> bytes:
    return (
        head(
            sender,
            subject,
            'multipart/signed; protocol="application/pkcs7-signature"; micalg=sha-256; boundary="sig"',
        )
        + "\r\n--sig\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nsigned text\r\n"
        "\r\n--sig\r\nContent-Type: application/pkcs7-signature; name=smime.p7s\r\n"
        "Content-Transfer-Encoding: base64\r\n\r\n"
        "MIAGCSqGSIb3DQEHAqCAMIACAQExDzANBglghkgBZQMEAgEFADCABgkqhkiG9w0BBwEAAKCA\r\n"
        "\r\n--sig--\r\n"
    ).encode()


def tree(raw: bytes) -> EmailMessage:
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def texts(msg: EmailMessage) -> dict[str, str]:
    found: dict[str, str] = {}
    for part in msg.walk():
        if part.get_content_type() in ("text/plain", "text/html") and not part.get_filename():
            found[part.get_content_type()] = str(part.get_content())
    return found


def test_outbound_alternative_gets_the_domains_footer_in_both_parts_and_verifies(stack: Stack) -> None:
    got = stack.received(gmail_alternative("alice@signer.test", "footer alt"), "alice@signer.test", login="alice")
    parts = texts(tree(got.raw))
    assert parts["text/plain"].count(FOOTER) == 1 and parts["text/html"].count(FOOTER) == 1
    assert parts["text/plain"].rstrip().endswith(FOOTER)
    assert "generic footer" not in got.raw.decode(errors="replace") and "CAUTION" not in parts["text/plain"]
    verdict = mail_dkim(got.raw, stack.auth.dns.port)
    assert [s.result for s in verdict.signatures] == ["pass"], verdict


def test_the_footer_and_the_attachment_survive_in_a_mixed_message(stack: Stack) -> None:
    got = stack.received(mixed_with_pdf("alice@signer.test", "footer mixed"), "alice@signer.test", login="alice")
    msg = tree(got.raw)
    parts = texts(msg)
    assert parts["text/plain"].count(FOOTER) == 1 and "Grüße" in parts["text/plain"]
    (pdf,) = [p for p in msg.walk() if p.get_filename() == "report.pdf"]
    assert pdf.get_payload(decode=True) == PDF
    assert [s.result for s in mail_dkim(got.raw, stack.auth.dns.port).signatures] == ["pass"]


def test_a_modified_body_fails_verification(stack: Stack) -> None:
    got = stack.received(gmail_alternative("alice@signer.test", "tamper"), "alice@signer.test", login="alice")
    tampered = got.raw.replace(b"see you at 10.", b"see you at 11.")
    assert [s.result for s in mail_dkim(tampered, stack.auth.dns.port).signatures] == ["fail"]


def test_inbound_mail_gets_the_recipient_domains_warning_at_the_top(stack: Stack) -> None:
    got = stack.received(gmail_alternative("news@nodmarc.test", "inbound"), "news@nodmarc.test")
    parts = texts(tree(got.raw))
    assert parts["text/plain"].startswith(RCPT_WARNING)
    assert parts["text/html"].count('data-quorum-banner="external_warning"') == 1
    assert "prüfen" in parts["text/html"]
    assert FOOTER not in parts["text/plain"]


def test_a_reply_carrying_the_warning_does_not_get_a_second(stack: Stack) -> None:
    first = stack.received(gmail_alternative("news@nodmarc.test", "once"), "news@nodmarc.test")
    again = stack.received(first.raw, "news@nodmarc.test")
    parts = texts(tree(again.raw))
    assert parts["text/plain"].count(RCPT_WARNING) == 1


def test_smime_signed_mail_is_left_untouched(stack: Stack) -> None:
    raw = smime_signed("alice@signer.test", "smime")
    got = stack.received(raw, "alice@signer.test", login="alice")
    body = got.raw.split(b"\r\n\r\n", 1)[1]
    assert body == raw.split(b"\r\n\r\n", 1)[1]
    assert stack.auth.log_lines("signed or encrypted")


def test_a_plain_ascii_message_is_switched_to_utf8_for_a_non_ascii_warning(stack: Stack) -> None:
    raw = (head("news@nodmarc.test", "ascii", "text/plain; charset=us-ascii") + "\r\nplain ascii body\r\n").encode()
    got = stack.received(raw, "news@nodmarc.test")
    msg = tree(got.raw)
    assert msg.get_content_charset() == "utf-8" and msg["Content-Transfer-Encoding"] == "quoted-printable"
    assert len(msg.get_all("Content-Type") or []) == 1
    text = str(msg.get_content())
    assert text.startswith(RCPT_WARNING) and "plain ascii body" in text
