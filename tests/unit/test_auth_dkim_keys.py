"""Issue 17, item 2: attacker-sized DKIM keys are refused before any RSA arithmetic.

dkimpy verifies RSA in pure Python while holding the GIL; a 16,384-bit modulus with an exponent as
large cost ~8 s of CPU per signature, and a deadline cannot interrupt it. These keys need no private
key: a record with the expensive shape is enough, the point is that nothing is computed with it.
"""

from __future__ import annotations

import base64
import time

import pytest
from tests.zones.auth import DkimKey, _der, _der_int, hostile_key_record, make_key, message, odd_number, spki_der
from tests.zones.fake_resolver import FakeResolver

from quorum.auth.dkim import MAX_KEY_BITS, key_problem, verify_dkim
from quorum.message import Message


@pytest.fixture(scope="module")
def signer() -> DkimKey:
    # Signs with a real 1024-bit key (correct bh= and a well-formed b=); the DNS then publishes the hostile key.
    return make_key("evil.test", "huge", bits=1024)


def run(
    raw: bytes, record: str, max_signatures: int = 5, deadline: float = 60.0
) -> tuple[list[tuple[str, str]], float]:
    resolver = FakeResolver([("huge._domainkey.evil.test", "TXT", record)])
    msg = Message.from_bytes(raw)
    started = time.process_time()
    results = verify_dkim(msg.raw(), msg.headers, resolver, time.monotonic() + deadline, max_signatures, 1024)
    return [(r.result, r.reason) for r in results], time.process_time() - started


def record_of(modulus: int, exponent: int) -> str:
    return f"v=DKIM1; k=rsa; p={base64.b64encode(spki_der(modulus, exponent)).decode()}"


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        (hostile_key_record(16384), "key too large"),  # the measured attack: 7.9 s CPU before
        (hostile_key_record(32768), "key too large"),
        (hostile_key_record(16384, exponent=65537), "key too large"),
        (record_of(odd_number(8200, 3), 65537), "key too large: 8200 bits"),  # just above the bound, small DER
        (record_of(odd_number(8192, 3), odd_number(4096, 4)), "key too large"),  # huge e makes the DER large
        (record_of(odd_number(4096, 3), 2**64 + 1), "unsafe key"),  # small DER, exponent above 2**32
        (record_of(odd_number(2048, 3), 65536), "unsafe key"),  # even
        (record_of(odd_number(2048, 3), 1), "unsafe key"),  # e = 1: "signature" = digest
        (record_of(odd_number(2048, 3), 0), "unsafe key"),
    ],
    ids=["16k-huge-e", "32k-huge-e", "16k-e65537", "8200-bits", "8k-4k-e", "4k-e-2^64", "even-e", "e-1", "e-0"],
)
def test_attacker_sized_key_is_refused_before_arithmetic(signer: DkimKey, record: str, reason: str) -> None:
    raw = signer.sign(message("a@evil.test"))
    (result,), cpu = run(raw, record)
    assert result[0] == "permerror" and reason in result[1], result
    assert cpu < 0.5, cpu


def test_pkcs1_form_is_bounded_too(signer: DkimKey) -> None:
    n, e = odd_number(16384, 5), odd_number(16384, 6)
    pkcs1 = _der(0x30, _der_int(n) + _der_int(e))  # bare RSAPublicKey, which dkimpy also accepts
    raw = signer.sign(message("a@evil.test"))
    (result,), cpu = run(raw, f"v=DKIM1; k=rsa; p={base64.b64encode(pkcs1).decode()}")
    assert result[0] == "permerror" and "key too large" in result[1]
    assert cpu < 0.5


def test_five_hostile_signatures_cost_nothing(signer: DkimKey) -> None:
    raw = message("a@evil.test")
    for i in range(5):
        raw = signer.sign(raw.replace(b"Subject: Hello", f"Subject: Hello {i}".encode(), 1))
    results, cpu = run(raw, hostile_key_record(16384))
    assert [r for r, _ in results] == ["permerror"] * 5
    assert cpu < 1.0, cpu


def test_signatures_beyond_the_cap_are_not_verified(signer: DkimKey) -> None:
    raw = message("a@evil.test")
    for i in range(8):
        raw = signer.sign(raw.replace(b"Subject: Hello", f"Subject: Hello {i}".encode(), 1))
    results, _ = run(raw, hostile_key_record(16384), max_signatures=3)
    assert len(results) == 3


def test_no_signature_is_started_after_the_deadline(signer: DkimKey) -> None:
    raw = signer.sign(message("a@evil.test"))
    (result,), _ = run(raw, hostile_key_record(16384), deadline=-1.0)
    assert result == ("temperror", "not verified: no time left")


def test_largest_allowed_key_is_still_verified(signer: DkimKey) -> None:
    # 8192 bits and e = 65537 are within the bounds: verified (and here it fails: wrong key), quickly.
    raw = signer.sign(message("a@evil.test"))
    (result,), cpu = run(raw, record_of(odd_number(MAX_KEY_BITS, 9), 65537))
    assert result == ("fail", "signature did not verify")
    assert cpu < 0.5


@pytest.mark.parametrize("exponent", [3, 17, 65537, 2**32 - 1])
def test_small_odd_exponents_are_accepted(exponent: int) -> None:
    assert key_problem(record_of(odd_number(2048, 1), exponent).encode()) == ""


@pytest.mark.parametrize(
    "record",
    [b"v=DKIM1; k=rsa; p=", b"v=DKIM1; k=rsa; p=bm90IGEga2V5", b"v=DKIM1; k=ed25519; p=AAAA", b"garbage;;=", b""],
)
def test_other_records_are_left_to_dkimpy(record: bytes) -> None:
    assert key_problem(record) == ""
