"""The `test.` zone behind the sender-authentication tests: SPF, DKIM keys, DMARC and DNSBL.

One zone for the whole `test.` TLD, so every name below it gets an authoritative answer (NXDOMAIN
instead of REFUSED) - the DMARC tree walk asks `_dmarc.test` too. DKIM keys are made at test time.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from tests.harness.dns import zone_text

ORIGIN = "test"

# Client addresses presented through XCLIENT (documentation ranges, never loopback).
CLIENT_GOOD = "192.0.2.10"  # authorised by the SPF records below
CLIENT_BAD = "198.51.100.20"  # authorised by nobody
CLIENT_LISTED = "203.0.113.66"  # listed in reject.bl.test (127.0.0.2) and score.bl.test
CLIENT_REFUSED = "203.0.113.77"  # reject.bl.test answers 127.255.255.254 ("query refused")
CLIENT_OTHER_CODE = "203.0.113.88"  # listed with 127.0.0.9 only


@dataclass(frozen=True)
class DkimKey:
    domain: str
    selector: str
    private_pem: bytes  # PKCS#1, as dkimpy signs with
    public_b64: str  # SubjectPublicKeyInfo, as published in p=

    @property
    def record(self) -> str:
        return f"v=DKIM1; k=rsa; p={self.public_b64}"

    def sign(
        self,
        message: bytes,
        canonicalize: tuple[bytes, bytes] = (b"relaxed", b"relaxed"),
        headers: list[bytes] | None = None,
    ) -> bytes:
        """`message` with a DKIM-Signature header on top (CRLF line ends, as on the wire)."""
        message = message.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        sig = dkim.sign(
            message,
            self.selector.encode(),
            self.domain.encode(),
            self.private_pem,
            canonicalize=canonicalize,
            include_headers=headers,
            linesep=b"\r\n",
        )
        return sig + message


def make_key(domain: str, selector: str, bits: int = 2048) -> DkimKey:
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )
    der = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return DkimKey(domain, selector, pem, base64.b64encode(der).decode())


def make_keys() -> dict[str, DkimKey]:
    """The keys the zone publishes, by domain."""
    return {
        "aligned.test": make_key("aligned.test", "sel1"),
        "dkimonly.test": make_key("dkimonly.test", "s2024"),
        "thirdparty.test": make_key("thirdparty.test", "tp"),
        "sub.org.test": make_key("sub.org.test", "sub"),
        "nodmarc.test": make_key("nodmarc.test", "k1"),
    }


def records(keys: dict[str, DkimKey]) -> list[tuple[str, str, str]]:
    rr: list[tuple[str, str, str]] = []

    def add(name: str, rtype: str, rdata: str) -> None:
        rr.append((name.removesuffix(".test") if name != "test" else "@", rtype, rdata))

    good = "ip4:192.0.2.0/24"
    # SPF
    add("spf-pass.test", "TXT", f"v=spf1 {good} -all")
    add("spf-fail.test", "TXT", "v=spf1 ip4:198.18.0.0/15 -all")
    add("spf-soft.test", "TXT", "v=spf1 ip4:198.18.0.0/15 ~all")
    add("spf-neutral.test", "TXT", "v=spf1 ?all")
    add("spf-none.test", "A", "192.0.2.1")
    add("spf-loop.test", "TXT", "v=spf1 include:spf-loop.test -all")
    add("spf-many.test", "TXT", "v=spf1 " + " ".join(f"a:h{i}.spf-many.test" for i in range(1, 12)) + " -all")
    for i in range(1, 12):
        add(f"h{i}.spf-many.test", "A", f"198.18.0.{i}")
    add("spf-include.test", "TXT", "v=spf1 include:spf-pass.test -all")
    add("spf-mx.test", "TXT", "v=spf1 mx -all")
    add("spf-mx.test", "MX", "10 mx1.spf-mx.test.")
    add("mx1.spf-mx.test", "A", "192.0.2.10")
    add("helo.spf-pass.test", "TXT", f"v=spf1 {good} -all")
    add("spf-syntax.test", "TXT", "v=spf1 ip4:192.0.2.0/24 bogus:x -all")
    add("spf-temp.test", "TXT", f"v=spf1 {good} -all")  # asked for only while the server is down
    add("spf-void.test", "TXT", "v=spf1 a:n1.spf-void.test a:n2.spf-void.test a:n3.spf-void.test -all")

    # DKIM keys
    for key in keys.values():
        add(f"{key.selector}._domainkey.{key.domain}", "TXT", key.record)
    add("revoked._domainkey.aligned.test", "TXT", "v=DKIM1; k=rsa; p=")
    add("garbage._domainkey.aligned.test", "TXT", "v=DKIM1; k=rsa; p=bm90IGEga2V5")

    # DMARC: aligned.test passes by SPF and DKIM, p=reject
    add("aligned.test", "TXT", f"v=spf1 {good} -all")
    add("aligned.test", "MX", "10 mx.aligned.test.")
    add("mx.aligned.test", "A", "192.0.2.10")
    add("_dmarc.aligned.test", "TXT", "v=DMARC1; p=reject; rua=mailto:dmarc@aligned.test")
    add("bounce.aligned.test", "TXT", f"v=spf1 {good} -all")  # relaxed SPF alignment
    add("dkimonly.test", "A", "192.0.2.1")
    add("_dmarc.dkimonly.test", "TXT", "v=DMARC1; p=reject; adkim=s")
    add("reject.test", "TXT", f"v=spf1 {good} -all")
    add("_dmarc.reject.test", "TXT", "v=DMARC1; p=reject")
    add("quarantine.test", "TXT", f"v=spf1 {good} -all")
    add("_dmarc.quarantine.test", "TXT", "v=DMARC1; p=quarantine")
    add("none.test", "TXT", f"v=spf1 {good} -all")
    add("_dmarc.none.test", "TXT", "v=DMARC1; p=none")
    add("testing.test", "TXT", f"v=spf1 {good} -all")
    add("_dmarc.testing.test", "TXT", "v=DMARC1; p=reject; t=y")
    add("strict.test", "TXT", f"v=spf1 {good} -all")
    add("mail.strict.test", "TXT", f"v=spf1 {good} -all")
    add("_dmarc.strict.test", "TXT", "v=DMARC1; p=reject; aspf=s")
    add("multi.test", "A", "192.0.2.1")
    add("_dmarc.multi.test", "TXT", "v=DMARC1; p=reject")
    add("_dmarc.multi.test", "TXT", "v=DMARC1; p=none")
    # org.test: p=none for itself, sp=reject for existing subdomains, np=quarantine for the rest
    add("org.test", "TXT", f"v=spf1 {good} -all")
    add("_dmarc.org.test", "TXT", "v=DMARC1; p=none; sp=reject; np=quarantine")
    add("sub.org.test", "A", "192.0.2.1")
    add("sub.org.test", "TXT", "v=spf1 ip4:198.18.0.0/15 -all")
    add("a.b.c.d.e.org.test", "A", "192.0.2.1")
    # A subdomain with its own record: relaxed alignment to a sibling still works through org.test
    add("own.org.test", "A", "192.0.2.1")
    add("_dmarc.own.org.test", "TXT", "v=DMARC1; p=reject")
    # psd.test acts as a public suffix: orgs below it are one label down
    add("_dmarc.psd.test", "TXT", "v=DMARC1; p=reject; psd=y")
    add("shop.psd.test", "A", "192.0.2.1")
    add("mail.shop.psd.test", "TXT", f"v=spf1 {good} -all")
    add("other.psd.test", "TXT", f"v=spf1 {good} -all")
    add("nodmarc.test", "TXT", f"v=spf1 {good} -all")
    add("thirdparty.test", "TXT", f"v=spf1 {good} -all")

    # DNSBL
    add("66.113.0.203.reject.bl.test", "A", "127.0.0.2")
    add("66.113.0.203.reject.bl.test", "TXT", "listed for testing")
    add("77.113.0.203.reject.bl.test", "A", "127.255.255.254")
    add("88.113.0.203.reject.bl.test", "A", "127.0.0.9")
    add("66.113.0.203.score.bl.test", "A", "127.0.0.4")
    add("88.113.0.203.bogus.bl.test", "A", "192.0.2.99")
    return rr


def zones(keys: dict[str, DkimKey]) -> dict[str, str]:
    return {ORIGIN: zone_text(ORIGIN, records(keys), ttl=60)}


def message(
    from_addr: str,
    to: str = "user@rcpt.test",
    subject: str = "Hello",
    body: bytes = b"Hello,\r\n\r\nthis is a test.\r\n",
    extra: list[bytes] | None = None,
) -> bytes:
    head = [
        f"From: Sender <{from_addr}>".encode(),
        f"To: <{to}>".encode(),
        f"Subject: {subject}".encode(),
        b"Date: Mon, 01 Jan 2024 12:00:00 +0000",
        f"Message-ID: <{abs(hash((from_addr, subject, body)))}@quorum.test>".encode(),
        b"MIME-Version: 1.0",
        b"Content-Type: text/plain; charset=utf-8",
        *(extra or []),
    ]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


# Uncooperative upper levels (DMARC defect 4): NSD serves `bank.<tld>` and `evil.<tld>` but not `<tld>` itself,
# so `_dmarc.refused` is answered REFUSED, and `broken` is a zone that fails to load, answered SERVFAIL.
UNCOOPERATIVE_TLDS = ("refused", "broken")
BROKEN_ZONE = "this is not a zone file\n"


def uncooperative_zones() -> dict[str, str]:
    zones = {"broken": BROKEN_ZONE}
    for tld in UNCOOPERATIVE_TLDS:
        zones[f"bank.{tld}"] = zone_text(
            f"bank.{tld}",
            [
                ("@", "TXT", "v=spf1 ip4:192.0.2.0/24 -all"),
                ("_dmarc", "TXT", "v=DMARC1; p=reject"),
                ("mail", "TXT", "v=spf1 ip4:192.0.2.0/24 -all"),
            ],
            ttl=60,
        )
        zones[f"evil.{tld}"] = zone_text(f"evil.{tld}", [("@", "TXT", f"v=spf1 ip4:{CLIENT_BAD} -all")], ttl=60)
    return zones


# Attacker-sized RSA keys (issue 17, item 2): no private key is needed, only a record whose arithmetic
# would be expensive. Verification must be refused before any pow() is attempted.


def _der(tag: int, body: bytes) -> bytes:
    n = len(body)
    if n < 0x80:
        length = bytes([n])
    else:
        raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
        length = bytes([0x80 | len(raw)]) + raw
    return bytes([tag]) + length + body


def _der_int(value: int) -> bytes:
    return _der(0x02, value.to_bytes(value.bit_length() // 8 + 1, "big"))


def spki_der(modulus: int, exponent: int) -> bytes:
    """A DER SubjectPublicKeyInfo (rsaEncryption) for any modulus and exponent."""
    rsa_key = _der(0x30, _der_int(modulus) + _der_int(exponent))
    algorithm = _der(0x30, _der(0x06, bytes.fromhex("2a864886f70d010101")) + _der(0x05, b""))
    return _der(0x30, algorithm + _der(0x03, b"\x00" + rsa_key))


def odd_number(bits: int, seed: int) -> int:
    """A deterministic odd number of exactly `bits` bits."""
    import random

    return random.Random(seed).getrandbits(bits) | (1 << (bits - 1)) | 1


def hostile_key_record(modulus_bits: int, exponent: int | None = None, seed: int = 17) -> str:
    """A DKIM key record with a `modulus_bits` modulus and `exponent` (default: a random odd number as
    large as the modulus, the shape that costs dkimpy's pure-Python pow() seconds per signature)."""
    n = odd_number(modulus_bits, seed)
    e = exponent if exponent is not None else odd_number(modulus_bits, seed + 1) % n
    return f"v=DKIM1; k=rsa; p={base64.b64encode(spki_der(n, e)).decode()}"
