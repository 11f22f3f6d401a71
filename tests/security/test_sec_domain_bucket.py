"""Issue 17, item 15: a recipient domain's rate-limit bucket is a tenant's inbound kill switch.

Any sender may fill `recipient_domain` for a domain; once full, every message to that domain is
refused 451 for the window, from everyone. `recipient_domain_share` bounds what one
unauthenticated client (IP, or IPv6 /64) may take of it: the flooder is refused after its share,
all-or-none, so the domain's bucket keeps room for the others. Through real Postfix (XCLIENT
presents each client's address) and `quorum run`, against a single Redis and a Cluster.
"""

from __future__ import annotations

import email.utils
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from tests.harness.clamd import Clamd
from tests.harness.postfix import PostfixInstance
from tests.harness.quorum import QuorumProcess, engine_table
from tests.harness.redis_server import RedisAuth, RedisCluster, RedisServer
from tests.harness.smtp_client import SendResult, send

pytestmark = pytest.mark.integration

LIMIT = 10  # messages to one recipient domain per hour
SHARE = 0.2  # one unauthenticated client: at most 2 of them
RATELIMIT = f"""
[ratelimit]
backoff = "200ms"
recipient_domain = {{ messages = {LIMIT}, recipients = 40, per = "1h" }}
recipient_domain_share = {SHARE}

[ratelimit.domains."partner.test"]
recipient_domain_share = 1.0      # this tenant opts out of the guard

[ratelimit.networks."198.18.0.0/15"]
exempt = true                     # e.g. the operator's own relays: no share either
"""


class Stack:
    def __init__(self, mode: str, masters: Any, quorum: QuorumProcess, postfix: PostfixInstance) -> None:
        self.mode = mode
        self.masters = masters
        self.quorum = quorum
        self.postfix = postfix

    def flush(self) -> None:
        for client in self.masters():
            with client:
                client.flushall()

    def keys(self, pattern: str) -> list[str]:
        found: list[str] = []
        for client in self.masters():
            with client:
                found += [k.decode() for k in client.keys(pattern)]
        return found


@pytest.fixture(scope="module", params=["single", "cluster"])
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, postfix: PostfixInstance, clamd: Clamd
) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp(f"share-{request.param}")
    server: Any
    if request.param == "single":
        server = RedisServer(workdir / "redis", auth=RedisAuth()).start()
        table = f'[redis]\nurl = "{server.url}"\n'

        def masters() -> list[redis.Redis]:
            return [server.client()]
    else:
        server = RedisCluster(workdir / "redis", auth=RedisAuth()).start()
        table = f'[redis]\nurl = "{server.urls[0]}"\ncluster = true\n'

        def masters() -> list[redis.Redis]:
            return [n.client() for n in server.nodes]

    body = (
        '[policy]\non_virus = "reject"\n\n'
        + engine_table("clamav", "clamav", address=clamd.address)
        + table
        + RATELIMIT
    )
    quorum = QuorumProcess(workdir / "quorum", body).start()
    postfix.set_milter(quorum.postfix_address)
    try:
        yield Stack(request.param, masters, quorum, postfix)
    finally:
        quorum.stop()
        server.stop()


@pytest.fixture
def fresh(stack: Stack) -> Stack:
    stack.flush()
    return stack


def mail(rcpt: str) -> bytes:
    return (
        f"From: Mallory <m@spam.test>\r\nTo: <{rcpt}>\r\nSubject: hello\r\n"
        f"Date: {email.utils.formatdate()}\r\nMessage-ID: <{uuid.uuid4().hex}@spam.test>\r\n\r\nhello\r\n"
    ).encode()


def smtp(stack: Stack, ip: str, rcpts: list[str], sender: str = "m@spam.test", login: str | None = None) -> SendResult:
    xclient = {"ADDR": ip, "NAME": "client.example", "HELO": "client.example"}
    if login:
        xclient["LOGIN"] = login
    return send(stack.postfix.smtp_port, sender, rcpts, mail(rcpts[0]), xclient=xclient)


def share_refused(result: SendResult, domain: str, client: str) -> bool:
    wanted = f"4.7.1 rate limit exceeded for recipient_domain {domain}, share of client_ip {client}; retry in"
    return result.code == 451 and wanted in result.text


def domain_refused(result: SendResult, domain: str) -> bool:
    return result.code == 451 and f"4.7.1 rate limit exceeded for recipient_domain {domain}; retry in" in result.text


def test_one_flooding_client_cannot_shut_a_domain_off(fresh: Stack) -> None:
    """The attack: 30 messages from one client to victim.test. Without the share the first 10 fill
    the bucket and every other sender then gets 451 for an hour; with it only the flooder does."""
    flood = [smtp(fresh, "192.0.2.66", ["ceo@victim.test"]) for _ in range(30)]
    assert [r.accepted for r in flood] == [True, True] + [False] * 28, flood
    assert all(share_refused(r, "victim.test", "192.0.2.66") for r in flood[2:]), flood[2]
    others = [smtp(fresh, f"203.0.113.{i}", ["ceo@victim.test"], sender=f"s{i}@ok.test") for i in range(1, 9)]
    assert all(r.accepted for r in others), others  # the domain's remaining 8
    fresh.quorum.wait_for_log(
        r"rate limit: refused .* client=192\.0\.2\.66 bucket=recipient_domain victim\.test, share of client_ip"
    )
    # The share keys sit in the domain's hash slot, next to its bucket.
    assert fresh.keys("quorum:rl:rs:m1h:{victim.test}:ip:192.0.2.66")
    assert fresh.keys("quorum:rl:rd:m1h:{victim.test}")


def test_rotating_senders_or_many_recipients_do_not_help(fresh: Stack) -> None:
    results = [smtp(fresh, "192.0.2.70", ["a@rot.test"], sender=f"x{i}@forged{i}.test") for i in range(5)]
    assert [r.accepted for r in results] == [True, True, False, False, False]
    # Many recipients of the domain in one message: the recipients share (8 of 40) caps it. Like
    # any bucket, a message bigger than the share passes only into an empty share, and fills it.
    many = [f"u{i}@wide.test" for i in range(30)]
    assert smtp(fresh, "192.0.2.71", many).accepted
    after = smtp(fresh, "192.0.2.71", ["u0@wide.test"])
    assert after.code == 451 and "share of client_ip 192.0.2.71" in after.text, after
    assert smtp(fresh, "192.0.2.72", many[:8]).accepted  # 8 + 8 of the domain's 40 used
    # (One IPv6 client's /64 counts as one client: tests/unit/test_ratelimit_buckets.py; the test
    # Postfix runs IPv4 only, so XCLIENT cannot present an IPv6 address here.)


def test_authenticated_exempt_and_opted_out_are_not_shared(fresh: Stack) -> None:
    auth = [smtp(fresh, "192.0.2.80", ["a@auth.test"], login="alice") for _ in range(4)]
    assert all(r.accepted for r in auth), auth  # counted per auth_user instead
    relays = [smtp(fresh, "198.18.0.5", ["a@relay.test"]) for _ in range(4)]
    assert all(r.accepted for r in relays), relays
    partner = [smtp(fresh, "192.0.2.81", ["a@partner.test"]) for _ in range(LIMIT + 1)]
    assert [r.accepted for r in partner] == [True] * LIMIT + [False]
    assert domain_refused(partner[-1], "partner.test"), partner[-1]


def test_the_domain_bucket_still_holds_against_many_clients(fresh: Stack) -> None:
    """The share raises the cost of the attack from one client to 1/share of them; it does not
    replace the domain's own limit."""
    results = [smtp(fresh, f"192.0.2.{100 + i // 2}", ["a@many.test"]) for i in range(LIMIT + 4)]
    assert sum(r.accepted for r in results) == LIMIT
    assert domain_refused(results[LIMIT], "many.test"), results[LIMIT]
