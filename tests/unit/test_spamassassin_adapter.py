"""SpamAssassin adapter: spamd reply parsing (captured from spamd 4.0.1), requests, faults."""

from __future__ import annotations

import os
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.harness.fake_engine import FakeEngine

from quorum.assembly import parse_config
from quorum.config.fields import ConfigError
from quorum.config.model import EngineSettings
from quorum.engines import EngineError, ScanCall, build_engine
from quorum.engines.spamassassin import MAX_REPLY, SpamAssassin, parse_reply
from quorum.message import Envelope, Message
from quorum.verdict import Status

# Captured from spamd 4.0.1 (Debian 12) with engines/spamassassin/local.cf.
SYMBOLS_GTUBE = (
    b"SPAMD/1.1 0 EX_OK\r\nContent-length: 27\r\nSpam: True ; 1000.0 / 5.0\r\n\r\nGTUBE,NO_RECEIVED,NO_RELAYS"
)
SYMBOLS_HAM = b"SPAMD/1.1 0 EX_OK\r\nContent-length: 21\r\nSpam: False ; -0.0 / 5.0\r\n\r\nNO_RECEIVED,NO_RELAYS"
REPORT_GTUBE = (
    b"SPAMD/1.1 0 EX_OK\r\nContent-length: 903\r\nSpam: True ; 1000.0 / 5.0\r\n\r\n"
    b'Spam detection software, running on the system "vm",\nhas identified this incoming email as possible spam.'
    b"  The original\nmessage has been attached to this so you can view it or label\nsimilar future email.  If you"
    b" have any questions, see\n@@CONTACT_ADDRESS@@ for details.\n\nContent preview:  This is the GTUBE, the "
    b"Generic Test for Unsolicited Bulk Email\n   XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*"
    b"C.34X You\n  should send this test mail from an account outside of your network. \n\nContent analysis "
    b"details:   (1000.0 points, 5.0 required)\n\n pts rule name              description\n---- "
    b"---------------------- --------------------------------------------------\n-0.0 NO_RECEIVED            "
    b"Informational: message has no Received headers\n-0.0 NO_RELAYS              Informational: message was "
    b"not relayed via SMTP\n1000 GTUBE                  BODY: Generic Test for Unsolicited Bulk Email\n\n"
)
CHECK_GTUBE = b"SPAMD/1.1 0 EX_OK\r\nSpam: True ; 1000.0 / 5.0\r\n\r\n"
PONG = b"SPAMD/1.5 0 PONG\r\n"
BAD_COMMAND = b"SPAMD/1.0 76 Bad header line: BOGUS SPAMC/1.5\r\n"
LENGTH_MISMATCH = b"SPAMD/1.0 76 Bad header line: (Content-Length mismatch: Expected 100 bytes, got 2 bytes)\r\n"
EMPTY_MESSAGE = b"SPAMD/1.1 0 EX_OK\r\n"  # the reply to Content-length: 0

MESSAGE = b"From: a@example.org\r\nTo: b@example.com\r\nSubject: hi\r\n\r\nHello there.\r\n"


def engine(address: str, threshold: float | None = None, **options: Any) -> SpamAssassin:
    opts = {"address": address, "user": None, "command": "SYMBOLS", **options}
    e = build_engine(EngineSettings("sa", "spamassassin", threshold=threshold, options=opts))
    assert isinstance(e, SpamAssassin)
    return e


def message(raw: bytes = MESSAGE) -> Message:
    return Message.from_bytes(raw, Envelope(sender="a@example.org", recipients=["b@example.com"]))


def call(seconds: float = 5.0) -> ScanCall:
    return ScanCall(time.monotonic() + seconds)


# --- parsing ----------------------------------------------------------------------------------


def test_parse_symbols_gtube() -> None:
    r = parse_reply(SYMBOLS_GTUBE)
    assert (r.spam, r.score, r.threshold, r.names) == (True, 1000.0, 5.0, ("GTUBE", "NO_RECEIVED", "NO_RELAYS"))


def test_parse_symbols_ham_normalises_negative_zero() -> None:
    r = parse_reply(SYMBOLS_HAM)
    assert (r.spam, r.score, r.threshold, r.names) == (False, 0.0, 5.0, ("NO_RECEIVED", "NO_RELAYS"))
    assert str(r.score) == "0.0"


def test_parse_report_orders_rules_by_points() -> None:
    r = parse_reply(REPORT_GTUBE, "REPORT")
    assert (r.spam, r.score, r.names) == (True, 1000.0, ("GTUBE", "NO_RECEIVED", "NO_RELAYS"))


def test_parse_check_reply_without_body() -> None:
    assert parse_reply(CHECK_GTUBE).names == ()


@pytest.mark.parametrize(
    ("header", "spam", "score"),
    [(b"Yes ; 7.5 / 5.0", True, 7.5), (b"No ; -2 / 5", False, -2.0), (b"  true;6.1/5.0  ", True, 6.1)],
)
def test_spam_header_variants(header: bytes, spam: bool, score: float) -> None:
    r = parse_reply(b"SPAMD/1.1 0 EX_OK\r\nspam: " + header + b"\r\n\r\nA,B\r\n")
    assert (r.spam, r.score, r.names) == (spam, score, ("A", "B"))


def test_symbol_list_is_capped_and_filtered() -> None:
    body = ",".join([f"R{i}" for i in range(30)] + ["", " bad name ", "<x>"]).encode()
    r = parse_reply(b"SPAMD/1.1 0 EX_OK\r\nSpam: True ; 9 / 5\r\n\r\n" + body)
    assert len(r.names) == 20 and r.names[0] == "R0"


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        (BAD_COMMAND, "EX_PROTOCOL: Bad header line"),
        (LENGTH_MISMATCH, "EX_PROTOCOL"),
        (b"SPAMD/1.1 75 EX_TEMPFAIL\r\n", "EX_TEMPFAIL"),
        (b"SPAMD/1.1 99 whatever\r\n", "spamd 99"),
        (EMPTY_MESSAGE, "no Spam header"),
        (b"SPAMD/1.1 0 EX_OK\r\nSpam: maybe ; 1 / 5\r\n\r\n", "unparsable"),
        (b"SPAMD/1.1 0 EX_OK\r\nSpam: True ; 1e400 / 5\r\n\r\n", "unparsable"),
        (b"HTTP/1.1 200 OK\r\n\r\n", "not a spamd reply"),
        (b"", "not a spamd reply"),
        (os.urandom(2048).replace(b"SPAMD", b""), "not a spamd reply"),
    ],
)
def test_bad_replies_raise_engine_error(raw: bytes, match: str) -> None:
    with pytest.raises(EngineError, match=match):
        parse_reply(raw)


# --- config -----------------------------------------------------------------------------------


def test_config_defaults_and_options() -> None:
    cfg = parse_config(
        {
            "engines": {
                "sa": {"type": "spamassassin"},
                "sa2": {"type": "spamassassin", "address": "/run/spamd.sock", "user": "quorum", "command": "REPORT"},
            }
        }
    )
    sa, sa2 = cfg.engines
    assert sa.options == {"address": "127.0.0.1:783", "user": None, "command": "SYMBOLS"}
    assert sa.max_size == 512 * 1024
    assert sa2.options == {"address": "/run/spamd.sock", "user": "quorum", "command": "REPORT"}


@pytest.mark.parametrize(
    ("key", "value", "words"),
    [
        ("address", "localhost", "host:port"),
        ("command", "CHECK", "SYMBOLS | REPORT"),
        ("user", "two words", "one word"),
        ("user", 5, "expected a string"),
        ("adress", "127.0.0.1:783", "unknown key"),
    ],
)
def test_config_errors_name_the_key(key: str, value: Any, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"engines": {"sa": {"type": "spamassassin", key: value}}})
    assert any(p.startswith(f"engines.sa.{key}:") and words in p for p in info.value.problems), info.value.problems


# --- against fakes ----------------------------------------------------------------------------


def test_scan_request_and_verdict() -> None:
    with FakeEngine("reply", reply=SYMBOLS_GTUBE) as fake:
        m = message()
        v = engine(fake.address, user="quorum").scan(m, call())
    assert fake.heads[0] == f"SYMBOLS SPAMC/1.5\r\nContent-length: {m.size}\r\nUser: quorum".encode()
    assert fake.bodies[0] == m.raw()
    assert (v.status, v.score, v.threshold, v.detail) == (Status.SPAM, 1000.0, 5.0, "1000.00/5.00")
    assert v.names == ("GTUBE", "NO_RECEIVED", "NO_RELAYS") and v.normalised_score == 2.0


def test_report_command() -> None:
    with FakeEngine("reply", reply=REPORT_GTUBE) as fake:
        v = engine(fake.address, command="REPORT").scan(message(), call())
    assert fake.heads[0].startswith(b"REPORT SPAMC/1.5\r\n")
    assert v.status is Status.SPAM and v.names[0] == "GTUBE"


def test_engine_threshold_setting_is_not_applied_in_the_adapter() -> None:
    """`[engines.NAME] threshold` is the policy's: the adapter reports spamd's own flag, score and required."""
    with FakeEngine("reply", reply=SYMBOLS_HAM.replace(b"-0.0", b"3.5")) as fake:
        v = engine(fake.address, threshold=3.0).scan(message(), call())
        assert (v.status, v.score, v.threshold, v.detail) == (Status.CLEAN, 3.5, 5.0, "3.50/5.00")


def test_reply_framed_by_content_length_needs_no_eof() -> None:
    """spamd closes after answering, but a reply with a complete Content-length body is enough."""
    with FakeEngine("slow", delay=0.0, reply=SYMBOLS_GTUBE + b"trailing junk") as fake:
        assert engine(fake.address).scan(message(), call()).names == ("GTUBE", "NO_RECEIVED", "NO_RELAYS")


def test_error_code_is_engine_error() -> None:
    with FakeEngine("reply", reply=BAD_COMMAND) as fake, pytest.raises(EngineError, match="EX_PROTOCOL"):
        engine(fake.address).scan(message(), call())


def test_ping() -> None:
    with FakeEngine("reply", reply=PONG) as fake:
        engine(fake.address).ping(2)
        assert fake.heads[0] == b"PING SPAMC/1.5"
    with FakeEngine("reply", reply=b"SPAMD/1.5 76 Bad header line\r\n") as fake, pytest.raises(EngineError):
        engine(fake.address).ping(2)
    with FakeEngine("hang") as fake, pytest.raises(EngineError, match="timeout"):
        engine(fake.address).ping(0.3)


@pytest.mark.parametrize(
    ("fake_args", "match"),
    [
        ({"mode": "reset"}, None),
        ({"mode": "garbage"}, "not a spamd reply"),
        ({"mode": "http_garbage"}, "not a spamd reply"),
        ({"mode": "oversize"}, "larger than"),
        ({"mode": "oversize", "prefix": b"SPAMD/1.1 0 EX_OK\r\nSpam: True ; 1 / 5\r\n\r\n"}, "larger than"),
        ({"mode": "reply", "reply": b""}, "without a reply"),
        ({"mode": "reply", "reply": b"SPAMD/1.1 0 EX_OK\r\nContent-length: 99\r\n\r\nshort"}, "Spam header"),
    ],
)
def test_faults_raise_engine_error(fake_args: dict[str, Any], match: str | None) -> None:
    with FakeEngine(**fake_args) as fake:
        start = time.monotonic()
        with pytest.raises(EngineError, match=match):
            engine(fake.address).scan(message(), call(3.0))
        assert time.monotonic() - start < 5


@pytest.mark.parametrize("mode", ["hang", "slow"])
def test_hung_engine_returns_within_the_deadline(mode: str) -> None:
    with FakeEngine(mode, delay=3.0, reply=SYMBOLS_HAM) as fake:
        start = time.monotonic()
        with pytest.raises(EngineError, match="timeout"):
            engine(fake.address).scan(message(), call(0.5))
        elapsed = time.monotonic() - start
    print(f"{mode}: EngineError after {elapsed:.3f}s (deadline 0.5s)")
    assert elapsed < 5


def test_deadline_bounds_the_whole_exchange_not_each_read() -> None:
    """A server that trickles bytes cannot stretch the scan past the call's budget."""
    with FakeEngine("oversize", prefix=b"SPAMD/1.1 0 EX_OK\r\n", oversize_limit=200_000) as fake:
        start = time.monotonic()
        with pytest.raises(EngineError):
            engine(fake.address).scan(message(), call(0.5))
        assert time.monotonic() - start < 5


def test_cancel_from_another_thread_interrupts_a_hung_read() -> None:
    with FakeEngine("hang") as fake:
        c = call(30)
        threading.Timer(0.3, c.cancel).start()
        start = time.monotonic()
        with pytest.raises(EngineError, match="cancelled"):
            engine(fake.address).scan(message(), c)
        elapsed = time.monotonic() - start
    assert elapsed < 5, elapsed


def test_connection_refused_and_spent_budget() -> None:
    with FakeEngine("hang") as fake:
        address = fake.address
    with pytest.raises(EngineError, match="cannot connect"):
        engine(address).scan(message(), call(2))
    with pytest.raises(EngineError, match="timeout"):
        engine(address).scan(message(), call(0))


def test_large_message_when_spamd_stops_reading() -> None:
    """spamd answering early (error) while we still send: the reply is read, not a broken pipe."""
    with FakeEngine("reply", reply=LENGTH_MISMATCH) as fake, pytest.raises(EngineError, match="EX_PROTOCOL"):
        engine(fake.address).scan(message(MESSAGE + b"x" * 8_000_000), call(10))


@pytest.fixture
def unix_spamd() -> Iterator[Path]:
    """A one-shot spamd stand-in on a unix socket."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "spamd.sock"
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(str(path))
        server.listen(1)
        server.settimeout(5)

        def serve() -> None:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                data = b""
                while chunk := conn.recv(65536):  # the adapter half-closes after the message
                    data += chunk
                conn.sendall(SYMBOLS_GTUBE)

        t = threading.Thread(target=serve, daemon=True)
        t.start()
        yield path
        server.close()
        t.join(5)


def test_unix_socket_address(unix_spamd: Path) -> None:
    assert engine(str(unix_spamd)).scan(message(), call()).status is Status.SPAM


def test_reply_cap() -> None:
    body = b"A," * ((MAX_REPLY - 200) // 2)
    raw = b"SPAMD/1.1 0 EX_OK\r\nSpam: True ; 6 / 5\r\nContent-length: %d\r\n\r\n" % len(body) + body
    with FakeEngine("reply", reply=raw) as fake:
        assert engine(fake.address).scan(message(), call()).names == ("A",) * 20
