"""Sender authentication, DNSBL and access rules through a real Postfix, a real NSD and `quorum run`.

Client addresses other than 127.0.0.1 are presented with XCLIENT, so SPF and the DNSBL see them.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from tests.harness.dns import DnsServer
from tests.harness.postfix import PostfixInstance
from tests.harness.quorum import QuorumProcess
from tests.harness.sink import Delivered, Sink
from tests.harness.smtp_client import SendResult, send, session
from tests.zones import auth as z

from quorum.auth.dkim import verify_dkim
from quorum.auth.resolver import Resolver
from quorum.auth.settings import DnsSettings
from quorum.message import Message

pytestmark = pytest.mark.integration

AUTHSERV = "mx.test.example"  # tests/harness/quorum.py writes this [milter] authserv_id
RCPT = "user@rcpt.test"


@dataclass
class Stack:
    dns: DnsServer
    sink: Sink
    quorum: QuorumProcess
    postfix: PostfixInstance
    keys: dict[str, z.DkimKey]
    body: str

    def send(
        self,
        raw: bytes,
        mail_from: str,
        client: str = z.CLIENT_GOOD,
        rcpts: tuple[str, ...] = (RCPT,),
        login: str = "",
        helo: str = "client.example",
    ) -> SendResult:
        self.postfix.wait_queue_empty(timeout=30)  # earlier mail is delivered before we forget it
        self.sink.clear()
        xclient = {"ADDR": client, "NAME": "[UNAVAILABLE]", "HELO": helo}
        if login:
            xclient["LOGIN"] = login
        return send(self.postfix.smtp_port, mail_from, list(rcpts), raw, xclient=xclient)

    def delivered(self, count: int = 1) -> list[Delivered]:
        return self.sink.wait_for(count, timeout=30)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("auth-stack")
    keys = z.make_keys()
    zones = z.zones(keys)
    access = root / "access"
    access.mkdir()
    (access / "client").write_text("203.0.113.200 REJECT Blocked by local policy\n")
    (access / "sender").write_text("friend@partner.test OK\n")
    (access / "recipient").write_text("vip.test OK\nclosed@rcpt.test REJECT Mailbox closed\n")
    (access / "header").write_text(
        "/^Subject:.*casino/i REJECT No casino mail, thanks\n/^Subject: (a+)+$/ REJECT Backtracking\n"
    )
    dns = DnsServer(root / "nsd", zones).start()
    sink = Sink(root / "sink")
    sink.start()
    body = f"""
[policy]
on_spam = "tag"

[dns]
nameservers = ["127.0.0.1"]
port = {dns.port}
timeout = 1
cache_size = 0

[auth]
dmarc_enforce = "reject"
dmarc_quarantine_action = "tag"

[[dnsbl]]
zone = "reject.bl.test"
action = "reject"
codes = ["127.0.0.2"]

[[dnsbl]]
zone = "score.bl.test"
action = "score"
weight = 0.5

[access]
client = "{access / "client"}"
sender = "{access / "sender"}"
recipient = "{access / "recipient"}"
header = "{access / "header"}"
"""
    quorum = QuorumProcess(root / "quorum", body).start()
    postfix = PostfixInstance(root / "postfix", sink.port, milter=quorum.postfix_address)
    try:
        postfix.start()
        yield Stack(dns, sink, quorum, postfix, keys, body)
    finally:
        postfix.stop()
        quorum.stop()
        sink.stop()
        dns.stop()


def ours(msg: Delivered) -> str:
    values = [v for v in msg.header_all("Authentication-Results") if v.lower().startswith(AUTHSERV)]
    assert len(values) == 1, msg.header_all("Authentication-Results")
    return " ".join(values[0].split())


# --- SPF ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("domain", "result"),
    [
        ("spf-pass", "pass"),
        ("spf-fail", "fail"),
        ("spf-soft", "softfail"),
        ("spf-none", "none"),
        ("spf-loop", "permerror"),
        ("spf-many", "permerror"),
    ],
)
def test_spf(stack: Stack, domain: str, result: str) -> None:
    sender = f"alice@{domain}.test"
    sent = stack.send(z.message(sender), sender)
    assert sent.accepted, sent
    header = ours(stack.delivered()[0])
    assert f"spf={result} " in header and f"smtp.mailfrom={sender}" in header
    assert "dkim=none" in header
    assert "dmarc=none" in header  # these domains publish no DMARC record


def test_spf_helo_identity_for_the_null_sender(stack: Stack) -> None:
    sent = stack.send(z.message("mailer-daemon@helo.spf-pass.test"), "", helo="helo.spf-pass.test")
    assert sent.accepted, sent
    assert "spf=pass (192.0.2.10 permitted by helo.spf-pass.test) smtp.helo=helo.spf-pass.test" in ours(
        stack.delivered()[0]
    )


def test_spf_temperror_while_the_dns_server_is_down(stack: Stack) -> None:
    stack.dns.stop()
    try:
        sent = stack.send(z.message("alice@spf-temp.test"), "alice@spf-temp.test")
    finally:
        stack.dns.start()
    assert sent.accepted, sent  # a DNS outage never loses mail
    header = ours(stack.delivered()[0])
    assert "spf=temperror" in header and "dmarc=temperror" in header


# --- DKIM -----------------------------------------------------------------------------------------

FOLDED_8BIT = z.message(
    "alice@nodmarc.test",
    subject="Quarterly report\r\n\tfolded over\r\n  three lines",
    body="Grüße aus Köln!\r\nÄrger über Öl \u2013 8-bit UTF-8 text.\r\n\r\n".encode(),
    extra=[b"Content-Transfer-Encoding: 8bit", b"X-Folded: a\r\n\tb\r\n c"],
)


@pytest.mark.parametrize("canon", [(b"relaxed", b"relaxed"), (b"simple", b"simple")])
def test_dkim_pass_with_folded_headers_and_8bit_body_survives_postfix_and_quorum(
    stack: Stack, canon: tuple[bytes, bytes]
) -> None:
    key = stack.keys["nodmarc.test"]
    raw = key.sign(FOLDED_8BIT, canonicalize=canon, headers=[b"from", b"to", b"subject", b"date", b"x-folded"])
    sent = stack.send(raw, "alice@nodmarc.test")
    assert sent.accepted, sent
    delivered = stack.delivered()[0]
    header = ours(delivered)
    assert "dkim=pass header.d=nodmarc.test header.s=k1 header.a=rsa-sha256" in header
    # the delivered copy (our A-R and Postfix's Received on top) still verifies
    msg = Message.from_bytes(delivered.raw)
    resolver = Resolver(DnsSettings(nameservers=("127.0.0.1",), port=stack.dns.port, timeout=2.0, cache_size=0))
    (result,) = verify_dkim(msg.raw(), msg.headers, resolver, time.monotonic() + 5, 5, 1024)
    assert result.result == "pass"
    assert "Grüße aus Köln".encode() in delivered.raw


def test_dkim_body_tampered_fails(stack: Stack) -> None:
    raw = stack.keys["nodmarc.test"].sign(z.message("alice@nodmarc.test"))
    sent = stack.send(raw.replace(b"this is a test", b"this is a forgery"), "alice@nodmarc.test")
    assert sent.accepted, sent
    assert "dkim=fail (body hash mismatch) header.d=nodmarc.test" in ours(stack.delivered()[0])


def test_dkim_header_tampered_fails(stack: Stack) -> None:
    raw = stack.keys["nodmarc.test"].sign(z.message("alice@nodmarc.test", subject="Invoice 42"))
    sent = stack.send(raw.replace(b"Invoice 42", b"Invoice 43"), "alice@nodmarc.test")
    assert sent.accepted, sent
    assert "dkim=fail (signature did not verify) header.d=nodmarc.test" in ours(stack.delivered()[0])


# --- DMARC ----------------------------------------------------------------------------------------


def test_dmarc_pass_by_spf_alone(stack: Stack) -> None:
    sent = stack.send(z.message("alice@aligned.test"), "bounce@bounce.aligned.test")
    assert sent.accepted, sent
    header = ours(stack.delivered()[0])
    assert "spf=pass" in header and "dkim=none" in header
    assert (
        "dmarc=pass (p=reject dis=none) header.from=aligned.test polrec.p=reject polrec.domain=aligned.test" in header
    )


def test_dmarc_pass_by_dkim_alone(stack: Stack) -> None:
    raw = stack.keys["dkimonly.test"].sign(z.message("alice@dkimonly.test"))
    sent = stack.send(raw, "bounce@spf-fail.test", client=z.CLIENT_BAD)
    assert sent.accepted, sent
    header = ours(stack.delivered()[0])
    assert "spf=fail" in header and "dkim=pass header.d=dkimonly.test" in header
    assert "dmarc=pass" in header and "header.from=dkimonly.test" in header


def test_dmarc_fail_with_p_reject_is_refused(stack: Stack) -> None:
    sent = stack.send(z.message("ceo@reject.test"), "ceo@reject.test", client=z.CLIENT_BAD)
    assert sent.data is not None and sent.data.code == 550, sent
    assert "5.7.1 Email rejected per DMARC policy for reject.test" in sent.data.text
    assert stack.sink.messages() == []


def test_dmarc_fail_with_p_none_is_delivered_and_reported(stack: Stack) -> None:
    sent = stack.send(z.message("alice@none.test"), "alice@none.test", client=z.CLIENT_BAD)
    assert sent.accepted, sent
    delivered = stack.delivered()[0]
    assert "dmarc=fail (p=none dis=none; no aligned identifier passed) header.from=none.test" in ours(delivered)
    assert delivered.header("X-Spam-Flag") is None


def test_subdomain_policy_sp_reject(stack: Stack) -> None:
    sent = stack.send(z.message("alice@sub.org.test"), "alice@sub.org.test", client=z.CLIENT_BAD)
    assert sent.data is not None and sent.data.code == 550
    assert "DMARC policy for sub.org.test" in sent.data.text
    # org.test itself is p=none
    sent = stack.send(z.message("alice@org.test"), "alice@org.test", client=z.CLIENT_BAD)
    assert sent.accepted
    assert "dmarc=fail (p=none dis=none;" in ours(stack.delivered()[0])


def test_quarantine_policy_tags_the_message(stack: Stack) -> None:
    sent = stack.send(z.message("alice@ghost.org.test"), "alice@ghost.org.test", client=z.CLIENT_BAD)  # np=quarantine
    assert sent.accepted, sent
    delivered = stack.delivered()[0]
    assert "dmarc=fail (np=quarantine dis=quarantine;" in ours(delivered)
    assert delivered.header("X-Spam-Flag") == "YES"


def test_forged_authentication_results_with_our_id_are_removed(stack: Stack) -> None:
    forged = [
        f"Authentication-Results: {AUTHSERV}; dkim=pass header.d=reject.test".encode(),
        f"Authentication-Results: (sneaky)\r\n {AUTHSERV.upper()}; dmarc=pass".encode(),
        b"Authentication-Results: other.example; spf=pass smtp.mailfrom=x@other.example",
    ]
    sent = stack.send(z.message("alice@none.test", extra=forged), "alice@none.test")
    assert sent.accepted, sent
    delivered = stack.delivered()[0]
    values = delivered.header_all("Authentication-Results")
    assert len(values) == 2
    assert "dkim=pass header.d=reject.test" not in " ".join(values)
    assert any(v.startswith("other.example; spf=pass") for v in values)
    assert "spf=pass" in ours(delivered)


def test_authenticated_sender_is_exempt_from_dmarc_rejection(stack: Stack) -> None:
    sent = stack.send(z.message("ceo@reject.test"), "ceo@reject.test", client=z.CLIENT_BAD, login="alice")
    assert sent.accepted, sent
    header = ours(stack.delivered()[0])
    assert header == f"{AUTHSERV}; auth=pass smtp.auth=alice; dkim=none"


# --- DNSBL and access rules -----------------------------------------------------------------------


def test_dnsbl_listed_client_is_refused_but_postmaster_is_reachable(stack: Stack) -> None:
    sent = stack.send(
        z.message("alice@spf-pass.test"),
        "alice@spf-pass.test",
        client=z.CLIENT_LISTED,
        rcpts=(RCPT, "postmaster@rcpt.test"),
    )
    refused = sent.rcpts[RCPT]
    assert refused.code == 554 and "5.7.1" in refused.text and "reject.bl.test" in refused.text
    assert sent.rcpts["postmaster@rcpt.test"].code == 250
    assert sent.accepted
    delivered = stack.delivered()[0]
    assert delivered.rcpt_tos == ["postmaster@rcpt.test"]
    line = stack.quorum.wait_for_log(
        r"quorum\.message.*dnsbl=reject\.bl\.test=127\.0\.0\.2,score\.bl\.test=127\.0\.0\.4"
    )
    assert line


def test_query_refused_code_is_an_error_not_a_listing(stack: Stack) -> None:
    sent = stack.send(z.message("alice@spf-pass.test"), "alice@spf-pass.test", client=z.CLIENT_REFUSED)
    assert sent.accepted, sent
    stack.quorum.wait_for_log(r"dnsbl_error=reject\.bl\.test: refused \(127\.255\.255\.254\)")


def test_access_reject_and_ok(stack: Stack) -> None:
    sent = stack.send(z.message("alice@spf-pass.test"), "alice@spf-pass.test", client="203.0.113.200")
    assert sent.rcpts[RCPT].code == 554 and "Blocked by local policy" in sent.rcpts[RCPT].text
    sent = stack.send(z.message("alice@spf-pass.test"), "alice@spf-pass.test", rcpts=("closed@rcpt.test",))
    assert sent.rcpts["closed@rcpt.test"].code == 554 and "Mailbox closed" in sent.rcpts["closed@rcpt.test"].text
    # OK: a recipient domain whitelisted locally gets even a p=reject failure (reported, not enforced)
    sent = stack.send(z.message("ceo@reject.test"), "ceo@reject.test", client=z.CLIENT_BAD, rcpts=("boss@vip.test",))
    assert sent.accepted, sent
    assert "dmarc=fail" in ours(stack.delivered()[0])


def test_recipients_with_different_access_results_get_separate_transactions(stack: Stack) -> None:
    raw = z.message("alice@spf-pass.test")
    sent = stack.send(raw, "alice@spf-pass.test", rcpts=("boss@vip.test", RCPT))
    assert sent.rcpts["boss@vip.test"].code == 250
    second = sent.rcpts[RCPT]
    assert second.code == 452 and second.text.startswith("4.5.3")
    assert sent.accepted
    assert [m.rcpt_tos for m in stack.delivered()] == [["boss@vip.test"]]
    # the sending MTA retries the 452'd recipient in a transaction of its own: it is delivered too
    retry = stack.send(raw, "alice@spf-pass.test", rcpts=(RCPT,))
    assert retry.accepted, retry
    assert [m.rcpt_tos for m in stack.delivered()] == [[RCPT]]


def test_header_rules_reject_and_backtracking_pattern_is_instant(stack: Stack) -> None:
    sent = stack.send(z.message("alice@spf-pass.test", subject="Casino Royale"), "alice@spf-pass.test")
    assert sent.data is not None and sent.data.code == 554 and "No casino mail" in sent.data.text
    evil = "a" * 1800 + "!"  # (a+)+$ on this takes a backtracking engine forever
    start = time.monotonic()
    sent = stack.send(z.message("alice@spf-pass.test", subject=evil), "alice@spf-pass.test")
    assert sent.accepted, sent
    assert time.monotonic() - start < 10
    stack.delivered()


def test_results_in_the_log_line(stack: Stack) -> None:
    raw = stack.keys["aligned.test"].sign(z.message("alice@aligned.test"))
    sent = stack.send(raw, "alice@aligned.test")
    assert sent.accepted, sent
    stack.quorum.wait_for_log(r"quorum\.message.*spf=pass dkim=pass:aligned\.test dmarc=pass\(p=reject\)")


def test_two_transactions_on_one_connection(stack: Stack) -> None:
    """The DNSBL answer is kept for the connection; each transaction starts with fresh state."""
    stack.postfix.wait_queue_empty(timeout=30)
    stack.sink.clear()
    with session(stack.postfix.smtp_port) as s:
        s.ehlo()
        assert s.xclient({"ADDR": z.CLIENT_LISTED, "NAME": "[UNAVAILABLE]"}).code == 220
        s.ehlo()
        assert s.mail("alice@spf-pass.test").ok
        assert s.rcpt(RCPT).code == 554
        assert s.rcpt("boss@vip.test").code == 250  # access OK: the DNSBL does not apply
        assert s.data(z.message("alice@spf-pass.test")).code == 250
        assert s.mail("alice@spf-pass.test").ok
        assert s.rcpt("postmaster@rcpt.test").code == 250
        assert s.rcpt(RCPT).code == 554
        assert s.data(z.message("alice@spf-pass.test", subject="second")).code == 250
    assert sorted(m.rcpt_tos[0] for m in stack.delivered(2)) == ["boss@vip.test", "postmaster@rcpt.test"]


def test_quorum_scan_reports_the_results(stack: Stack, tmp_path: Path) -> None:
    eml = tmp_path / "signed.eml"
    eml.write_bytes(stack.keys["aligned.test"].sign(z.message("alice@aligned.test")))
    argv = [sys.executable, "-m", "quorum", "scan", "-c", str(stack.quorum.config_path), str(eml), "--json"]
    argv += ["--sender", "alice@aligned.test", "--client-ip", z.CLIENT_GOOD, "--helo", "mx.aligned.test"]
    argv += ["--rcpt", RCPT]
    out = json.loads(subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True).stdout)
    assert out["facts"]["spf"] == "pass"
    assert out["facts"]["dkim"] == "pass:aligned.test"
    assert out["facts"]["dmarc"] == "pass(p=reject)"
    (header,) = [h for h in out["headers_added"] if h.startswith("Authentication-Results")]
    assert "dmarc=pass" in header and AUTHSERV in header


def test_access_tables_follow_a_reload(stack: Stack) -> None:
    table = stack.quorum.config_path.parent.parent / "access" / "client"
    before = table.read_text()
    table.write_text(before + f"{z.CLIENT_GOOD} REJECT Suddenly unwelcome\n")
    try:
        stack.quorum.reload()
        sent = stack.send(z.message("alice@spf-pass.test"), "alice@spf-pass.test")
        assert sent.rcpts[RCPT].code == 554 and "Suddenly unwelcome" in sent.rcpts[RCPT].text
    finally:
        table.write_text(before)
        stack.quorum.reload()
    assert stack.send(z.message("alice@spf-pass.test"), "alice@spf-pass.test").accepted


def test_quarantine_action_hold_uses_the_hold_queue(stack: Stack) -> None:
    held = stack.body.replace('dmarc_quarantine_action = "tag"', 'dmarc_quarantine_action = "hold"')
    assert held != stack.body
    stack.quorum.reload(held)
    try:
        sent = stack.send(z.message("alice@quarantine.test"), "alice@quarantine.test", client=z.CLIENT_BAD)
        assert sent.accepted, sent
        deadline = time.monotonic() + 10
        while not stack.postfix.hold_queue_ids() and time.monotonic() < deadline:
            time.sleep(0.1)
        (queue_id,) = stack.postfix.hold_queue_ids()
        assert "dmarc=fail (p=quarantine dis=quarantine;" in " ".join(stack.postfix.postcat(queue_id).split())
        assert stack.sink.messages() == []
        stack.postfix.delete(queue_id)
    finally:
        stack.quorum.reload(stack.body)
