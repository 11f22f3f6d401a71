"""DNSBL lookups and the DNSBL stage at RCPT (in-memory DNS)."""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Iterator

import pytest
from tests.zones.fake_resolver import FakeResolver

from quorum.access.dnsbl import DnsblList, check, query_name
from quorum.access.stage import DnsblStage
from quorum.message import Message
from quorum.pipeline.stages import Action
from quorum.pipeline.transaction import Connection, Findings, Transaction
from quorum.verdict import Status

LISTED = "203.0.113.66"


def test_query_names() -> None:
    assert query_name("192.0.2.1", "bl.test") == "1.2.0.192.bl.test"
    assert query_name("::ffff:192.0.2.1", "bl.test") == "1.2.0.192.bl.test"
    assert query_name("2001:db8::1", "bl.test") == "1.0.0.0." + "0." * 20 + "8.b.d.0.1.0.0.2.bl.test"
    assert query_name("[IPv6:2001:db8::1]", "bl.test") == query_name("2001:db8::1", "bl.test")
    assert query_name("unknown", "bl.test") is None


@pytest.fixture()
def dns() -> FakeResolver:
    return FakeResolver(
        [
            ("66.113.0.203.reject.bl.test", "A", "127.0.0.2"),
            ("66.113.0.203.score.bl.test", "A", "127.0.0.4"),
            ("66.113.0.203.score.bl.test", "A", "127.0.0.10"),
            ("77.113.0.203.reject.bl.test", "A", "127.255.255.254"),
            ("88.113.0.203.reject.bl.test", "A", "127.0.0.9"),
            ("99.113.0.203.reject.bl.test", "A", "192.0.2.99"),
        ],
        failing=["55.113.0.203.reject.bl.test"],
    )


REJECT = DnsblList(zone="reject.bl.test", action="reject", weight=1.0, codes=(ipaddress.IPv4Network("127.0.0.2/32"),))
SCORE = DnsblList(zone="score.bl.test", action="score", weight=0.5)


def test_listings_codes_refusals_and_errors(dns: FakeResolver) -> None:
    d = time.monotonic() + 5
    result = check(dns, [REJECT, SCORE], LISTED, d)
    assert [(x.zone, x.codes) for x in result.listings] == [
        ("reject.bl.test", ("127.0.0.2",)),
        ("score.bl.test", ("127.0.0.10", "127.0.0.4")),
    ]
    assert result.rejecting is not None and result.rejecting.zone == "reject.bl.test"
    assert [x.zone for x in result.scoring] == ["score.bl.test"]
    # 127.0.0.9 is not among the codes asked for
    assert check(dns, [REJECT], "203.0.113.88", d).listings == ()
    refused = check(dns, [REJECT], "203.0.113.77", d)
    assert (refused.listings, refused.errors) == ((), ("reject.bl.test: refused (127.255.255.254)",))
    bogus = check(dns, [REJECT], "203.0.113.99", d)
    assert bogus.errors == ("reject.bl.test: bogus answer (192.0.2.99)",)
    failed = check(dns, [REJECT], "203.0.113.55", d)
    assert (failed.listings, failed.errors) == ((), ("reject.bl.test: timeout",))
    assert failed.log_fields() == {"dnsbl_error": "reject.bl.test: timeout"}


def session(ip: str, auth: str = "") -> Transaction:
    conn = Connection(ip)
    s = Transaction(conn, conn.envelope())
    s.envelope.sender = "a@sender.test"
    if auth:
        s.envelope.macros["{auth_authen}"] = auth
    return s


@pytest.fixture()
def stage(dns: FakeResolver) -> Iterator[DnsblStage]:
    st = DnsblStage(dns, (REJECT, SCORE), (ipaddress.ip_network("127.0.0.0/8"),), ("postmaster", "abuse"), workers=4)
    yield st
    st.close()


def test_listed_client_is_refused_per_recipient_except_postmaster(stage: DnsblStage, dns: FakeResolver) -> None:
    s = session(LISTED)
    assert stage.mail_from(s) is None
    reply = stage.rcpt(s, "user@rcpt.test")
    assert reply is not None and (reply.action, reply.code, reply.xcode) == (Action.REJECT, "554", "5.7.1")
    assert "reject.bl.test" in reply.text and LISTED in reply.text
    assert stage.rcpt(s, "postmaster@rcpt.test") is None
    assert stage.rcpt(s, "Abuse@rcpt.test") is None
    asked = len(dns.asked)
    stage.rcpt(s, "other@rcpt.test")
    assert len(dns.asked) == asked  # one lookup per client and connection


def test_trusted_and_authenticated_clients_skip_the_lists(stage: DnsblStage, dns: FakeResolver) -> None:
    assert stage.rcpt(session("127.0.0.1"), "user@rcpt.test") is None
    assert stage.rcpt(session(LISTED, auth="alice"), "user@rcpt.test") is None
    assert dns.asked == []


def test_address_change_mid_connection_is_looked_up_again(stage: DnsblStage) -> None:
    s = session("192.0.2.10")
    assert stage.rcpt(s, "user@rcpt.test") is None
    s.envelope.client_ip = LISTED  # XCLIENT
    assert stage.rcpt(s, "user@rcpt.test") is not None


def test_score_listing_becomes_a_vote(stage: DnsblStage) -> None:
    s = session(LISTED)
    s.envelope.recipients.append("postmaster@rcpt.test")
    ctx = (
        stage.examine(s, Message.from_bytes(b"Subject: x\r\n\r\nhi\r\n", s.envelope), time.monotonic() + 5)
        or Findings()
    )
    (vote,) = ctx.votes
    assert (vote.engine, vote.status, vote.score, vote.threshold) == ("dnsbl:score.bl.test", Status.CLEAN, 0.5, 1.0)
    assert vote.normalised_score == 0.5
    assert ctx.log["dnsbl"] == "reject.bl.test=127.0.0.2,score.bl.test=127.0.0.10/127.0.0.4"


def test_heavy_score_listing_is_a_spam_vote(dns: FakeResolver) -> None:
    st = DnsblStage(dns, (DnsblList(zone="score.bl.test", action="score", weight=3.0),), (), ("postmaster",))
    try:
        s = session(LISTED)
        s.envelope.recipients.append("user@rcpt.test")
        ctx = (
            st.examine(s, Message.from_bytes(b"Subject: x\r\n\r\nhi\r\n", s.envelope), time.monotonic() + 5)
            or Findings()
        )
        assert (ctx.votes[0].status, ctx.votes[0].normalised_score) == (Status.SPAM, 2.0)
    finally:
        st.close()


def test_lookups_still_work_after_the_stage_was_closed_by_a_reload(stage: DnsblStage) -> None:
    stage.close()
    s = session(LISTED)
    assert stage.mail_from(s) is None
    assert stage.rcpt(s, "user@rcpt.test") is not None
