"""The signature step (OpenSSL's RSA, PyNaCl's Ed25519, Quorum's header canonicalization) makes the
DKIM-Signature dkimpy makes: for the same tags, byte for byte what `dkim.sign` writes (RSA PKCS#1
v1.5 and Ed25519 signatures are deterministic, so b= is equal too), on messages with folded header
fields, tabs, 8-bit bytes, repeated and absent fields; and Quorum's own signature (its tags) verifies
with dkimpy's verifier exactly when dkim.sign's does."""

from __future__ import annotations

import base64
import re

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.harness.dkim_keys import PKCS1, KeyFile, write_ed25519, write_rsa

from quorum.message import Message
from quorum.signing.dkimsign import (
    PLACEHOLDER,
    Signer,
    body_hash,
    field_value,
    header_list,
    relaxed_value,
    sign,
    signed_headers,
)
from quorum.signing.keys import generate, load_key

MESSAGES = {
    "folded": (
        b"Received: from client.example (client.example [192.0.2.1])\r\n\tby mx.example.net\r\n"
        b"From: Alice Example <alice@example.com>\r\n"
        b"To: Bob <bob@example.org>,\r\n\tCarol <carol@example.org>,\r\n  Dave   <dave@example.org>\r\n"
        b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?= and a long subject line that goes on\r\n and on \t \r\n"
        b"Date: Mon, 01 Jan 2024 12:00:00 +0000\r\n"
        b"Message-ID: <m1@example.com>\r\n"
        b"MIME-Version: 1.0\r\n"
        b'Content-Type: multipart/alternative;\r\n\tboundary="b1"\r\n'
        b"\r\n"
        b"--b1\r\nContent-Type: text/plain\r\n\r\nHello  Bob,\t\r\n\r\n--b1--\r\n\r\n\r\n"
    ),
    "8-bit": (
        b"From: =?utf-8?q?J=C3=BCrgen?= <juergen@example.com>\r\n"
        b"To: J\xc3\xbcrgen M\xc3\xbcller <jm@example.org>\r\n"  # raw UTF-8 in a signed field
        b"Cc: caf\xe9 <cafe@example.org>\r\n"  # raw Latin-1
        b"Cc:\tsecond\t\tcc <cc2@example.org>\r\n"
        b"Subject: Gr\xc3\xbc\xc3\x9fe aus K\xc3\xb6ln\r\n"
        b"Reply-To:   spaced@example.com   \r\n"
        b"X-Unsigned: \xff\xfe not in h=\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: 8bit\r\n"
        b"\r\n"
        b"Gr\xc3\xbc\xc3\x9fe,  \xe9t\xe9 \t\r\n"
    ),
    "sparse": b"From: a@example.com\r\nSubject:\r\n\r\n",  # no To/Date/Message-ID, an empty Subject, no body
    "references": (
        b"From: Alice <alice@example.com>\r\nTo: list@lists.example.org\r\nSubject: Re: the thread\r\n"
        b"In-Reply-To: <p1@example.org>\r\nReferences: <p0@example.org>\r\n <p1@example.org>\r\n"
        b"List-Id: <list.lists.example.org>\r\nList-Unsubscribe: <mailto:leave@lists.example.org>\r\n"
        b"Date: Tue, 02 Jan 2024 08:30:00 +0100\r\nMessage-ID: <r1@example.com>\r\n\r\n"
        + b"A line of the reply, quoting the thread.\r\n"
        * 200
    ),
}


@pytest.fixture(scope="module")
def key_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, KeyFile]:
    root = tmp_path_factory.mktemp("sign-keys")
    return {
        "rsa-2048": write_rsa(root / "rsa.pem", 2048),
        "rsa-1024-pkcs1": write_rsa(root / "rsa1024.pem", 1024, PKCS1),
        "ed25519": write_ed25519(root / "ed.pem"),
    }


def dkimpy_key(pem: bytes) -> bytes:
    """The key as dkim.sign takes it: the PEM for RSA, the raw seed in base64 for Ed25519."""
    key = serialization.load_pem_private_key(pem, None)
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        return pem
    seed = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    return base64.b64encode(seed)


_ED_PEM, _ED_KEY = generate("ed25519")  # for the property test (hypothesis takes no function fixtures)
_ED_SEED = dkimpy_key(_ED_PEM)


def dkim_sign_tags(theirs: bytes, algorithm: bytes, selector: bytes, include: list[str]) -> list[tuple[bytes, bytes]]:
    """The tags dkim.sign wrote into `theirs`, in its order (i= and q= included), b= a placeholder."""
    t = re.search(rb"[; ]t=(\d+);", theirs)
    bh = re.search(rb"[; ]bh=([A-Za-z0-9+/=]+);", theirs.replace(b"\r\n ", b""))
    assert t is not None and bh is not None, theirs
    return [
        (b"v", b"1"),
        (b"a", algorithm),
        (b"c", b"relaxed/relaxed"),
        (b"d", b"example.com"),
        (b"i", b"@example.com"),
        (b"q", b"dns/txt"),
        (b"s", selector),
        (b"t", t.group(1)),
        (b"h", b" : ".join(n.encode("ascii") for n in include)),
        (b"bh", bh.group(1)),
        (b"b", PLACEHOLDER),
    ]


def parsed(raw: bytes) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """(name, raw value) as the signing stage takes them from Quorum's message, and the body."""
    msg = Message.from_bytes(raw)
    try:
        with msg.body.reader() as f:
            body = f.read()
        return [(h.name.encode("utf-8", "surrogateescape"), h.raw_value) for h in msg.headers], body
    finally:
        msg.close()


def verified(raw: bytes, dns: dict[bytes, bytes]) -> bool:
    try:
        return bool(dkim.DKIM(raw, minkey=1024).verify(dnsfunc=lambda name, timeout=5: dns.get(name)))
    except dkim.DKIMException:
        return False


def with_field(value: str, raw: bytes) -> bytes:
    """The message as the receiver gets it: the field on top, its folds as CRLF + tab."""
    return b"DKIM-Signature: " + value.replace("\n", "\r\n").encode("ascii") + b"\r\n" + raw


@pytest.mark.parametrize("kind", ["rsa-2048", "rsa-1024-pkcs1", "ed25519"])
@pytest.mark.parametrize("name", sorted(MESSAGES))
def test_the_signature_is_dkim_signs_byte_for_byte(key_files: dict[str, KeyFile], kind: str, name: str) -> None:
    raw = MESSAGES[name]
    key = load_key(str(key_files[kind].path))
    headers, body = parsed(raw)
    include = header_list(n.decode("utf-8", "surrogateescape") for n, _ in headers)
    algorithm = key.algorithm.encode("ascii")
    theirs: bytes = dkim.sign(
        raw, b"s1", b"example.com", dkimpy_key(key_files[kind].path.read_bytes()),
        canonicalize=(b"relaxed", b"relaxed"), signature_algorithm=algorithm,
        include_headers=[n.encode("ascii") for n in include],
    )  # fmt: skip
    tags = dkim_sign_tags(theirs, algorithm, b"s1", include)
    assert (b"bh", body_hash([body])) in tags  # the streamed body hash is dkimpy's
    ours = field_value(key, signed_headers(headers, include), tags)
    assert b"DKIM-Signature: " + ours == theirs


@pytest.mark.parametrize("kind", ["rsa-2048", "ed25519"])
@pytest.mark.parametrize("name", sorted(MESSAGES))
def test_quorums_signature_verifies_as_dkim_signs_does(key_files: dict[str, KeyFile], kind: str, name: str) -> None:
    raw = MESSAGES[name]
    files = key_files[kind]
    key = load_key(str(files.path))
    dns = {b"s1._domainkey.example.com.": files.record.encode()}
    headers, body = parsed(raw)
    [(field, value)] = sign([Signer("example.com", "s1", key)], headers, [body], now=1_700_000_000)
    assert field == "DKIM-Signature" and "\r" not in value and " t=1700000000;" in value
    include = [n.encode("ascii") for n in header_list(n.decode("utf-8", "surrogateescape") for n, _ in headers)]
    theirs = dkim.sign(
        raw, b"s1", b"example.com", dkimpy_key(files.path.read_bytes()),
        canonicalize=(b"relaxed", b"relaxed"), signature_algorithm=key.algorithm.encode("ascii"),
        include_headers=include,
    )  # fmt: skip
    ours = with_field(value, raw)
    assert verified(ours, dns) and verified(theirs + raw, dns)
    # a signed field changed, a second From: added, the body changed: both fail alike
    for before, after in ((b"From: ", b"From: x"), (b"\r\n\r\n", b"\r\nFrom: m@example.com\r\n\r\n")):
        assert not verified(ours.replace(before, after, 1), dns) and not verified(
            (theirs + raw).replace(before, after, 1), dns
        )
    assert not verified(ours + b"appended\r\n", dns) and not verified(theirs + raw + b"appended\r\n", dns)
    # a field outside h= may change (a receiver's Received:, X-Quorum-*)
    assert verified(ours.replace(b"\r\n\r\n", b"\r\nX-Quorum-Verdict: clean\r\n\r\n", 1), dns)


FIELD_NAMES = st.sampled_from(
    ["From", "from", "FROM", "To", "Cc", "Subject", "Date", "Message-ID", "Reply-To", "Content-Type",
     "MIME-Version", "References", "List-Id", "Received", "X-Other", "Sender"]
)  # fmt: skip
# Header value bytes: spaces, tabs, folds (CRLF + space/tab), 8-bit bytes, a stray CR, punctuation.
VALUE = st.lists(
    st.sampled_from(
        [b" ", b"\t", b"  ", b"\r\n ", b"\r\n\t", b"a", b"Z", b"\xc3\xbc", b"\xff", b":", b";", b"\r", b"=", b"0"]
    ),
    max_size=20,
).map(b"".join)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(FIELD_NAMES, VALUE), min_size=1, max_size=12), st.binary(max_size=80))
def test_any_header_block_signs_as_dkimpy_signs_it(fields: list[tuple[str, bytes]], body: bytes) -> None:
    headers = [(b"From", b" a@example.com"), *((n.encode("ascii"), v) for n, v in fields)]
    raw = (
        b"".join(n + b":" + v + b"\r\n" for n, v in headers)
        + b"\r\n"
        + body.replace(b"\r", b"").replace(b"\n", b"\r\n")
    )
    include = header_list(n.decode("ascii") for n, _ in headers)
    theirs = dkim.sign(
        raw, b"e", b"example.com", _ED_SEED, canonicalize=(b"relaxed", b"relaxed"),
        signature_algorithm=b"ed25519-sha256", include_headers=[n.encode("ascii") for n in include],
    )  # fmt: skip
    tags = dkim_sign_tags(theirs, b"ed25519-sha256", b"e", include)
    assert b"DKIM-Signature: " + field_value(_ED_KEY, signed_headers(headers, include), tags) == theirs


def test_relaxed_values() -> None:
    assert relaxed_value(b" Alice <a@example.com>") == b"Alice <a@example.com>"
    assert relaxed_value(b" a,\r\n\tb \t c  \r\n ") == b"a, b c"
    assert relaxed_value(b"\t\xc3\xbc  \xff\t") == b"\xc3\xbc \xff"
    assert relaxed_value(b"") == b""


def test_b_must_be_the_last_tag(key_files: dict[str, KeyFile]) -> None:
    key = load_key(str(key_files["ed25519"].path))
    with pytest.raises(ValueError):
        field_value(key, b"", [(b"v", b"1"), (b"b", PLACEHOLDER), (b"bh", b"x")])
