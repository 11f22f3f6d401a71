"""DKIM verification with dkimpy on the bytes as received; key lookups through our resolver."""

from __future__ import annotations

import time

import pytest
from tests.zones.auth import DkimKey, make_key, message
from tests.zones.fake_resolver import FakeResolver

from quorum.auth.dkim import not_verified, verify_dkim
from quorum.message import Message


@pytest.fixture(scope="module")
def key() -> DkimKey:
    return make_key("signer.test", "sel", bits=1024)


@pytest.fixture(scope="module")
def other_key() -> DkimKey:
    return make_key("other.test", "o1", bits=1024)


@pytest.fixture()
def resolver(key: DkimKey, other_key: DkimKey) -> FakeResolver:
    return FakeResolver(
        [
            ("sel._domainkey.signer.test", "TXT", key.record),
            ("o1._domainkey.other.test", "TXT", other_key.record),
            ("revoked._domainkey.signer.test", "TXT", "v=DKIM1; k=rsa; p="),
            ("garbage._domainkey.signer.test", "TXT", "v=DKIM1; k=rsa; p=bm90IGEga2V5"),
        ],
        failing=["down._domainkey.signer.test"],
    )


def verify(raw: bytes, resolver: FakeResolver, max_signatures: int = 5, min_bits: int = 1024) -> list[str]:
    msg = Message.from_bytes(raw)
    results = verify_dkim(msg.raw(), msg.headers, resolver, time.monotonic() + 5, max_signatures, min_bits)
    return [f"{r.result}:{r.domain}:{r.selector}" for r in results]


FOLDED = message(
    "a@signer.test",
    subject="A subject long enough\r\n\tto be folded over\r\n  two continuation lines",
    body="Grüße aus Köln \u2013 8-bit UTF-8 body\r\n\r\n\r\n".encode(),
    extra=[b"X-Folded: one\r\n two\r\n\tthree", b"Content-Transfer-Encoding: 8bit"],
)


@pytest.mark.parametrize("canon", [(b"relaxed", b"relaxed"), (b"simple", b"simple"), (b"relaxed", b"simple")])
def test_pass_with_folded_headers_and_8bit_body(
    key: DkimKey, resolver: FakeResolver, canon: tuple[bytes, bytes]
) -> None:
    raw = key.sign(FOLDED, canonicalize=canon, headers=[b"from", b"to", b"subject", b"x-folded", b"date"])
    assert verify(raw, resolver) == ["pass:signer.test:sel"]


def test_body_tampered_fails(key: DkimKey, resolver: FakeResolver) -> None:
    raw = key.sign(message("a@signer.test")).replace(b"this is a test", b"this is a TEST")
    msg = Message.from_bytes(raw)
    (result,) = verify_dkim(msg.raw(), msg.headers, resolver, time.monotonic() + 5, 5, 1024)
    assert result.result == "fail"
    assert "body hash" in result.reason


def test_header_tampered_fails(key: DkimKey, resolver: FakeResolver) -> None:
    raw = key.sign(message("a@signer.test", subject="Invoice")).replace(b"Subject: Invoice", b"Subject: Invoice!")
    msg = Message.from_bytes(raw)
    (result,) = verify_dkim(msg.raw(), msg.headers, resolver, time.monotonic() + 5, 5, 1024)
    assert (result.result, result.reason) == ("fail", "signature did not verify")


def test_simple_canonicalisation_notices_refolding(key: DkimKey, resolver: FakeResolver) -> None:
    raw = key.sign(FOLDED, canonicalize=(b"simple", b"simple"))
    assert verify(raw.replace(b"enough\r\n\tto", b"enough\r\n to"), resolver) == ["fail:signer.test:sel"]
    raw = key.sign(FOLDED, canonicalize=(b"relaxed", b"relaxed"))
    assert verify(raw.replace(b"enough\r\n\tto", b"enough\r\n to"), resolver) == ["pass:signer.test:sel"]


def _resign(raw: bytes, selector: bytes) -> bytes:
    return raw.replace(b"s=sel;", b"s=" + selector + b";", 1)


@pytest.mark.parametrize(
    ("selector", "expected"),
    [(b"missing", "permerror"), (b"revoked", "permerror"), (b"garbage", "permerror"), (b"down", "temperror")],
)
def test_key_problems(key: DkimKey, resolver: FakeResolver, selector: bytes, expected: str) -> None:
    raw = _resign(key.sign(message("a@signer.test")), selector)
    msg = Message.from_bytes(raw)
    (result,) = verify_dkim(msg.raw(), msg.headers, resolver, time.monotonic() + 5, 5, 1024)
    assert result.result == expected, result
    assert result.selector == selector.decode()


def test_key_below_min_key_bits_is_permerror(key: DkimKey, resolver: FakeResolver) -> None:
    msg = Message.from_bytes(key.sign(message("a@signer.test")))  # a 1024-bit key
    (result,) = verify_dkim(msg.raw(), msg.headers, resolver, time.monotonic() + 5, 5, 2048)
    assert result.result == "permerror"


def test_syntax_error_is_neutral(resolver: FakeResolver) -> None:
    raw = b"DKIM-Signature: v=1; a=rsa-sha256; d=signer.test; s=sel; h=from\r\n" + message("a@signer.test")
    assert verify(raw, resolver) == ["neutral:signer.test:sel"]


def test_each_signature_has_its_result_and_the_cap_holds(
    key: DkimKey, other_key: DkimKey, resolver: FakeResolver
) -> None:
    raw = other_key.sign(key.sign(message("a@signer.test")))  # other.test on top
    assert verify(raw, resolver) == ["pass:other.test:o1", "pass:signer.test:sel"]
    assert verify(raw, resolver, max_signatures=1) == ["pass:other.test:o1"]
    bad = raw.replace(b"this is a test", b"changed")
    assert [r.split(":")[0] for r in verify(bad, resolver)] == ["fail", "fail"]


def test_unsigned_message_has_no_results(resolver: FakeResolver) -> None:
    assert verify(message("a@signer.test"), resolver) == []
    assert resolver.asked == []


def test_not_verified_reports_neutral_per_signature(key: DkimKey) -> None:
    msg = Message.from_bytes(key.sign(message("a@signer.test")))
    (result,) = not_verified(msg.headers, "too large", 5)
    assert (result.result, result.domain, result.selector, result.reason) == (
        "neutral",
        "signer.test",
        "sel",
        "too large",
    )


def test_garbage_message_does_not_raise(resolver: FakeResolver) -> None:
    raw = b"DKIM-Signature: \xff\xfe;;;==\r\nFrom: x\r\n\r\n\xff"
    assert [r.split(":")[0] for r in verify(raw, resolver)] == ["neutral"]
