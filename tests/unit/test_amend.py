"""The post-decision edit hook (quorum.pipeline.amend): what a stage sees and what its amendment does."""

from __future__ import annotations

from typing import Any

import pytest

from quorum.assembly import build_pipeline, parse_config
from quorum.message import Envelope, Message
from quorum.pipeline import amend
from quorum.pipeline.amend import Amendment, FinalMessage
from quorum.pipeline.output import Edits
from quorum.pipeline.policy import Decision
from quorum.pipeline.stages import Action, Reply, Stage
from quorum.pipeline.transaction import Connection, Transaction

RAW = (
    b"From: Alice <alice@example.com>\r\n"
    b"X-Quorum-Verdict: clean\r\n"  # forged: removed
    b"Subject: a long\r\n subject\r\n"
    b"\r\n"
    b"body line\r\n"
)


class Recorder(Stage):
    def __init__(self, name: str, headers: tuple[tuple[str, str], ...] = (), refuse: Reply | None = None) -> None:
        self.name = name
        self.headers = headers
        self.refuse = refuse
        self.seen: list[bytes] = []

    def amend(self, txn: Transaction, final: FinalMessage) -> Amendment:
        self.seen.append(b"".join(final.chunks()))
        return Amendment(self.headers, self.refuse, note=f"{self.name} amended")


def message() -> tuple[Transaction, Message]:
    env = Envelope("192.0.2.1", "client.example", "client.example", "alice@example.com", ["bob@example.org"])
    return Transaction(Connection(env.client_ip), env), Message.from_bytes(RAW, env)


def edits(**kw: Any) -> Edits:
    base: dict[str, Any] = {
        "action": Action.ACCEPT,
        "remove": (("X-Quorum-Verdict", 1),),
        "add": (("X-Quorum-Verdict", "clean"),),
    }
    return Edits(**{**base, **kw})


def test_a_stage_sees_the_message_as_it_will_leave_and_later_stages_see_earlier_ones() -> None:
    txn, msg = message()
    first = Recorder("dkim", (("DKIM-Signature", "v=1; d=example.com;\n\tb=abc"),))
    second = Recorder("arc", (("ARC-Seal", "i=1"),))
    out, notes = amend.run([first, second], txn, msg, edits())
    assert first.seen == [
        b"X-Quorum-Verdict: clean\r\nFrom: Alice <alice@example.com>\r\n"
        b"Subject: a long\r\n subject\r\n\r\nbody line\r\n"
    ]
    assert second.seen[0].startswith(b"DKIM-Signature: v=1; d=example.com;\r\n\tb=abc\r\nX-Quorum-Verdict: clean\r\n")
    # each stage's fields above those of the stages before it, Quorum's own below them
    assert [name for name, _ in out.add] == ["ARC-Seal", "DKIM-Signature", "X-Quorum-Verdict"]
    assert out.action is Action.ACCEPT and notes == ["dkim: dkim amended", "arc: arc amended"]


def test_a_refusal_or_a_failure_stops_delivery() -> None:
    txn, msg = message()
    no = Reply.tempfail("451", "4.7.1", "signing key unreadable")
    out, notes = amend.run([Recorder("dkim", refuse=no)], txn, msg, edits())
    assert (out.action, out.reply) == (Action.TEMPFAIL, no)

    class Broken(Stage):
        name = "broken"

        def amend(self, txn: Transaction, final: FinalMessage) -> Amendment:
            raise RuntimeError("bug")

    out, notes = amend.run([Broken()], txn, msg, edits())
    assert out.action is Action.TEMPFAIL and out.reply is not None and out.reply.code == "451"
    assert notes == ["broken: amending failed, answered 451"]


def test_header_values_from_a_stage_are_sanitised() -> None:
    txn, msg = message()
    out, _ = amend.run([Recorder("x", (("X-Test", "a\r\nInjected: yes"),))], txn, msg, edits())
    assert "\r\nInjected" not in out.add[0][1] and "\nInjected" not in out.add[0][1]


@pytest.mark.parametrize("raw", [RAW, RAW.replace(b"body line", b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR")])
def test_the_pipeline_calls_the_hook_for_delivered_mail_only(raw: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    stage = Recorder("hello", (("X-Hello", "hi"),))
    monkeypatch.setattr("quorum.assembly.build_stages", lambda config: [stage])
    pipeline = build_pipeline(parse_config({}))
    try:
        txn, msg = message()
        refuse = b"EICAR" in raw
        if refuse:
            virus = Decision(Action.REJECT, "virus", Reply.reject("554", "5.7.1", "virus"))
            monkeypatch.setattr("quorum.pipeline.policy.Policy.decide", lambda *_: virus)
        result = pipeline.check(txn, Message.from_bytes(raw, msg.envelope))
        if refuse:
            assert result.edits.action is Action.REJECT and stage.seen == []
        else:
            assert result.edits.add[0] == ("X-Hello", "hi") and len(stage.seen) == 1
            assert "hello: hello amended" in result.notes
    finally:
        pipeline.close()
