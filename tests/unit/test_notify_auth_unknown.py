"""Sender notices when SPF/DMARC results are missing: a virus found first ends the scan early and
drops the auth stage's findings, so the sender may be forged and must not be notified."""

from __future__ import annotations

from dataclasses import replace

import pytest

from quorum.auth.dmarc import DmarcResult
from quorum.auth.findings import AuthFindings
from quorum.auth.spf import SpfResult
from quorum.message import Envelope, Message
from quorum.notify.facts import NoticeFacts
from quorum.notify.guards import GUARDS, guard
from quorum.notify.stage import AuthChecks, facts_of
from quorum.pipeline.policy import Decision
from quorum.pipeline.stages import Action, Outcome
from quorum.pipeline.transaction import Connection, Scan, Transaction

BOTH = AuthChecks(spf=True, dmarc=True)
SPF_PASS = SpfResult("pass", "mailfrom", "example.org", "alice@example.org")
SPF_FAIL = replace(SPF_PASS, result="fail")
DMARC_PASS = DmarcResult("pass", "example.org")


def transaction(auth_user: str = "", client_ip: str = "192.0.2.9", spf: SpfResult | None = None) -> Transaction:
    macros = {"i": "4XyZ1A", **({"{auth_authen}": auth_user} if auth_user else {})}
    env = Envelope(client_ip, "mx.example.org", "mx.example.org", "alice@example.org", ["bob@example.com"], macros)
    txn = Transaction(Connection(client_ip), env)
    if spf is not None:
        txn.results.put(spf, by="auth")
    return txn


def outcome(auth: AuthFindings | None) -> Outcome:
    message = Message.from_bytes(b"From: alice@example.org\r\nSubject: x\r\n\r\nbody\r\n")
    decision = Decision(Action.REJECT, "virus")
    scan = Scan()
    if auth is not None:
        scan.results.put(auth, by="auth")
    return Outcome(Action.REJECT, None, decision, scan, message=message)


@pytest.mark.parametrize(
    ("checks", "auth", "txn_spf", "user", "unknown"),
    [
        (BOTH, None, None, "", True),  # the auth stage was cut short: nothing known
        (BOTH, AuthFindings(SPF_PASS, (), DMARC_PASS), None, "", False),
        (BOTH, None, SPF_PASS, "", True),  # SPF known at MAIL FROM, DMARC still missing
        (AuthChecks(spf=True), None, SPF_PASS, "", False),  # spf_at = "mail", no DMARC configured
        (BOTH, None, None, "alice", False),  # authenticated: never checked, the sender is ours
        (AuthChecks(), None, None, "", False),  # no [auth]: nothing is missing
    ],
)
def test_missing_auth_results_are_told_from_unconfigured_ones(
    checks: AuthChecks, auth: AuthFindings | None, txn_spf: SpfResult | None, user: str, unknown: bool
) -> None:
    ended = outcome(auth)
    assert ended.message is not None
    facts = facts_of(transaction(user, spf=txn_spf), ended, ended.message, checks)
    assert facts.auth_unknown is unknown


def test_spf_from_mail_from_is_used_when_the_scan_has_none() -> None:
    ended = outcome(None)
    assert ended.message is not None
    facts = facts_of(transaction(spf=SPF_FAIL), ended, ended.message, BOTH)
    assert facts.spf == "fail"
    assert guard("quarantine", "sender", facts) == "spf_fail"  # the precise guard wins over auth_unknown


def test_auth_unknown_suppresses_only_sender_notices() -> None:
    facts = NoticeFacts(sender="alice@example.org", recipients=("bob@example.com",), auth_unknown=True)
    assert "auth_unknown" in GUARDS
    assert guard("quarantine", "sender", facts) == "auth_unknown"
    assert guard("quarantine", "admin", facts) is None and guard("quarantine", "recipient", facts) is None
    assert guard("quarantine", "sender", replace(facts, auth_unknown=False)) is None
