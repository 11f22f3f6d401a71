"""The streamed relaxed body hash equals dkimpy's relaxed body canonicalization, whatever the chunking;
the signed header list signs what it should, over-signs what it must, and never Quorum's own fields."""

from __future__ import annotations

import base64
import hashlib
import itertools
import re

from dkim.canonicalization import Relaxed
from hypothesis import given, settings
from hypothesis import strategies as st

from quorum.signing.dkimsign import OVERSIGNED, RelaxedBodyHash, body_hash, header_list


def dkimpy_bh(body: bytes) -> bytes:
    """dkimpy's relaxed body hash of `body` as it travels over SMTP (every line ended by CRLF)."""
    if body and not body.endswith(b"\n"):
        body += b"\r\n"
    body = re.sub(rb"\r?\n", b"\r\n", body)
    return base64.b64encode(hashlib.sha256(Relaxed.canonicalize_body(body)).digest())


def chunked(body: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(body) + 1) for c in cuts} | {0, len(body)})
    return [body[a:b] for a, b in itertools.pairwise(points)]


@settings(max_examples=500, deadline=None)
@given(
    st.binary(max_size=300).map(lambda b: bytes(b" \t\r\na\xff"[x % 6] for x in b)),
    st.lists(st.integers(min_value=0, max_value=400), max_size=8),
)
def test_the_streamed_body_hash_is_dkimpys(body: bytes, cuts: list[int]) -> None:
    assert body_hash(chunked(body, cuts)) == dkimpy_bh(body)


def test_known_bodies() -> None:
    empty = base64.b64encode(hashlib.sha256(b"").digest())
    assert body_hash([]) == body_hash([b""]) == body_hash([b"\r\n\r\n"]) == empty  # RFC 6376 3.4.4 (errata 1384)
    assert body_hash([b"a  b \t\r\n\r\n\r\n"]) == base64.b64encode(hashlib.sha256(b"a b\r\n").digest())
    assert body_hash([b"x\r\n\r\n", b"\r\n", b"y\r\n\r\n"]) == base64.b64encode(
        hashlib.sha256(b"x\r\n\r\n\r\ny\r\n").digest()
    )
    spaces = body_hash([b"a" + b" \t" * 500_000 + b"b\r\n", b"\r\n" * 500_000, b"\r\r\n" * 3])  # quick, too
    assert spaces == base64.b64encode(hashlib.sha256(b"a b\r\n" + b"\r\n" * 500_000 + b"\r\r\n" * 3).digest())
    one_line = b"x " * 2_000_000  # 4 MB without a line end, in 64 KiB chunks: linear, not quadratic
    assert body_hash(one_line[i : i + 65536] for i in range(0, len(one_line), 65536)) == dkimpy_bh(one_line)
    big = b"line with  spaces \r\n" * 50_000  # 1 MB in 64 KiB chunks
    assert body_hash(big[i : i + 65536] for i in range(0, len(big), 65536)) == dkimpy_bh(big)


def test_a_hash_object_is_fed_incrementally() -> None:
    h = RelaxedBodyHash()
    for piece in (b"he", b"llo \r", b"\n", b"", b"wor", b"ld"):
        h.update(piece)
    assert h.b64() == dkimpy_bh(b"hello \r\nworld")


def test_the_header_list_signs_present_fields_and_over_signs_the_important_ones() -> None:
    names = ["Received", "X-Quorum-Verdict", "Authentication-Results", "From", "To", "Cc", "Cc", "Subject",
             "DKIM-Signature", "Return-Path", "X-Mailer", "List-Unsubscribe", "Content-Type"]  # fmt: skip
    h = header_list(names)
    for name in ("received", "x-quorum-verdict", "authentication-results", "dkim-signature", "return-path", "x-mailer"):
        assert name not in h
    assert h.count("from") == 2 and h.count("to") == 2 and h.count("subject") == 2  # present once, signed twice
    assert h.count("cc") == 2 and h.count("list-unsubscribe") == 1  # signed as often as present
    # absent over-signed fields are signed once: as absent (adding one later breaks the signature)
    for name in ("date", "message-id", "reply-to", "mime-version"):
        assert h.count(name) == 1
    assert h.count("content-type") == 2
    assert OVERSIGNED == {"from", "to", "subject", "date", "message-id", "reply-to", "content-type", "mime-version"}


def test_names_are_matched_without_case() -> None:
    assert header_list(["FROM", "from "]).count("from") == 3
