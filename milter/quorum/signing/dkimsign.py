"""DKIM signatures (RFC 6376, RFC 8463) over the final message, relaxed/relaxed, never `l=`.

Made here, step by step, each step checked against dkimpy (tests/unit/test_signing_canon.py,
tests/unit/test_signing_sign.py: the same DKIM-Signature bytes as `dkim.sign` for the same tags):

- the body hash, streamed from the body spool in chunks (`RelaxedBodyHash`): dkimpy's relaxed body
  canonicalization, without holding a 25 MB body in memory three times or the GIL for one long
  regular expression, and computed once for all of a message's signatures;
- the signed header fields, selected bottom-up (RFC 6376 5.4.2) and relaxed (3.4.2) once for all of
  a message's signatures (`signed_headers`), by dkimpy's rules (`relaxed_value`);
- the DKIM-Signature field laid out as dkimpy lays it out (`dkim.fold`, b= on its own line), hashed
  relaxed with b= empty and without its line end (3.7);
- the signature over that SHA-256 digest by the key (`PrivateKey.sign`: OpenSSL's RSA through
  `cryptography`, constant-time and blinded, about 0.3 ms per RSA-2048 signature with the GIL
  released, where dkimpy's pure-Python RSA took 6 ms holding it and stalled every other session's
  thread; PyNaCl's Ed25519).
"""

from __future__ import annotations

import base64
import hashlib
import re
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import dkim

from quorum.signing.keys import PrivateKey

# The fields signed when present (RFC 6376 5.4.1's list, plus List-Unsubscribe-Post (RFC 8058),
# OpenPGP and Autocrypt). Never Received, Return-Path, Authentication-Results, DKIM-Signature or
# Quorum's own X-Quorum-*: receivers' MTAs add, remove or rewrite those.
SIGNED = (
    "from", "sender", "reply-to", "subject", "date", "message-id", "to", "cc",
    "mime-version", "content-type", "content-transfer-encoding", "content-id", "content-description",
    "resent-date", "resent-from", "resent-sender", "resent-to", "resent-cc", "resent-message-id",
    "in-reply-to", "references",
    "list-id", "list-help", "list-unsubscribe", "list-unsubscribe-post", "list-subscribe", "list-post",
    "list-owner", "list-archive",
    "openpgp", "autocrypt",
)  # fmt: skip
# Signed once more than they occur (once when absent): a second From: (or a Subject:, To: ...)
# added after signing breaks the signature instead of being shown to the reader as signed.
OVERSIGNED = frozenset(
    ("from", "to", "subject", "date", "message-id", "reply-to", "content-type", "mime-version")
)  # fmt: skip
CANONICALIZATION = b"relaxed/relaxed"
FIELD = b"DKIM-Signature"
PLACEHOLDER = b"0" * 60  # dkimpy's: b= is folded onto its own line, so adding the value moves no other tag
_BARE_LF = re.compile(rb"(?<!\r)\n")
_LINE_END = re.compile(rb"\r?\n")


def header_list(names: Iterable[str]) -> list[str]:
    """The h= list for a message with these header field names: each signed field as many times as
    it occurs, the over-signed ones once more."""
    counts = Counter(name.strip().lower() for name in names)
    out: list[str] = []
    for name in SIGNED:
        out += [name] * (counts.get(name, 0) + (1 if name in OVERSIGNED else 0))
    return out


class RelaxedBodyHash:
    """SHA-256 of the relaxed-canonicalized body (RFC 6376 3.4.4), fed in chunks of any size:
    whitespace runs become one space, trailing whitespace on a line goes, line ends are CRLF,
    empty lines at the end are ignored, and an empty body hashes as empty. A last line without a
    line end is hashed as the receiver sees it, ended by CRLF (SMTP ends every line)."""

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self._pending: list[bytes] = []  # the start of a line not yet ended (kept as pieces: no re-copying)
        self._blank = 0  # empty lines held back: hashed only when a line with content follows

    def update(self, chunk: bytes) -> None:
        cut = chunk.rfind(b"\n")
        if cut < 0:
            if chunk:
                self._pending.append(bytes(chunk))
            return
        lines = bytes(chunk[: cut + 1])
        if self._pending:
            lines = b"".join([*self._pending, lines])
            self._pending = []
        self._lines(lines)
        if cut + 1 < len(chunk):
            self._pending.append(bytes(chunk[cut + 1 :]))

    def _lines(self, block: bytes) -> None:
        """`block` is whole lines (it ends with LF)."""
        canon = canonical(block)
        # The CRLFs at the end (the last content line's, then empty lines), found without a Python
        # loop: past the last lone CR (followed by CR: there are no bare LFs here) all are CRLF.
        tail = canon[len(canon.rstrip(b"\r\n")) :]
        lone = tail.rfind(b"\r\r")
        if lone >= 0:
            tail = tail[lone + 1 :]
        end, ends = len(canon) - len(tail), len(tail) // 2
        if end == 0:
            self._blank += ends
            return
        while self._blank:
            run = min(self._blank, 32768)
            self._hash.update(b"\r\n" * run)
            self._blank -= run
        self._hash.update(canon[:end])
        self._hash.update(b"\r\n")
        self._blank = ends - 1

    def digest(self) -> bytes:
        if self._pending:
            tail, self._pending = b"".join(self._pending), []
            self._lines(tail + b"\r\n")
        return self._hash.digest()

    def b64(self) -> bytes:
        return base64.b64encode(self.digest())


def canonical(block: bytes) -> bytes:
    """Whole lines, relaxed: line ends to CRLF, no whitespace before them, every run of spaces and
    tabs one space (dkimpy's result; trailing empty lines are the caller's). Only bytes' own
    C-speed scans and replacements: a block that needs nothing (base64, most text) is returned as it
    is, and runs of spaces take log2(longest run) passes, never a Python loop per character."""
    if block.count(b"\n") != block.count(b"\r\n"):
        block = _BARE_LF.sub(b"\r\n", block)
    if b"\t" in block:
        block = block.replace(b"\t", b" ")
    if b" \r\n" in block:
        block = b"\r\n".join([line.rstrip(b" ") for line in block.split(b"\r\n")])
    while b"  " in block:
        block = block.replace(b"  ", b" ")
    return block


def body_hash(chunks: Iterable[bytes]) -> bytes:
    h = RelaxedBodyHash()
    for chunk in chunks:
        h.update(chunk)
    return h.b64()


def relaxed_value(value: bytes) -> bytes:
    """A header field's value, relaxed (RFC 6376 3.4.2) as dkimpy does it: unfolded (every LF or
    CRLF removed), each run of spaces and tabs one space, whitespace at both ends gone (bytes.strip:
    ASCII whitespace). A value without folds, tabs or double spaces costs one strip."""
    if b"\n" in value:
        value = _LINE_END.sub(b"", value)
    if b"\t" in value:
        value = value.replace(b"\t", b" ")
    while b"  " in value:
        value = value.replace(b"  ", b" ")
    return value.strip()


def signed_headers(headers: Sequence[tuple[bytes, bytes]], include: Sequence[str]) -> bytes:
    """The signed header fields as they are hashed: for each h= name, the last field of that name
    not taken yet (bottom-up; none when they run out: an over-signed name hashes nothing), as
    `name:value` relaxed, each ended by CRLF. `headers` is (name, raw value with its leading space
    and CRLF folds), in order."""
    by_name: dict[bytes, list[bytes]] = {}
    for name, value in headers:
        by_name.setdefault(name.lower().rstrip(), []).append(value)
    out: list[bytes] = []
    for wanted in include:
        canonical_name = wanted.encode("ascii")
        values = by_name.get(canonical_name)
        if values:
            out += (canonical_name, b":", relaxed_value(values.pop()), b"\r\n")
    return b"".join(out)


@dataclass(frozen=True)
class Signer:
    """One signature to make: d=, s= and the key."""

    domain: str
    selector: str
    key: PrivateKey


def tags(signer: Signer, include: Sequence[str], bh: bytes, now: int | None = None) -> list[tuple[bytes, bytes]]:
    """The DKIM-Signature tags, in order, b= last (its placeholder)."""
    return [
        (b"v", b"1"),
        (b"a", signer.key.algorithm.encode("ascii")),
        (b"c", CANONICALIZATION),
        (b"d", signer.domain.encode("ascii")),
        (b"s", signer.selector.encode("ascii")),
        (b"t", str(int(time.time()) if now is None else now).encode("ascii")),
        (b"h", b" : ".join(name.encode("ascii") for name in include)),
        (b"bh", bh),
        (b"b", PLACEHOLDER),
    ]


def field_value(key: PrivateKey, signed: bytes, fields: Sequence[tuple[bytes, bytes]], name: bytes = FIELD) -> bytes:
    """The DKIM-Signature value for `fields` (b= last, its value ignored) over the header fields
    `signed` (`signed_headers`): CRLF folds, a CRLF at the end, byte for byte what dkimpy writes
    after "DKIM-Signature: " (`dkim.sign`; the b= value folded too, as Yahoo and Outlook.com want).
    `name` is the field's name: ARC-Message-Signature and ARC-Seal are made the same way.

    The hash covers the field as the receiver sees it with b= emptied: the layout with the
    placeholder (b= on its own line) equals the final one up to b=, so relaxing it and cutting
    after the last "b=" (the placeholder holds none, bh= is no "b=") is what a verifier hashes."""
    names = [name for name, _ in fields]
    if names[-1] != b"b" or b"b" in names[:-1]:
        raise ValueError("b= must be the last tag and appear once")
    layout = [*fields[:-1], (b"b", PLACEHOLDER)]
    unsigned = relaxed_value(dkim.fold(b"; ".join(b"=".join(f) for f in layout), namelen=len(name)))
    unsigned = unsigned[: unsigned.rindex(b"b=") + 2]
    digest = hashlib.sha256(signed + name.lower() + b":" + unsigned).digest()
    final = [*fields[:-1], (b"b", base64.b64encode(key.sign(digest)))]
    value: bytes = dkim.fold(b"; ".join(b"=".join(f) for f in final) + b"\r\n", namelen=len(name))
    return value


def signature(
    signer: Signer,
    signed: bytes,
    include: Sequence[str],
    bh: bytes,
    now: int | None = None,
) -> str:
    """The DKIM-Signature field value (no leading space; folds as LF+TAB, as a milter adds them) over
    the header fields `signed` (`signed_headers` of `include`) and the body hash `bh` (base64)."""
    return milter_value(field_value(signer.key, signed, tags(signer, include, bh, now)))


def milter_value(value: bytes) -> str:
    """A folded field value as a milter adds it: no line end, folds as LF+TAB."""
    return value.decode("ascii").rstrip("\r\n").replace("\r\n ", "\n\t")


def sign(
    signers: Sequence[Signer],
    headers: Sequence[tuple[bytes, bytes]],
    body: Iterable[bytes],
    now: int | None = None,
) -> list[tuple[str, str]]:
    """("DKIM-Signature", value) for each signer, in order, over the same headers and body (both
    canonicalized and hashed once, whatever the number of signatures)."""
    names = [name.decode("utf-8", "surrogateescape") for name, _ in headers]
    include = header_list(names)
    bh = body_hash(body)
    signed = signed_headers(headers, include)
    return [("DKIM-Signature", signature(s, signed, include, bh, now)) for s in signers]
