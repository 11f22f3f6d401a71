"""Charsets, transfer encodings and RFC 2047 header words, as body/subject rules see them."""

from __future__ import annotations

import pytest

from quorum.rules.decode import (
    base64_bytes,
    clean,
    decode_bytes,
    decode_encoded_words,
    header_text,
    qp_bytes,
    transfer_decode,
)


@pytest.mark.parametrize(
    ("data", "charset", "expected"),
    [
        ("café".encode("iso-8859-1"), "iso-8859-1", "café"),
        (b"\x80 \x93quoted\x94", "windows-1252", "€ “quoted”"),
        (b"\x80", "iso-8859-1", "€"),  # labelled latin-1, meant windows-1252 (as browsers read it)
        ("Привет".encode("koi8-r"), "koi8-r", "Привет"),
        ("無料".encode("shift_jis"), "shift_jis", "無料"),
        ("無料".encode("shift_jis"), "Shift_JIS", "無料"),
        ("€".encode(), "utf-8", "€"),
        ("€".encode(), '"UTF-8"', "€"),
        ("€".encode(), "us-ascii", "€"),  # 8-bit UTF-8 under an ascii label
        ("€".encode(), None, "€"),
        ("€".encode(), "x-unknown-charset", "€"),  # unknown: UTF-8 when it is valid UTF-8
        (b"caf\xe9", "x-unknown-charset", "café"),  # ... else windows-1252
        (b"caf\xe9", "", "café"),
        ("中文".encode("gb18030"), "gb2312", "中文"),
    ],
)
def test_charsets(data: bytes, charset: str | None, expected: str) -> None:
    assert decode_bytes(data, charset) == expected


@pytest.mark.parametrize("charset", ["undefined", "punycode", "idna", "rot13", "base64", "zlib", "hex", "utf-8\0x"])
def test_unusable_codecs_never_raise_nor_run(charset: str) -> None:
    assert decode_bytes(b"free", charset) == "free"


def test_bad_bytes_become_replacement_characters() -> None:
    assert decode_bytes(b"fr\xffee", "utf-8") == "fr\ufffdee"
    assert decode_bytes(b"\x82", "shift_jis") == "\ufffd"


def test_invisible_characters_are_removed() -> None:
    assert clean("fr\u200bee\u00ad mo\ufeffney\u200d") == "free money"


def test_quoted_printable() -> None:
    assert qp_bytes(b"fr=65e =E2=82=AC soft=\r\nbreak") == "free € softbreak".encode()
    assert qp_bytes(b"bad =ZZ escape =4") == b"bad =ZZ escape =4"  # kept as written
    assert qp_bytes(b"a_b=20c", header=True) == b"a b c"


def test_base64_lenient() -> None:
    assert base64_bytes(b"ZnJl\r\nZQ==") == b"free"
    assert base64_bytes(b"ZnJlZQ") == b"free"  # missing padding
    assert base64_bytes(b"Zn!!Jl*ZQ==") == b"free"  # garbage skipped
    assert base64_bytes(b"ZnI=ZWU=") == b"free"  # concatenated encodings hide nothing
    assert base64_bytes(b"Z") == b""
    assert base64_bytes(b"") == b""


def test_transfer_decode_each_encoding() -> None:
    assert transfer_decode(b"ZnJlZQ==", "base64", 100) == (b"free", False)
    assert transfer_decode(b"fr=65e", "Quoted-Printable", 100) == (b"free", False)
    assert transfer_decode(b"free", "7bit", 100) == (b"free", False)
    assert transfer_decode(b"fr\xe9e", "8bit", 100) == (b"fr\xe9e", False)
    assert transfer_decode(b"free", "x-unknown", 100) == (b"free", False)
    assert transfer_decode(b"free", None, 100) == (b"free", False)


def test_transfer_decode_stops_at_the_budget() -> None:
    data, cut = transfer_decode(b"aGVsbG8gd29ybGQ=", "base64", 5)
    assert (data, cut) == (b"hello", True)
    data, cut = transfer_decode(b"x" * 1000, "7bit", 10)
    assert (data, cut) == (b"x" * 10, True)
    data, cut = transfer_decode(b"abc=\r\n" * 1000, "quoted-printable", 10)
    assert data == b"abcabcabca" and cut


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"=?utf-8?B?RnJlZSBtb25leQ==?=", "Free money"),
        (b"=?UTF-8?Q?Fr=C3=A9e_money?=", "Frée money"),
        (b"=?koi8-r?b?8NLJ18XU?=", "Привет"),
        (b"=?iso-8859-1?q?caf=E9?= au lait", "café au lait"),
        (b"=?utf-8?q?fr?= =?utf-8?q?ee?=", "free"),  # blanks between encoded-words vanish
        (b"=?utf-8?q?fr?=\r\n =?utf-8?q?ee?=", "free"),  # also across folding
        (b"=?utf-8?B?4oI=?= =?utf-8?B?rA==?=", "€"),  # a character split between two words
        (b"=?utf-8*en?q?free?=", "free"),  # RFC 2231 language in RFC 2047
        (b"=?x-bogus?q?fr=E9e?=", "frée"),  # unknown charset: windows-1252
        (b"=?undefined?q?free?=", "free"),
        (b"=?utf-8?b?!!!?=", ""),  # bad base64 never raises
        (b"Re: =?utf-8?q?unterminated", "Re: =?utf-8?q?unterminated"),
        (b"caf\xc3\xa9 raw 8-bit", "café raw 8-bit"),
        (b"caf\xe9 raw latin-1", "café raw latin-1"),
        (b"caf\xc3\xa9 \xff", "café \ufffd"),  # UTF-8 with a stray byte stays UTF-8
        (b"no words here", "no words here"),
        (b" a\r\n\tfolded", "a\tfolded"),
        (b"nul\x00byte", "nul\x00byte"),
    ],
)
def test_header_text(raw: bytes, expected: str) -> None:
    assert header_text(raw) == expected


def test_encoded_words_next_to_text() -> None:
    assert decode_encoded_words("Hello=?utf-8?q?_W?=orld") == "Hello World"
