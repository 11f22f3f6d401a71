"""BATV prvs= signing and validation (draft-levine-smtp-batv-01): format, expiry, forgery, day wrap-around."""

from __future__ import annotations

import hashlib
import hmac
import re

import pytest

from quorum.backscatter import batv

KEY = b"0123456789abcdef-secret"
KEYS = {0: KEY}
DAY = 86400.0
T0 = 20_000 * DAY + 3600  # day number 20000


def test_format_and_hmac() -> None:
    tagged = batv.sign("Alice@Example.com", KEY, now=T0)
    m = re.fullmatch(r"prvs=0(\d{3})([0-9a-f]{6})=Alice@Example.com", tagged)
    assert m, tagged
    assert m.group(1) == f"{(20_000 + 7) % 1000:03d}"  # DDD: the day the tag expires, mod 1000
    expected = hmac.new(KEY, f"0{m.group(1)}alice@example.com".encode(), hashlib.sha1).digest()[:3].hex()
    assert m.group(2) == expected


def test_valid_within_the_window_and_stripped() -> None:
    tagged = batv.sign("alice@example.com", KEY, now=T0)
    for day in range(8):
        check = batv.validate(tagged, KEYS, now=T0 + day * DAY)
        assert check.valid and check.address == "alice@example.com", day
    assert batv.strip(tagged) == "alice@example.com"
    assert batv.validate(tagged.upper().replace("PRVS", "prvs"), KEYS, now=T0).valid  # case changed en route


def test_expired() -> None:
    tagged = batv.sign("alice@example.com", KEY, now=T0)
    check = batv.validate(tagged, KEYS, now=T0 + 8 * DAY)
    assert not check.valid and check.reason == "expired BATV tag" and check.address == "alice@example.com"
    assert not batv.validate(tagged, KEYS, now=T0 + 400 * DAY).valid


def test_day_number_wraps_around() -> None:
    before_wrap = 20_997 * DAY  # expires on day 21004 -> DDD "004"
    tagged = batv.sign("alice@example.com", KEY, now=before_wrap)
    assert tagged.startswith("prvs=0004")
    assert batv.validate(tagged, KEYS, now=21_001 * DAY).valid  # after the mod-1000 wrap
    assert not batv.validate(tagged, KEYS, now=21_005 * DAY).valid


@pytest.mark.parametrize(
    "forged",
    [
        "prvs=0007000000=alice@example.com",  # made-up signature
        "prvs=1007abcdef=alice@example.com",  # unknown key number
    ],
)
def test_forged_tags(forged: str) -> None:
    check = batv.validate(forged, KEYS, now=T0)
    assert not check.valid and check.address == "alice@example.com"


def test_tag_bound_to_address_key_and_date() -> None:
    tagged = batv.sign("alice@example.com", KEY, now=T0)
    other = tagged.replace("alice@", "mallory@")
    assert batv.validate(other, KEYS, now=T0).reason == "forged BATV tag"
    assert not batv.validate(tagged, {0: b"another-key-of-16-bytes"}, now=T0).valid
    later = tagged[:6] + "999" + tagged[9:]  # DDD changed to look fresh
    assert not batv.validate(later, KEYS, now=T0).valid


def test_not_tagged_and_null_sender() -> None:
    assert batv.sign("", KEY) == ""
    assert batv.sign("postmaster", KEY) == "postmaster"
    tagged = batv.sign("a@example.com", KEY, now=T0)
    assert batv.sign(tagged, KEY, now=T0) == tagged  # never signed twice
    assert batv.validate("alice@example.com", KEYS).reason == "not a BATV prvs= address"
    assert batv.validate("prvs=garbage=alice@example.com", KEYS).valid is False
    with pytest.raises(ValueError):
        batv.sign("a@example.com", KEY, key_number=10)
