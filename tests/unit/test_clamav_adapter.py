"""ClamAV adapter: INSTREAM framing, reply parsing, PING/VERSION, IDSESSION reuse, faults (fake clamd)."""

from __future__ import annotations

import array
import os
import socket
import struct
import threading
import time
from typing import Any

import pytest
from tests.harness.fake_engine import FakeEngine

from quorum.assembly import parse_config
from quorum.config.fields import ConfigError
from quorum.config.model import EngineSettings
from quorum.engines import EngineError, ScanCall, build_engine
from quorum.engines import clamav as clamav_module
from quorum.engines.clamav import ClamAV, parse_scan_reply
from quorum.message import Envelope, Message
from quorum.verdict import Status

MESSAGE = b"From: a@example.org\r\nTo: b@example.com\r\nSubject: hi\r\n\r\nHello there.\r\n"
VERSION = b"ClamAV 1.0.7/27000/Mon Jan  6 09:30:00 2025\0"


def engine(address: str, reuse: bool = False, concurrency: int = 4, fdpass: bool = True) -> ClamAV:
    options = {"address": address, "reuse": reuse, "fdpass": fdpass}
    e = build_engine(EngineSettings("av", "clamav", concurrency=concurrency, options=options))
    assert isinstance(e, ClamAV)
    return e


def message(raw: bytes = MESSAGE) -> Message:
    return Message.from_bytes(raw, Envelope(sender="a@example.org", recipients=["b@example.com"]))


def call(seconds: float = 5.0) -> ScanCall:
    return ScanCall(time.monotonic() + seconds)


# --- reply parsing ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "status", "name"),
    [
        ("stream: OK", Status.CLEAN, ""),
        ("stream: Eicar-Test-Signature FOUND", Status.INFECTED, "Eicar-Test-Signature"),
        ("stream: Win.Test.Name-1.UNOFFICIAL FOUND", Status.INFECTED, "Win.Test.Name-1.UNOFFICIAL"),
        ("fd[10]: OK", Status.CLEAN, ""),
        ("fd[7]: Eicar-Test-Signature FOUND", Status.INFECTED, "Eicar-Test-Signature"),
    ],
)
def test_parse_scan_reply(line: str, status: Status, name: str) -> None:
    assert parse_scan_reply(line) == (status, name)


@pytest.mark.parametrize(
    ("line", "match"),
    [
        ("INSTREAM size limit exceeded. ERROR", "StreamMaxLength"),
        ("stream: Can't allocate memory ERROR", "clamd error: stream: Can't allocate memory"),
        ("UNKNOWN COMMAND", "unexpected clamd reply"),
        ("stream:  FOUND", "unexpected clamd reply"),
        ("fd[]: OK", "unexpected clamd reply"),
        ("stream: \x01bad FOUND", "unexpected clamd reply"),
        ("", "empty"),
    ],
)
def test_bad_scan_replies(line: str, match: str) -> None:
    with pytest.raises(EngineError, match=match):
        parse_scan_reply(line)


# --- config -----------------------------------------------------------------------------------


def test_config_defaults_and_reuse() -> None:
    cfg = parse_config({"engines": {"av": {"type": "clamav"}, "av2": {"type": "clamav", "reuse": True}}})
    assert cfg.engines[0].options == {"address": "127.0.0.1:3310", "reuse": False, "fdpass": True}
    assert cfg.engines[1].options["reuse"] is True
    assert not engine("127.0.0.1:3310").fdpass  # a descriptor only passes over a unix socket
    assert engine("/run/clamav/clamd.ctl").fdpass and not engine("/run/clamav/clamd.ctl", fdpass=False).fdpass


@pytest.mark.parametrize(("key", "value"), [("reuse", "yes"), ("address", "localhost"), ("fdpass", 1)])
def test_config_errors_name_the_key(key: str, value: Any) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"engines": {"av": {"type": "clamav", key: value}}})
    assert any(p.startswith(f"engines.av.{key}:") for p in info.value.problems), info.value.problems


# --- INSTREAM against a fake clamd --------------------------------------------------------------


def test_instream_framing_and_clean_reply() -> None:
    with FakeEngine("reply", reply=b"stream: OK\0") as fake:
        v = engine(fake.address).scan(message(), call())
    assert v.status is Status.CLEAN
    assert fake.heads == [b"zINSTREAM"] and fake.bodies == [message().raw()]


def test_found_reply_names_the_signature() -> None:
    with FakeEngine("reply", reply=b"stream: Eicar-Test-Signature FOUND\0") as fake:
        v = engine(fake.address).scan(message(), call())
    assert (v.status, v.names) == (Status.INFECTED, ("Eicar-Test-Signature",))
    assert v.detail is None and "limit" not in v.extra


@pytest.mark.parametrize(
    ("name", "limit"),
    [
        ("Heuristics.Limits.Exceeded.MaxRecursion", "MaxRecursion"),
        ("Heuristics.Limits.Exceeded.MaxScanSize", "MaxScanSize"),
        ("Heuristics.Limits.Exceeded.MaxFileSize", "MaxFileSize"),
        ("Heuristics.Limits.Exceeded.MaxFiles", "MaxFiles"),
        ("Heuristics.Limits.Exceeded.MaxScanTime", "MaxScanTime"),
        ("Heuristics.Limits.Exceeded", "unknown"),  # clamd before 0.101
        ("Heuristics.Limits.Exceeded.Max Odd", "unknown"),
    ],
)
def test_a_clamd_limit_is_an_explicit_limits_exceeded_verdict(name: str, limit: str) -> None:
    """Issue 17 item 4: `AlertExceedsMax` answers name the limit clamd stopped at: never "clean",
    never an engine failure (breaker, "unchecked"), labelled as what it is."""
    for reply in (f"stream: {name} FOUND\0", f"1: stream: {name} FOUND\0"):
        reuse = reply.startswith("1:")
        mode = "keepalive" if reuse else "reply"
        with FakeEngine(mode, reply=reply.replace("1:", "{id}:").encode()) as fake:
            v = engine(fake.address, reuse=reuse).scan(message(), call())
        assert (v.status, v.names, v.detail) == (Status.INFECTED, (name,), "limits-exceeded")
        assert v.extra["limit"] == limit
        assert v.label() == "infected(limits-exceeded)"


def test_limit_names_are_recognised_exactly() -> None:
    assert clamav_module.limit_exceeded("Heuristics.Limits.Exceeded.MaxFiles") == "MaxFiles"
    for other in ("Heuristics.Limits.ExceededX", "Heuristics.Encrypted.Zip", "Win.Heuristics.Limits.Exceeded", ""):
        assert clamav_module.limit_exceeded(other) is None


def test_a_limit_verdict_is_never_cached() -> None:
    """A limit alert depends on clamd's limits and load (MaxScanTime): it is asked again next time,
    never cached, and never read back from the cache as anything else."""
    from quorum.verdictcache.cached import encode

    av = engine("127.0.0.1:1")
    v = av.verdict(Status.INFECTED, names=("Heuristics.Limits.Exceeded.MaxScanSize",))
    assert (v.detail, v.extra) == ("limits-exceeded", {"limit": "MaxScanSize"})
    assert encode(v) is None
    assert encode(av.verdict(Status.INFECTED, names=("Eicar-Signature",))) == "infected:Eicar-Signature"


class _Recorder:
    """A one-shot clamd stand-in that records the raw INSTREAM bytes (to check the chunk framing)."""

    def __init__(self) -> None:
        import socket

        self.raw = bytearray()
        self.server = socket.create_server(("127.0.0.1", 0))
        self.server.settimeout(5)
        self.address = f"127.0.0.1:{self.server.getsockname()[1]}"
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.server.accept()
        with conn:
            conn.settimeout(5)
            while not self.raw.endswith(b"\0\0\0\0"):
                chunk = conn.recv(1 << 20)
                if not chunk:
                    return
                self.raw += chunk
            conn.sendall(b"stream: OK\0")

    def close(self) -> None:
        self.thread.join(5)
        self.server.close()


def test_large_spooled_message_is_sent_in_64k_chunks() -> None:
    raw = MESSAGE + b"x" * 300_000
    m = Message.from_bytes(raw, Envelope(), memory_limit=1 << 16)
    assert m.body.on_disk
    recorder = _Recorder()
    try:
        assert engine(recorder.address).scan(m, call()).status is Status.CLEAN
    finally:
        recorder.close()
        m.close()
    data = bytes(recorder.raw)
    assert data.startswith(b"zINSTREAM\0")
    pos, sizes, payload = len(b"zINSTREAM\0"), [], bytearray()
    while True:
        (size,) = struct.unpack("!L", data[pos : pos + 4])
        pos += 4
        if size == 0:
            break
        sizes.append(size)
        payload += data[pos : pos + size]
        pos += size
    assert pos == len(data) and bytes(payload) == Message.from_bytes(raw, Envelope()).raw()
    assert max(sizes) == 64 * 1024 and len(sizes) == -(-len(payload) // (64 * 1024))


def test_size_limit_reply_is_engine_error_even_when_clamd_stops_reading() -> None:
    with FakeEngine("reply", reply=b"INSTREAM size limit exceeded. ERROR\0") as fake:
        with pytest.raises(EngineError, match="StreamMaxLength"):
            engine(fake.address).scan(message(MESSAGE + b"x" * 4_000_000), call(10))


def test_unix_socket_address() -> None:
    import socket
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = f"{tmp}/clamd.sock"
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(path)
        server.listen(1)

        def serve() -> None:
            conn, _ = server.accept()
            with conn:
                data = b""
                while not data.endswith(b"\0\0\0\0"):
                    data += conn.recv(65536)
                conn.sendall(b"stream: OK\0")

        t = threading.Thread(target=serve, daemon=True)
        t.start()
        assert engine(path, fdpass=False).scan(message(), call()).status is Status.CLEAN
        t.join(5)
        server.close()


# --- PING / VERSION ---------------------------------------------------------------------------


def test_ping() -> None:
    with FakeEngine("reply", reply=b"PONG\0") as fake:
        engine(fake.address).ping(2)
        assert fake.heads == [b"zPING"]
    with FakeEngine("reply", reply=b"PANG\0") as fake, pytest.raises(EngineError, match="PING"):
        engine(fake.address).ping(2)
    with FakeEngine("hang") as fake, pytest.raises(EngineError, match="timeout"):
        engine(fake.address).ping(0.3)


def test_version_is_cached(monkeypatch: pytest.MonkeyPatch) -> None:
    with FakeEngine("reply", reply=VERSION) as fake:
        e = engine(fake.address)
        assert e.version(call()) == VERSION[:-1].decode()
        assert e.version(call()) == VERSION[:-1].decode()
        assert fake.requests == 1 and fake.heads == [b"zVERSION"]
        monkeypatch.setattr(clamav_module, "VERSION_TTL", 0.0)
        e.version(call())
        assert fake.requests == 2
        e.forget_version()


@pytest.mark.parametrize("reply", [b"UNKNOWN COMMAND\0", b"\0", b"garbage"])
def test_bad_version_reply(reply: bytes) -> None:
    with FakeEngine("reply", reply=reply) as fake, pytest.raises(EngineError):
        engine(fake.address).version(call(2))


# --- IDSESSION reuse --------------------------------------------------------------------------


def test_reuse_runs_scans_on_one_session() -> None:
    with FakeEngine("keepalive", reply=b"{id}: stream: OK\0") as fake:
        e = engine(fake.address, reuse=True)
        statuses = [e.scan(message(), call()).status for _ in range(3)]
        e.close()
    assert statuses == [Status.CLEAN] * 3
    assert fake.connections == 1 and fake.heads[:3] == [b"zINSTREAM"] * 3


def test_reuse_falls_back_to_a_fresh_connection_when_clamd_closed_the_session() -> None:
    with FakeEngine("reply", reply=b"1: stream: OK\0") as fake:  # answers one command, then closes
        e = engine(fake.address, reuse=True)
        assert e.scan(message(), call()).status is Status.CLEAN
        time.sleep(0.2)
        assert e.scan(message(), call()).status is Status.CLEAN
        e.close()
    assert fake.connections == 2


def test_reuse_rejects_a_reply_with_the_wrong_id() -> None:
    with FakeEngine("keepalive", reply=b"7: stream: OK\0") as fake, pytest.raises(EngineError, match="order"):
        engine(fake.address, reuse=True).scan(message(), call())


def test_reuse_error_reply_is_not_pooled() -> None:
    with FakeEngine("keepalive", reply=b"{id}: INSTREAM size limit exceeded. ERROR\0") as fake:
        e = engine(fake.address, reuse=True)
        for _ in range(2):
            with pytest.raises(EngineError, match="StreamMaxLength"):
                e.scan(message(), call())
    assert fake.connections == 2


def test_reuse_concurrent_scans_share_the_pool() -> None:
    with FakeEngine("keepalive", reply=b"{id}: stream: OK\0") as fake:
        e = engine(fake.address, reuse=True, concurrency=3)
        results: list[Status] = []

        def worker() -> None:
            for _ in range(5):
                results.append(e.scan(message(), call()).status)

        threads = [threading.Thread(target=worker) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        e.close()
    assert results == [Status.CLEAN] * 15
    # The pool is used (at most `concurrency` connections for 15 scans); under a loaded machine a
    # session the fake ends early is retried once on a fresh connection, which the fake counts again.
    assert fake.connections <= 3 + (fake.requests - 15) and 15 <= fake.requests <= 18


# --- faults -----------------------------------------------------------------------------------


def test_cancel_from_another_thread_interrupts_a_hung_scan() -> None:
    with FakeEngine("hang") as fake:
        c = call(30)
        threading.Timer(0.3, c.cancel).start()
        start = time.monotonic()
        with pytest.raises(EngineError, match="cancelled"):
            engine(fake.address).scan(message(), c)
    assert time.monotonic() - start < 2


def test_connection_refused_and_spent_budget() -> None:
    with FakeEngine("hang") as fake:
        address = fake.address
    with pytest.raises(EngineError, match="cannot connect"):
        engine(address).scan(message(), call(2))
    with pytest.raises(EngineError, match="timeout"):
        engine(address).scan(message(), call(0))


# --- FILDES (descriptor passing) against a fake clamd on a unix socket -------------------------------


class FakeUnixClamd:
    """Answers each connection from `replies` in turn; records commands and passed files' contents."""

    def __init__(self, path: str, replies: list[bytes]) -> None:
        self.replies = replies
        self.commands: list[bytes] = []
        self.files: list[bytes] = []
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(path)
        self.server.listen(4)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        for reply in self.replies:
            conn, _ = self.server.accept()
            with conn:
                head = b""
                while b"\0" not in head:
                    head += conn.recv(1)
                self.commands.append(head[:-1])
                if head == b"zFILDES\0":
                    fds: list[int] = []
                    _, anc, _, _ = conn.recvmsg(1, socket.CMSG_SPACE(4))
                    for level, kind, data in anc:
                        if (level, kind) == (socket.SOL_SOCKET, socket.SCM_RIGHTS):
                            fds += array.array("i", data[: len(data) - len(data) % 4]).tolist()
                    for fd in fds:
                        with os.fdopen(fd, "rb") as f:
                            self.files.append(f.read())
                else:
                    data = b""
                    while not data.endswith(b"\0\0\0\0"):
                        data += conn.recv(65536)
                conn.sendall(reply)

    def close(self) -> None:
        self.thread.join(5)
        self.server.close()


PROOF = b"fd[9]: Eicar-Test-Signature FOUND\0"  # the answer to the EICAR proof made before the first message


def test_fdpass_sends_the_whole_message_as_a_descriptor(tmp_path: Any) -> None:
    path = f"{tmp_path}/c.sock"
    fake = FakeUnixClamd(path, [PROOF, b"fd[9]: Win.Test.X FOUND\0", b"fd[9]: OK\0"])
    av = engine(path)
    try:
        v = av.scan(message(), call())
        assert av.scan(message(), call()).status is Status.CLEAN
    finally:
        fake.close()
    assert (v.status, v.names) == (Status.INFECTED, ("Win.Test.X",))
    assert fake.commands == [b"zFILDES"] * 3
    assert fake.files[0].startswith(b"X5O!P%@AP") and fake.files[1:] == [message().raw()] * 2


def test_a_clamd_that_cannot_read_the_descriptor_never_sees_mail_that_way(
    tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """The proof comes back OK (clamd saw nothing, say a confining profile): every message is streamed."""
    path = f"{tmp_path}/c.sock"
    fake = FakeUnixClamd(path, [b"fd[9]: OK\0", b"stream: Win.Test.X FOUND\0", b"stream: OK\0"])
    av = engine(path)
    try:
        assert av.scan(message(), call()).status is Status.INFECTED
        assert av.scan(message(), call()).status is Status.CLEAN
    finally:
        fake.close()
    assert fake.commands == [b"zFILDES", b"zINSTREAM", b"zINSTREAM"] and not av.fdpass
    assert "came back 'fd[9]: OK'" in caplog.text


def test_fdpass_error_is_retried_as_a_stream(tmp_path: Any, caplog: pytest.LogCaptureFixture) -> None:
    path = f"{tmp_path}/c.sock"
    replies = [PROOF, b"fd[9]: lstat() failed ERROR\0", b"stream: OK\0", b"stream: OK\0"]
    fake = FakeUnixClamd(path, replies)
    av = engine(path)
    try:
        assert av.scan(message(), call()).status is Status.CLEAN
        assert av.scan(message(), call()).status is Status.CLEAN  # no second try: straight to INSTREAM
    finally:
        fake.close()
    assert fake.commands == [b"zFILDES", b"zFILDES", b"zINSTREAM", b"zINSTREAM"]
    assert "streaming messages (INSTREAM) until the next reload" in caplog.text


def test_messages_above_fdpass_max_are_streamed(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(clamav_module, "FDPASS_MAX", 10)
    path = f"{tmp_path}/c.sock"
    fake = FakeUnixClamd(path, [b"stream: OK\0"])
    try:
        assert engine(path).scan(message(), call()).status is Status.CLEAN
    finally:
        fake.close()
    assert fake.commands == [b"zINSTREAM"]


def test_a_clamd_without_descriptor_passing_settles_the_proof_at_once(tmp_path: Any) -> None:
    path = f"{tmp_path}/c.sock"
    fake = FakeUnixClamd(path, [b"UNKNOWN COMMAND\0", b"stream: OK\0", b"stream: OK\0"])
    av = engine(path)
    try:
        for _ in range(2):
            assert av.scan(message(), call()).status is Status.CLEAN
    finally:
        fake.close()
    assert fake.commands == [b"zFILDES", b"zINSTREAM", b"zINSTREAM"] and not av.fdpass


def test_a_proof_without_answer_is_tried_a_few_times_then_given_up(tmp_path: Any) -> None:
    path = f"{tmp_path}/c.sock"
    attempts = clamav_module.PROOF_ATTEMPTS
    fake = FakeUnixClamd(path, [b"", b"stream: OK\0"] * attempts + [b"stream: OK\0"])
    av = engine(path)
    try:
        for _ in range(attempts + 1):
            assert av.scan(message(), call()).status is Status.CLEAN  # each message still scanned
    finally:
        fake.close()
    assert fake.commands == [b"zFILDES", b"zINSTREAM"] * attempts + [b"zINSTREAM"] and not av.fdpass
