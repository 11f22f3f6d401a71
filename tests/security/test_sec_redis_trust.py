"""Issue 17 item 8: Redis is not trusted blindly.

Through real Postfix -> `quorum run` -> real clamd, with the verdict cache in a real Redis that
requires an ACL user and password (and one that speaks TLS only, with a CA made at test time). As
an attacker with write access to Redis would, the test computes EICAR's cache key exactly as the
cache does (clamd's VERSION and the SHA-256 of the decoded body) and plants a `clean` entry there:
EICAR must still be refused 554 and the planted entry counted as forged. A genuine entry is still
used (a Redis hit, no second scan); a wrong password costs the cache, not the mail; check-config
warns about a Redis without authentication.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.conftest import MailStack
from tests.harness.clamd import Clamd
from tests.harness.messages import EICAR
from tests.harness.ports import free_port
from tests.harness.quorum import QuorumProcess, engine_table
from tests.harness.redis_server import RedisAuth, RedisServer, RedisTLS, make_tls
from tests.harness.smtp_client import send

from quorum.message import Message
from quorum.verdictcache.content import content_of

pytestmark = pytest.mark.integration

SENDER = "alice@example.com"
RCPT = "bob@example.org"
PREFIX = "quorum:vc:{vc}:"


def message(body: bytes) -> bytes:
    token = uuid.uuid4().hex
    return (
        f"From: alice@example.com\r\nTo: bob@example.org\r\nSubject: t {token}\r\n"
        f"Message-ID: <{token}@example.com>\r\n\r\n"
    ).encode() + body


def cache_key(clamd: Clamd, raw: bytes) -> str:
    """The Redis key of a single-part message's verdict, as the cache computes it."""
    version = clamd.command("VERSION").strip()
    content = content_of(Message.from_bytes(raw), 100)
    assert content is not None and content.single is not None
    return f"{PREFIX}clamav:{hashlib.sha256(version.encode()).hexdigest()[:16]}:{content.single}"


def metric(port: int, result: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    m = re.search(r'^quorum_verdict_cache_entries_total\{result="' + result + r'"\} (\S+)$', text, re.M)
    return float(m.group(1)) if m else 0.0


@pytest.fixture(scope="module")
def secrets_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("redis-secrets")
    key = d / "redis-hmac.key"
    key.write_text("c2VjcmV0LWtleS1zaGFyZWQtYnktZXZlcnktZ2F0ZXdheQ==\n")
    key.chmod(0o600)
    return d


@pytest.fixture(scope="module")
def auth() -> RedisAuth:
    return RedisAuth()


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> RedisTLS:
    return make_tls(tmp_path_factory.mktemp("redis-tls"))


@pytest.fixture(scope="module", params=["acl", "acl+tls"])
def redis_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, auth: RedisAuth, tls: RedisTLS
) -> Iterator[RedisServer]:
    with RedisServer(
        tmp_path_factory.mktemp("redis-auth"), auth=auth, tls=tls if request.param == "acl+tls" else None
    ) as server:
        yield server


def redis_table(server: RedisServer, secrets_dir: Path, password: str | None = None) -> str:
    assert server.auth is not None
    pw = server.auth.write_password(secrets_dir / "redis-password")
    if password is not None:
        pw.write_text(password + "\n")
    lines = [
        "[redis]",
        f'url = "{server.bare_url}"',
        f'password_file = "{pw}"',
        f'hmac_key_file = "{secrets_dir / "redis-hmac.key"}"',
    ]
    if server.tls:
        lines.append(f'tls_ca_file = "{server.tls.ca_file}"')
    return "\n".join(lines) + "\n"


def start(mail_stack: MailStack, clamd: Clamd, redis_toml: str, extra: str = "") -> tuple[QuorumProcess, int]:
    port = free_port()
    body = (
        '[policy]\non_virus = "reject"\non_engine_failure = "tempfail"\n'
        + engine_table("clamav", "clamav", address=clamd.address)
        + redis_toml
        + "[verdict_cache]\nlocal_entries = 0\n"  # every lookup reads Redis (and verifies the entry)
        + extra
    )
    mail_stack.stop()
    mail_stack.quorum = QuorumProcess(
        mail_stack.workdir / f"quorum-{uuid.uuid4().hex[:8]}", body, milter_extra=f'metrics_listen = "127.0.0.1:{port}"'
    ).start()
    mail_stack.postfix.set_milter(mail_stack.quorum.postfix_address)
    mail_stack.sink.clear()
    return mail_stack.quorum, port


@pytest.fixture
def stack(
    mail_stack: MailStack, clamd: Clamd, redis_server: RedisServer, secrets_dir: Path
) -> Iterator[tuple[QuorumProcess, int]]:
    with redis_server.client() as c:
        c.flushall()
    yield start(mail_stack, clamd, redis_table(redis_server, secrets_dir))
    mail_stack.stop()


def genuine_clean_entry(clamd: Clamd, redis_server: RedisServer, postfix_port: int) -> str:
    """A verdict the gateway itself stored: a harmless message goes through once."""
    raw = message(b"harmless " + uuid.uuid4().hex.encode() + b"\r\n")
    assert send(postfix_port, SENDER, [RCPT], raw).final.code == 250
    with redis_server.client() as c:
        value = c.get(cache_key(clamd, raw))
    assert value is not None and value.endswith(b":clean"), value
    return value.decode()


@pytest.mark.parametrize("plant", ["unsigned", "made-up-mac", "moved-genuine-entry"])
def test_a_forged_clean_entry_does_not_deliver_eicar(
    plant: str,
    stack: tuple[QuorumProcess, int],
    mail_stack: MailStack,
    clamd: Clamd,
    redis_server: RedisServer,
) -> None:
    quorum, metrics = stack
    raw = message(EICAR + b"\r\n")
    key = cache_key(clamd, raw)
    if plant == "unsigned":
        value = "clean"  # what the cache stored before entries were signed
    elif plant == "made-up-mac":
        value = "v1:" + hashlib.sha256(b"guess").hexdigest() + ":clean"
    else:  # a genuine, correctly signed `clean` of another content, copied under EICAR's key
        value = genuine_clean_entry(clamd, redis_server, mail_stack.postfix.smtp_port)
    forged_before = metric(metrics, "forged")
    with redis_server.client() as c:  # the attacker: an ACL user with write access
        c.set(key, value, ex=3600)
    result = send(mail_stack.postfix.smtp_port, SENDER, [RCPT], raw).final
    assert result.code == 554 and "Eicar" in result.text, result
    assert metric(metrics, "forged") == forged_before + 1
    with redis_server.client() as c:  # the genuine verdict replaced the plant
        stored = c.get(key)
    assert stored is not None and b":infected:Eicar" in stored, stored
    quorum.wait_for_log(r"HMAC does not verify")
    assert all(EICAR not in m.raw for m in mail_stack.sink.messages())


def test_a_genuine_entry_is_a_redis_hit_and_no_second_scan(
    stack: tuple[QuorumProcess, int], mail_stack: MailStack, clamd: Clamd, redis_server: RedisServer
) -> None:
    _, metrics = stack
    body = b"quarterly numbers " + uuid.uuid4().hex.encode() + b"\r\n"
    assert send(mail_stack.postfix.smtp_port, SENDER, [RCPT], message(body)).final.code == 250
    hits, misses = metric(metrics, "redis"), metric(metrics, "miss")
    assert send(mail_stack.postfix.smtp_port, SENDER, [RCPT], message(body)).final.code == 250
    assert metric(metrics, "redis") == hits + 1 and metric(metrics, "miss") == misses
    assert metric(metrics, "forged") == 0
    # EICAR's genuine entry answers too, and still refuses.
    raw = message(EICAR + b"\r\n")
    assert send(mail_stack.postfix.smtp_port, SENDER, [RCPT], raw).final.code == 554
    hits = metric(metrics, "redis")
    assert send(mail_stack.postfix.smtp_port, SENDER, [RCPT], message(EICAR + b"\r\n")).final.code == 554
    assert metric(metrics, "redis") == hits + 1


def test_a_wrong_password_costs_the_cache_not_the_mail(
    mail_stack: MailStack, clamd: Clamd, redis_server: RedisServer, secrets_dir: Path
) -> None:
    """Documented: Redis refused (wrong password) is Redis down — the cache is local only, the
    rate limiter fails open, one warning; mail is scanned as without the cache."""
    rate = '[ratelimit]\nclient_ip = { messages = 1000, per = "1h" }\n'
    quorum, metrics = start(mail_stack, clamd, redis_table(redis_server, secrets_dir, password="wrong"), rate)
    try:
        raw = message(EICAR + b"\r\n")
        with redis_server.client() as c:
            c.set(cache_key(clamd, raw), "clean")
        assert send(mail_stack.postfix.smtp_port, SENDER, [RCPT], raw).final.code == 554
        assert send(mail_stack.postfix.smtp_port, SENDER, [RCPT], message(b"hello\r\n")).final.code == 250
        quorum.wait_for_log(r"verdict cache: Redis unavailable \(.*(WRONGPASS|invalid username-password)")
        assert metric(metrics, "redis") == 0 and metric(metrics, "forged") == 0
        assert quorum.service.running
        assert "Traceback" not in quorum.log_text()
    finally:
        mail_stack.stop()
        (secrets_dir / "redis-password").unlink(missing_ok=True)


def check_config(tmp_path: Path, redis_toml: str) -> str:
    config = tmp_path / "q.toml"
    config.write_text(
        '[engines.clamav]\ntype = "clamav"\naddress = "127.0.0.1:3310"\n'
        + redis_toml
        + '[verdict_cache]\n[ratelimit]\nclient_ip = { messages = 10, per = "1m" }\n'
    )
    proc = subprocess.run(
        [sys.executable, "-m", "quorum", "check-config", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_check_config_warns_about_an_unauthenticated_redis(
    tmp_path: Path, redis_server: RedisServer, secrets_dir: Path
) -> None:
    out = check_config(tmp_path, '[redis]\nurl = "redis://127.0.0.1:6379/0"\n')
    assert "warning: redis.url: Redis without authentication" in out, out
    assert "warning: verdict_cache: not shared through Redis" in out, out
    out = check_config(tmp_path, redis_table(redis_server, secrets_dir))
    assert "warning" not in out, out


def test_old_style_url_credentials_without_a_key_keep_redis_out_of_the_cache(
    mail_stack: MailStack, clamd: Clamd, redis_server: RedisServer
) -> None:
    """A config as it was before (credentials in the url, no hmac_key_file): the forged `clean`
    entry used to deliver EICAR 250; now the cache does not read Redis at all."""
    extra = f'tls_ca_file = "{redis_server.tls.ca_file}"\n' if redis_server.tls else ""
    _, metrics = start(mail_stack, clamd, f'[redis]\nurl = "{redis_server.url}"\n{extra}')
    try:
        raw = message(EICAR + b"\r\n")
        with redis_server.client() as c:
            c.set(cache_key(clamd, raw), "clean")
        time.sleep(0.1)
        result = send(mail_stack.postfix.smtp_port, SENDER, [RCPT], raw).final
        assert result.code == 554, result
        assert metric(metrics, "redis") == 0
    finally:
        mail_stack.stop()
