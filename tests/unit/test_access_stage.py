"""The access stage: REJECT/OK per recipient, exemptions, one policy per transaction (452 4.5.3)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from quorum.access.settings import AccessSettings, is_exempt
from quorum.access.stage import OK, SENDER_OK, AccessStage
from quorum.assembly import parse_config
from quorum.message import Message
from quorum.pipeline.pipeline import Parts, Pipeline
from quorum.pipeline.stages import Action
from quorum.pipeline.transaction import Connection, Findings, Transaction
from quorum.records.format import json_line
from quorum.tenants import TenantPolicies


@pytest.fixture()
def stage(tmp_path: Path) -> AccessStage:
    (tmp_path / "client").write_text("203.0.113.0/24 REJECT Go away\n192.0.2.50 OK\n")
    (tmp_path / "sender").write_text("friend@partner.test OK\nspammer.test REJECT\n")
    (tmp_path / "recipient").write_text("vip.test OK\nclosed@rcpt.test REJECT Mailbox closed\n")
    (tmp_path / "header").write_text("/^Subject:.*casino/i REJECT No casinos\n/^X-Hold: yes/ HOLD\n")
    settings = AccessSettings(
        client=str(tmp_path / "client"),
        sender=str(tmp_path / "sender"),
        recipient=str(tmp_path / "recipient"),
        header=str(tmp_path / "header"),
    )
    return AccessStage(settings)


def session(ip: str = "192.0.2.10", sender: str = "a@sender.test") -> Transaction:
    conn = Connection(ip)
    txn = Transaction(conn, conn.envelope())
    txn.envelope.sender = sender
    return txn


def add(stage: AccessStage, s: Transaction, rcpt: str) -> tuple[str, str, str] | None:
    """What the milter does: the pipeline's RCPT (the one-class-per-transaction rule, then the
    stage); the recipient joins the envelope only when nothing refused it."""
    config = parse_config({})
    pipeline = Pipeline(config, Parts([], [stage], TenantPolicies(config, listen=False), json_line))
    try:
        reply = pipeline.rcpt(s, rcpt)
    finally:
        pipeline.stage_pool.shutdown()
    if reply is None:
        return None
    return reply.action, reply.code, f"{reply.xcode} {reply.text}"


def test_reject_rules(stage: AccessStage) -> None:
    assert add(stage, session(ip="203.0.113.9"), "u@rcpt.test") == (Action.REJECT, "554", "5.7.1 Go away")
    assert add(stage, session(sender="x@spammer.test"), "u@rcpt.test") == (Action.REJECT, "554", "5.7.1 Access denied")
    assert add(stage, session(), "closed@rcpt.test") == (Action.REJECT, "554", "5.7.1 Mailbox closed")


def test_postmaster_stays_reachable_from_a_rejected_client(stage: AccessStage) -> None:
    s = session(ip="203.0.113.9")
    assert add(stage, s, "postmaster@rcpt.test") is None
    assert add(stage, s, "u@rcpt.test") is not None


def test_reject_beats_ok(stage: AccessStage) -> None:
    assert add(stage, session(ip="203.0.113.9"), "u@vip.test") is not None


def test_ok_marks_the_transaction_and_skips_spam_verdicts(stage: AccessStage) -> None:
    s = session(ip="192.0.2.50")  # client-table OK
    assert add(stage, s, "u@rcpt.test") is None
    assert s.access_class().name == OK
    ctx = (
        stage.examine(s, Message.from_bytes(b"Subject: hello\r\n\r\nx\r\n", s.envelope), time.monotonic() + 5)
        or Findings()
    )
    assert ctx.skip_spam and ctx.log["access"].startswith("ok(")


def test_a_sender_ok_alone_skips_nothing_until_the_sender_is_verified(stage: AccessStage) -> None:
    """Issue 17, item 7: the envelope sender is forgeable; the auth stage verifies it (SPF/DKIM)."""
    s = session(sender="friend@partner.test")
    assert add(stage, s, "u@rcpt.test") is None
    assert s.access_class().name == SENDER_OK
    ctx = (
        stage.examine(s, Message.from_bytes(b"Subject: hello\r\n\r\nx\r\n", s.envelope), time.monotonic() + 5)
        or Findings()
    )
    assert not ctx.skip_spam and ctx.log["access"].startswith("sender_ok(")


def test_a_sender_ok_of_an_authenticated_session_is_an_ok(stage: AccessStage) -> None:
    s = session(sender="friend@partner.test")
    s.envelope.macros["{auth_authen}"] = "friend"
    assert add(stage, s, "u@rcpt.test") is None
    assert s.access_class().name == OK


def test_client_or_recipient_ok_wins_over_a_sender_ok(stage: AccessStage) -> None:
    s = session(ip="192.0.2.50", sender="friend@partner.test")
    add(stage, s, "u@rcpt.test")
    assert s.access_class().name == OK
    s = session(sender="friend@partner.test")
    add(stage, s, "u@vip.test")
    assert s.access_class().name == OK


def test_a_recipient_with_another_access_result_waits_for_its_own_transaction(stage: AccessStage) -> None:
    s = session()
    assert add(stage, s, "u@vip.test") is None  # OK
    assert add(stage, s, "u@rcpt.test") == (
        Action.TEMPFAIL,
        "452",
        "4.5.3 Recipient needs a separate transaction, try again",
    )
    assert add(stage, s, "v@vip.test") is None  # same class as the first: fine
    assert s.envelope.recipients == ["u@vip.test", "v@vip.test"]
    # the other way round
    s = session()
    assert add(stage, s, "u@rcpt.test") is None
    assert add(stage, s, "u@vip.test") is not None
    # a refused first recipient does not set the class
    s = session()
    assert add(stage, s, "closed@rcpt.test") is not None
    assert add(stage, s, "u@vip.test") is None


def test_header_rules_at_end_of_data(stage: AccessStage) -> None:
    s = session()
    add(stage, s, "u@rcpt.test")
    msg = Message.from_bytes(b"Subject: Casino bonus\r\nX-Hold: yes\r\n\r\nx\r\n", s.envelope)
    ctx = stage.examine(s, msg, time.monotonic() + 5) or Findings()
    assert ctx.reply is not None and (ctx.reply.code, ctx.reply.xcode, ctx.reply.text) == ("554", "5.7.1", "No casinos")
    assert ctx.hold
    assert ctx.log["header_rules"].startswith("reject(")


@pytest.mark.parametrize(
    ("rcpt", "exempt"),
    [
        ("postmaster@x.test", True),
        ("<Postmaster@x.test>", True),
        ("postmaster", True),
        ("abuse@x.test", True),
        ("user@x.test", False),
        ("postmaster.x@x.test", False),
    ],
)
def test_exemptions(rcpt: str, exempt: bool) -> None:
    assert is_exempt(rcpt, ("postmaster", "abuse")) is exempt
    assert is_exempt("hostmaster@x.test", ("hostmaster@x.test",))
