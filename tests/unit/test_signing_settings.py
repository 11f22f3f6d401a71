"""`[signing]`: every key file is read and checked at load, and each problem names its entry."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from pydantic import TypeAdapter
from tests.harness.dkim_keys import PKCS1, KeyFile, write_ed25519, write_rsa

from quorum.assembly import parse_config
from quorum.config.fields import ConfigError
from quorum.signing.feature import TABLES
from quorum.signing.settings import SigningSettings


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("keys")
    found: dict[str, Any] = {
        "rsa": write_rsa(root / "rsa.pem", 1024),
        "rsa_pkcs1": write_rsa(root / "rsa1.pem", 1024, PKCS1),
        "ed": write_ed25519(root / "ed.pem"),
    }
    # cryptography refuses to make a key under 1024 bits; OpenSSL still does (and operators have them)
    short = root / "short.pem"
    subprocess.run(
        ["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:512", "-out", str(short)],
        check=True,
        capture_output=True,
    )
    found["short"] = short
    ec_key = ec.generate_private_key(ec.SECP256R1())
    (root / "ec.pem").write_bytes(
        ec_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    public = rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key()
    (root / "public.pem").write_bytes(
        public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    encrypted = ed25519.Ed25519PrivateKey.generate()
    (root / "encrypted.pem").write_bytes(
        encrypted.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    (root / "raw-seed.key").write_text("nWGxne/9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A=\n")  # dknewkey's Ed25519 form
    (root / "garbage.pem").write_text("-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n")
    found["root"] = root
    return found


def entry(key: Any, domain: str = "example.com", selector: str = "s1") -> dict[str, Any]:
    return {"domain": domain, "selector": selector, "key": str(key.path if isinstance(key, KeyFile) else key)}


def problems(signing: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config({"signing": signing})
    return info.value.problems


def test_rsa_and_ed25519_keys_load_and_keep_the_order(keys: dict[str, Any]) -> None:
    config = parse_config(
        {
            "signing": {
                "networks": ["10.0.0.0/8", "2001:db8::/32"],
                "keys": [
                    entry(keys["rsa"]),
                    entry(keys["ed"], selector="ed1"),
                    entry(keys["rsa_pkcs1"], domain="*.Example.ORG.", selector="Sub"),
                ],
            }
        }
    )
    s = config.feature("signing")
    assert isinstance(s, SigningSettings)
    assert s.sign == "authenticated" and s.on_failure == "tempfail" and s.log_interval == 3600.0
    assert [(k.domain, k.selector, k.key.type, k.key.algorithm) for k in s.keys] == [
        ("example.com", "s1", "rsa", "rsa-sha256"),
        ("example.com", "ed1", "ed25519", "ed25519-sha256"),
        ("*.example.org", "sub", "rsa", "rsa-sha256"),
    ]
    assert s.keys[0].key.public == keys["rsa"].public and s.keys[1].key.public == keys["ed"].public
    assert s.keys[2].signing_domain == "example.org" and s.keys[2].record_name() == "sub._domainkey.example.org"
    assert "signer" not in repr(s.keys[0].key) and "PRIVATE" not in repr(s)


def test_absent_table_is_off() -> None:
    assert parse_config({}).feature("signing") is None


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("missing.pem", "cannot read"),
        ("short", "RSA key of 512 bits; receivers ignore keys under 1024 bits"),
        ("ec.pem", "is an ECDSA key; DKIM signs with RSA (at least 1024 bits) or Ed25519"),
        ("public.pem", "holds a public key; give the private key"),
        ("encrypted.pem", "is encrypted (passphrase-protected)"),
        ("raw-seed.key", "is not a PEM file"),
        ("garbage.pem", "is not a readable PEM private key"),
    ],
)
def test_a_bad_key_file_is_named_by_its_entry(keys: dict[str, Any], name: str, expected: str) -> None:
    key = keys.get(name, keys["root"] / name)
    found = problems({"keys": [entry(keys["rsa"]), entry(key, selector="bad")]})
    assert len(found) == 1, found
    assert found[0].startswith("signing.keys[1].key: "), found
    assert expected in found[0], found


def test_a_key_the_quorum_user_cannot_read(keys: dict[str, Any]) -> None:
    """A key only root can read: check-config run as another user names the entry (as root, the
    test runs it as nobody; root itself reads every file)."""
    work = Path(tempfile.mkdtemp(prefix="quorum-signing-"))
    try:
        os.chmod(work, 0o755)
        path = work / "root-only.pem"
        path.write_bytes(keys["rsa"].path.read_bytes())
        os.chmod(path, 0o600 if os.geteuid() == 0 else 0)
        config = work / "q.toml"
        config.write_text(f'[signing]\n[[signing.keys]]\ndomain = "example.com"\nselector = "s1"\nkey = "{path}"\n')
        os.chmod(config, 0o644)
        as_other = {"user": "nobody"} if os.geteuid() == 0 else {}
        run = subprocess.run(
            [sys.executable, "-m", "quorum", "check-config", "-c", str(config)],
            capture_output=True,
            text=True,
            cwd="/",
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
            timeout=60,
            **as_other,  # type: ignore[call-overload]
        )
    finally:
        shutil.rmtree(work)
    assert run.returncode == 2, run.stdout + run.stderr
    assert "error: signing.keys[0].key: cannot read" in run.stderr and "Permission denied" in run.stderr


@pytest.mark.parametrize(
    ("signing", "expected"),
    [
        ({"keys": []}, "signing.keys: no key: list at least one [[signing.keys]] entry"),
        ({"keys": [{"domain": "example.com", "selector": "s1"}]}, "signing.keys[0].key: missing"),
        ({"keys": [{"domain": "example..com", "selector": "s1", "key": "x"}]}, "signing.keys[0].domain: "),
        ({"keys": [{"domain": "*.com", "selector": "s1", "key": "x"}]}, "signing.keys[0].domain: "),
        ({"keys": [{"domain": "example.com", "selector": "s_1", "key": "x"}]}, "signing.keys[0].selector: "),
        ({"sign": "always"}, "signing.sign: must be one of authenticated | off"),
        ({"on_failure": "reject"}, "signing.on_failure: must be one of tempfail | accept"),
        ({"networks": ["10.0.0.1/8"]}, "signing.networks[0]: '10.0.0.1/8' is not an address or network"),
        ({"selector": "s1"}, "signing.selector: unknown key"),
        ({"log_interval": "0s"}, "signing.log_interval: must be at least 1.0"),
    ],
)
def test_each_bad_value_names_its_key(keys: dict[str, Any], signing: dict[str, Any], expected: str) -> None:
    signing = {"keys": [entry(keys["rsa"])], **signing}
    found = problems(signing)
    assert any(p.startswith(expected) for p in found), found


def test_two_keys_under_one_selector_are_refused(keys: dict[str, Any]) -> None:
    found = problems({"keys": [entry(keys["rsa"]), entry(keys["ed"], domain="*.example.com")]})
    assert found == [
        "signing.keys[1].selector: signing.keys[0] signs d=example.com with selector 's1' and another key: one "
        "selector names one DNS record, so one key; give this key its own selector"
    ]
    assert problems({"keys": [entry(keys["rsa"]), entry(keys["rsa"])]}) == [
        "signing.keys[1]: the same entry as signing.keys[0]; remove one"
    ]
    # one key (one record) for the domain and its subdomains is fine
    both = parse_config({"signing": {"keys": [entry(keys["rsa"]), entry(keys["rsa"], domain="*.example.com")]}})
    assert len(both.feature("signing").keys) == 2


def test_a_key_others_can_read_is_a_warning(keys: dict[str, Any], tmp_path: Path) -> None:
    path = tmp_path / "open.pem"
    path.write_bytes(keys["rsa"].path.read_bytes())
    os.chmod(path, 0o644)
    config = parse_config({"signing": {"keys": [entry(path)], "networks": ["0.0.0.0/0"]}})
    assert any(w.startswith("signing.keys[0].key: ") and "mode 0644" in w for w in config.warnings)
    assert any(w.startswith("signing.networks: 0.0.0.0/0 signs mail from every client") for w in config.warnings)


def test_sign_off_builds_no_stage(keys: dict[str, Any]) -> None:
    from quorum.assembly import build_stages

    config = parse_config({"signing": {"sign": "off", "keys": [entry(keys["rsa"])]}})
    assert not [s for s in build_stages(config) if s.name == "signing"]
    on = parse_config({"signing": {"keys": [entry(keys["rsa"])]}})
    assert [s.name for s in build_stages(on)].count("signing") == 1


def test_the_table_has_a_json_schema() -> None:
    schema = TypeAdapter(TABLES["signing"]).json_schema()
    key = schema["$defs"]["KeyEntry"]["properties"]["key"]
    assert key["type"] == "string"


def test_check_config_names_the_entry(keys: dict[str, Any], tmp_path: Path) -> None:
    config = tmp_path / "q.toml"
    config.write_text(
        f'[signing]\n[[signing.keys]]\ndomain = "example.com"\nselector = "s1"\nkey = "{keys["rsa"].path}"\n'
        f'[[signing.keys]]\ndomain = "example.com"\nselector = "s2"\nkey = "{keys["short"]}"\n'
    )
    run = subprocess.run(
        [sys.executable, "-m", "quorum", "check-config", "-c", str(config)], capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 2
    assert "error: signing.keys[1].key: " in run.stderr and "512 bits" in run.stderr


def test_an_ed25519_key_without_pynacl_is_refused_by_name(
    keys: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Quorum signs Ed25519 through PyNaCl; where it is missing the key is refused at load, not at the
    first message."""
    monkeypatch.setitem(sys.modules, "nacl.signing", None)
    found = problems({"keys": [entry(keys["rsa"]), entry(keys["ed"], selector="ed1")]})
    assert len(found) == 1 and found[0].startswith("signing.keys[1].key: ") and "pip install pynacl" in found[0]
