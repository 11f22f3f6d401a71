"""A session held at end of message must never hold up another session's commands.

libmilter's pool of workers can lose a wake-up when two sessions have a command ready at once
with one worker idle (quorum.service.pool): before the fix, the second one waited until the
first one's end of message returned (here the engine's 6 s timeout, through Postfix its
`milter_command_timeout`, then 451). Driven over the milter protocol so both commands are
readable at the same moment, every round.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.harness import milter_client as mc
from tests.harness.fake_engine import FakeEngine
from tests.harness.quorum import QuorumProcess, engine_table

pytestmark = pytest.mark.integration

HELD = 6  # seconds an end of message waits on the hung engine


@pytest.fixture
def quorum(tmp_path: Path) -> Iterator[tuple[QuorumProcess, FakeEngine]]:
    hang = FakeEngine("hang")
    body = engine_table("av", "clamav", address=hang.address, timeout=HELD, breaker_failures=1000)
    q = QuorumProcess(tmp_path / "quorum", body, milter_extra=f"scan_deadline = {HELD}\n").start()
    yield q, hang
    q.stop()
    hang.stop()


def opened(q: QuorumProcess, to_body: bool) -> mc.Connection:
    conn = mc.Connection(q.socket, timeout=HELD + 10)
    conn.negotiate()
    conn.send(mc.macros(mc.CONNECT, {b"j": b"mx.test.example", b"{client_addr}": b"192.0.2.1"}))
    conn.step(mc.connect(b"mail.example.com", b"192.0.2.1"))
    conn.step(mc.helo(b"mail.example.com"))
    conn.send(mc.macros(mc.MAIL, {b"i": b"4ABCDEF0123"}))
    reply = conn.step(mc.mail(b"<alice@example.com>"))
    assert reply is None or reply.cmd == mc.CONTINUE, reply
    if to_body:
        conn.step(mc.rcpt(b"<bob@example.org>"))
        conn.step(mc.data())
        conn.step(mc.header(b"Subject", b"held"))
        conn.step(mc.eoh())
        conn.step(mc.body_chunks(b"held at end of message\r\n")[0])
    return conn


def test_a_rcpt_is_answered_while_two_sessions_wait_on_a_hung_engine(
    quorum: tuple[QuorumProcess, FakeEngine],
) -> None:
    q, hang = quorum
    for round_ in range(2):
        a, b, c = opened(q, True), opened(q, True), opened(q, False)
        try:
            b.send(mc.eom())  # one worker held
            time.sleep(0.3)
            a.send(mc.eom())  # ...and A's end of message ready together with C's RCPT
            c.send(mc.rcpt(b"<bob@example.org>"))
            start = time.monotonic()
            reply, _ = c.read_final()
            waited = time.monotonic() - start
            assert reply.cmd == mc.CONTINUE, reply
            assert waited < 3, f"round {round_}: RCPT answered after {waited:.1f}s, behind another session's scan"
            assert a.read_final()[0].smtp_code == "451" and b.read_final()[0].smtp_code == "451"
        finally:
            for conn in (a, b, c):
                conn.close()
    assert hang.connections == 4
    assert "Traceback" not in q.log_text()
