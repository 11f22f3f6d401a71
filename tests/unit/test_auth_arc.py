"""ARC chain verification (quorum.auth.arc): none, pass, fail (body changed after a seal, broken
i= sequence, too many sets, garbage), all bounded and never raising."""

from __future__ import annotations

import re
import time

import dkim
import pytest
from tests.zones.auth import DkimKey, make_key, message
from tests.zones.fake_resolver import FakeResolver

from quorum.auth import results
from quorum.auth.arc import ArcResult, verify_arc
from quorum.message import Message


@pytest.fixture(scope="module")
def key() -> DkimKey:
    return make_key("lists.example.org", "arc", bits=1024)


@pytest.fixture()
def resolver(key: DkimKey) -> FakeResolver:
    return FakeResolver([("arc._domainkey.lists.example.org", "TXT", key.record)])


def seal(raw: bytes, key: DkimKey, srv: bytes = b"lists.example.org") -> bytes:
    """`raw` with one more ARC set by `key` (dkimpy's signer, as a mailing list would)."""
    raw = raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    # dkimpy seals a chain only after its own A-R says arc=pass (hop 1: no arc= means cv=none).
    arc = b"; arc=pass" if re.search(rb"(?im)^ARC-Seal:", raw) else b""
    raw = re.sub(rb"(?m)^Authentication-Results: " + re.escape(srv) + rb";.*\r\n", b"", raw)  # one A-R per hop
    raw = b"Authentication-Results: " + srv + b"; dmarc=pass header.from=sender.test" + arc + b"\r\n" + raw
    headers = dkim.arc_sign(raw, key.selector.encode(), key.domain.encode(), key.private_pem, srv, linesep=b"\r\n")
    return b"".join(headers) + raw


def check(raw: bytes, resolver: FakeResolver, max_sets: int = 10, budget: float = 5) -> ArcResult:
    msg = Message.from_bytes(raw)
    return verify_arc(msg.raw(), msg.headers, resolver, time.monotonic() + budget, max_sets)


BASE = message("a@sender.test")


def test_no_arc_headers_is_none(resolver: FakeResolver) -> None:
    assert check(BASE, resolver).result == "none"
    assert resolver.asked == []


def test_one_set_passes_and_names_the_sealer(key: DkimKey, resolver: FakeResolver) -> None:
    res = check(seal(BASE, key), resolver)
    assert (res.result, res.sets, res.sealer) == ("pass", 1, "lists.example.org")
    assert "dmarc=pass" in res.oldest_aar


def test_five_sets_pass(key: DkimKey, resolver: FakeResolver) -> None:
    raw = BASE
    for _ in range(5):
        raw = seal(raw, key)
    res = check(raw, resolver)
    assert (res.result, res.sets) == ("pass", 5)
    assert resolver.asked.count(("arc._domainkey.lists.example.org", "TXT")) <= 1  # one lookup per key


def test_body_changed_after_the_seal_fails(key: DkimKey, resolver: FakeResolver) -> None:
    sealed = seal(BASE, key)
    res = check(sealed.replace(b"this is a test.", b"this is a fake."), resolver)
    assert res.result == "fail"


def test_broken_instance_sequence_fails_unverified(key: DkimKey, resolver: FakeResolver) -> None:
    sealed = seal(seal(BASE, key), key)
    broken = sealed.replace(b"i=2;", b"i=3;")
    res = check(broken, resolver)
    assert res.result == "fail" and "numbered" in res.reason
    assert resolver.asked == []


def test_duplicate_header_in_a_set_fails(key: DkimKey, resolver: FakeResolver) -> None:
    sealed = seal(BASE, key)
    seal_line = re.search(rb"(?ms)^ARC-Seal:.*?\r\n(?=\S)", sealed)
    assert seal_line
    res = check(seal_line.group(0) + sealed, resolver)
    assert res.result == "fail" and "duplicate" in res.reason


def fake_sets(count: int) -> bytes:
    lines = []
    for i in range(count, 0, -1):
        cv = "none" if i == 1 else "pass"
        lines += [
            f"ARC-Seal: i={i}; a=rsa-sha256; cv={cv}; d=lists.example.org; s=arc; b=AAAA".encode(),
            f"ARC-Message-Signature: i={i}; a=rsa-sha256; c=relaxed/relaxed; d=lists.example.org; s=arc; "
            f"h=from:to:subject; bh=AAAA; b=AAAA".encode(),
            f"ARC-Authentication-Results: i={i}; lists.example.org; dmarc=pass".encode(),
        ]
    return b"\r\n".join(lines) + b"\r\n" + BASE


@pytest.mark.parametrize("count", [11, 50, 51, 200])
def test_many_sets_fail_fast_without_lookups(resolver: FakeResolver, count: int) -> None:
    start = time.process_time()
    res = check(fake_sets(count), resolver)
    assert res.result == "fail"
    assert resolver.asked == []
    assert time.process_time() - start < 0.5


def test_fifty_real_sets_over_the_cap_fail(key: DkimKey, resolver: FakeResolver) -> None:
    raw = BASE
    for _ in range(12):
        raw = seal(raw, key)
    res = check(raw, resolver, max_sets=10)
    assert res.result == "fail" and "at most 10" in res.reason


@pytest.mark.parametrize(
    "garbage",
    [
        b"ARC-Seal: garbage\r\n",
        b"ARC-Seal: i=1\r\nARC-Message-Signature: i=1\r\nARC-Authentication-Results: i=1\r\n",
        b"ARC-Seal: i=1; a=rsa-sha256; cv=none; d=lists.example.org; s=arc; b=!!!!\r\n"
        b"ARC-Message-Signature: i=1; a=rsa-sha256; d=lists.example.org; s=arc; h=from; bh=x; b=y\r\n"
        b"ARC-Authentication-Results: i=1; x; none\r\n",
        b"ARC-Seal: i=0; cv=none\r\n",
        b"ARC-Seal: i=999999; cv=none\r\n",
        b"ARC-Seal: i=1; " + b"x" * 20000 + b"\r\n",
        b"ARC-Message-Signature: i=1; a=rsa-sha256; d=\xff\xfe; s=arc; h=arc-seal; bh=x; b=y\r\n"
        b"ARC-Seal: i=1; a=rsa-sha256; cv=none; d=lists.example.org; s=arc; b=AAAA\r\n"
        b"ARC-Authentication-Results: i=1; x; none\r\n",
    ],
)
def test_garbage_fails_never_raises(resolver: FakeResolver, garbage: bytes) -> None:
    assert check(garbage + BASE, resolver).result == "fail"


def test_first_seal_with_cv_pass_fails(key: DkimKey, resolver: FakeResolver) -> None:
    # A forged "continuation": i=1 must say cv=none (dkimpy signs it so, the test edits it after).
    sealed = seal(BASE, key).replace(b"cv=none", b"cv=pass", 1)
    assert check(sealed, resolver).result == "fail"


def test_key_lookup_failure_is_temperror(key: DkimKey) -> None:
    down = FakeResolver(failing=["arc._domainkey.lists.example.org"])
    assert check(seal(BASE, key), down).result == "temperror"


def test_no_time_left_is_temperror(key: DkimKey, resolver: FakeResolver) -> None:
    assert check(seal(BASE, key), resolver, budget=-1).result == "temperror"


def test_authentication_results_reports_arc() -> None:
    value = results.header_value("mx.test", None, None, None, arc=ArcResult("fail", 2, "ARC-Seal[1] did not validate"))
    assert "arc=fail (ARC-Seal[1] did not validate)" in value
    assert "arc=pass" in results.header_value("mx.test", None, None, None, arc=ArcResult("pass", 1))
