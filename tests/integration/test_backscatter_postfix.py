"""Issue 11, backscatter filter, end to end: client -> Postfix -> `quorum run` (Redis) -> sink.

Outbound mail (XCLIENT LOGIN: an authenticated session) has its Message-ID recorded and its
envelope sender BATV-signed (the sink sees the `prvs=` MAIL FROM). Null-sender mail to
`local.test` (backscatter = "reject") is accepted only when it refers to a recorded Message-ID or
reaches a valid `prvs=` address, which is delivered as the plain address.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from tests.harness.ports import free_port
from tests.harness.postfix import REPO_ROOT, PostfixInstance
from tests.harness.quorum import QuorumProcess
from tests.harness.redis_server import RedisAuth, RedisServer
from tests.harness.sink import Delivered, Sink, delivered
from tests.harness.smtp_client import SendResult, send

from quorum.backscatter.store import MessageIdStore

pytestmark = pytest.mark.integration

BATV_KEY = "7f3c9a1e5b2d4f6081a3c5e7092b4d6f"
USER = "alice@local.test"
INSIDE = "192.0.2.10"  # our user, authenticated with XCLIENT LOGIN
REMOTE_MTA = "198.51.100.20"  # a remote MTA sending us bounces
PRVS = re.compile(r"^prvs=[0-9]{4}[0-9a-f]{6}=alice@local\.test$")


@dataclass
class Stack:
    postfix: PostfixInstance
    quorum: QuorumProcess
    sink: Sink
    redis: RedisServer

    def send(self, sender: str, rcpts: list[str], raw: bytes, client: str, login: str = "") -> SendResult:
        xclient = {"ADDR": client, "NAME": "[UNAVAILABLE]", "HELO": "mta.example"}
        if login:
            xclient["LOGIN"] = login
        return send(self.postfix.smtp_port, sender, rcpts, raw, xclient=xclient)

    def commands(self) -> int:
        """SET + EXISTS calls Redis has served (the only commands the backscatter stage sends)."""
        with self.redis.client() as client:
            stats = client.info("commandstats")
        return sum(int(stats.get(f"cmdstat_{c}", {}).get("calls", 0)) for c in ("set", "exists"))


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("backscatter-stack")
    server = RedisServer(root / "redis", auth=RedisAuth()).start()
    sink = Sink(root / "sink")
    sink.start()
    body = f"""
[redis]
url = "{server.url}"

[backscatter]
batv_key = "{BATV_KEY}"

[domains."local.test"]
backscatter = "reject"

[domains."tagged.test"]
backscatter = "tag"
"""
    quorum = QuorumProcess(root / "quorum", body).start()
    postfix = PostfixInstance(root / "postfix", sink.port, milter=quorum.postfix_address)
    try:
        postfix.start()
        yield Stack(postfix, quorum, sink, server)
    finally:
        postfix.stop()
        quorum.stop()
        sink.stop()
        server.stop()


def outbound_message(message_id: str) -> bytes:
    return (
        f"From: Alice <{USER}>\r\nTo: <bob@remote.example>\r\nSubject: the offer\r\n"
        f"Date: Mon, 01 Jan 2024 12:00:00 +0000\r\nMessage-ID: {message_id}\r\n\r\nHere it is.\r\n"
    ).encode()


def dsn(rcpt: str, bounced_id: str, token: str) -> bytes:
    """An RFC 3464 report as Postfix writes it (the headers of the bounced message in text/rfc822-headers)."""
    return (
        f"From: MAILER-DAEMON@remote.example (Mail Delivery System)\r\nTo: <{rcpt}>\r\n"
        f"Subject: Undelivered Mail Returned to Sender\r\nMessage-ID: <{token}@remote.example>\r\n"
        "Auto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="BOUNDARY"\r\n\r\n'
        "--BOUNDARY\r\nContent-Type: text/plain\r\n\r\n"
        "I'm sorry to have to inform you that your message could not be delivered.\r\n\r\n"
        "--BOUNDARY\r\nContent-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; remote.example\r\n\r\n"
        "Final-Recipient: rfc822; bob@remote.example\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n"
        "--BOUNDARY\r\nContent-Type: message/rfc822-headers\r\n\r\n"
        f"From: Alice <{USER}>\r\nTo: <bob@remote.example>\r\nSubject: the offer\r\n"
        f"Message-ID: {bounced_id}\r\n\r\n"
        "--BOUNDARY--\r\n"
    ).encode()


def plain_bounce(rcpt: str, token: str) -> bytes:
    """A non-standard bounce that names no Message-ID at all: only a BATV tag can vouch for it."""
    return (
        f"From: MAILER-DAEMON@remote.example\r\nTo: <{rcpt}>\r\nSubject: failure notice {token}\r\n\r\n"
        "Hi. This is the qmail-send program. I'm afraid I wasn't able to deliver your message.\r\n"
    ).encode()


@pytest.fixture(scope="module")
def sent(stack: Stack) -> tuple[str, Delivered]:
    """One outbound message from an authenticated session: (its Message-ID, the copy at the sink)."""
    message_id = f"<{uuid.uuid4().hex}@local.test>"
    before = stack.commands()
    result = stack.send(USER, ["bob@remote.example"], outbound_message(message_id), INSIDE, login="alice")
    assert result.accepted, result
    copy = delivered(stack.sink, message_id)
    assert stack.commands() == before + 1  # one SET per outbound message
    return message_id, copy


def test_outbound_message_id_recorded_and_sender_batv_signed(stack: Stack, sent: tuple[str, Delivered]) -> None:
    message_id, copy = sent
    assert PRVS.match(copy.mail_from), copy.mail_from  # SMFIF_CHGFROM applied by Postfix
    assert copy.rcpt_tos == ["bob@remote.example"]
    assert copy.header("From") == f"Alice <{USER}>"  # only the envelope is signed
    stack.quorum.wait_for_log(r"quorum\.message.*from=<alice@local\.test> .*backscatter=recorded batv=signed")
    key = MessageIdStore(lambda: None).key(message_id)
    assert key is not None
    with stack.redis.client() as client:
        assert client.exists(key) == 1
        assert 13 * 86400 < client.ttl(key) <= 14 * 86400  # default message_id_ttl: 14 days


def test_dsn_referencing_our_message_is_accepted(stack: Stack, sent: tuple[str, Delivered]) -> None:
    token = uuid.uuid4().hex
    before = stack.commands()
    result = stack.send("", [USER], dsn(USER, sent[0], token), REMOTE_MTA)
    assert result.accepted, result
    bounce = delivered(stack.sink, token)
    assert bounce.rcpt_tos == [USER] and bounce.mail_from in ("", "<>")
    assert bounce.header("X-Quorum-Backscatter") is None
    assert stack.commands() == before + 1  # one EXISTS per inbound bounce


def test_dsn_referencing_an_unknown_message_is_refused(stack: Stack) -> None:
    token = uuid.uuid4().hex
    result = stack.send("", [USER], dsn(USER, f"<{uuid.uuid4().hex}@local.test>", token), REMOTE_MTA)
    assert result.data is not None and result.data.code == 550, result
    assert "5.7.1" in result.data.text and "backscatter" in result.data.text, result
    stack.postfix.wait_queue_empty()
    assert not [m for m in stack.sink.messages() if token.encode() in m.raw]
    stack.quorum.wait_for_log(r"quorum\.message.*from=<> .*backscatter=unknown-reject")


def test_unknown_dsn_for_a_tag_domain_is_delivered_tagged(stack: Stack) -> None:
    token = uuid.uuid4().hex
    result = stack.send("", ["carol@tagged.test"], dsn("carol@tagged.test", "<nope@x.example>", token), REMOTE_MTA)
    assert result.accepted, result
    bounce = delivered(stack.sink, token)
    assert bounce.header("X-Quorum-Backscatter") == "unverified bounce"
    assert bounce.header("X-Spam-Flag") == "YES"


def test_bounce_to_our_prvs_address_is_delivered_to_the_plain_address(
    stack: Stack, sent: tuple[str, Delivered]
) -> None:
    tagged = sent[1].mail_from
    token = uuid.uuid4().hex
    result = stack.send("", [tagged], plain_bounce(tagged, token), REMOTE_MTA)
    assert result.accepted, result
    bounce = delivered(stack.sink, token)
    assert bounce.rcpt_tos == [USER]  # SMFIF_DELRCPT + SMFIF_ADDRCPT: the mailbox never sees the tag
    assert bounce.header("X-Quorum-Backscatter") is None


def test_bounce_to_a_forged_prvs_tag_is_refused(stack: Stack, sent: tuple[str, Delivered]) -> None:
    tagged = sent[1].mail_from
    signature = tagged[9:15]
    forged = tagged.replace(signature, f"{(int(signature, 16) ^ 0x5A5A5A):06x}", 1)
    assert forged != tagged and PRVS.match(forged)
    token = uuid.uuid4().hex
    result = stack.send("", [forged], plain_bounce(forged, token), REMOTE_MTA)
    rcpt = result.rcpts[forged]
    assert rcpt.code == 550 and "5.7.1" in rcpt.text and "forged BATV tag" in rcpt.text, result
    assert result.data is None
    stack.postfix.wait_queue_empty()
    assert not [m for m in stack.sink.messages() if token.encode() in m.raw]


def test_ordinary_inbound_mail_costs_no_redis_command(stack: Stack) -> None:
    token = uuid.uuid4().hex
    before = stack.commands()
    raw = f"From: <x@remote.example>\r\nTo: <{USER}>\r\nSubject: hello {token}\r\n\r\nhi\r\n".encode()
    result = stack.send("x@remote.example", [USER], raw, REMOTE_MTA)
    assert result.accepted, result
    copy = delivered(stack.sink, token)
    assert copy.mail_from == "x@remote.example" and copy.rcpt_tos == [USER]  # neither signed nor rewritten
    assert stack.commands() == before


def test_postfix_own_bounce_of_signed_mail_reaches_the_plain_address(stack: Stack) -> None:
    """A bounce Postfix writes itself never passes smtpd: postfix-conf/batv.regexp removes the tag in cleanup,
    and Quorum's rewrite of a remote bounce still delivers exactly once with the map in place."""
    stack.postfix.set_main(
        {
            "recipient_canonical_maps": f"regexp:{REPO_ROOT / 'postfix-conf' / 'batv.regexp'}",
            "recipient_canonical_classes": "envelope_recipient",
            # the next hop for nowhere.example is down and mail is tried once: Postfix bounces it itself
            "transport_maps": f"inline:{{ nowhere.example=smtp:[127.0.0.1]:{free_port()} }}",
            "maximal_queue_lifetime": "0",
        }
    )
    try:
        message_id = f"<{uuid.uuid4().hex}@local.test>"
        result = stack.send(USER, ["bob@nowhere.example"], outbound_message(message_id), INSIDE, login="alice")
        assert result.accepted, result
        own = delivered(stack.sink, message_id)  # Postfix's bounce quotes the headers of the signed message
        assert own.mail_from in ("", "<>") and own.rcpt_tos == [USER], (own.mail_from, own.rcpt_tos)
        assert own.header("From") and "MAILER-DAEMON" in (own.header("From") or "")

        tagged = next(m.mail_from for m in stack.sink.messages() if PRVS.match(m.mail_from))
        token = uuid.uuid4().hex
        remote = stack.send("", [tagged], plain_bounce(tagged, token), REMOTE_MTA)
        assert remote.accepted, remote
        stack.postfix.wait_queue_empty()
        copies = [m for m in stack.sink.messages() if token.encode() in m.raw]
        assert [m.rcpt_tos for m in copies] == [[USER]]
    finally:
        stack.postfix.set_main(
            dict.fromkeys(
                ("recipient_canonical_maps", "recipient_canonical_classes", "transport_maps", "maximal_queue_lifetime")
            )
        )
