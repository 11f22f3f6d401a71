"""The per-recipient digest of held mail: who gets one, what it lists, how it renders."""

from __future__ import annotations

from typing import Any

import pytest

from quorum.config.fields import Problems, Table
from quorum.notify.message import build_notice
from quorum.notify.settings import DIGEST, DomainNotify, parse_domain_notify
from quorum.notify.templates import Renderer
from quorum.notify.variables import variables
from quorum.quarantine.digest import DIGEST_POLICY, plan, send
from quorum.quarantine.held import HeldMessage

WANTS = DomainNotify(recipient=True, events=(DIGEST, "virus"))


def held(qid: str, *rcpts: str, subject: str = "=?utf-8?q?Gr=C3=BC=C3=9Fe?=") -> HeldMessage:
    headers = f"From: <mallory@example.org>\nSubject: {subject}\nX-Quorum-Quarantine: virus Eicar found by clamav\n"
    return HeldMessage(qid, 1_800_000_000, 1234, "mallory@example.org", rcpts, "virus Eicar found by clamav", headers)


def policies(mapping: dict[str, DomainNotify | None]) -> Any:
    return lambda rcpt: (mapping.get(rcpt.rpartition("@")[2].lower()), rcpt.rpartition("@")[2].lower())


def test_one_digest_per_recipient_of_domains_that_ask_for_it() -> None:
    messages = [
        held("A1", "bob@a.example", "carol@a.example"),
        held("A2", "Bob@A.example", "dave@b.example"),
        held("A3", "erin@c.example"),
    ]
    found = plan(messages, policies({"a.example": WANTS, "b.example": DomainNotify(recipient=True)}))
    assert [(d.recipient, [m.queue_id for m in d.messages], d.tenant) for d in found] == [
        ("bob@a.example", ["A1", "A2"], "a.example"),
        ("carol@a.example", ["A1"], "a.example"),
    ]


def test_digest_needs_recipient_notices() -> None:
    problems = Problems()
    parse_domain_notify(Table({"events": ["digest"]}, 'domains."x".notify', problems))
    assert any('domains."x".notify.events' in e and "recipient = true" in e for e in problems.errors)
    ok = Problems()
    assert parse_domain_notify(Table({"events": ["digest"], "recipient": True}, "n", ok)).events == (DIGEST,)
    assert not ok.errors


def test_default_digest_lists_each_message_without_content() -> None:
    [digest] = plan(
        [held("A1", "bob@a.example"), held("A2", "bob@a.example", subject="Invoice")], policies({"a.example": WANTS})
    )
    facts = digest.facts()
    rendered = Renderer().render(
        DIGEST, "recipient", facts.tenant, variables(DIGEST, "recipient", digest.recipient, facts.recipients, facts)
    )
    assert rendered.template == "default:digest.txt"
    assert rendered.subject == "2 messages held for you"
    body = rendered.body
    assert "A1" in body and "A2" in body and "Grüße" in body and "Invoice" in body
    assert "virus Eicar found by clamav" in body and "mallory@example.org" in body
    assert "{{" not in body and "{%" not in body
    data, _, _ = build_notice("pm@example.net", digest.recipient, rendered.subject, body, DIGEST)
    assert b"Auto-Submitted: auto-generated" in data


class _Notifier:
    def __init__(self) -> None:
        self.submitted: list[tuple[str, Any, DomainNotify]] = []
        self.closed: float | None = None

    def submit(self, event: str, facts: Any, policy: DomainNotify) -> bool:
        self.submitted.append((event, facts, policy))
        return True

    def close(self, timeout: float) -> None:
        self.closed = timeout

    def stats(self) -> dict[str, Any]:
        return {"sent": len(self.submitted), "failed": 0, "dropped": 0, "pending": 0, "suppressed": {}}


def test_send_submits_one_recipient_notice_per_digest_and_waits() -> None:
    digests = plan([held("A1", "bob@a.example", "carol@a.example")], policies({"a.example": WANTS}))
    notifier = _Notifier()
    run = send(digests, notifier, timeout=7.0)
    assert [(e, f.recipients, p) for e, f, p in notifier.submitted] == [
        (DIGEST, ("bob@a.example",), DIGEST_POLICY),
        (DIGEST, ("carol@a.example",), DIGEST_POLICY),
    ]
    assert notifier.closed == 7.0 and run.ok and run.queue_ids == ["A1"]


@pytest.mark.parametrize("stats", [{"failed": 1}, {"dropped": 1}, {"pending": 2}])
def test_a_digest_not_sent_is_a_failed_run(stats: dict[str, int]) -> None:
    from quorum.quarantine.digest import DigestRun

    assert not DigestRun([], {"sent": 0, **stats}).ok
