"""The real engines the milter talks to start on loopback and behave as the adapters expect."""

from __future__ import annotations

import base64
import email.utils
import io
import os
import socket
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import dns.resolver
import httpx
import pytest
import redis
from redis.cluster import ClusterNode
from redis.cluster import RedisCluster as RedisClusterClient
from redis.exceptions import RedisClusterException
from tests.harness.clamd import Clamd
from tests.harness.dns import DnsServer, zone_text
from tests.harness.messages import EICAR
from tests.harness.ports import port_open
from tests.harness.redis_server import RedisAuth, RedisCluster, RedisSentinel, RedisServer
from tests.harness.rspamd import Rspamd
from tests.harness.spamd import Spamd

from quorum.config.model import EngineSettings
from quorum.engines import EngineError, ScanCall, build_engine
from quorum.engines import clamav as clamav_module
from quorum.engines.clamav import ClamAV
from quorum.engines.rspamd import Rspamd as RspamdEngine
from quorum.engines.rspamd import parse_reply as parse_rspamd_reply
from quorum.message import Message
from quorum.verdict import Status

pytestmark = pytest.mark.integration

GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
HAM_BODY = "shall we have lunch tomorrow at noon? The usual place is fine."
DKIM_KEY = "v=DKIM1; k=rsa; p=" + base64.b64encode(os.urandom(270)).decode()  # > 255 chars: split TXT


def message(body: str, subject: str = "Lunch tomorrow") -> bytes:
    return (
        "From: Alice <alice@example.com>\r\n"
        "To: Bob <bob@example.org>\r\n"
        f"Subject: {subject}\r\n"
        f"Date: {email.utils.formatdate()}\r\n"
        f"Message-ID: {email.utils.make_msgid(domain='example.com')}\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "\r\n"
        f"Hi Bob,\r\n\r\n{body}\r\n\r\nCheers,\r\nAlice\r\n"
    ).encode()


def zipped(name: str, data: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(name, data)
    return buf.getvalue()


def mime_with_attachment(filename: str, data: bytes) -> bytes:
    b64 = base64.encodebytes(data).decode().replace("\n", "\r\n")
    return (
        "From: a@example.com\r\nTo: b@example.org\r\nSubject: files\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="b1"\r\n\r\n'
        "--b1\r\nContent-Type: text/plain\r\n\r\nsee attachment\r\n"
        f'--b1\r\nContent-Type: application/octet-stream; name="{filename}"\r\n'
        f'Content-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename="{filename}"\r\n\r\n'
        f"{b64}--b1--\r\n"
    ).encode()


def mail_zones() -> dict[str, str]:
    """Sender/recipient domains and the client's PTR, so rspamd's DNS rules see a consistent world."""
    return {
        "example.com": zone_text(
            "example.com",
            [
                ("@", "A", "192.0.2.1"),
                ("@", "MX", "10 mail.example.com."),
                ("mail", "A", "192.0.2.1"),
                ("@", "TXT", "v=spf1 ip4:192.0.2.0/24 -all"),
                ("sel._domainkey", "TXT", DKIM_KEY),
            ],
        ),
        "example.org": zone_text("example.org", [("@", "MX", "10 mail.example.org."), ("mail", "A", "192.0.2.2")]),
        "2.0.192.in-addr.arpa": zone_text("2.0.192.in-addr.arpa", [("1", "PTR", "mail.example.com.")]),
    }


# --- fixtures (thin; module-scoped to start each engine once) ---


@pytest.fixture(scope="module")
def dns_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DnsServer]:
    server = DnsServer(tmp_path_factory.mktemp("dns"), mail_zones()).start()
    yield server
    server.stop()
    assert not port_open(server.port)


@pytest.fixture(scope="module")
def clamd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Clamd]:
    server = Clamd(tmp_path_factory.mktemp("clamd")).start()
    yield server
    server.stop()
    assert not port_open(server.port)


@pytest.fixture(scope="module")
def rspamd_server(tmp_path_factory: pytest.TempPathFactory, dns_server: DnsServer) -> Iterator[Rspamd]:
    server = Rspamd(tmp_path_factory.mktemp("rspamd"), dns_server.port).start()
    yield server
    server.stop()
    assert not port_open(server.port)


@pytest.fixture(scope="module")
def spamd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Spamd]:
    server = Spamd(tmp_path_factory.mktemp("spamd")).start()
    yield server
    server.stop()
    assert not port_open(server.port)


# --- clamd ---


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(message("see below\r\n" + EICAR.decode()), id="inline"),
        pytest.param(mime_with_attachment("eicar.com", EICAR), id="base64-attachment"),
        pytest.param(mime_with_attachment("eicar.zip", zipped("eicar.com", EICAR)), id="zip-attachment"),
        pytest.param(zipped("eicar.com", EICAR), id="zip"),
    ],
)
def test_clamd_finds_eicar(clamd_server: Clamd, payload: bytes) -> None:
    assert clamd_server.scan(payload) == "Eicar-Test-Signature.UNOFFICIAL"


def test_clamd_clean_message(clamd_server: Clamd) -> None:
    assert clamd_server.scan(message(HAM_BODY)) is None


def test_clamd_random_marker_in_nested_zip(clamd_server: Clamd) -> None:
    marker = f"QUORUM-MARKER-{os.urandom(12).hex()}".encode()
    name = f"Quorum.Test.Marker-{os.urandom(4).hex()}"
    nested = zipped("outer.zip", zipped("inner.txt", b"padding " + marker + b" padding"))
    attachment = mime_with_attachment("nested.zip", nested)
    assert clamd_server.scan(attachment) is None
    clamd_server.add_signature(name, marker.hex())
    assert clamd_server.scan(attachment) == f"{name}.UNOFFICIAL"
    assert clamd_server.scan(nested) == f"{name}.UNOFFICIAL"


def _clamav(address: str, reuse: bool = False) -> ClamAV:
    engine = build_engine(EngineSettings("av", "clamav", options={"address": address, "reuse": reuse}))
    assert isinstance(engine, ClamAV)
    return engine


def _scan_call() -> ScanCall:
    return ScanCall(time.monotonic() + 10)


@pytest.mark.parametrize("reuse", [False, True], ids=["fresh", "idsession"])
def test_clamav_adapter_tcp_and_unix(clamd_server: Clamd, reuse: bool) -> None:
    for address in (clamd_server.address, str(clamd_server.socket_path)):
        engine = _clamav(address, reuse)
        try:
            engine.ping(5)
            for _ in range(3):  # with reuse: one IDSESSION connection, request ids 1, 2, 3
                v = engine.scan(Message.from_bytes(message(EICAR.decode())), _scan_call())
                assert (v.status, v.names) == (Status.INFECTED, ("Eicar-Test-Signature.UNOFFICIAL",))
                assert engine.scan(Message.from_bytes(message(HAM_BODY)), _scan_call()).status is Status.CLEAN
            assert engine.version(_scan_call()).startswith("ClamAV ")
        finally:
            engine.close()


@pytest.mark.parametrize("reuse", [False, True], ids=["fresh", "idsession"])
def test_clamav_fdpass_on_the_unix_socket_never_streams(
    clamd_server: Clamd, reuse: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real clamd scans the passed descriptor (FILDES): EICAR found, ham clean, nothing streamed."""

    def no_stream(*args: object) -> None:
        raise AssertionError("streamed (INSTREAM) instead of passing the descriptor")

    monkeypatch.setattr(clamav_module, "_send_stream", no_stream)
    engine = _clamav(str(clamd_server.socket_path), reuse)
    assert engine.fdpass
    try:
        for _ in range(3):
            v = engine.scan(Message.from_bytes(message(EICAR.decode())), _scan_call())
            assert (v.status, v.names) == (Status.INFECTED, ("Eicar-Test-Signature.UNOFFICIAL",))
            assert engine.scan(Message.from_bytes(message(HAM_BODY)), _scan_call()).status is Status.CLEAN
        assert engine._proven and engine.fdpass  # the EICAR proof came back FOUND from the real clamd
    finally:
        engine.close()


def test_clamav_adapter_stream_size_limit(clamd_server: Clamd) -> None:
    """More than StreamMaxLength (25M): clamd stops reading and says so; the adapter names the fix."""
    big = Message.from_bytes(message("x" * (26 << 20)), memory_limit=1 << 20)
    try:
        for reuse in (False, True):
            engine = _clamav(clamd_server.address, reuse)
            with pytest.raises(EngineError, match="StreamMaxLength"):
                engine.scan(big, ScanCall(time.monotonic() + 30))
            assert engine.scan(Message.from_bytes(message(HAM_BODY)), _scan_call()).status is Status.CLEAN
            engine.close()
    finally:
        big.close()


def test_clamav_adapter_session_survives_clamd_restart(tmp_path: Path) -> None:
    """A pooled IDSESSION connection to a clamd that was restarted: the scan falls back to a fresh one."""
    server = Clamd(tmp_path).start()
    engine = _clamav(server.address, reuse=True)
    try:
        assert engine.scan(Message.from_bytes(message(HAM_BODY)), _scan_call()).status is Status.CLEAN
        server.kill()
        server.start()
        assert engine.scan(Message.from_bytes(message(HAM_BODY)), _scan_call()).status is Status.CLEAN
    finally:
        engine.close()
        server.stop()


def test_clamd_extra_signatures_and_kill(tmp_path: Path) -> None:
    marker = os.urandom(16).hex()
    server = Clamd(tmp_path, extra_ndb={"Quorum.Test.Extra": marker}).start()
    try:
        assert server.scan(b"xx" + bytes.fromhex(marker) + b"yy") == "Quorum.Test.Extra.UNOFFICIAL"
        server.kill()
        assert not port_open(server.port)
    finally:
        server.stop()


# --- rspamd ---

RSPAMD_HEADERS = {
    "IP": "192.0.2.1",
    "Helo": "mail.example.com",
    "Hostname": "mail.example.com",
    "From": "alice@example.com",
    "Rcpt": "bob@example.org",
}


def rspamd_check(client: httpx.Client, server: Rspamd, msg: bytes) -> dict:
    resp = client.post(f"{server.url}/checkv2", content=msg, headers=RSPAMD_HEADERS)
    resp.raise_for_status()
    result: dict = resp.json()
    return result


def test_rspamd_gtube_and_ham(rspamd_server: Rspamd) -> None:
    with httpx.Client(timeout=10) as client:
        spam = rspamd_check(client, rspamd_server, message(GTUBE))
        ham = rspamd_check(client, rspamd_server, message(HAM_BODY))
    assert spam["action"] == "reject"
    assert "GTUBE" in spam["symbols"]
    assert ham["action"] == "no action", ham
    assert "R_SPF_ALLOW" in ham["symbols"]  # SPF was resolved through the harness DNS


def test_rspamd_throughput_not_stalled_on_dns(rspamd_server: Rspamd) -> None:
    count = 100
    with httpx.Client(timeout=10) as client:
        start = time.monotonic()
        for i in range(count):
            assert rspamd_check(client, rspamd_server, message(f"{HAM_BODY} #{i}"))["action"] == "no action"
        elapsed = time.monotonic() - start
    assert count / elapsed > 20, f"{count / elapsed:.1f} msg/s"


def test_rspamd_closes_every_connection(rspamd_server: Rspamd) -> None:
    """Why the rspamd adapter cannot reuse connections with rspamd 3.4: it answers `Connection: close`
    even to a keep-alive request, and a second request on the socket gets EOF."""
    body = message(HAM_BODY)
    request = (
        b"POST /checkv2 HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: keep-alive\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    with socket.create_connection(("127.0.0.1", rspamd_server.port), timeout=10) as sock:
        sock.sendall(request)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    head = reply.partition(b"\r\n\r\n")[0].decode().lower()
    assert head.startswith("http/1.1 200") and "connection: close" in head.split("\r\n")
    engine = build_engine(
        EngineSettings("rs", "rspamd", options={"url": rspamd_server.url, "password": None, "settings_id": None})
    )
    assert isinstance(engine, RspamdEngine)
    try:
        for _ in range(3):
            assert engine.scan(Message.from_bytes(body), _scan_call()).status is Status.CLEAN
        assert engine._pool.reused == 0
    finally:
        engine.close()


def test_rspamd_skipped_reply_is_no_vote(rspamd_server: Rspamd) -> None:
    """A message rspamd skips (here via its `Flags: skip` request header; in production via settings)
    comes back as `is_skipped` with action `no action`: the adapter makes it a non-vote, not clean."""
    resp = httpx.post(f"{rspamd_server.url}/checkv2", content=message(HAM_BODY), headers={"Flags": "skip"}, timeout=10)
    reply = parse_rspamd_reply(resp.content)
    assert reply.skipped and reply.action == "no action"
    engine = build_engine(
        EngineSettings("rs", "rspamd", options={"url": rspamd_server.url, "password": None, "settings_id": None})
    )
    assert isinstance(engine, RspamdEngine)
    v = engine.verdict_from(reply)
    assert (v.status, v.detail) == (Status.SKIPPED, "rspamd-skipped")
    engine.close()


def test_rspamd_kill(tmp_path: Path, dns_server: DnsServer) -> None:
    server = Rspamd(tmp_path, dns_server.port).start()
    try:
        assert httpx.get(f"{server.url}/ping", timeout=5).text.strip() == "pong"
        server.kill()
        assert not port_open(server.port)
    finally:
        server.stop()


# --- spamd ---


def test_spamd_ping(spamd_server: Spamd) -> None:
    assert spamd_server.request("PING") == b"SPAMD/1.5 0 PONG\r\n"


def test_spamd_gtube_is_spam(spamd_server: Spamd) -> None:
    head, _, body = spamd_server.request("SYMBOLS", message(GTUBE)).partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "SPAMD/1.1 0 EX_OK"
    spam = next(line for line in lines if line.startswith("Spam: "))
    assert spam.startswith("Spam: True ; 100") and spam.endswith(" / 5.0")
    assert "GTUBE" in body.decode().split(",")


def test_spamd_ham_is_not_spam(spamd_server: Spamd) -> None:
    reply = spamd_server.request("CHECK", message(HAM_BODY)).decode()
    assert reply.startswith("SPAMD/1.1 0 EX_OK\r\n")
    assert "Spam: False ; " in reply


# --- redis ---


def test_redis_ping_restart_kill(tmp_path: Path) -> None:
    server = RedisServer(tmp_path, auth=RedisAuth()).start()
    try:
        with redis.Redis(host="127.0.0.1", port=server.port, socket_timeout=5) as anonymous:
            with pytest.raises(redis.AuthenticationError):  # `default` is off: NOAUTH
                anonymous.ping()
        with redis.Redis.from_url(server.bare_url, socket_timeout=5) as no_password:
            with pytest.raises(redis.AuthenticationError):
                no_password.ping()
        with redis.Redis.from_url(server.url) as client:  # the url carries user and password
            assert client.ping()
            server.restart()
            assert client.ping()  # redis-py reconnects to the same port
        server.kill()
        assert not port_open(server.port)
    finally:
        server.stop()


def test_redis_cluster_state_ok(tmp_path: Path) -> None:
    cluster = RedisCluster(tmp_path, auth=RedisAuth()).start()
    try:
        with pytest.raises(RedisClusterException, match=r"(?i)noauth|authenticat"):  # no credentials: no slot map
            RedisClusterClient(startup_nodes=[ClusterNode(h, p) for h, p in cluster.startup_nodes], socket_timeout=5)
        client = cluster.client()
        try:
            for i in range(20):
                client.set(f"key:{i}", i)
            assert client.get("key:7") == b"7"
            assert len({client.keyslot(f"key:{i}") for i in range(20)}) > 1
        finally:
            client.close()
    finally:
        cluster.stop()
    assert not any(port_open(p) for _, p in cluster.startup_nodes)


def test_redis_sentinel_reports_master(tmp_path: Path) -> None:
    from redis.sentinel import Sentinel

    setup = RedisSentinel(tmp_path, auth=RedisAuth()).start()
    try:
        assert setup.master_address() == ("127.0.0.1", setup.master.port)
        sentinel = Sentinel(setup.sentinels, socket_timeout=5, sentinel_kwargs=setup.sentinel_kwargs())
        assert sentinel.discover_master(setup.service_name) == ("127.0.0.1", setup.master.port)
        master = sentinel.master_for(setup.service_name, socket_timeout=5, **setup.master.client_kwargs())
        assert master.set("quorum:test", "1")
    finally:
        setup.stop()
    assert not any(port_open(p) for _, p in setup.sentinels)


# --- DNS ---


def test_dns_answers_a_and_long_txt(dns_server: DnsServer) -> None:
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = ["127.0.0.1"]
    resolver.port = dns_server.port
    assert [r.to_text() for r in resolver.resolve("example.com", "A")] == ["192.0.2.1"]
    (txt,) = resolver.resolve("sel._domainkey.example.com", "TXT")
    assert len(txt.strings) == 2
    assert b"".join(txt.strings).decode() == DKIM_KEY
    (tcp_txt,) = resolver.resolve("example.com", "TXT", tcp=True)
    assert tcp_txt.strings == (b"v=spf1 ip4:192.0.2.0/24 -all",)


def test_dns_restart_with_new_zones(tmp_path: Path) -> None:
    server = DnsServer(tmp_path, {"example.net": zone_text("example.net", [("@", "A", "192.0.2.5")])}).start()
    try:
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = ["127.0.0.1"]
        resolver.port = server.port
        assert resolver.resolve("example.net", "A")[0].to_text() == "192.0.2.5"
        server.restart_with({"example.net": zone_text("example.net", [("@", "A", "192.0.2.6")])})
        assert resolver.resolve("example.net", "A")[0].to_text() == "192.0.2.6"
    finally:
        server.stop()
