"""`quorum dkim keygen` and the record comparison behind `quorum dkim check` (the lookup itself
runs against a real NSD in tests/integration/test_signing_postfix.py)."""

from __future__ import annotations

import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from quorum.signing.cli import compare
from quorum.signing.keys import dns_record, load_key, txt_strings


def keygen(out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "quorum", "dkim", "keygen", "--domain", "Example.COM", "--out", str(out), *extra],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(("kind", "bits"), [("rsa", "2048"), ("rsa", "4096"), ("ed25519", "2048")])
def test_keygen_writes_a_private_key_0600_and_prints_the_record(tmp_path: Path, kind: str, bits: str) -> None:
    run = keygen(tmp_path, "--selector", "s2024", "--type", kind, "--bits", bits)
    assert run.returncode == 0, run.stderr
    path = tmp_path / "example.com.s2024.pem"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    key = load_key(str(path))
    assert key.type == kind and (kind == "ed25519" or key.bits == int(bits))
    line = next(x for x in run.stdout.splitlines() if x.startswith("s2024._domainkey.example.com. IN TXT ("))
    strings = re.findall(r'"([^"]*)"', line)
    assert all(len(s.encode()) <= 255 for s in strings)
    assert "".join(strings) == dns_record(kind, key.public)
    assert (len(strings) > 1) == (kind == "rsa")  # a 2048-bit RSA key's record is over 255 bytes
    assert f'key = "{path.resolve()}"' in run.stdout and 'domain = "example.com"' in run.stdout


def test_keygen_never_overwrites_and_checks_its_arguments(tmp_path: Path) -> None:
    assert keygen(tmp_path, "--selector", "s1", "--type", "ed25519").returncode == 0
    before = (tmp_path / "example.com.s1.pem").read_bytes()
    again = keygen(tmp_path, "--selector", "s1")
    assert again.returncode == 1 and "exists; a key is never overwritten" in again.stderr
    assert (tmp_path / "example.com.s1.pem").read_bytes() == before
    assert "is not a selector" in keygen(tmp_path, "--selector", "bad_one").stderr
    assert "use 1024 to 8192" in keygen(tmp_path, "--selector", "s9", "--bits", "512").stderr


def test_txt_strings_split_at_255_bytes() -> None:
    text = "v=DKIM1; k=rsa; p=" + "A" * 600
    assert [len(s) for s in txt_strings(text)] == [255, 255, len(text) - 510]
    assert "".join(txt_strings(text)) == text


def test_compare_says_match_mismatch_missing_or_revoked(tmp_path: Path) -> None:
    for selector, kind in (("r", "rsa"), ("e", "ed25519")):
        args = ["--domain", "a.test", "--selector", selector, "--type", kind, "--out", str(tmp_path)]
        subprocess.run([sys.executable, "-m", "quorum", "dkim", "keygen", *args], check=True, capture_output=True)
    rsa_key, ed_key = load_key(str(tmp_path / "a.test.r.pem")), load_key(str(tmp_path / "a.test.e.pem"))
    record = rsa_key.record()
    folded = record[:100] + " " + record[100:]  # whitespace inside p= is allowed
    assert compare(rsa_key, [folded]) == ("match", "")
    assert compare(rsa_key, ["v=spf1 -all", record]) == ("match", "")  # other TXT records at the name are ignored
    assert compare(ed_key, [ed_key.record()]) == ("match", "")
    assert compare(rsa_key, [])[0] == "missing"
    assert compare(rsa_key, ["v=spf1 -all"])[0] == "missing"
    assert compare(rsa_key, ["v=DKIM1; k=rsa; p="])[0] == "revoked"
    assert compare(rsa_key, [record.replace("p=MII", "p=MIJ")])[0] == "mismatch"
    assert compare(rsa_key, [f"v=DKIM1; k=ed25519; p={rsa_key.public}"]) == (
        "mismatch",
        "k=ed25519 is published, the key is rsa",
    )
    assert compare(ed_key, [f"v=DKIM1; p={ed_key.public}"])[0] == "mismatch"  # k= defaults to rsa
    assert compare(rsa_key, [record, record])[0] == "mismatch"  # two key records: ambiguous
