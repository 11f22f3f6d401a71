"""The milter callbacks under faults, driven without libmilter: what Postfix would be answered
when spooling fails, header edits fail, limits are hit, or commands come out of order."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import Milter
import pytest

from quorum import assembly
from quorum.assembly import parse_config
from quorum.pipeline.stages import Outcome, Stage
from quorum.pipeline.transaction import Transaction
from quorum.service.app import App
from quorum.service.session import QuorumMilter


class Recorder(Stage):
    """Remembers how every transaction ended (what the rate limiter would refund)."""

    name = "recorder"

    def __init__(self) -> None:
        self.outcomes: list[str] = []
        self.aborts = 0

    def finished(self, txn: Transaction, outcome: Outcome) -> None:
        self.outcomes.append(str(outcome.action))

    def aborted(self, txn: Transaction) -> None:
        self.aborts += 1


class Driven(QuorumMilter):
    """QuorumMilter with libmilter's side replaced by records."""

    fail_addheader = False

    def __init__(self) -> None:
        super().__init__()
        self._protocol = 0  # as negotiated with Postfix: no NOREPLY steps, callbacks return CONTINUE
        self.replies: list[tuple[str, str | None, str]] = []
        self.added: list[tuple[str, str]] = []

    def getsymval(self, name: str) -> str | None:
        return {"i": "4QID", "{client_addr}": "192.0.2.1"}.get(name)

    def setreply(self, code: str, xcode: str | None, text: str) -> None:
        self.replies.append((code, xcode, text))

    def addheader(self, name: str, value: str, idx: int = -1) -> None:
        if self.fail_addheader:
            raise Milter.error("cannot add header")
        self.added.append((name, value))

    def chgheader(self, name: str, idx: int, value: Any) -> None:
        return None

    def progress(self) -> None:
        return None


@pytest.fixture
def app(tmp_path: Any) -> Iterator[tuple[App, Recorder]]:
    spool_dir = tmp_path / "spool"
    spool_dir.mkdir()
    config = parse_config({"milter": {"tmpdir": str(spool_dir), "body_memory_limit": 1024, "max_headers": 10}})
    application = App(config, assembly)
    recorder = Recorder()
    application.pipeline.stages.append(recorder)
    Driven.app = application
    yield application, recorder
    application.close()


def transaction(m: Driven, rcpts: int = 1) -> None:
    assert m.connect("client.example", 4, ("192.0.2.1", 1234)) == Milter.CONTINUE
    assert m.hello("client.example") == Milter.CONTINUE
    assert m.envfrom_bytes(b"<a@example.com>") == Milter.CONTINUE  # type: ignore[attr-defined]
    for i in range(rcpts):
        m.envrcpt_bytes(f"<r{i}@example.org>".encode())  # type: ignore[attr-defined]
    assert m.data() == Milter.CONTINUE


def test_a_failed_body_write_answers_451_at_end_of_message_at_once(app: tuple[App, Recorder], tmp_path: Any) -> None:
    """Defect 2: an exception while spooling must not escape the no-reply body callback (libmilter
    would drop end-of-message and Postfix wait its content timeout); eom answers 451 at once."""
    _, recorder = app
    m = Driven()
    transaction(m)
    m.header_bytes("Subject", b" hi")  # type: ignore[attr-defined]
    (tmp_path / "spool").rmdir()  # the spool directory is gone: writing past 1 KiB fails
    assert m.body(b"x" * 4096) == Milter.CONTINUE
    assert m.body(b"y" * 10) == Milter.CONTINUE
    assert m.eom() == Milter.TEMPFAIL
    assert m.replies == [("451", "4.3.0", "message could not be stored for scanning, please try again later")]
    assert recorder.outcomes == ["tempfail"]


def test_failed_header_edits_become_451_and_the_stages_hear_tempfail(app: tuple[App, Recorder]) -> None:
    """Defect 7: `finished` comes after the edits, so a failed addheader refunds instead of
    counting a message Postfix never accepted."""
    _, recorder = app
    m = Driven()
    m.fail_addheader = True
    transaction(m)
    m.body(b"hello\r\n")
    assert m.eom() == Milter.TEMPFAIL
    assert m.replies[-1][0] == "451"
    assert recorder.outcomes == ["tempfail"]


def test_accepted_message_gets_its_headers_and_one_finish(app: tuple[App, Recorder]) -> None:
    _, recorder = app
    m = Driven()
    transaction(m)
    m.body(b"hello\r\n")
    assert m.eom() == Milter.CONTINUE
    assert ("X-Quorum-Verdict", " unchecked") in m.added  # no engine configured: nothing scanned it
    assert recorder.outcomes == ["accept"] and recorder.aborts == 0
    m.abort()  # after the end: nothing more to tell
    assert recorder.aborts == 0


def test_too_many_headers_is_refused_and_nothing_more_is_kept(app: tuple[App, Recorder]) -> None:
    m = Driven()
    transaction(m)
    for i in range(50):
        m.header_bytes(f"X-H{i}", b" v")  # type: ignore[attr-defined]
    assert m.content.headers == []
    assert m.eom() == Milter.REJECT
    assert m.replies[-1][:2] == ("552", "5.3.4")


def test_recipients_per_transaction_are_limited(tmp_path: Any) -> None:
    application = App(parse_config({"milter": {"max_recipients": 3}}), assembly)
    Driven.app = application
    try:
        m = Driven()
        transaction(m, rcpts=5)
        assert m.txn is not None and len(m.txn.envelope.recipients) == 3
        assert m.replies == [("452", "4.5.3", "Too many recipients, send the rest in another transaction")] * 2
    finally:
        application.close()


def test_commands_out_of_order_get_clean_answers(app: tuple[App, Recorder], caplog: pytest.LogCaptureFixture) -> None:
    m = Driven()
    caplog.set_level(logging.ERROR)
    assert m.envrcpt_bytes(b"<r@example.org>") == Milter.TEMPFAIL  # type: ignore[attr-defined]
    assert m.data() == Milter.TEMPFAIL
    assert m.eom() == Milter.TEMPFAIL
    assert m.header_bytes("X", b" y") == Milter.CONTINUE  # type: ignore[attr-defined]
    assert m.body(b"z") == Milter.CONTINUE
    assert m.abort() == Milter.CONTINUE
    assert "Traceback" not in caplog.text


def test_non_ascii_header_name_never_raises(app: tuple[App, Recorder]) -> None:
    m = Driven()
    transaction(m)
    m.header_bytes("X-Caf\udcc3\udca9", b" value")  # type: ignore[attr-defined]
    m.body(b"hi\r\n")
    assert m.eom() == Milter.CONTINUE
