"""Issue 19, keys outside the config file: `[signing] store = "redis"` against a real redis-server
(keys written by `quorum dkim keygen --store redis`, read when a domain's mail is signed), and a
tenant's own keys (`[domains."d".signing]`). Every signature is verified by dkimpy against the
record the command printed."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dkim
import pytest
from tests.harness.dkim_keys import write_rsa
from tests.harness.redis_server import RedisAuth, RedisServer

from quorum.assembly import build_pipeline, load_config
from quorum.message import Envelope, Message
from quorum.pipeline import amend
from quorum.pipeline.amend import FinalMessage
from quorum.pipeline.output import Edits
from quorum.pipeline.pipeline import Pipeline
from quorum.pipeline.stages import Action
from quorum.pipeline.transaction import Connection, Transaction

pytestmark = pytest.mark.integration


def message(sender: str) -> bytes:
    return (
        f"From: Alice <{sender}>\r\nTo: bob@example.org\r\nSubject: from redis\r\n"
        "Date: Mon, 07 Dec 2026 12:00:00 +0000\r\nMessage-ID: <r1@example.com>\r\n\r\nHello.\r\n"
    ).encode()


@pytest.fixture(scope="module")
def redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server: Any = RedisServer(tmp_path_factory.mktemp("signing-redis"), auth=RedisAuth()).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def config_path(redis: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("signing-redis-config")
    tenant_key = write_rsa(root / "tenant.t1.pem", 2048)
    (root / "tenant.record").write_text(tenant_key.record)
    path = root / "quorum.toml"
    path.write_text(
        f'[redis]\nurl = "{redis.url}"\n\n[signing]\nstore = "redis"\nrefresh = "1s"\n\n'
        f'[tenants]\n\n[domains."tenant.example".signing]\nkeys = [{{ selector = "t1", key = "{tenant_key.path}" }}]\n'
    )
    return path


def keygen(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "quorum", "dkim", "keygen", "-c", str(config), "--store", "redis", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def published(output: str) -> str:
    """The record text from keygen's zone line (its strings joined)."""
    line = next(line for line in output.splitlines() if "IN TXT" in line)
    return "".join(re.findall(r'"([^"]*)"', line))


def sign(pipeline: Pipeline, raw: bytes) -> tuple[bytes, list[str], Edits]:
    env = Envelope("198.51.100.7", "c.example", "c.example", "alice@example.com", ["bob@example.org"])
    env.macros["{auth_authen}"] = "alice"
    txn = Transaction(Connection(env.client_ip), env, policy_of=pipeline.tenants.policy_for)
    msg = Message.from_bytes(raw, env)
    out, notes = amend.run(pipeline.amenders, txn, msg, Edits(Action.ACCEPT))
    return b"".join(FinalMessage(msg, out).chunks()), notes, out


def verifies(raw: bytes, records: dict[str, str]) -> bool:
    def txt(name: bytes, timeout: float = 5) -> bytes:
        return records[name.decode().rstrip(".")].encode()

    return bool(dkim.verify(raw, dnsfunc=txt))


def test_a_key_made_into_redis_signs_that_domains_mail(config_path: Path) -> None:
    made = keygen(config_path, "--domain", "example.com", "--selector", "r1")
    assert made.returncode == 0, made.stderr
    assert "stored 2048-bit RSA key in Redis: quorum:dkim:example.com field r1" in made.stdout
    again = keygen(config_path, "--domain", "example.com", "--selector", "r1")
    assert again.returncode == 1 and "never overwritten" in again.stderr
    pipeline = build_pipeline(load_config(config_path))
    try:
        raw, notes, _ = sign(pipeline, message("alice@example.com"))
        assert notes == ["signing: signed d=example.com s=r1 a=rsa-sha256"], notes
        assert verifies(raw, {"r1._domainkey.example.com": published(made.stdout)})
        _, notes, _ = sign(pipeline, message("alice@nokey.example"))
        assert notes == ["signing: not signed: no key for nokey.example"]
    finally:
        pipeline.close()


def test_a_wildcard_key_in_redis_signs_subdomains(config_path: Path) -> None:
    made = keygen(config_path, "--domain", "*.corp.example", "--selector", "w1", "--type", "ed25519")
    assert made.returncode == 0, made.stderr
    pipeline = build_pipeline(load_config(config_path))
    try:
        raw, notes, _ = sign(pipeline, message("alice@eu.corp.example"))
        assert notes == ["signing: signed d=corp.example s=w1 a=ed25519-sha256"], notes
        assert verifies(raw, {"w1._domainkey.corp.example": published(made.stdout)})
    finally:
        pipeline.close()


def test_a_tenants_own_key_signs_its_mail(config_path: Path) -> None:
    pipeline = build_pipeline(load_config(config_path))
    try:
        raw, notes, _ = sign(pipeline, message("alice@tenant.example"))
        assert notes == ["signing: signed d=tenant.example s=t1 a=rsa-sha256"], notes
        record = (config_path.parent / "tenant.record").read_text()
        assert verifies(raw, {"t1._domainkey.tenant.example": record})
    finally:
        pipeline.close()


def test_redis_down_follows_on_failure(config_path: Path, redis: RedisServer) -> None:
    pipeline = build_pipeline(load_config(config_path))
    redis.stop()
    try:
        _, notes, out = sign(pipeline, message("alice@other.example"))
        assert out.action is Action.TEMPFAIL and out.reply is not None and out.reply.code == "451"
        assert "signing failed (KeysUnavailable" in notes[0]
    finally:
        pipeline.close()
        redis.start()


def test_dkim_check_covers_redis_and_tenant_keys(config_path: Path, redis: RedisServer, tmp_path: Path) -> None:
    from tests.harness.dns import DnsServer, zone_text

    made = keygen(config_path, "--domain", "check.example", "--selector", "c1")
    assert made.returncode == 0, made.stderr
    tenant_record = (config_path.parent / "tenant.record").read_text()
    other = write_rsa(tmp_path / "other.pem", 2048)  # published for tenant.example instead: a mismatch
    zones = {
        "check.example": zone_text("check.example", [("c1._domainkey", "TXT", published(made.stdout))]),
        "tenant.example": zone_text("tenant.example", [("t1._domainkey", "TXT", other.record)]),
    }
    dns = DnsServer(tmp_path / "nsd", zones).start()
    try:
        text = config_path.read_text() + f'\n[dns]\nnameservers = ["127.0.0.1"]\nport = {dns.port}\ntimeout = 2\n'
        checked = tmp_path / "check.toml"
        checked.write_text(text)

        def dkim_check(*extra: str) -> subprocess.CompletedProcess[str]:
            command = [sys.executable, "-m", "quorum", "dkim", "check", "-c", str(checked), *extra]
            return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)

        ok = dkim_check("--domain", "check.example")
        assert ok.returncode == 0 and "check.example s=c1" in ok.stdout and ": match" in ok.stdout, ok
        bad = dkim_check("--domain", "tenant.example")
        assert bad.returncode == 1 and ": mismatch" in bad.stdout, bad
        assert tenant_record != other.record
        everything = dkim_check("--json")
        domains = {entry["domain"] for entry in __import__("json").loads(everything.stdout)}
        assert {"check.example", "tenant.example"} <= domains  # earlier tests restarted Redis (no persistence)
    finally:
        dns.stop()
