"""The shared engine transport, and every adapter against misbehaving engines (issue 9, fuzz (c)).

Each garbage case must end as an `EngineError` within the call's budget (plus a small margin for
thread wake-ups): never a hang, never another exception.
"""

from __future__ import annotations

import random
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from tests.harness.fake_engine import FakeEngine, http_reply

from quorum.config.model import EngineSettings
from quorum.engines import Engine, EngineError, ScanCall, build_engine
from quorum.engines.transport import Channel, ChannelPool
from quorum.message import Envelope, Message
from quorum.verdict import Status

MARGIN = 0.5  # seconds past the budget a failing call may take (thread wake-up, close)


def call(seconds: float = 3.0) -> ScanCall:
    return ScanCall(time.monotonic() + seconds)


class _Server:
    """A scripted peer: `script(conn)` runs for the first accepted connection."""

    def __init__(self, script: Callable[[socket.socket], None]) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(5)
        self.address = f"127.0.0.1:{self.listener.getsockname()[1]}"
        self.script = script
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            conn, _ = self.listener.accept()
        except OSError:
            return
        with conn:
            try:
                self.script(conn)
            except OSError:
                pass

    def __enter__(self) -> _Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.listener.close()
        self.thread.join(5)


# --- Channel ---------------------------------------------------------------------------------


def test_read_until_keeps_the_rest_buffered() -> None:
    def script(conn: socket.socket) -> None:
        for part in (b"one\0tw", b"o\0", b"thr", b"ee\0tail"):
            conn.sendall(part)
            time.sleep(0.02)

    with _Server(script) as server, Channel.open(server.address, call(), "peer") as conn:
        assert conn.read_until(b"\0", 100) == b"one\0"
        assert conn.read_until(b"\0", 100) == b"two\0"
        assert conn.read_until(b"\0", 100) == b"three\0"
        assert conn.read_to_eof(100) == b"tail"


def test_read_until_is_capped() -> None:
    with _Server(lambda c: c.sendall(b"x" * 5000)) as server, Channel.open(server.address, call(), "peer") as conn:
        with pytest.raises(EngineError, match="peer reply larger than 1000 bytes"):
            conn.read_until(b"\0", 1000)


def test_read_until_delimiter_past_the_cap() -> None:
    with _Server(lambda c: c.sendall(b"x" * 20 + b"\0")) as server, Channel.open(server.address, call()) as conn:
        with pytest.raises(EngineError, match="larger than 10"):
            conn.read_until(b"\0", 10)


def test_read_to_eof_is_capped_and_eof_mid_reply_is_named() -> None:
    with _Server(lambda c: c.sendall(b"y" * 3000)) as server, Channel.open(server.address, call(), "peer") as conn:
        with pytest.raises(EngineError, match="larger than 1000"):
            conn.read_to_eof(1000)
    with _Server(lambda c: c.sendall(b"partial")) as server, Channel.open(server.address, call(), "peer") as conn:
        with pytest.raises(EngineError, match="in the middle of a reply"):
            conn.read_until(b"\0", 100)
    with _Server(lambda c: None) as server, Channel.open(server.address, call(), "peer") as conn:
        with pytest.raises(EngineError, match="without a reply"):
            conn.read_until(b"\0", 100)


def test_read_exactly_and_half_close() -> None:
    received = bytearray()

    def script(conn: socket.socket) -> None:
        while chunk := conn.recv(65536):  # until the client half-closes
            received.extend(chunk)
        conn.sendall(b"0123456789")

    with _Server(script) as server, Channel.open(server.address, call(), "peer") as conn:
        conn.send_all([b"abc", b"def"])
        conn.shutdown_write()
        assert conn.read_exactly(4) == b"0123" and conn.recv_some(3) == b"456"
        assert conn.read_exactly(3) == b"789"
    assert bytes(received) == b"abcdef"


def test_slow_drip_is_bounded_by_the_budget_not_per_read() -> None:
    def script(conn: socket.socket) -> None:
        for _ in range(100):
            conn.sendall(b"x")
            time.sleep(0.1)

    with _Server(script) as server, Channel.open(server.address, call(0.6), "peer") as conn:
        start = time.monotonic()
        with pytest.raises(EngineError, match="timeout"):
            conn.read_until(b"\0", 1000)
        assert time.monotonic() - start < 0.6 + MARGIN


def test_cancel_shuts_a_blocked_read_down() -> None:
    stop = threading.Event()
    with _Server(lambda c: stop.wait(5)) as server:
        c = call(30)
        with Channel.open(server.address, c, "peer") as conn:
            threading.Timer(0.2, c.cancel).start()
            start = time.monotonic()
            with pytest.raises(EngineError, match="cancelled"):
                conn.read_until(b"\0", 100)
            assert time.monotonic() - start < 1
        stop.set()


def test_connect_failures() -> None:
    address = "/nonexistent-quorum-dir/engine.sock"  # a closed TCP port may be reused by a parallel test
    with pytest.raises(EngineError, match=f"cannot connect to {address}"):
        Channel.open(address, call())
    with pytest.raises(EngineError, match="timeout"):
        Channel.open(address, call(0))
    c = call()
    c.cancel()
    with pytest.raises(EngineError, match="cancelled"):
        Channel.open(address, c)
    with pytest.raises(EngineError, match=r"cannot connect to /nonexistent/x\.sock"):
        Channel.open("/nonexistent/x.sock", call())
    with pytest.raises(EngineError, match="cannot connect"):
        Channel.open("no-port", call())


def test_unroutable_connect_is_bounded() -> None:
    """A SYN into the void (TEST-NET-1) times out at the budget, not the OS's minutes."""
    start = time.monotonic()
    with pytest.raises(EngineError):
        Channel.open("192.0.2.1:9", call(0.3))
    assert time.monotonic() - start < 0.3 + MARGIN


def test_ipv6_literal_address() -> None:
    try:
        listener = socket.create_server(("::1", 0), family=socket.AF_INET6)
    except OSError:
        pytest.fail("no IPv6 loopback on this machine")
    with listener:
        port = listener.getsockname()[1]
        with Channel.open(f"[::1]:{port}", call()) as conn:
            assert conn.sock.family == socket.AF_INET6


# --- ChannelPool -----------------------------------------------------------------------------


def test_pool_reuses_releases_and_expires() -> None:
    stop = threading.Event()
    with _Server(lambda c: stop.wait(5)) as server:
        closed: list[Channel] = []
        pool = ChannelPool(2, idle_timeout=0.3, on_close=closed.append)
        first_call = call()
        assert pool.acquire(first_call) is None
        conn = Channel.open(server.address, first_call)
        pool.release(conn)
        first_call.cancel()  # a later cancel of the old call must not touch the pooled socket
        second_call = call()
        again = pool.acquire(second_call)
        assert again is conn and not conn.closed and pool.reused == 1
        pool.release(again)
        time.sleep(0.35)
        assert pool.acquire(call()) is None  # idle too long: retired
        assert closed == [conn] and conn.closed
        stop.set()


def test_pool_does_not_keep_a_cancelled_connection() -> None:
    stop = threading.Event()
    with _Server(lambda c: stop.wait(5)) as server:
        pool = ChannelPool(2, idle_timeout=30)
        c = call()
        conn = Channel.open(server.address, c)
        c.cancel()
        pool.release(conn)
        assert conn.closed and pool.acquire(call()) is None
        stop.set()


# --- every adapter against misbehaving engines --------------------------------------------------

MESSAGE = b"From: a@example.org\r\nTo: b@example.com\r\nSubject: hi\r\n\r\nHello there.\r\n"
CLAMD_OK = b"stream: OK\0"
SPAMD_OK = b"SPAMD/1.1 0 EX_OK\r\nContent-length: 11\r\nSpam: False ; 0.5 / 5.0\r\n\r\nNO_RECEIVED"
RSPAMD_OK = http_reply(b'{"action":"no action","score":0.5,"required_score":15.0,"symbols":{}}')
VALID = {"clamav": CLAMD_OK, "spamassassin": SPAMD_OK, "rspamd": RSPAMD_OK}


def adapter(kind: str, fake: FakeEngine) -> Engine:
    options: dict[str, dict[str, Any]] = {
        "clamav": {"address": fake.address, "reuse": False},
        "spamassassin": {"address": fake.address, "user": None, "command": "SYMBOLS"},
        "rspamd": {"url": fake.url, "password": None, "settings_id": None},
    }
    return build_engine(EngineSettings(kind, kind, options=options[kind]))


def cases() -> list[tuple[str, dict[str, Any]]]:
    out: list[tuple[str, dict[str, Any]]] = []
    for kind, valid in VALID.items():
        out += [
            (kind, {"mode": "hang"}),
            (kind, {"mode": "http_hang"}),
            (kind, {"mode": "reset"}),
            (kind, {"mode": "reset_mid", "reply": valid}),
            (kind, {"mode": "reply", "reply": b""}),
            (kind, {"mode": "reply", "reply": valid[: len(valid) // 2]}),  # truncated, then closed
            (kind, {"mode": "oversize"}),
            (kind, {"mode": "oversize", "prefix": valid.split(b"\r\n\r\n")[0][:-3]}),  # a valid start, endless
            (kind, {"mode": "drip", "reply": valid}),  # one byte per 100 ms: past the 0.8 s budget
            (kind, {"mode": "drip", "reply": b"x" * 100}),
            (kind, {"mode": "http_garbage"}),
            *((kind, {"mode": "garbage", "seed": seed}) for seed in range(8)),
        ]
    return out


CASES = cases()


@pytest.mark.parametrize(("kind", "fake_args"), CASES, ids=[f"{k}-{a['mode']}-{i}" for i, (k, a) in enumerate(CASES)])
def test_misbehaving_engine_is_an_engine_error_within_the_budget(kind: str, fake_args: dict[str, Any]) -> None:
    budget = 0.8
    with FakeEngine(**fake_args) as fake:
        engine = adapter(kind, fake)
        start = time.monotonic()
        with pytest.raises(EngineError):
            engine.scan(Message.from_bytes(MESSAGE, Envelope()), call(budget))
        elapsed = time.monotonic() - start
        engine.close()
    assert elapsed < budget + MARGIN, f"{kind} {fake_args['mode']}: {elapsed:.2f}s"


@pytest.mark.parametrize("kind", list(VALID))
def test_random_replies_never_raise_anything_but_engine_error(kind: str) -> None:
    """Mutated valid replies (bytes flipped, cut, duplicated): a verdict or EngineError, nothing else."""
    rng = random.Random(9)
    valid = VALID[kind]
    outcomes = {"verdict": 0, "error": 0}
    for _ in range(40):
        data = bytearray(valid)
        for _ in range(rng.randint(1, 4)):
            op = rng.choice(("flip", "cut", "dup", "insert"))
            pos = rng.randrange(len(data)) if data else 0
            if op == "flip" and data:
                data[pos] = rng.randrange(256)
            elif op == "cut":
                del data[pos:]
            elif op == "dup":
                data[pos:pos] = data[pos : pos + rng.randint(1, 20)]
            else:
                data[pos:pos] = rng.randbytes(rng.randint(1, 10))
        with FakeEngine("reply", reply=bytes(data)) as fake:
            engine = adapter(kind, fake)
            start = time.monotonic()
            try:
                v = engine.scan(Message.from_bytes(MESSAGE, Envelope()), call(0.8))
                assert v.status in (Status.CLEAN, Status.SPAM, Status.INFECTED, Status.SKIPPED)
                outcomes["verdict"] += 1
            except EngineError:
                outcomes["error"] += 1
            engine.close()
            assert time.monotonic() - start < 0.8 + MARGIN
    assert outcomes["error"] > 0
    print(f"{kind}: {outcomes}")


@pytest.mark.parametrize("kind", list(VALID))
def test_slow_drip_within_the_budget_still_answers(kind: str) -> None:
    """Dripping is only a fault past the budget: a short reply dripped at 1 byte/10 ms is a verdict."""
    with FakeEngine("drip", delay=0.01, reply=VALID[kind]) as fake:
        engine = adapter(kind, fake)
        assert engine.scan(Message.from_bytes(MESSAGE, Envelope()), call(10)).status is Status.CLEAN
        engine.close()
