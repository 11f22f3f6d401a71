"""DKIM signatures (RFC 6376, RFC 8463) over the final message, relaxed/relaxed, never `l=`.

The header hash and the signature itself are dkimpy's (`dkim.DKIM.gen_header`: folding, the b=
placeholder, RSA and Ed25519). The body hash is computed here, streamed from the body spool in
chunks (`RelaxedBodyHash`): the same bytes dkimpy's relaxed body canonicalization gives
(tests/unit/test_signing_canon.py checks it), without holding a 25 MB body in memory three times
or the GIL for one long regular expression, and computed once for all of a message's signatures
(rsa-sha256 and ed25519-sha256 both hash with SHA-256).
"""

from __future__ import annotations

import base64
import hashlib
import logging
import re
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import dkim
from dkim.canonicalization import CanonicalizationPolicy

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
_POLICY = CanonicalizationPolicy.from_c_value(CANONICALIZATION)
_BARE_LF = re.compile(rb"(?<!\r)\n")
_quiet = logging.getLogger("quorum.signing.dkimpy")
_quiet.setLevel(logging.ERROR)


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


@dataclass(frozen=True)
class Signer:
    """One signature to make: d=, s= and the key."""

    domain: str
    selector: str
    key: PrivateKey


def dkimpy_headers(headers: Sequence[tuple[bytes, bytes]]) -> list[list[bytes]]:
    """(name, raw value with its leading space and CRLF folds) as dkimpy holds a parsed message's
    header fields: the value ends with CRLF."""
    return [[name.rstrip(), value + b"\r\n"] for name, value in headers]


def signature(
    signer: Signer,
    headers: list[list[bytes]],
    include: Sequence[str],
    bh: bytes,
    now: int | None = None,
) -> str:
    """The DKIM-Signature field value (no leading space; folds as LF+TAB) over `headers` (dkimpy's
    form) and the body hash `bh` (base64), by dkimpy."""
    algorithm = signer.key.algorithm.encode("ascii")
    d = dkim.DKIM(None, logger=_quiet, signature_algorithm=algorithm, linesep=b"\r\n")
    d.headers = headers
    d.hasher = dkim.HASH_ALGORITHMS[algorithm]
    names = tuple(name.encode("ascii") for name in include)
    fields = [
        (b"v", b"1"),
        (b"a", algorithm),
        (b"c", CANONICALIZATION),
        (b"d", signer.domain.encode("ascii")),
        (b"s", signer.selector.encode("ascii")),
        (b"t", str(int(time.time()) if now is None else now).encode("ascii")),
        (b"h", b" : ".join(names)),
        (b"bh", bh),
        (b"b", b"0" * 60),  # dkimpy's placeholder: b= folds onto its own line
    ]
    value: bytes = d.gen_header(fields, names, _POLICY, b"DKIM-Signature", signer.key.signer)
    return value.decode("ascii").rstrip("\r\n").replace("\r\n ", "\n\t")


def sign(
    signers: Sequence[Signer],
    headers: Sequence[tuple[bytes, bytes]],
    body: Iterable[bytes],
    now: int | None = None,
) -> list[tuple[str, str]]:
    """("DKIM-Signature", value) for each signer, in order, over the same headers and body."""
    names = [name.decode("utf-8", "surrogateescape") for name, _ in headers]
    include = header_list(names)
    bh = body_hash(body)
    parsed = dkimpy_headers(headers)
    return [("DKIM-Signature", signature(s, parsed, include, bh, now)) for s in signers]
