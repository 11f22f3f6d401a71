"""Banner insertion (`quorum.banner.insert`): MIME shapes real clients send, byte-exact splicing."""

# ruff: noqa: RUF001  (en dashes and full-width colons are the point: they test the charsets)

from __future__ import annotations

import base64
import email
import email.policy
import os
import time
from email.message import EmailMessage
from email.parser import BytesHeaderParser
from email.policy import compat32

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quorum.banner.insert import Banner, Outcome, insert

WARN = Banner(
    "external_warning",
    "CAUTION: This email originated from outside the organisation. Do not click links.",
    "<p><b>CAUTION:</b> This email originated from outside the organisation.</p>",
    True,
)
FOOT = Banner(
    "footer",
    "Confidentiality notice: this message is intended for the addressee only.",
    "<p>Confidentiality notice: this message is intended for the addressee only.</p>",
    False,
)
BOTH = (WARN, FOOT)
ENVELOPE = (
    b"From: Alice Example <alice@example.com>\r\n"
    b"To: Bob <bob@example.org>\r\n"
    b"Subject: Quarterly numbers\r\n"
    b"Date: Tue, 04 Jun 2024 10:12:33 +0200\r\n"
    b"Message-ID: <1d2c3b4a@example.com>\r\n"
    b"MIME-Version: 1.0\r\n"
)


# --- helpers -----------------------------------------------------------------------------------


def split(raw: bytes) -> tuple[list[tuple[str, str]], bytes, bytes]:
    """(unfolded header fields, raw header block incl. the blank line, body) of a message."""
    crlf, lf = raw.find(b"\r\n\r\n"), raw.find(b"\n\n")
    if crlf >= 0 and (lf < 0 or crlf < lf):
        block, body = raw[: crlf + 4], raw[crlf + 4 :]
    else:
        block, body = raw[: lf + 2], raw[lf + 2 :]
    msg = BytesHeaderParser(policy=compat32).parsebytes(block)
    fields = [(k, str(v).replace("\r\n", "").replace("\n", "")) for k, v in msg.items()]
    return fields, block, body


def run(raw: bytes, banners: tuple[Banner, ...] = BOTH, **kw: int) -> tuple[Outcome, bytes]:
    """Insert and rebuild the whole message (header replacements applied) for parsing."""
    fields, block, body = split(raw)
    out = insert(fields, body, banners, **kw)
    new_block = block
    if out.headers:
        eol = "\r\n" if block.endswith(b"\r\n\r\n") else "\n"
        names = {n.lower() for n, _ in out.headers}
        kept = [(n, v) for n, v in fields if n.lower() not in names]
        lines = [f"{n}: {v}" for n, v in [*kept, *out.headers]]
        new_block = (eol.join(lines) + eol + eol).encode("utf-8", "surrogateescape")
    return out, new_block + (out.body if out.body is not None else body)


def parse(raw: bytes) -> EmailMessage:
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def texts(raw: bytes) -> dict[str, list[str]]:
    """Decoded text parts by content type (attachments excluded)."""
    found: dict[str, list[str]] = {}
    for part in parse(raw).walk():
        if part.get_content_maintype() == "text" and not part.get_filename():
            found.setdefault(part.get_content_type(), []).append(part.get_content().replace("\r\n", "\n"))
    return found


def assert_bannered(raw: bytes, plain: int = 1, html: int = 1) -> dict[str, list[str]]:
    found = texts(raw)
    for body in found.get("text/plain", [])[:plain]:
        assert body.count(WARN.text) == 1 and body.count(FOOT.text) == 1
        assert body.startswith(WARN.text + "\n\n")
        assert body.endswith("\n\n" + FOOT.text + "\n")
    for body in found.get("text/html", [])[:html]:
        assert body.count('data-quorum-banner="external_warning"') == 1
        assert body.count('data-quorum-banner="footer"') == 1
        assert body.count(WARN.html) == 1 and body.count(FOOT.html) == 1
    return found


def assert_twice_present(raw: bytes) -> None:
    out, new = run(raw)
    assert out.added == ("external_warning", "footer")
    again, same = run(new)
    assert again.body is None and again.added == ()
    assert again.skipped == (("external_warning", "present"), ("footer", "present"))
    assert same == new


def b64(data: bytes) -> bytes:
    return base64.encodebytes(data).replace(b"\n", b"\r\n")


PDF = b"%PDF-1.4\n" + bytes(range(256)) * 40 + b"\n%%EOF\n"
PNG = b"\x89PNG\r\n\x1a\n" + os.urandom(3000)

# --- shapes ------------------------------------------------------------------------------------

THUNDERBIRD_FLOWED = ENVELOPE + (
    b"User-Agent: Mozilla Thunderbird\r\n"
    b"Content-Language: en-US\r\n"
    b"Content-Type: text/plain; charset=UTF-8; format=flowed\r\n"
    b"Content-Transfer-Encoding: 7bit\r\n"
    b"\r\n"
    b"Hi Bob,\r\n"
    b"\r\n"
    b"here are the numbers for the quarter, as discussed on the phone this \r\n"
    b"morning.\r\n"
    b"\r\n"
    b"-- \r\n"
    b"Alice\r\n"
)

OUTLOOK_PLAIN_QP = ENVELOPE + (
    b'Content-Type: text/plain; charset="iso-8859-1"\r\n'
    b"Content-Transfer-Encoding: quoted-printable\r\n"
    b"X-Mailer: Microsoft Outlook 16.0\r\n"
    b"\r\n"
    b"Hallo Bob,=0D=0A\r\n"
    b"\r\n"
    b"anbei die Zahlen f=FCr das Quartal. Eine sehr lange Zeile, die umbrochen wer=\r\n"
    b"den muss, weil sie l=E4nger als 76 Zeichen ist.\r\n"
    b"\r\n"
    b"Gr=FC=DFe\r\n"
    b"Alice\r\n"
)

GMAIL_ALT_QP = ENVELOPE + (
    b'Content-Type: multipart/alternative; boundary="000000000000f1e2d3c4b5a69788"\r\n'
    b"\r\n"
    b"--000000000000f1e2d3c4b5a69788\r\n"
    b'Content-Type: text/plain; charset="UTF-8"\r\n'
    b"Content-Transfer-Encoding: quoted-printable\r\n"
    b"\r\n"
    b"Hi Bob,=C2=A0see the numbers below.\r\n"
    b"\r\n"
    b"Alice\r\n"
    b"\r\n"
    b"--000000000000f1e2d3c4b5a69788\r\n"
    b'Content-Type: text/html; charset="UTF-8"\r\n'
    b"Content-Transfer-Encoding: quoted-printable\r\n"
    b"\r\n"
    b'<div dir=3D"ltr">Hi Bob,=C2=A0see the numbers below.<div><br></div><div>Alic=\r\n'
    b"e</div></div>\r\n"
    b"\r\n"
    b"--000000000000f1e2d3c4b5a69788--\r\n"
)


def gmail_alt_base64() -> bytes:
    plain = "Hi Bob,\r\n\r\nsee the numbers — all good.\r\n".encode()
    html_part = '<div dir="ltr">Hi Bob,<br><br>see the numbers — all good.</div>\r\n'.encode()
    return ENVELOPE + (
        b'Content-Type: multipart/alternative; boundary="0000000000001234abcd"\r\n'
        b"\r\n"
        b"--0000000000001234abcd\r\n"
        b'Content-Type: text/plain; charset="UTF-8"\r\n'
        b"Content-Transfer-Encoding: base64\r\n"
        b"\r\n" + b64(plain) + b"--0000000000001234abcd\r\n"
        b'Content-Type: text/html; charset="UTF-8"\r\n'
        b"Content-Transfer-Encoding: base64\r\n"
        b"\r\n" + b64(html_part) + b"--0000000000001234abcd--\r\n"
    )


def pdf_part(boundary: bytes, payload: bytes = PDF) -> bytes:
    return (
        b"--" + boundary + b"\r\n"
        b'Content-Type: application/pdf; name="Q2 numbers.pdf"\r\n'
        b'Content-Disposition: attachment; filename="Q2 numbers.pdf"\r\n'
        b"Content-Transfer-Encoding: base64\r\n"
        b"\r\n" + b64(payload) + b"\r\n"
    )


def mixed_alternative(payload: bytes = PDF) -> bytes:
    return (
        ENVELOPE + b'Content-Type: multipart/mixed; boundary="000000000000mixed01"\r\n'
        b"\r\n"
        b"This is a multi-part message in MIME format.\r\n"
        b"--000000000000mixed01\r\n"
        + GMAIL_ALT_QP[len(ENVELOPE) :]
        + b"\r\n"
        + pdf_part(b"000000000000mixed01", payload)
        + b"--000000000000mixed01--\r\n"
        b"epilogue bytes stay\r\n"
    )


THUNDERBIRD_MIXED_PLAIN = ENVELOPE + (
    b'Content-Type: multipart/mixed; boundary="------------Xo9kF3bQy2nT0aW8cLvE4rMd"\r\n'
    b"\r\n"
    b"This is a multi-part message in MIME format.\r\n"
    b"--------------Xo9kF3bQy2nT0aW8cLvE4rMd\r\n"
    b"Content-Type: text/plain; charset=UTF-8; format=flowed\r\n"
    b"Content-Transfer-Encoding: 7bit\r\n"
    b"\r\n"
    b"Report attached.\r\n"
    b"\r\n" + pdf_part(b"------------Xo9kF3bQy2nT0aW8cLvE4rMd") + b"--------------Xo9kF3bQy2nT0aW8cLvE4rMd--\r\n"
)

OUTLOOK_RELATED = ENVELOPE + (
    b"Content-Type: multipart/related;\r\n"
    b'\tboundary="_004_DB9PR01MB1234_";\r\n'
    b'\ttype="multipart/alternative"\r\n'
    b"\r\n"
    b"--_004_DB9PR01MB1234_\r\n"
    b"Content-Type: multipart/alternative;\r\n"
    b'\tboundary="_000_DB9PR01MB1234_"\r\n'
    b"\r\n"
    b"--_000_DB9PR01MB1234_\r\n"
    b'Content-Type: text/plain; charset="us-ascii"\r\n'
    b"Content-Transfer-Encoding: quoted-printable\r\n"
    b"\r\n"
    b"Please see the logo below.\r\n"
    b"\r\n"
    b"[cid:image001.png@01DAB6E1.2C3D4E50]\r\n"
    b"\r\n"
    b"--_000_DB9PR01MB1234_\r\n"
    b'Content-Type: text/html; charset="us-ascii"\r\n'
    b"Content-Transfer-Encoding: quoted-printable\r\n"
    b"\r\n"
    b'<html xmlns:o=3D"urn:schemas-microsoft-com:office:office">\r\n'
    b'<head><meta http-equiv=3D"Content-Type" content=3D"text/html; charset=3Dus-ascii"></head>\r\n'
    b'<BODY lang=3D"EN-US" link=3D"#0563C1">\r\n'
    b'<div class=3D"WordSection1"><p class=3D"MsoNormal">Please see the logo be=\r\n'
    b'low.<img src=3D"cid:image001.png@01DAB6E1.2C3D4E50"></p></div>\r\n'
    b"</BODY>\r\n"
    b"</html>\r\n"
    b"\r\n"
    b"--_000_DB9PR01MB1234_--\r\n"
    b"\r\n"
    b"--_004_DB9PR01MB1234_\r\n"
    b'Content-Type: image/png; name="image001.png"\r\n'
    b"Content-Description: image001.png\r\n"
    b'Content-Disposition: inline; filename="image001.png"; size=3008\r\n'
    b"Content-ID: <image001.png@01DAB6E1.2C3D4E50>\r\n"
    b"Content-Transfer-Encoding: base64\r\n"
    b"\r\n" + b64(PNG) + b"\r\n"
    b"--_004_DB9PR01MB1234_--\r\n"
)


# --- where -------------------------------------------------------------------------------------


def test_thunderbird_flowed_plain() -> None:
    out, new = run(THUNDERBIRD_FLOWED)
    assert out.added == ("external_warning", "footer") and out.skipped == () and out.headers == ()
    found = assert_bannered(new)
    assert "as discussed on the phone this \nmorning." in found["text/plain"][0]  # flowed line kept
    _, _, body = split(THUNDERBIRD_FLOWED)
    assert out.body is not None and body in out.body  # original text untouched, in one piece
    assert_twice_present(THUNDERBIRD_FLOWED)


def test_outlook_plain_quoted_printable_stays_latin1_qp() -> None:
    out, new = run(OUTLOOK_PLAIN_QP)
    assert out.headers == () and out.body is not None
    found = assert_bannered(new)
    assert "Grüße" in found["text/plain"][0]
    assert max(len(line) for line in out.body.split(b"\r\n")) <= 76
    msg = parse(new)
    assert msg.get_content_charset() == "iso-8859-1" and msg["Content-Transfer-Encoding"] == "quoted-printable"
    assert_twice_present(OUTLOOK_PLAIN_QP)


def test_gmail_alternative_qp_both_parts() -> None:
    out, new = run(GMAIL_ALT_QP)
    assert out.added == ("external_warning", "footer")
    found = assert_bannered(new)
    assert len(found["text/plain"]) == 1 and len(found["text/html"]) == 1
    html_body = found["text/html"][0]
    assert html_body.startswith('<div data-quorum-banner="external_warning">')  # no <body>: at the start
    assert html_body.rstrip("\n").endswith(FOOT.html + "</div>")
    assert WARN.html not in found["text/plain"][0] and WARN.text not in html_body.replace(WARN.html, "")
    assert_twice_present(GMAIL_ALT_QP)


def test_gmail_alternative_base64_stays_base64() -> None:
    raw = gmail_alt_base64()
    out, new = run(raw)
    assert out.body is not None
    assert_bannered(new)
    for part in parse(new).walk():
        if part.get_content_maintype() == "text":
            assert part["Content-Transfer-Encoding"] == "base64"
    lines = [ln for ln in out.body.split(b"\r\n") if ln and not ln.startswith((b"--", b"Content-"))]
    assert max(len(ln) for ln in lines) <= 76
    assert_twice_present(raw)


def test_mixed_with_alternative_and_pdf_keeps_attachment_bytes() -> None:
    raw = mixed_alternative()
    out, new = run(raw)
    assert out.added == ("external_warning", "footer")
    assert_bannered(new)
    attachment = pdf_part(b"000000000000mixed01")
    assert attachment in new  # raw bytes of the attachment part, boundary to boundary
    assert new.startswith(split(raw)[1] + b"This is a multi-part message in MIME format.\r\n--000000000000mixed01\r\n")
    assert new.endswith(b"--000000000000mixed01--\r\nepilogue bytes stay\r\n")
    pdfs = [p for p in parse(new).walk() if p.get_content_type() == "application/pdf"]
    assert len(pdfs) == 1 and pdfs[0].get_content() == PDF
    assert_twice_present(raw)


def test_thunderbird_mixed_first_plain_part_only() -> None:
    out, new = run(THUNDERBIRD_MIXED_PLAIN)
    assert out.added == ("external_warning", "footer")
    found = assert_bannered(new)
    assert found["text/plain"][0] == WARN.text + "\n\nReport attached.\n\n" + FOOT.text + "\n"
    assert pdf_part(b"------------Xo9kF3bQy2nT0aW8cLvE4rMd") in new


def test_outlook_related_with_inline_image() -> None:
    out, new = run(OUTLOOK_RELATED)
    assert out.added == ("external_warning", "footer")
    found = assert_bannered(new)
    html_body = found["text/html"][0]
    assert '<BODY lang="EN-US" link="#0563C1"><div data-quorum-banner="external_warning">' in html_body
    assert html_body.index('data-quorum-banner="footer"') < html_body.rindex("</BODY>")
    image_start = OUTLOOK_RELATED.index(b"--_004_DB9PR01MB1234_\r\nContent-Type: image/png")
    assert OUTLOOK_RELATED[image_start:] in new and new.endswith(OUTLOOK_RELATED[image_start:])
    images = [p for p in parse(new).walk() if p.get_content_type() == "image/png"]
    assert images[0].get_content() == PNG
    assert_twice_present(OUTLOOK_RELATED)


def test_mixed_related_alternative_nesting() -> None:
    inner = OUTLOOK_RELATED[len(ENVELOPE) :]
    raw = (
        ENVELOPE
        + b'Content-Type: multipart/mixed; boundary="outer"\r\n\r\n--outer\r\n'
        + inner
        + b"\r\n"
        + pdf_part(b"outer")
        + b"--outer--\r\n"
    )
    out, new = run(raw)
    assert out.added == ("external_warning", "footer")
    assert_bannered(new)
    assert pdf_part(b"outer") in new


def test_alternative_with_related_html_branch() -> None:
    raw = ENVELOPE + (
        b'Content-Type: multipart/alternative; boundary="Apple-Mail=_A1"\r\n\r\n'
        b"--Apple-Mail=_A1\r\nContent-Type: text/plain; charset=us-ascii\r\nContent-Transfer-Encoding: 7bit\r\n\r\n"
        b"Hello\r\n"
        b'\r\n--Apple-Mail=_A1\r\nContent-Type: multipart/related; type="text/html"; boundary="Apple-Mail=_B2"\r\n\r\n'
        b"--Apple-Mail=_B2\r\nContent-Type: text/html; charset=us-ascii\r\nContent-Transfer-Encoding: 7bit\r\n\r\n"
        b'<html><body>Hello<img src="cid:x"></body></html>\r\n'
        b"--Apple-Mail=_B2\r\nContent-Type: image/png; name=x.png\r\nContent-ID: <x>\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n" + b64(PNG) + b"--Apple-Mail=_B2--\r\n"
        b"\r\n--Apple-Mail=_A1--\r\n"
    )
    out, new = run(raw)
    assert out.added == ("external_warning", "footer")
    found = assert_bannered(new)
    assert len(found["text/plain"]) == 1 and len(found["text/html"]) == 1


def test_forwarded_message_rfc822_untouched() -> None:
    forwarded = ENVELOPE + b"Content-Type: text/plain\r\n\r\nInner text\r\n"
    raw = ENVELOPE + (
        b'Content-Type: multipart/mixed; boundary="fw"\r\n\r\n'
        b"--fw\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\nSee forwarded.\r\n"
        b"--fw\r\nContent-Type: message/rfc822\r\nContent-Disposition: attachment\r\n\r\n" + forwarded + b"--fw--\r\n"
    )
    _, new = run(raw)
    found = texts(new)
    assert (
        found["text/plain"][0].startswith(WARN.text) and found["text/plain"][1] == "Inner text"
    )  # the CRLF before a delimiter is the delimiter's
    assert forwarded + b"--fw--\r\n" in new


def test_attachments_are_not_text_bodies() -> None:
    raw = ENVELOPE + (
        b'Content-Type: multipart/mixed; boundary="a"\r\n\r\n'
        b'--a\r\nContent-Type: text/plain; name="notes.txt"\r\nContent-Disposition: attachment\r\n\r\nnotes\r\n'
        b"--a\r\nContent-Type: text/plain\r\n\r\nbody\r\n--a--\r\n"
    )
    out, _ = run(raw)
    assert out.body is None and out.skipped == (("external_warning", "no_text_part"), ("footer", "no_text_part"))
    pdf_first = ENVELOPE + b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n' + pdf_part(b"b") + b"--b--\r\n"
    assert run(pdf_first)[0].skipped[0] == ("external_warning", "no_text_part")
    single_attachment = (
        ENVELOPE + b'Content-Type: text/plain\r\nContent-Disposition: attachment; filename="a.txt"\r\n\r\nx\r\n'
    )
    assert run(single_attachment)[0].body is None


def test_no_content_type_is_plain_us_ascii() -> None:
    raw = b"From: a@example.com\r\nSubject: old style\r\n\r\nHello\r\n"
    out, new = run(raw)
    assert out.headers == () and texts(new)["text/plain"][0] == WARN.text + "\n\nHello\n\n" + FOOT.text + "\n"


def test_html_single_part_body_tag_and_footer_before_last_close() -> None:
    raw = ENVELOPE + (
        b"Content-Type: text/html; charset=utf-8\r\n\r\n"
        b'<html><head><title>x</title></head><Body class="m">\r\n<p>Hi</p>\r\n'
        b"<!-- </body> in a comment --></BODY >\r\n</html>\r\n"
    )
    _, new = run(raw)
    html_body = texts(new)["text/html"][0]
    assert '<Body class="m"><div data-quorum-banner="external_warning">' in html_body
    assert html_body.endswith(FOOT.html + "</div></BODY >\n</html>\n")


def test_only_one_banner_and_order_of_tops() -> None:
    second = Banner("notice", "Second top line", "<p>second</p>", True)
    out, new = run(THUNDERBIRD_FLOWED, (WARN, second))
    assert out.added == ("external_warning", "notice")
    assert texts(new)["text/plain"][0].startswith(WARN.text + "\n\nSecond top line\n\nHi Bob")


# --- signed and encrypted ----------------------------------------------------------------------


def assert_untouched(raw: bytes, reason: str) -> None:
    out, new = run(raw)
    assert out.body is None and out.added == () and out.headers == ()
    assert out.skipped == (("external_warning", reason), ("footer", reason))
    assert new == raw


def test_smime_signed_untouched() -> None:
    raw = ENVELOPE + (
        b'Content-Type: multipart/signed; protocol="application/pkcs7-signature"; micalg=sha-256;\r\n'
        b'\tboundary="----D3A1F0E2C4B5"\r\n\r\nThis is an S/MIME signed message\r\n\r\n'
        b"------D3A1F0E2C4B5\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\nSigned text\r\n\r\n"
        b"------D3A1F0E2C4B5\r\nContent-Type: application/pkcs7-signature; name=smime.p7s\r\n"
        b"Content-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename=smime.p7s\r\n\r\n"
        + b64(os.urandom(600))
        + b"\r\n------D3A1F0E2C4B5--\r\n"
    )
    assert_untouched(raw, "signed")


def test_smime_signed_inside_mixed_first_part_untouched() -> None:
    raw = ENVELOPE + (
        b'Content-Type: multipart/mixed; boundary="m"\r\n\r\n--m\r\n'
        b'Content-Type: multipart/signed; protocol="application/pkcs7-signature"; boundary="s"\r\n\r\n'
        b"--s\r\nContent-Type: text/plain\r\n\r\nx\r\n--s\r\nContent-Type: application/pkcs7-signature\r\n\r\nAAAA\r\n"
        b"--s--\r\n--m--\r\n"
    )
    assert_untouched(raw, "signed")


def test_pkcs7_mime_untouched() -> None:
    for ctype, reason in (
        (b'application/pkcs7-mime; smime-type=enveloped-data; name="smime.p7m"', "encrypted"),
        (b'application/x-pkcs7-mime; name="smime.p7m"', "encrypted"),
        (b'application/pkcs7-mime; smime-type=signed-data; name="smime.p7m"', "signed"),
    ):
        raw = ENVELOPE + (
            b"Content-Type: " + ctype + b'\r\nContent-Disposition: attachment; filename="smime.p7m"\r\n'
            b"Content-Transfer-Encoding: base64\r\n\r\n" + b64(os.urandom(900))
        )
        assert_untouched(raw, reason)


def test_pgp_mime_untouched() -> None:
    encrypted = ENVELOPE + (
        b'Content-Type: multipart/encrypted; protocol="application/pgp-encrypted";\r\n'
        b' boundary="------------enc1"\r\n\r\nThis is an OpenPGP/MIME encrypted message (RFC 4880 and 3156)\r\n'
        b"--------------enc1\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n\r\n"
        b'--------------enc1\r\nContent-Type: application/octet-stream; name="encrypted.asc"\r\n\r\n'
        b"-----BEGIN PGP MESSAGE-----\r\n\r\nhQEMA\r\n-----END PGP MESSAGE-----\r\n\r\n--------------enc1--\r\n"
    )
    assert_untouched(encrypted, "encrypted")
    signed = ENVELOPE + (
        b'Content-Type: multipart/signed; micalg=pgp-sha256; protocol="application/pgp-signature";\r\n'
        b' boundary="------------sig1"\r\n\r\n'
        b"--------------sig1\r\nContent-Type: text/plain; charset=UTF-8\r\n\r\nhello\r\n"
        b'--------------sig1\r\nContent-Type: application/pgp-signature; name="OpenPGP_signature.asc"\r\n\r\n'
        b"-----BEGIN PGP SIGNATURE-----\r\n\r\nwsB5\r\n-----END PGP SIGNATURE-----\r\n\r\n--------------sig1--\r\n"
    )
    assert_untouched(signed, "signed")


def test_inline_pgp_untouched() -> None:
    clearsigned = ENVELOPE + (
        b"Content-Type: text/plain; charset=us-ascii\r\n\r\n"
        b"-----BEGIN PGP SIGNED MESSAGE-----\r\nHash: SHA256\r\n\r\nhello\r\n"
        b"-----BEGIN PGP SIGNATURE-----\r\n\r\niQEz\r\n-----END PGP SIGNATURE-----\r\n"
    )
    assert_untouched(clearsigned, "signed")
    armored = ENVELOPE + (
        b"Content-Type: text/plain; charset=us-ascii\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
        b"-----BEGIN PGP MESSAGE-----\r\n\r\nhQEMA=3D\r\n-----END PGP MESSAGE-----\r\n"
    )
    assert_untouched(armored, "encrypted")
    in_mixed = ENVELOPE + (
        b'Content-Type: multipart/mixed; boundary="i"\r\n\r\n--i\r\nContent-Type: text/plain\r\n\r\n'
        b"-----BEGIN PGP MESSAGE-----\r\nhQEMA\r\n-----END PGP MESSAGE-----\r\n--i--\r\n"
    )
    assert_untouched(in_mixed, "encrypted")


# --- charsets ----------------------------------------------------------------------------------


def test_iso_8859_1_8bit_keeps_charset() -> None:
    banner = Banner("external_warning", "Achtung: Absender außerhalb der Organisation – prüfen", "", True)
    latin = Banner("external_warning", "Achtung: Absender außerhalb der Organisation, bitte prüfen", "", True)
    raw = ENVELOPE + (
        b"Content-Type: text/plain; charset=ISO-8859-1\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
        + "Grüße aus Köln\r\n".encode("latin-1")
    )
    out, new = run(raw, (latin,))
    assert out.headers == () and out.body is not None
    assert out.body == "Achtung: Absender außerhalb der Organisation, bitte prüfen\r\n\r\nGrüße aus Köln\r\n".encode(
        "latin-1"
    )
    out, new = run(raw, (banner,))  # the en dash is not in Latin-1: switch to UTF-8 quoted-printable
    assert dict(out.headers) == {
        "Content-Type": 'text/plain; charset="utf-8"',
        "Content-Transfer-Encoding": "quoted-printable",
    }
    assert texts(new)["text/plain"][0] == banner.text + "\n\nGrüße aus Köln\n"


def test_iso_2022_jp_round_trips_japanese_banner() -> None:
    banner = Banner("external_warning", "注意：このメールは組織外から送信されました。", "<p>注意</p>", True)
    footer = Banner("footer", "機密情報：宛先以外の方は削除してください。", "<p>機密</p>", False)
    raw = ENVELOPE + (
        b"Content-Type: text/plain; charset=ISO-2022-JP\r\nContent-Transfer-Encoding: 7bit\r\n\r\n"
        + "田中様\r\n\r\nお世話になっております。\r\n".encode("iso-2022-jp")
    )
    out, new = run(raw, (banner, footer))
    assert out.headers == () and out.body is not None and out.body.isascii()
    decoded = out.body.decode("iso-2022-jp")
    assert decoded == banner.text + "\r\n\r\n田中様\r\n\r\nお世話になっております。\r\n\r\n" + footer.text + "\r\n"
    assert texts(new)["text/plain"][0].count(banner.text) == 1
    again, _ = run(new, (banner, footer))
    assert again.skipped == (("external_warning", "present"), ("footer", "present"))


def test_shift_jis_html_in_alternative() -> None:
    banner = Banner("external_warning", "注意：外部からのメールです", "<p>注意：外部からのメールです</p>", True)
    raw = ENVELOPE + (
        b'Content-Type: multipart/alternative; boundary="sj"\r\n\r\n'
        b"--sj\r\nContent-Type: text/plain; charset=Shift_JIS\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
        + "こんにちは\r\n".encode("shift_jis")
        + b"--sj\r\nContent-Type: text/html; charset=Shift_JIS\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + b64("<html><body><p>こんにちは</p></body></html>\r\n".encode("shift_jis"))
        + b"--sj--\r\n"
    )
    out, new = run(raw, (banner,))
    assert out.added == ("external_warning",)
    found = texts(new)
    assert found["text/plain"][0] == banner.text + "\n\nこんにちは"
    assert (
        '<body><div data-quorum-banner="external_warning"><p>注意：外部からのメールです</p></div>'
        in found["text/html"][0]
    )
    for part in parse(new).walk():
        if part.get_content_maintype() == "text":
            assert part.get_content_charset() == "shift_jis"


def test_non_ascii_banner_into_us_ascii_part_switches_part_headers() -> None:
    banner = Banner("external_warning", "Attention : expéditeur externe", "<p>Attention : expéditeur externe</p>", True)
    raw = ENVELOPE + (
        b'Content-Type: multipart/alternative; boundary="w"\r\n\r\n'
        b"--w\r\nContent-Type: text/plain; charset=us-ascii; format=flowed\r\nContent-Transfer-Encoding: 7bit\r\n\r\n"
        b"Bonjour\r\n"
        b"--w\r\nContent-Type: text/html; charset=windows-1252\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
        b"<html><body>Bonjour =96 =E0 bient=F4t</body></html>\r\n"
        b"--w--\r\n"
    )
    out, new = run(raw, (banner,))
    assert out.headers == () and out.body is not None
    assert (
        b'Content-Type: text/plain; charset="utf-8"; format="flowed"\r\n'
        b"Content-Transfer-Encoding: quoted-printable\r\n\r\n" in out.body
    )
    assert b"Content-Type: text/html; charset=windows-1252\r\n" in out.body  # é exists in windows-1252
    msg = parse(new)
    parts = [p for p in msg.walk() if p.get_content_maintype() == "text"]
    assert parts[0].get_content_charset() == "utf-8" and parts[0].get_content() == banner.text + "\r\n\r\nBonjour"
    assert "Bonjour – à bientôt" in parts[1].get_content() and banner.html in parts[1].get_content()


def test_non_ascii_banner_into_single_us_ascii_part_returns_headers() -> None:
    banner = Banner("footer", "Diese Nachricht ist vertraulich – Grüße", "", False)
    raw = (
        ENVELOPE
        + b"Content-Type: text/plain; charset=us-ascii; format=flowed\r\nContent-Transfer-Encoding: 7bit\r\n\r\nHi\r\n"
    )
    out, new = run(raw, (banner,))
    assert dict(out.headers) == {
        "Content-Type": 'text/plain; charset="utf-8"; format="flowed"',
        "Content-Transfer-Encoding": "quoted-printable",
    }
    assert texts(new)["text/plain"][0] == "Hi\n\n" + banner.text + "\n"
    bare = b"Subject: x\r\n\r\nHi\r\n"
    out, new = run(bare, (banner,))
    assert ("MIME-Version", "1.0") in out.headers and texts(new)["text/plain"][0] == "Hi\n\n" + banner.text + "\n"


def test_unknown_charset_skipped() -> None:
    raw = ENVELOPE + b"Content-Type: text/plain; charset=x-klingon\r\n\r\nnuqneH\r\n"
    out, _ = run(raw)
    assert out.body is None and out.skipped == (("external_warning", "charset"), ("footer", "charset"))
    assert run(ENVELOPE + b"Content-Type: text/plain; charset=base64\r\n\r\nx\r\n")[0].skipped[0][1] == "charset"


# --- once --------------------------------------------------------------------------------------


def test_reply_quoting_banner_is_present() -> None:
    raw = ENVELOPE + (
        b"Content-Type: text/plain; charset=utf-8\r\n\r\nThanks!\r\n\r\nOn Monday Bob wrote:\r\n"
        b"> CAUTION: This email originated from outside the organisation. Do not\r\n"
        b"> click links.\r\n>\r\n> > Confidentiality notice: this message is intended\r\n"
        b"> > for the addressee only.\r\n"
    )
    out, _ = run(raw)
    assert out.body is None and out.skipped == (("external_warning", "present"), ("footer", "present"))


def test_present_in_html_marker_only_html_banner_skipped() -> None:
    raw = ENVELOPE + (
        b'Content-Type: multipart/alternative; boundary="p"\r\n\r\n'
        b"--p\r\nContent-Type: text/plain\r\n\r\nHello\r\n"
        b"--p\r\nContent-Type: text/html\r\n\r\n"
        b'<body><div data-quorum-banner="external_warning">old</div>Hello</body>\r\n'
        b"--p--\r\n"
    )
    out, new = run(raw, (WARN,))
    assert out.added == ("external_warning",)
    found = texts(new)
    assert found["text/plain"][0].startswith(WARN.text)
    assert found["text/html"][0].count("data-quorum-banner") == 1


def test_lf_only_input() -> None:
    for raw in (THUNDERBIRD_FLOWED, mixed_alternative(), OUTLOOK_RELATED, gmail_alt_base64()):
        lf = raw.replace(b"\r\n", b"\n")
        out, new = run(lf)
        assert out.added == ("external_warning", "footer"), out.skipped
        assert b"\r\n" not in new
        assert_bannered(new)
    lf = mixed_alternative().replace(b"\r\n", b"\n")
    assert pdf_part(b"000000000000mixed01").replace(b"\r\n", b"\n") in run(lf)[1]


def test_too_large() -> None:
    out, _ = run(mixed_alternative(), max_part=16)
    assert out.body is None and out.skipped == (("external_warning", "too_large"), ("footer", "too_large"))


def test_five_megabyte_attachment_runs() -> None:
    raw = mixed_alternative(os.urandom(5 * 1024 * 1024))
    started = time.perf_counter()
    out, new = run(raw)
    elapsed = time.perf_counter() - started
    assert out.added == ("external_warning", "footer")
    assert len(new) > len(raw)
    print(f"5 MB message: {elapsed * 1000:.1f} ms")


def test_boundary_edge_cases() -> None:
    # first boundary at the very start, trailing blanks after delimiters, a longer look-alike line
    body = (
        b"--edge  \r\nContent-Type: text/plain\r\n\r\nText\r\n--edgeXnot a delimiter\r\n"
        b"--edge\t\r\nContent-Type: text/html\r\n\r\n<p>x</p>\r\n--edge-- \r\n"
    )
    headers = [("Content-Type", 'multipart/alternative; boundary="edge"')]
    out = insert(headers, body, (WARN,))
    assert out.body is not None and out.added == ("external_warning",)
    msg = parse(b'Content-Type: multipart/alternative; boundary="edge"\r\n\r\n' + out.body)
    plain = next(p for p in msg.walk() if p.get_content_type() == "text/plain").get_content()
    assert plain == WARN.text + "\r\n\r\nText\r\n--edgeXnot a delimiter"
    assert out.body.startswith(b"--edge  \r\n") and out.body.endswith(b"--edge-- \r\n")


# --- hostile input -----------------------------------------------------------------------------


def never_raises(headers: list[tuple[str, str]], body: bytes) -> Outcome:
    out = insert(headers, body, BOTH)
    assert isinstance(out, Outcome)
    return out


def test_hostile_inputs_never_raise() -> None:
    mp = [("Content-Type", 'multipart/mixed; boundary="x"')]
    assert never_raises(mp, b"--x\r\nContent-Type: text/plain\r\n\r\nno end\r\n").skipped[0][1] == "malformed"
    assert (
        never_raises([("Content-Type", "multipart/mixed")], b"--x\r\n\r\nhi\r\n--x--\r\n").skipped[0][1] == "malformed"
    )
    deep = b"".join(b'--b%d\r\nContent-Type: multipart/mixed; boundary="b%d"\r\n\r\n' % (i, i + 1) for i in range(1000))
    deep_out = never_raises([("Content-Type", 'multipart/mixed; boundary="b0"')], deep)
    assert deep_out.body is None and deep_out.skipped[0][1] == "malformed"
    nested = b"".join(b'--b%d\r\nContent-Type: multipart/mixed; boundary="b%d"\r\n\r\n' % (i, i + 1) for i in range(12))
    nested += b"--b12\r\nContent-Type: text/plain\r\n\r\nx\r\n" + b"".join(
        b"--b%d--\r\n" % i for i in range(12, -1, -1)
    )
    assert never_raises([("Content-Type", 'multipart/mixed; boundary="b0"')], nested).skipped[0][1] == "malformed"
    garbage = never_raises(
        [("Content-Type", "text/plain"), ("Content-Transfer-Encoding", "base64")], b"!!!not*base64\r\n"
    )
    assert garbage.skipped[0][1] == "malformed"
    high = "text/plain; charset=\udce9\udcff; name=\udc80"
    never_raises([("Content-Type", high), ("X-\udcff", "\udc80\udc81")], b"\x80\xff\r\n")
    part_high = b"--x\r\nContent-Type: text/plain; charset=\xe9\xff\r\nX-\x80: \xff\xfe\r\n\r\n\x80\x81\r\n--x--\r\n"
    never_raises(mp, part_high)
    never_raises(mp, b"")
    never_raises([], b"")
    never_raises(mp, b"--x--\r\n")
    never_raises(mp, b"--x")
    never_raises([("Content-Type", "text/html")], b"<" * 200_000 + b"<body" * 1000)
    never_raises([("Content-Type", "text/plain"), ("Content-Transfer-Encoding", "x-uuencode")], b"begin 644 a\r\n")
    never_raises([("Content-Type", "text/plain; charset=iso-2022-jp")], b"\x1b$B\x1b(Z\x0e\x0f" * 100)
    never_raises([("Content-Type", 'multipart/alternative; boundary="' + "q" * 500 + '"')], b"x")
    never_raises([("Content-Type", "text/plain"), ("Content-Type", "text/html")], b"hi\r\n")
    never_raises(mp, b"--x\r\n" + b"X-Long: " + b"a" * 100_000 + b"\r\n--x--\r\n")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400), st.integers(min_value=0, max_value=2000))
def test_fuzzed_bodies_never_raise(noise: bytes, cut: int) -> None:
    _, _, body = split(mixed_alternative(b"pdf"))
    mutated = body[:cut] + noise + body[cut + len(noise) // 2 :]
    never_raises([("Content-Type", 'multipart/mixed; boundary="000000000000mixed01"')], mutated)
    never_raises([("Content-Type", "text/plain; charset=iso-2022-jp"), ("Content-Transfer-Encoding", "base64")], noise)
