"""DKIM key files for the signing tests: PEM files as an operator has them (RSA PKCS#1 or PKCS#8,
Ed25519 PKCS#8), and the DNS records that publish them."""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

PKCS8 = serialization.PrivateFormat.PKCS8
PKCS1 = serialization.PrivateFormat.TraditionalOpenSSL


@dataclass(frozen=True)
class KeyFile:
    path: Path
    type: str  # rsa | ed25519
    public: str  # base64 of p=

    @property
    def record(self) -> str:
        return f"v=DKIM1; k={self.type}; p={self.public}"


def write_rsa(path: Path, bits: int = 2048, fmt: serialization.PrivateFormat = PKCS8) -> KeyFile:
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    _write(path, key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption()))
    der = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return KeyFile(path, "rsa", base64.b64encode(der).decode())


def write_ed25519(path: Path) -> KeyFile:
    key = ed25519.Ed25519PrivateKey.generate()
    _write(path, key.private_bytes(serialization.Encoding.PEM, PKCS8, serialization.NoEncryption()))
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return KeyFile(path, "ed25519", base64.b64encode(raw).decode())


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.chmod(path, 0o600)
