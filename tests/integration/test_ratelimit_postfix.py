"""Rate limits through real Postfix and `quorum run`, against a single Redis, a Cluster and Sentinel.

Each client presents its own address (XCLIENT ADDR) and, where authentication matters, its SASL
login (XCLIENT LOGIN, which Postfix hands to the milter as {auth_authen}).
"""

from __future__ import annotations

import email.utils
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from tests.harness.clamd import Clamd
from tests.harness.messages import EICAR
from tests.harness.postfix import PostfixInstance
from tests.harness.quorum import QuorumProcess, engine_table
from tests.harness.redis_server import RedisAuth, RedisCluster, RedisSentinel, RedisServer
from tests.harness.smtp_client import SendResult, send

pytestmark = pytest.mark.integration


RATELIMIT = """
[ratelimit]
backoff = "200ms"
sender_domain = { messages = 2, per = "1h" }
recipient_domain = { messages = 2, per = "1h" }
client_ip = { messages = 3, per = "1h" }

[ratelimit.domains."bulk.example"]
sender_domain = { messages = 4, per = "1h" }

[ratelimit.domains."free.example"]
exempt = true

[ratelimit.domains."hammer.example"]
recipient_domain = { messages = 20, per = "1h" }

[ratelimit.networks."198.18.0.0/15"]
exempt = true
"""


class Stack:
    """Redis (one of three shapes) + `quorum run` wired into the shared Postfix."""

    def __init__(self, mode: str, server: Any, masters: Any, quorum: QuorumProcess, postfix: PostfixInstance):
        self.mode = mode
        self.server = server
        self.masters = masters
        self.quorum = quorum
        self.postfix = postfix

    def flush(self) -> None:
        for c in self.masters():
            with c:
                c.flushall()


@pytest.fixture(scope="module", params=["single", "cluster", "sentinel"])
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, postfix: PostfixInstance, clamd: Clamd
) -> Iterator[Stack]:
    mode = request.param
    workdir = tmp_path_factory.mktemp(f"stack-{mode}")
    if mode == "single":
        server: Any = RedisServer(workdir / "redis", auth=RedisAuth()).start()
        table = f'[redis]\nurl = "{server.url}"\n'

        def masters() -> list[redis.Redis]:
            return [server.client()]
    elif mode == "cluster":
        server = RedisCluster(workdir / "redis", auth=RedisAuth()).start()
        table = f'[redis]\nurl = "{server.urls[0]}"\ncluster = true\n'

        def masters() -> list[redis.Redis]:
            return [n.client() for n in server.nodes]
    else:
        server = RedisSentinel(workdir / "redis", auth=RedisAuth()).start()
        sentinels = ", ".join(f'"{h}:{p}"' for h, p in server.sentinels)
        # The url gives the master's user and password (its address comes from the sentinels).
        table = (
            f'[redis]\nurl = "{server.master.url}"\nsentinels = [{sentinels}]\n'
            f'service_name = "{server.service_name}"\nsentinel_password = "{server.auth.password}"\n'
        )

        def masters() -> list[redis.Redis]:
            return [server.master_client()]

    body = (
        '[policy]\non_virus = "reject"\n\n'
        + engine_table("clamav", "clamav", address=clamd.address)
        + table
        + RATELIMIT
    )
    quorum = QuorumProcess(workdir / "quorum", body).start()
    postfix.set_milter(quorum.postfix_address)
    s = Stack(mode, server, masters, quorum, postfix)
    try:
        yield s
    finally:
        quorum.stop()
        server.stop()


@pytest.fixture
def fresh(stack: Stack) -> Stack:
    stack.flush()
    return stack


def mail(body: str = "Shall we have lunch tomorrow?") -> bytes:
    token = uuid.uuid4().hex
    return (
        "From: Alice <alice@example.com>\r\nTo: Bob <bob@dest.test>\r\nSubject: Lunch\r\n"
        f"Date: {email.utils.formatdate()}\r\nMessage-ID: <{token}@example.com>\r\n\r\n{body}\r\n"
    ).encode()


def smtp(
    stack: Stack, sender: str, rcpts: list[str], ip: str, login: str | None = None, body: str | None = None
) -> SendResult:
    xclient = {"ADDR": ip, "NAME": "client.example", "HELO": "client.example"}
    if login:
        xclient["LOGIN"] = login
    return send(stack.postfix.smtp_port, sender, rcpts, mail() if body is None else mail(body), xclient=xclient)


def refused(result: SendResult, bucket: str) -> bool:
    return result.code == 451 and f"4.7.1 rate limit exceeded for {bucket}; retry in" in result.text


def test_exact_boundary_per_client_ip(fresh: Stack) -> None:
    results = [smtp(fresh, "", [f"u{i}@r{i}.test"], "192.0.2.10") for i in range(4)]
    assert [r.accepted for r in results] == [True, True, True, False], results
    assert refused(results[3], "client_ip 192.0.2.10"), results[3]
    assert smtp(fresh, "", ["u@other.test"], "192.0.2.11").accepted  # another client is not affected


def test_sender_domain_counts_only_authenticated_senders(fresh: Stack) -> None:
    # Unauthenticated: the sender domain could be forged to burn example.com's quota, so it is not counted.
    for i in range(4):
        assert smtp(fresh, "x@example.com", [f"u@s{i}.test"], f"192.0.2.{20 + i}").accepted
    ok = [smtp(fresh, "x@example.com", [f"u@a{i}.test"], f"192.0.2.{30 + i}", login="alice").accepted for i in range(3)]
    assert ok == [True, True, False]
    last = smtp(fresh, "x@example.com", ["u@a9.test"], "192.0.2.39", login="alice")
    assert refused(last, "sender_domain example.com"), last
    quorum_log = fresh.quorum.wait_for_log(r"rate limit: refused .* bucket=sender_domain example\.com")
    assert quorum_log


def test_override_exemption_and_networks(fresh: Stack) -> None:
    bulk = [
        smtp(fresh, "x@bulk.example", [f"u@b{i}.test"], f"192.0.2.{40 + i}", login="bulk").accepted for i in range(5)
    ]
    assert bulk == [True, True, True, True, False]
    assert all(
        smtp(fresh, "x@free.example", [f"u@f{i}.test"], f"192.0.2.{50 + i}", login="f").accepted for i in range(5)
    )
    assert all(smtp(fresh, "", [f"u@n{i}.test"], "198.18.0.1").accepted for i in range(5))  # exempt network


def test_virus_refusal_gives_the_reservation_back(fresh: Stack) -> None:
    virus = smtp(fresh, "", ["u@victim.test"], "192.0.2.60", body=EICAR.decode())
    assert virus.code == 554, virus  # refused at end of data: its recipient_domain slot is given back
    assert smtp(fresh, "", ["u@victim.test"], "192.0.2.61").accepted
    assert smtp(fresh, "", ["u@victim.test"], "192.0.2.62").accepted
    assert refused(smtp(fresh, "", ["u@victim.test"], "192.0.2.63"), "recipient_domain victim.test")


def test_all_or_none_for_a_message_touching_several_buckets(fresh: Stack) -> None:
    assert smtp(fresh, "", ["u@full.test"], "192.0.2.70").accepted
    assert smtp(fresh, "", ["u@full.test"], "192.0.2.71").accepted
    many = [f"u@m{i}.test" for i in range(6)] + ["u@full.test"]
    result = smtp(fresh, "", many, "192.0.2.72")
    assert refused(result, "recipient_domain full.test"), result
    # Nothing was taken from the six other domains nor from the client IP.
    for i in range(6):
        assert smtp(fresh, "", [f"u@m{i}.test"], "192.0.2.72" if i < 3 else f"192.0.2.{80 + i}").accepted


def test_concurrent_clients_never_pass_the_limit(fresh: Stack) -> None:
    """32 concurrent SMTP clients x 3 messages to one recipient domain limited to 20."""
    results: list[bool] = []
    lock = threading.Lock()

    def client(n: int) -> None:
        for i in range(3):
            r = smtp(fresh, "", ["u@hammer.example"], f"198.18.{n}.{i + 1}")  # exempt IPs: only the domain counts
            assert r.accepted or refused(r, "recipient_domain hammer.example"), r
            with lock:
                results.append(r.accepted)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 96
    assert sum(results) == 20


def test_client_ip_checked_at_connect(fresh: Stack) -> None:
    """With check_at_connect, a client whose bucket is full is turned away before MAIL FROM."""
    original = fresh.quorum.body
    fresh.quorum.reload(original.replace('backoff = "200ms"', 'backoff = "200ms"\ncheck_at_connect = true'))
    try:
        assert all(smtp(fresh, "", [f"u@c{i}.test"], "192.0.2.150").accepted for i in range(3))
        result = smtp(fresh, "", ["u@c9.test"], "192.0.2.150")
        assert result.data is None and result.code == 451, result  # refused before any recipient
        assert "rate limit exceeded for client_ip 192.0.2.150" in result.text
        assert smtp(fresh, "", ["u@c9.test"], "192.0.2.151").accepted
    finally:
        fresh.quorum.reload(original)


def _domains_on(stack: Stack, node_port: int | None, count: int, prefix: str) -> list[str]:
    """Recipient domains whose bucket lives on the given Cluster master (any domain otherwise)."""
    if node_port is None:
        return [f"{prefix}{i}.test" for i in range(count)]
    cluster = stack.server.client()
    try:
        found = []
        for i in range(10_000):
            domain = f"{prefix}{i}.test"
            if cluster.get_node_from_key(f"quorum:rl:rd:m1h:{{{domain}}}").port == node_port:
                found.append(domain)
                if len(found) == count:
                    return found
    finally:
        cluster.close()
    raise AssertionError("no domains found on that node")


def test_redis_down_mail_flows_then_counting_resumes(fresh: Stack) -> None:
    """Single: Redis killed then restarted. Cluster: one master killed then restarted. Sentinel:
    the master killed, the replica promoted. Mail keeps flowing; one warning; counting resumes."""
    victim_port: int | None = None
    if fresh.mode == "single":
        kill, restore = fresh.server.kill, fresh.server.start
    elif fresh.mode == "cluster":
        node = fresh.server.nodes[0]
        victim_port = node.port
        kill, restore = node.kill, node.start
    else:
        kill, restore = fresh.server.master.kill, (lambda: None)  # Sentinel promotes the replica
    down, back = _domains_on(fresh, victim_port, 6, "down"), _domains_on(fresh, victim_port, 40, "back")
    assert smtp(fresh, "", [f"u@{down[0]}"], "198.18.2.1").accepted
    kill()
    for domain in down:
        start = time.monotonic()
        result = smtp(fresh, "", [f"u@{domain}"], "198.18.2.1")
        assert result.accepted, result  # counted locally (approximate) while Redis is away
        assert time.monotonic() - start < 5
    fresh.quorum.wait_for_log(r"Redis unavailable .* fail open")
    restore()
    deadline = time.monotonic() + 30
    for domain in back:
        if "reachable again" in fresh.quorum.log_text():
            break
        assert time.monotonic() < deadline, "counting did not resume in Redis"
        assert smtp(fresh, "", [f"u@{domain}"], "198.18.2.1").accepted
        time.sleep(0.5)
    assert fresh.quorum.log_text().count("Redis unavailable") == 1  # once per warn_interval
    assert smtp(fresh, "", [f"u@{back[-1]}"], "198.18.2.1").accepted
    key = f"quorum:rl:rd:m1h:{{{back[-1]}}}"
    assert any(_holds(c, key) for c in fresh.masters())  # counted in Redis again


def _holds(client: redis.Redis, key: str) -> bool:
    with client:
        try:
            return bool(client.exists(key))
        except redis.ResponseError:  # MOVED: another master's slot
            return False
