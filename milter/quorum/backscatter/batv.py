"""BATV `prvs=` envelope-sender tags (draft-levine-smtp-batv-01, "simple private signature").

`prvs=KDDDSSSSSS=local@domain`: K is the key number (one digit), DDD the day the tag expires
(days since 1970-01-01, modulo 1000), SSSSSS the first three bytes, in hex, of the HMAC-SHA1 over
`KDDD` followed by the original address. The address is hashed lower-cased, so a remote MTA that
changes its case does not invalidate the bounce. Validity is measured modulo 1000 days, so the
day-number wrap-around (every ~2.7 years) is seamless.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass

PREFIX = "prvs="
DEFAULT_VALIDITY_DAYS = 7
_TAGGED = re.compile(r"^prvs=([0-9])([0-9]{3})([0-9a-fA-F]{6})=(.+@[^@]+)$", re.IGNORECASE)


def day_number(now: float | None = None) -> int:
    return int((time.time() if now is None else now) // 86400)


def _signature(key: bytes, key_number: int, ddd: str, address: str) -> str:
    digest = hmac.new(key, f"{key_number}{ddd}{address.lower()}".encode(), hashlib.sha1).digest()
    return digest[:3].hex()


def is_tagged(address: str) -> bool:
    return address[: len(PREFIX)].lower() == PREFIX


def sign(
    address: str, key: bytes, key_number: int = 0, validity_days: int = DEFAULT_VALIDITY_DAYS, now: float | None = None
) -> str:
    """`prvs=...=address`, valid for `validity_days`; a null or already tagged address is returned as is."""
    if not address or "@" not in address or is_tagged(address):
        return address
    if not 0 <= key_number <= 9:
        raise ValueError("BATV key number must be 0..9")
    ddd = f"{(day_number(now) + validity_days) % 1000:03d}"
    return f"{PREFIX}{key_number}{ddd}{_signature(key, key_number, ddd, address)}={address}"


@dataclass(frozen=True)
class Check:
    """`valid`, the plain address (always, when the tag parsed), and why it is not valid ("" if it is)."""

    valid: bool
    address: str
    reason: str = ""


def validate(
    address: str, keys: Mapping[int, bytes], validity_days: int = DEFAULT_VALIDITY_DAYS, now: float | None = None
) -> Check:
    """Check a `prvs=` address against the keys by number; expired, unknown key or forged tags fail."""
    m = _TAGGED.match(address.strip())
    if not m:
        return Check(False, address, "not a BATV prvs= address")
    k, ddd, sig, plain = int(m.group(1)), m.group(2), m.group(3).lower(), m.group(4)
    key = keys.get(k)
    if key is None:
        return Check(False, plain, f"unknown BATV key number {k}")
    if not hmac.compare_digest(sig, _signature(key, k, ddd, plain)):
        return Check(False, plain, "forged BATV tag")
    days_left = (int(ddd) - day_number(now)) % 1000
    if days_left > validity_days:  # expired (the difference wrapped) or dated beyond what we ever sign
        return Check(False, plain, "expired BATV tag")
    return Check(True, plain)


def strip(address: str) -> str:
    """The plain address of a `prvs=` address (unverified); other addresses unchanged."""
    m = _TAGGED.match(address.strip())
    return m.group(4) if m else address
