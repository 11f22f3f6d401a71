"""Issue 17, item 7: a sender-table OK is keyed on the envelope sender, which anybody can write.

It counts (spam verdicts skipped) only when the sender is verified - an authenticated session, SPF
pass for the envelope domain, or a DKIM pass by it - and even then it never lifts DMARC enforcement
for a From: domain other than the sender's own. The DNSBL's RCPT-time refusal is skipped for it only
when SPF already passed at MAIL FROM.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Iterator

import pytest
from tests.zones.auth import DkimKey, make_key, message
from tests.zones.fake_resolver import FakeResolver

from quorum.access.dnsbl import DnsblList
from quorum.access.stage import OK, SENDER_OK, DnsblStage, sender_verified
from quorum.auth.dkim import DkimResult
from quorum.auth.settings import AuthSettings
from quorum.auth.spf import SpfResult
from quorum.auth.stage import AuthStage
from quorum.message import Message
from quorum.pipeline.stages import Action
from quorum.pipeline.transaction import AccessClass, Connection, Findings, Transaction

GOOD, BAD, LISTED = "192.0.2.10", "198.51.100.20", "203.0.113.66"
SOURCE = "sender:1"


@pytest.fixture(scope="module")
def partner_key() -> DkimKey:
    return make_key("partner.test", "p1", bits=1024)


@pytest.fixture(scope="module")
def evil_key() -> DkimKey:
    return make_key("evil.test", "e1", bits=1024)


@pytest.fixture()
def dns(partner_key: DkimKey, evil_key: DkimKey) -> FakeResolver:
    records = [
        ("p1._domainkey.partner.test", "TXT", partner_key.record),
        ("e1._domainkey.evil.test", "TXT", evil_key.record),
        ("_dmarc.partner.test", "TXT", "v=DMARC1; p=reject"),
        ("_dmarc.bank.test", "TXT", "v=DMARC1; p=reject"),
        ("_dmarc.quarantine.test", "TXT", "v=DMARC1; p=quarantine"),
        ("partner.test", "TXT", "v=spf1 ip4:192.0.2.0/24 -all"),
        ("bank.test", "TXT", "v=spf1 ip4:192.0.2.0/24 -all"),
        ("quarantine.test", "TXT", "v=spf1 ip4:192.0.2.0/24 -all"),
        ("66.113.0.203.reject.bl.test", "A", "127.0.0.2"),
    ]
    return FakeResolver(records)


def txn(sender: str, ip: str, cls: str = SENDER_OK, auth: str = "") -> Transaction:
    conn = Connection(ip)
    s = Transaction(conn, conn.envelope())
    s.envelope.client_ip, s.envelope.helo, s.envelope.sender = ip, "client.example", sender
    s.envelope.recipients.append("user@rcpt.test")
    s.access["user@rcpt.test"] = AccessClass(cls, SOURCE)
    if auth:
        s.envelope.macros["{auth_authen}"] = auth
    return s


def examine(dns: FakeResolver, raw: bytes, s: Transaction) -> Findings:
    stage = AuthStage(AuthSettings(dmarc_enforce="reject", trusted_networks=()), dns, "mx.quorum.test")
    return stage.examine(s, Message.from_bytes(raw, s.envelope), time.monotonic() + 5)


def test_forged_partner_sender_spoofing_a_p_reject_domain_is_refused(dns: FakeResolver) -> None:
    """The reproduced attack: MAIL FROM:<x@partner.test> (sender OK), From: a p=reject domain, SPF fails."""
    found = examine(dns, message("ceo@bank.test"), txn("x@partner.test", BAD))
    assert found.reply is not None and found.reply.action == Action.REJECT
    assert not found.skip_spam
    assert "sender not verified" in found.log["access"]


def test_forged_partner_sender_gets_no_spam_exemption(dns: FakeResolver) -> None:
    found = examine(dns, message("x@partner.test"), txn("x@partner.test", BAD))
    assert not found.skip_spam
    assert found.reply is not None  # partner.test's own p=reject: a forgery of the partner itself


def test_verified_partner_skips_spam_checks(dns: FakeResolver) -> None:
    found = examine(dns, message("x@partner.test"), txn("x@partner.test", GOOD))
    assert found.skip_spam and found.reply is None
    assert found.log["access"] == f"ok({SOURCE}, sender verified by spf)"


def test_verified_partner_cannot_lift_dmarc_for_another_from_domain(dns: FakeResolver) -> None:
    found = examine(dns, message("ceo@bank.test"), txn("x@partner.test", GOOD))
    assert found.reply is not None and found.reply.action == Action.REJECT
    assert found.log["dmarc_action"] == "reject"


def test_verified_partner_with_another_p_quarantine_from_domain_keeps_spam_verdicts(dns: FakeResolver) -> None:
    found = examine(dns, message("news@quarantine.test"), txn("x@partner.test", GOOD))
    assert found.spam_flag and not found.skip_spam  # skip_spam would have ignored the DMARC vote


def test_partner_verified_by_dkim(dns: FakeResolver, partner_key: DkimKey) -> None:
    found = examine(dns, partner_key.sign(message("x@partner.test")), txn("x@partner.test", BAD))
    assert found.skip_spam and found.reply is None
    assert "sender verified by dkim" in found.log["access"]


def test_a_signature_by_another_domain_does_not_verify_the_partner(dns: FakeResolver, evil_key: DkimKey) -> None:
    found = examine(dns, evil_key.sign(message("x@evil.test")), txn("x@partner.test", BAD))
    assert not found.skip_spam


def test_authenticated_session_counts(dns: FakeResolver) -> None:
    found = examine(dns, message("x@partner.test"), txn("x@partner.test", BAD, auth="friend"))
    assert found.skip_spam


@pytest.mark.parametrize(
    ("sender", "spf", "dkim", "verified"),
    [
        ("a@partner.test", SpfResult("pass", "mailfrom", "partner.test", "a@partner.test"), [], "spf"),
        ("a@Partner.TEST", SpfResult("pass", "mailfrom", "partner.test", "a@partner.test"), [], "spf"),
        ("a@partner.test", SpfResult("softfail", "mailfrom", "partner.test", "a@partner.test"), [], ""),
        ("a@partner.test", SpfResult("pass", "helo", "partner.test", "postmaster@partner.test"), [], ""),
        ("a@partner.test", SpfResult("pass", "mailfrom", "other.test", "a@other.test"), [], ""),
        ("a@partner.test", None, [DkimResult("pass", "partner.test")], "dkim"),
        ("a@mail.partner.test", None, [DkimResult("pass", "partner.test")], "dkim"),
        ("a@partner.test", None, [DkimResult("pass", "mail.partner.test")], "dkim"),
        ("a@partner.test", None, [DkimResult("pass", "test")], ""),  # a TLD never vouches
        ("a@partner.test", None, [DkimResult("pass", "xpartner.test")], ""),
        ("a@partner.test", None, [DkimResult("fail", "partner.test")], ""),
        ("", SpfResult("pass", "helo", "partner.test", "postmaster@partner.test"), [], ""),
    ],
)
def test_sender_verified(sender: str, spf: SpfResult | None, dkim: list[DkimResult], verified: str) -> None:
    assert sender_verified(txn(sender, BAD), spf, dkim) == verified


@pytest.fixture()
def dnsbl(dns: FakeResolver) -> Iterator[DnsblStage]:
    reject = DnsblList(
        zone="reject.bl.test", action="reject", weight=1.0, codes=(ipaddress.IPv4Network("127.0.0.2/32"),)
    )
    st = DnsblStage(dns, (reject,), (), ("postmaster",), workers=2)
    yield st
    st.close()


def test_dnsbl_still_refuses_a_listed_client_with_a_forgeable_sender_ok(dnsbl: DnsblStage) -> None:
    s = txn("x@partner.test", LISTED)
    s.envelope.recipients.clear()
    s.access["user@rcpt.test"] = AccessClass(SENDER_OK, SOURCE)
    reply = dnsbl.rcpt(s, "user@rcpt.test")
    assert reply is not None and reply.action == Action.REJECT
    s.results.put(SpfResult("pass", "mailfrom", "partner.test", "x@partner.test"), by="auth")  # spf_at = "mail"
    assert dnsbl.rcpt(s, "user@rcpt.test") is None
    s.access["user@rcpt.test"] = AccessClass(OK, SOURCE)  # a client/recipient OK keeps its meaning
    s.results.pop(SpfResult, by="auth")
    assert dnsbl.rcpt(s, "user@rcpt.test") is None
