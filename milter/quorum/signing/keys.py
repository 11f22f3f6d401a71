"""DKIM private keys: read from PEM files (RSA, Ed25519), made (`quorum dkim keygen`), and the
public half as the DNS TXT record publishes it (`p=`).

A key file is read and checked once, at config load (every problem names the file and what is
wrong with it), and kept ready to sign (`PrivateKey.sign`, the PEM is never parsed per message):
RSA as OpenSSL's key (through `cryptography`: RSASSA-PKCS1-v1_5 with SHA-256, blinded and
constant-time, about 0.3 ms per RSA-2048 signature with the GIL released, where dkimpy's
pure-Python RSA took 6 ms holding it), Ed25519 as a PyNaCl (libsodium) signing key made from the
PKCS#8 seed (about 17 us per signature; OpenSSL's Ed25519 takes about 29 us). dkimpy's own key
reading takes Ed25519 keys only as raw base64 seeds; PEM is what `openssl genpkey` and every other
tool write.
"""

from __future__ import annotations

import base64
import functools
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from cryptography.hazmat.primitives.serialization import load_pem_private_key

Algorithm = Literal["rsa-sha256", "ed25519-sha256"]
KeyType = Literal["rsa", "ed25519"]
MIN_RSA_BITS = 1024
MAX_RSA_BITS = 8192
MAX_KEY_FILE = 64 * 1024  # a PEM private key is a few KB; anything larger is not one
_PKCS1V15 = padding.PKCS1v15()
_SHA256_DIGEST = Prehashed(hashes.SHA256())  # the header hash is computed once, by the caller


class KeyProblem(ValueError):
    """A key file that cannot be used; the message says why and how to fix it."""


@dataclass(frozen=True)
class PrivateKey:
    """One loaded signing key. `signer` signs a SHA-256 digest with it; never shown (repr hides it)."""

    path: str
    type: KeyType
    bits: int  # RSA modulus size; 256 for Ed25519
    public: str  # base64 of what `p=` publishes: SubjectPublicKeyInfo DER (RSA), the raw 32 bytes (Ed25519)
    signer: Callable[[bytes], bytes] = field(repr=False, compare=False)

    @property
    def algorithm(self) -> Algorithm:
        return "rsa-sha256" if self.type == "rsa" else "ed25519-sha256"

    def sign(self, digest: bytes) -> bytes:
        """The signature (b=, before base64) over `digest`, the SHA-256 of the canonicalized header
        fields: rsa-sha256 is RSASSA-PKCS1-v1_5 with SHA-256 (RFC 6376 3.3.1, RFC 8017 8.2.1; the
        digest is not hashed again), ed25519-sha256 is PureEdDSA over the digest itself (RFC 8463 3)."""
        return self.signer(digest)

    def record(self) -> str:
        """The TXT record's text (before splitting into 255-byte strings)."""
        return dns_record(self.type, self.public)

    def __repr__(self) -> str:
        return f"PrivateKey({self.path!r}, {self.type}, {self.bits} bits)"


def dns_record(key_type: str, public: str) -> str:
    return f"v=DKIM1; k={key_type}; p={public}"


def load_key(path: str) -> PrivateKey:
    """The key in `path`; KeyProblem saying what is wrong (unreadable, not PEM, too short, wrong type)."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_KEY_FILE + 1)
    except OSError as exc:
        raise KeyProblem(
            f"cannot read {path!r}: {exc.strerror or exc}; check the path and that user quorum can read it"
        ) from None
    if len(data) > MAX_KEY_FILE:
        raise KeyProblem(f"{path!r} is larger than {MAX_KEY_FILE} bytes: not a PEM private key")
    return parse_key(data, path)


def parse_key(data: bytes, path: str = "<key>") -> PrivateKey:
    if b"-----BEGIN" not in data:
        raise KeyProblem(
            f"{path!r} is not a PEM file (no -----BEGIN line); give a PEM private key "
            "(`quorum dkim keygen` writes one; a raw base64 Ed25519 seed as dkimpy's dknewkey writes is not accepted)"
        )
    if b"PUBLIC KEY-----" in data and b"PRIVATE KEY-----" not in data:
        raise KeyProblem(f"{path!r} holds a public key; give the private key (the public one goes in DNS)")
    try:
        key = load_pem_private_key(data, password=None)
    except TypeError:
        raise KeyProblem(
            f"{path!r} is encrypted (passphrase-protected); Quorum needs it unencrypted (mode 0600)"
        ) from None
    except Exception as exc:  # noqa: BLE001 - ValueError, UnsupportedAlgorithm, ...: all mean a bad key
        raise KeyProblem(f"{path!r} is not a readable PEM private key ({_reason(exc)})") from None
    if isinstance(key, rsa.RSAPrivateKey):
        return _rsa(key, path)
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return _ed25519(key, path)
    raise KeyProblem(f"{path!r} is {_kind(key)} key; DKIM signs with RSA (at least 1024 bits) or Ed25519")


def _kind(key: object) -> str:
    from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, x448, x25519

    kinds: tuple[tuple[type, str], ...] = (
        (ec.EllipticCurvePrivateKey, "an ECDSA"),
        (dsa.DSAPrivateKey, "a DSA"),
        (ed448.Ed448PrivateKey, "an Ed448"),
        (x25519.X25519PrivateKey, "an X25519"),
        (x448.X448PrivateKey, "an X448"),
    )
    return next((name for cls, name in kinds if isinstance(key, cls)), "another kind of")


def _reason(exc: Exception) -> str:
    text = str(exc).split("\n", 1)[0].strip()
    return text[:120] or type(exc).__name__


def _rsa(key: rsa.RSAPrivateKey, path: str) -> PrivateKey:
    bits = key.key_size
    if bits < MIN_RSA_BITS:
        raise KeyProblem(
            f"{path!r} is an RSA key of {bits} bits; receivers ignore keys under {MIN_RSA_BITS} bits "
            "(RFC 8301): make a 2048-bit key (`quorum dkim keygen --bits 2048`)"
        )
    if bits > MAX_RSA_BITS:
        raise KeyProblem(f"{path!r} is an RSA key of {bits} bits; use at most {MAX_RSA_BITS} (2048 is usual)")
    signer = functools.partial(key.sign, padding=_PKCS1V15, algorithm=_SHA256_DIGEST)
    spki = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return PrivateKey(path, "rsa", bits, base64.b64encode(spki).decode("ascii"), signer)


def _ed25519(key: ed25519.Ed25519PrivateKey, path: str) -> PrivateKey:
    try:
        import nacl.signing
    except ImportError:
        raise KeyProblem(
            f"{path!r} is an Ed25519 key: Quorum signs Ed25519 with PyNaCl, which is not installed (pip install pynacl)"
        ) from None
    seed = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    signing_key = nacl.signing.SigningKey(seed)

    def signer(digest: bytes) -> bytes:
        return bytes(signing_key.sign(digest).signature)

    return PrivateKey(path, "ed25519", 256, base64.b64encode(raw).decode("ascii"), signer)


def generate(key_type: KeyType, bits: int = 2048) -> tuple[bytes, PrivateKey]:
    """A new key: its PEM (PKCS#8, unencrypted) and the loaded key."""
    key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
    if key_type == "rsa":
        key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    else:
        key = ed25519.Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return pem, parse_key(pem, "<new key>")


def write_private(path: str, pem: bytes, owner: tuple[int, int] | None = None) -> None:
    """`pem` in a new file `path`, mode 0600 from the start (never readable by others, not even
    briefly); an existing file is never overwritten (FileExistsError)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)  # whatever the umask
        if owner is not None:
            os.fchown(fd, *owner)
        os.write(fd, pem)
        os.fsync(fd)
    finally:
        os.close(fd)


def txt_strings(text: str, size: int = 255) -> list[str]:
    """The record's text as DNS character-strings of at most `size` bytes (RFC 1035: 255)."""
    raw = text.encode("ascii")
    return [raw[i : i + size].decode("ascii") for i in range(0, len(raw), size)] or [""]


def zone_line(selector: str, domain: str, record: str) -> str:
    """`S._domainkey.D. IN TXT ( "..." "..." )`, as a zone file takes it."""
    strings = " ".join(f'"{s}"' for s in txt_strings(record))
    return f"{selector}._domainkey.{domain}. IN TXT ( {strings} )"


def parse_record(text: str) -> dict[str, str]:
    """A DKIM key record's tags (RFC 6376 3.6.1): `v=DKIM1; k=rsa; p=...` -> {"v": ..., "k": ..., "p": ...}."""
    tags: dict[str, str] = {}
    for part in text.split(";"):
        name, sep, value = part.partition("=")
        if sep:
            tags.setdefault(name.strip().lower(), "".join(value.split()))
    return tags
