"""DKIM verification (RFC 6376) with dkimpy, on the message bytes exactly as received.

Each signature gets its own result, mapped to RFC 8601 terms:
- pass; fail (signature or body hash does not verify);
- neutral (the signature cannot be processed: bad tags, expired, unsupported, message too large);
- permerror (no key, revoked, malformed, too small or too large key); temperror (key lookup failed
  for now, or the message's DKIM time ran out).
dkimpy's own verify() folds key-lookup failures into "False": the key fetcher passed as `dnsfunc`
records what happened so those become permerror/temperror instead of fail.

Bounded work: dkimpy does RSA in pure Python while holding the GIL, and a deadline cannot interrupt
it, so the key record is checked before any arithmetic (and before the body is hashed): a key record
of more than MAX_KEY_RECORD_BYTES, a modulus above MAX_KEY_BITS or a public exponent that is not an
odd number from 3 to MAX_EXPONENT is refused (permerror "key too large" / "unsafe exponent"). With
those bounds one verification costs a few milliseconds at most. At most `dkim_max_signatures`
signatures are verified per message, and none is started after the deadline.
"""

from __future__ import annotations

import base64
import binascii
import logging
import time
from dataclasses import dataclass

import dkim as dkimpy
from dkim.crypto import parse_public_key
from dkim.util import InvalidTagValueList, parse_tag_value

from quorum.auth.resolver import DnsTempError, Resolver
from quorum.message import Header

MAX_KEY_BITS = 8192  # RFC 8301 asks verifiers for 1024..4096 bits; larger keys are refused unverified
MAX_EXPONENT = 2**32 - 1  # real keys use 65537 (or 3); a huge e makes pow() cost seconds per signature
MAX_KEY_RECORD_BYTES = 1100  # DER of an 8192-bit SubjectPublicKeyInfo with a 32-bit exponent: <= 1064

_quiet = logging.getLogger("quorum.auth.dkimpy")
_quiet.addHandler(logging.NullHandler())
_quiet.propagate = False
_quiet.setLevel(logging.CRITICAL)


@dataclass(frozen=True)
class DkimResult:
    result: str  # pass | fail | neutral | permerror | temperror
    domain: str = ""  # header.d
    selector: str = ""  # header.s
    algorithm: str = ""  # header.a
    b: str = ""  # first characters of b=, tells signatures of one domain apart (RFC 6008)
    reason: str = ""

    def __str__(self) -> str:
        return f"{self.result}:{self.domain or '?'}"


class _KeyLookupFailed(Exception):
    """Raised through dkimpy (which only catches its own exceptions) to mean temperror."""


class _KeyFetcher:
    """dkimpy's `dnsfunc`: fetch the key record through our resolver and note what went wrong."""

    def __init__(self, resolver: Resolver, deadline: float) -> None:
        self.resolver = resolver
        self.deadline = deadline
        self.problem = ""  # permanent key problem, when any

    def __call__(self, name: bytes, timeout: float = 5) -> bytes | None:
        try:
            qname = name.decode("ascii")
        except UnicodeDecodeError:
            self.problem = "key name is not ASCII"
            return None
        try:
            records = self.resolver.txt(qname, self.deadline)
        except DnsTempError as exc:
            raise _KeyLookupFailed(str(exc)) from None
        if not records:
            self.problem = "no key for signature"
            return None
        if len(records) > 1:
            self.problem = "several key records"
            return None
        problem = key_problem(records[0])
        if problem:
            self.problem = problem
            return None  # dkimpy: "missing public key" -> False, reported as permerror with our reason
        try:
            dkimpy.evaluate_pk(name, records[0])
        except dkimpy.KeyFormatError as exc:
            self.problem = f"bad key: {exc}"
        except Exception as exc:  # binascii.Error and friends from odd key data
            self.problem = f"bad key: {exc.__class__.__name__}"
        return records[0]


def key_problem(record: bytes) -> str:
    """Why an RSA key record must not be used for arithmetic ("" when it may): checked before dkimpy
    parses it (its DER integer parsing is quadratic in the length) and before any pow()."""
    try:
        tags = dict(parse_tag_value(record))
    except (InvalidTagValueList, ValueError):
        return ""  # dkimpy reports the malformed record itself
    if tags.get(b"k", b"rsa").strip().lower() != b"rsa" or b"p" not in tags:
        return ""
    try:
        der = base64.b64decode(b"".join(tags[b"p"].split()))
    except (binascii.Error, ValueError):
        return ""
    if len(der) > MAX_KEY_RECORD_BYTES:
        return f"key too large: {len(der)}-byte key data, at most {MAX_KEY_BITS}-bit keys are verified"
    try:
        key = parse_public_key(der)
    except Exception:
        return ""  # unparsable: dkimpy says so
    modulus, exponent = key["modulus"], key["publicExponent"]
    if modulus.bit_length() > MAX_KEY_BITS:
        return f"key too large: {modulus.bit_length()} bits, at most {MAX_KEY_BITS} are verified"
    if not (3 <= exponent <= MAX_EXPONENT and exponent % 2 == 1):
        return "unsafe key: public exponent is not an odd number from 3 to 2**32-1"
    return ""


def _tags(header: Header) -> dict[bytes, bytes]:
    try:
        return dict(parse_tag_value(header.raw_value.replace(b"\r\n", b"")))
    except (InvalidTagValueList, ValueError):
        return {}


def _describe(tags: dict[bytes, bytes], result: str, reason: str) -> DkimResult:
    def text(key: bytes) -> str:
        return tags.get(key, b"").decode("ascii", "replace").strip()

    b = "".join(text(b"b").split())[:12]
    return DkimResult(result, text(b"d").lower(), text(b"s"), text(b"a").lower(), b, reason)


def signature_headers(headers: list[Header]) -> list[Header]:
    return [h for h in headers if h.name.lower() == "dkim-signature"]


def not_verified(headers: list[Header], reason: str, limit: int) -> list[DkimResult]:
    """`neutral` for each signature we decline to verify (e.g. message above dkim_max_size)."""
    return [_describe(_tags(h), "neutral", reason) for h in signature_headers(headers)[:limit]]


def verify_dkim(
    raw: bytes, headers: list[Header], resolver: Resolver, deadline: float, max_signatures: int, min_key_bits: int
) -> list[DkimResult]:
    """One result per DKIM-Signature (top to bottom, at most `max_signatures`); [] when unsigned."""
    sigs = signature_headers(headers)
    if not sigs:
        return []
    try:
        verifier = dkimpy.DKIM(raw, logger=_quiet, minkey=min_key_bits)
    except Exception as exc:  # unparsable message
        return [_describe(_tags(h), "neutral", f"message not parsable: {exc.__class__.__name__}") for h in sigs]
    results: list[DkimResult] = []
    for idx, header in enumerate(sigs[:max_signatures]):
        if time.monotonic() >= deadline:
            results.append(_describe(_tags(header), "temperror", "not verified: no time left"))
            continue
        results.append(_verify_one(verifier, idx, _tags(header), resolver, deadline))
    return results


def _verify_one(
    verifier: dkimpy.DKIM, idx: int, tags: dict[bytes, bytes], resolver: Resolver, deadline: float
) -> DkimResult:
    try:
        verifier.verify_headerprep(idx)
    except dkimpy.DKIMException as exc:
        return _describe(tags, "neutral", _reason(exc))
    except Exception as exc:
        return _describe(tags, "neutral", f"bad signature: {exc.__class__.__name__}")
    fetch = _KeyFetcher(resolver, deadline)
    try:
        ok = verifier.verify(idx=idx, dnsfunc=fetch)
    except _KeyLookupFailed as exc:
        return _describe(tags, "temperror", f"key lookup failed: {exc}")
    except dkimpy.NaClNotFoundError:
        return _describe(tags, "neutral", "ed25519 key not supported here (needs pynacl)")
    except dkimpy.KeyFormatError as exc:  # raised for a too-small key after the signature checked out
        return _describe(tags, "permerror", _reason(exc))
    except dkimpy.ValidationError as exc:
        text = _reason(exc)
        return _describe(tags, "fail" if "body hash" in text else "neutral", text)
    except dkimpy.DKIMException as exc:
        return _describe(tags, "neutral", _reason(exc))
    except Exception as exc:  # a verifier bug on odd input must not take the message down
        return _describe(tags, "neutral", f"verifier error: {exc.__class__.__name__}")
    if ok:
        return _describe(tags, "pass", "")
    if fetch.problem:
        return _describe(tags, "permerror", fetch.problem)
    return _describe(tags, "fail", "signature did not verify")


def _reason(exc: Exception) -> str:
    text = str(exc).split(" (got ")[0]  # drop dkimpy's hash dumps
    return text[:120] if text else exc.__class__.__name__
