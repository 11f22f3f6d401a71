"""The bounded MIME walk: text parts decoded, file names found, limits reported, nothing raised."""

from __future__ import annotations

import base64
import time

import pytest

from quorum.message import Message
from quorum.rules.mime import MessageText, MimeLimits, extract

FAR = 3600.0


def walk(raw: bytes, limits: MimeLimits | None = None, deadline: float = FAR) -> MessageText:
    return extract(Message.from_bytes(raw), limits or MimeLimits(), time.monotonic() + deadline)


def multipart(*parts: bytes, subtype: bytes = b"mixed", boundary: bytes = b"BOUNDARY") -> bytes:
    body = b"".join(b"--" + boundary + b"\r\n" + p + b"\r\n" for p in parts)
    return (
        b"Content-Type: multipart/"
        + subtype
        + b'; boundary="'
        + boundary
        + b'"\r\n\r\n'
        + body
        + b"--"
        + boundary
        + b"--\r\n"
    )


def part(headers: str, body: bytes) -> bytes:
    return headers.replace("\n", "\r\n").encode() + b"\r\n\r\n" + body


def test_plain_message_without_mime_headers() -> None:
    text = walk(b"Subject: hi\r\n\r\nfree money\r\n")
    assert text.texts == ("free money\r\n",) and text.parts == 1 and text.limit_hit is None


def test_base64_html_in_nested_alternative() -> None:
    html = base64.encodebytes(b"<html><body><p>Win <b>fr</b>ee spins</p></body></html>")
    raw = multipart(
        multipart(
            part("Content-Type: text/plain; charset=utf-8", b"plain part"),
            part("Content-Type: text/html; charset=utf-8\nContent-Transfer-Encoding: base64", html),
            subtype=b"alternative",
            boundary=b"inner",
        ),
        part("Content-Type: image/png\nContent-Transfer-Encoding: base64", b"iVBORw0KGgo="),
    )
    text = walk(b"Subject: x\r\n" + raw)
    assert text.texts == ("plain part", "Win free spins")
    assert text.parts == 5 and text.limit_hit is None and not text.truncated


@pytest.mark.parametrize(
    ("headers", "body", "expected"),
    [
        (
            "Content-Type: text/plain; charset=iso-8859-1\nContent-Transfer-Encoding: quoted-printable",
            b"caf=E9",
            "café",
        ),
        ("Content-Type: text/plain; charset=windows-1252\nContent-Transfer-Encoding: 8bit", b"\x80 5", "€ 5"),
        ("Content-Type: text/plain; charset=koi8-r\nContent-Transfer-Encoding: base64", b"8NLJ18XU", "Привет"),
        ("Content-Type: text/plain; charset=shift_jis", "無料".encode("shift_jis"), "無料"),
        ("Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: quoted-printable", b"=E2=82=AC", "€"),
        ("Content-Type: text/plain; charset=x-martian", b"fr\xc3\xa9e", "frée"),
        ("Content-Type: text/plain; charset*=utf-8''%FF%00", b"free", "free"),  # junk RFC 2231 charset
        ("Content-Type: text/plain\nContent-Transfer-Encoding: base64", b"ZnJl!!\r\nZQ", "free"),  # bad base64
        ("Content-Type: text/plain\nContent-Transfer-Encoding: quoted-printable", b"fr=ZZee=", "fr=ZZee"),
        (
            "Content-Type: text/html; charset=utf-8\nContent-Transfer-Encoding: quoted-printable",
            b"<b>fr</b>=\r\nee &#102;ree",
            "free free",
        ),
        ("Content-Type: text/plain", b"fr\xe2\x80\x8bee", "free"),  # zero-width space removed
    ],
)
def test_text_part_decoding(headers: str, body: bytes, expected: str) -> None:
    assert walk(multipart(part(headers, body))).texts == (expected,)


def test_only_text_plain_and_html_are_body() -> None:
    raw = multipart(
        part("Content-Type: application/pdf", b"free"),
        part("Content-Type: text/calendar", b"free"),
        part("Content-Type: text/plain", b"yes"),
    )
    assert walk(raw).texts == ("yes",)


def test_message_rfc822_is_walked() -> None:
    inner = b"Subject: inner\r\nContent-Type: text/plain\r\n\r\ninner free text"
    text = walk(multipart(part("Content-Type: message/rfc822", inner)))
    assert text.texts == ("inner free text",)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ('Content-Disposition: attachment; filename="invoice.exe"', "invoice.exe"),
        ("Content-Disposition: attachment; filename*=UTF-8''%E2%82%AC.exe", "€.exe"),
        ("Content-Disposition: attachment; filename*0*=UTF-8''%E2%82%AC; filename*1*=%2Eexe", "€.exe"),
        ('Content-Disposition: attachment; filename*0="long"; filename*1="name.scr"', "longname.scr"),
        ("Content-Disposition: attachment; filename*=iso-8859-1'en'caf%E9.zip", "café.zip"),
        ("Content-Disposition: attachment; filename*=x-bogus''caf%E9.zip", "café.zip"),
        ("Content-Disposition: attachment; filename*=undefined''a.exe", "a.exe"),
        ('Content-Disposition: attachment; filename="=?UTF-8?B?0YTQsNC50LsuZXhl?="', "файл.exe"),
        ('Content-Disposition: attachment; filename="=?iso-8859-1?Q?caf=E9.js?="', "café.js"),
        ('Content-Type: application/octet-stream; name="by-name.bat"', "by-name.bat"),
        ('Content-Type: application/octet-stream; name="caf\xc3\xa9.bat"', "café.bat"),
    ],
)
def test_filenames(header: str, expected: str) -> None:
    raw = multipart(part("Content-Type: text/plain", b"x"), (header + "\r\n\r\nAAAA").encode("latin-1"))
    assert walk(raw).filenames == (expected,)


def test_both_name_sources_and_every_instance_are_kept() -> None:
    headers = (
        'Content-Type: application/pdf; name="harmless.pdf"\n'
        'Content-Disposition: attachment; filename="first.pdf"; filename="second.exe"\n'
        'Content-Disposition: attachment; filename="third.exe"'
    )
    names = walk(multipart(part(headers, b"AAAA"))).filenames
    assert set(names) == {"harmless.pdf", "first.pdf", "second.exe", "third.exe"}


def test_mixed_rfc2231_forms_that_break_the_stdlib_merge() -> None:
    """`name*=` next to `name*0=` makes email.utils.decode_params raise TypeError: read loosely."""
    header = "Content-Disposition: attachment; filename*=UTF-8''%E2%82%AC; filename*0*=x; filename*1=.exe"
    names = walk(multipart(part(header, b"AAAA"))).filenames
    assert "€x.exe" in names and ".exe" in names


def test_max_parts_stops_the_parser() -> None:
    raw = multipart(*(part("Content-Type: text/plain", b"p%d" % i) for i in range(2000)))
    text = walk(raw, MimeLimits(max_parts=50))
    assert text.limit_hit == "max_parts" and text.parts == 50
    assert text.texts[:3] == ("p0", "p1", "p2") and len(text.texts) <= 49


def test_max_depth_stops_deep_nesting() -> None:
    raw = b"".join(b"Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n" % (i, i) for i in range(5000))
    text = walk(raw, MimeLimits(max_depth=20))
    assert text.limit_hit == "max_depth" and text.parts == 21


def test_message_rfc822_nesting_counts_as_depth() -> None:
    raw = b"Content-Type: message/rfc822\r\n\r\n" * 3000 + b"\r\nfree"
    assert walk(raw).limit_hit == "max_depth"
    shallow = b"Content-Type: message/rfc822\r\n\r\n" * 5 + b"Content-Type: text/plain\r\n\r\nfree"
    text = walk(shallow)
    assert text.limit_hit is None and text.texts == ("free",)


def test_body_budget_truncates() -> None:
    raw = multipart(*(part("Content-Type: text/plain", b"x" * 600) for _ in range(3)))
    text = walk(raw, MimeLimits(body_max_bytes=1000))
    assert text.truncated and sum(len(t) for t in text.texts) == 1000
    assert not walk(raw).truncated


def test_truncated_spool_is_reported() -> None:
    message = Message.from_bytes(b"Content-Type: text/plain\r\n\r\nfree")
    message.truncated = True
    assert extract(message, MimeLimits(), time.monotonic() + FAR).truncated


def test_deadline_passed_examines_nothing() -> None:
    text = walk(multipart(part("Content-Type: text/plain", b"free")), deadline=-1)
    assert text.limit_hit == "deadline" and text.texts == ()


@pytest.mark.parametrize(
    "raw",
    [
        b"Content-Type: multipart/mixed\r\n\r\n--x\r\nContent-Type: text/plain\r\n\r\nfree\r\n--x--",  # no boundary
        b'Content-Type: multipart/mixed; boundary="y"\r\n\r\n--x\r\n\r\nfree\r\n--x--',  # wrong boundary
        b'Content-Type: multipart/mixed; boundary="x"\r\n\r\n--x\r\nContent-Type: text/plain\r\n\r\nfree',  # no end
        b"Content-Type: text/plain; charset=\x00\xff\r\nContent-Transfer-Encoding: base64\r\n\r\n=free=",
        b"Content-Type: \r\nContent-Disposition: ;;;filename*0*=\r\n\r\nfree",
        b"\x00\x00\x00: \x00\r\n\r\nfree\x00",
        b'Content-Type: text/plain; charset="utf-8\r\nX\xff\xfe: \xff\r\n\r\nfr\xffee',
        b"",
    ],
)
def test_malformed_mime_never_raises(raw: bytes) -> None:
    text = walk(raw)
    assert isinstance(text, MessageText)


def test_multipart_without_a_usable_boundary_is_read_as_text() -> None:
    text = walk(b"Content-Type: multipart/mixed\r\n\r\nfree money\r\n")
    assert text.texts == ("free money\r\n",)


def test_attachment_payloads_are_not_kept() -> None:
    big = base64.encodebytes(b"\0" * 3_000_000)
    raw = multipart(part("Content-Type: application/zip\nContent-Transfer-Encoding: base64", big))
    assert walk(raw).texts == ()


def test_eight_bit_mime_headers_do_not_hide_the_part() -> None:
    headers = "Content-Type: text/plain; x=\xff\nContent-Transfer-Encoding: base64 (\xff)\nX-Junk: \xff"
    raw = multipart(part(headers, b"ZnJlZQ=="))
    text = walk(raw.replace(b"\xc3\xbf", b"\xff"))
    assert text.texts == ("free",) and text.limit_hit is None


def test_file_name_headers_are_bounded_before_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 17 item 2 (attacker-sized work): the stdlib's parameter parser is superlinear in a
    header's length, so a part header of megabytes of `;filename*N=` (or thousands of
    Content-Disposition fields) is cut before it is parsed; a real name still comes through."""
    import email

    from quorum.rules import mime

    seen: list[int] = []
    real = mime._param_values

    def counting(value: str, header: str, param: str) -> list[object]:
        seen.append(len(value))
        return real(value, header, param)

    monkeypatch.setattr(mime, "_param_values", counting)
    hdr = 'attachment; filename="invoice.exe"' + "".join(f'; filename*{i}="a{i}"' for i in range(100_000))
    many = "".join(f'Content-Disposition: attachment; filename="f{i}.exe"\r\n' for i in range(5000))
    raw = f"Content-Type: application/octet-stream\r\nContent-Disposition: {hdr}\r\n{many}\r\nx\r\n".encode()
    names = mime.part_filenames(email.message_from_bytes(raw))
    assert "invoice.exe" in names
    assert len(seen) <= 2 * mime.MAX_NAME_HEADERS
    assert max(seen) <= mime.MAX_NAME_HEADER_CHARS
