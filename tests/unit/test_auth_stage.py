"""The auth stage: SPF/DKIM/DMARC facts, the A-R header, forged-header removal, DMARC enforcement."""

from __future__ import annotations

import ipaddress
import time
from typing import Any

import pytest
from tests.zones.auth import DkimKey, make_key, message
from tests.zones.fake_resolver import FakeResolver

from quorum.auth.findings import AuthFindings
from quorum.auth.settings import AuthSettings
from quorum.auth.spf import SpfResult
from quorum.auth.stage import AuthStage
from quorum.message import Message
from quorum.pipeline.stages import Action
from quorum.pipeline.transaction import AccessClass, Connection, Findings, Transaction
from quorum.verdict import Status

GOOD, BAD = "192.0.2.10", "198.51.100.20"


@pytest.fixture(scope="module")
def key() -> DkimKey:
    return make_key("signed.test", "sel", bits=1024)


@pytest.fixture()
def dns(key: DkimKey) -> FakeResolver:
    records = [
        ("sel._domainkey.signed.test", "TXT", key.record),
        ("_dmarc.signed.test", "TXT", "v=DMARC1; p=reject"),
        ("_dmarc.reject.test", "TXT", "v=DMARC1; p=reject"),
        ("_dmarc.quarantine.test", "TXT", "v=DMARC1; p=quarantine"),
        ("_dmarc.none.test", "TXT", "v=DMARC1; p=none"),
    ]
    for domain in ("signed.test", "reject.test", "quarantine.test", "none.test"):
        records.append((domain, "TXT", "v=spf1 ip4:192.0.2.0/24 -all"))
    return FakeResolver(records)


def make(dns: FakeResolver, **settings: Any) -> AuthStage:
    base: dict[str, Any] = {"trusted_networks": (ipaddress.ip_network("127.0.0.0/8"),)}
    return AuthStage(AuthSettings(**{**base, **settings}), dns, "mx.quorum.test")


def new_txn() -> Transaction:
    conn = Connection()
    return Transaction(conn, conn.envelope())


def run(
    stage: AuthStage,
    raw: bytes,
    ip: str = BAD,
    sender: str = "",
    auth: str = "",
    s: Transaction | None = None,
    truncated: bool = False,
) -> tuple[Findings, Transaction]:
    s = s or new_txn()
    env = s.envelope
    env.client_ip, env.helo = ip, "client.example"
    env.sender = sender or "bounce@" + raw.split(b"From: Sender <", 1)[1].split(b">", 1)[0].decode().split("@")[1]
    env.recipients.append("user@rcpt.test")
    if auth:
        env.macros["{auth_authen}"] = auth
    msg = Message.from_bytes(raw, env)
    msg.truncated = truncated
    return stage.examine(s, msg, time.monotonic() + 5), s


def ar(ctx: Findings) -> str:
    (header,) = [v for n, v in ctx.headers if n == "Authentication-Results"]
    return header.replace("\n\t", " ")


def test_pass_adds_the_header_and_facts(dns: FakeResolver, key: DkimKey) -> None:
    ctx, _ = run(make(dns), key.sign(message("a@signed.test")), ip=GOOD)
    header = ar(ctx)
    assert header.startswith(
        "mx.quorum.test; spf=pass (192.0.2.10 permitted by signed.test) smtp.mailfrom=bounce@signed.test; "
        "dkim=pass header.d=signed.test header.s=sel header.a=rsa-sha256 header.b="
    )
    assert "dmarc=pass" in header and "header.from=signed.test" in header
    assert ctx.log == {"spf": "pass", "dkim": "pass:signed.test", "dmarc": "pass(p=reject)"}
    auth = ctx.results.get(AuthFindings)
    assert auth is not None and auth.spf is not None and auth.spf.result == "pass"
    assert ctx.reply is None and not ctx.spam_flag


def test_forged_headers_claiming_our_id_are_marked_for_removal(dns: FakeResolver) -> None:
    ((name, predicate),) = make(dns).removals  # fixed at build: applies even if examine never runs
    assert name == "Authentication-Results"
    assert predicate(b" mx.quorum.test; dkim=pass") and not predicate(b" other.test; dkim=pass")


def test_dmarc_reject_enforced(dns: FakeResolver) -> None:
    ctx, _ = run(make(dns, dmarc_enforce="reject"), message("a@reject.test"))
    assert ctx.reply is not None and (ctx.reply.action, ctx.reply.code, ctx.reply.xcode) == (
        Action.REJECT,
        "550",
        "5.7.1",
    )
    assert ctx.reply.text == "Email rejected per DMARC policy for reject.test"
    assert ctx.log["dmarc_action"] == "reject"


@pytest.mark.parametrize(
    ("enforce", "domain", "action", "hold"),
    [
        ("quarantine", "reject.test", "tag", False),  # enforce caps p=reject at quarantine
        ("reject", "quarantine.test", "tag", False),
        ("reject", "quarantine.test", "hold", True),
    ],
)
def test_dmarc_quarantine_is_a_spam_vote(dns: FakeResolver, enforce: str, domain: str, action: str, hold: bool) -> None:
    ctx, _ = run(make(dns, dmarc_enforce=enforce, dmarc_quarantine_action=action), message(f"a@{domain}"))
    assert ctx.reply is None and ctx.spam_flag and ctx.hold is hold
    (vote,) = ctx.votes
    assert (vote.engine, vote.status) == ("dmarc", Status.SPAM)


@pytest.mark.parametrize("domain", ["none.test", "reject.test"])
def test_nothing_enforced_when_off_or_p_none(dns: FakeResolver, domain: str) -> None:
    ctx, _ = run(make(dns, dmarc_enforce="off" if domain == "reject.test" else "reject"), message(f"a@{domain}"))
    assert ctx.reply is None and not ctx.spam_flag and not ctx.votes
    assert "dmarc=fail" in ar(ctx)


def test_trusted_network_reported_not_enforced(dns: FakeResolver) -> None:
    ctx, _ = run(make(dns, dmarc_enforce="reject"), message("a@reject.test"), ip="127.0.0.1")
    assert ctx.reply is None and "dmarc=fail" in ar(ctx)
    assert ctx.log["trust"] == "trusted_network" and ctx.log["dmarc_action"] == "none(trusted_network)"


def test_authenticated_sender_gets_auth_pass_and_no_spf_or_dmarc(dns: FakeResolver) -> None:
    ctx, _ = run(make(dns, dmarc_enforce="reject"), message("a@reject.test"), auth="alice")
    header = ar(ctx)
    assert header == "mx.quorum.test; auth=pass smtp.auth=alice; dkim=none"
    auth = ctx.results.get(AuthFindings)
    assert ctx.reply is None and auth is not None and auth.spf is None


def test_access_ok_skips_enforcement(dns: FakeResolver) -> None:
    s = new_txn()
    s.access["user@rcpt.test"] = AccessClass("ok", "t:1")
    ctx, _ = run(make(dns, dmarc_enforce="reject"), message("a@reject.test"), s=s)
    assert ctx.reply is None and ctx.log["dmarc_action"] == "none(access ok)"


def test_spf_at_mail_is_computed_once_and_shared(dns: FakeResolver) -> None:
    stage = make(dns, spf_at="mail")
    s = new_txn()
    s.envelope.client_ip, s.envelope.sender, s.envelope.helo = GOOD, "bounce@none.test", "h.example"
    assert stage.mail_from(s) is None
    spf = s.results.get(SpfResult)
    assert spf is not None and spf.result == "pass" and s.log["spf"] == "pass"
    asked = len(dns.asked)
    ctx, _ = run(stage, message("a@none.test"), ip=GOOD, sender="bounce@none.test", s=s)
    assert ("none.test", "TXT") not in dns.asked[asked:]
    assert ctx.log["spf"] == "pass"


def test_oversized_message_is_not_dkim_verified(dns: FakeResolver, key: DkimKey) -> None:
    raw = key.sign(message("a@signed.test", body=b"x" * 4000 + b"\r\n"))
    ctx, _ = run(make(dns, dkim_max_size=2048), raw, ip=GOOD)
    assert "dkim=neutral (not verified: message above dkim_max_size) header.d=signed.test" in ar(ctx)
    assert "dmarc=pass" in ar(ctx)  # SPF still aligns


def test_truncated_message_is_never_judged_as_if_whole(dns: FakeResolver, key: DkimKey) -> None:
    """Defect 3: a body cut at max_message_size (on_oversize = "accept") must not make DKIM fail,
    and so must not turn an aligned-signed message into a DMARC p=reject refusal."""
    raw = key.sign(message("a@signed.test"))  # signed by the From: domain; SPF fails (BAD client)
    ctx, _ = run(make(dns, dmarc_enforce="reject"), raw, truncated=True)
    assert "dkim=neutral (not verified: body not stored whole)" in ar(ctx)
    assert ctx.reply is None and not ctx.spam_flag
    assert ctx.log["dmarc_action"] == "none(body not stored whole)"


@pytest.mark.parametrize("signed", [False, True], ids=["unsigned", "signed-by-another-domain"])
def test_truncated_spoof_without_an_aligned_signature_is_still_refused(
    dns: FakeResolver, key: DkimKey, signed: bool
) -> None:
    """Issue 17, item 3: padding a spoof past max_message_size must not lift DMARC: with SPF failing
    and no DKIM signature aligned with the From: domain, the body cannot change the outcome."""
    raw = message("ceo@reject.test")
    raw = key.sign(raw) if signed else raw  # d=signed.test: not aligned with reject.test
    ctx, _ = run(make(dns, dmarc_enforce="reject"), raw, truncated=True)
    assert "dmarc=fail" in ar(ctx)
    assert ctx.reply is not None and ctx.reply.action == Action.REJECT
    assert ctx.log["dmarc_action"] == "reject"


def test_truncated_spoof_p_quarantine_is_still_a_spam_vote(dns: FakeResolver) -> None:
    ctx, _ = run(make(dns, dmarc_enforce="reject"), message("ceo@quarantine.test"), truncated=True)
    assert ctx.spam_flag and ctx.log["dmarc_action"] == "quarantine"


def test_truncated_with_aligned_spf_passes(dns: FakeResolver) -> None:
    ctx, _ = run(make(dns, dmarc_enforce="reject"), message("ceo@reject.test"), ip=GOOD, truncated=True)
    assert "dmarc=pass" in ar(ctx) and ctx.reply is None


def test_unsigned_mail_is_not_read_for_dkim(dns: FakeResolver, monkeypatch: pytest.MonkeyPatch) -> None:
    """No DKIM-Signature: nothing to verify, so the message is not read whole (memory: issue 13)."""
    import quorum.auth.stage as mod

    def never(*_: object, **__: object) -> None:
        raise AssertionError("verify_dkim called for an unsigned message")

    monkeypatch.setattr(mod, "verify_dkim", never)
    ctx, _ = run(make(dns), message("a@none.test"))
    assert "dkim=none" in ar(ctx)


def test_no_client_address_means_no_spf(dns: FakeResolver) -> None:
    ctx, _ = run(make(dns), message("a@none.test"), ip="")
    assert "spf=" not in ar(ctx) and "spf" not in ctx.log


def test_checker_bug_is_contained(dns: FakeResolver, key: DkimKey, monkeypatch: pytest.MonkeyPatch) -> None:
    import quorum.auth.stage as mod

    def boom(*_: object, **__: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(mod, "verify_dkim", boom)
    ctx, _ = run(make(dns), key.sign(message("a@none.test")))
    assert ctx.log["auth_error"] == "RuntimeError"


def test_a_check_whose_transaction_ended_reads_no_traceback_into_the_log(
    dns: FakeResolver, key: DkimKey, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 17 item 12: a late check that finds its body released (SpoolClosed: the transaction
    ended while it ran) is quiet; a real checker bug still logs its traceback."""
    import logging

    stage = make(dns)
    txn = new_txn()
    env = txn.envelope
    env.client_ip, env.sender = GOOD, "bounce@signed.test"
    msg = Message.from_bytes(key.sign(message("a@signed.test")), env)
    msg.close()  # what the session does when the transaction ends
    txn.open = False
    with caplog.at_level(logging.DEBUG, logger="quorum.auth"):
        found = stage.examine(txn, msg, time.monotonic() + 5)
    assert found.log.get("auth_error") == "SpoolClosed"
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info], caplog.text
