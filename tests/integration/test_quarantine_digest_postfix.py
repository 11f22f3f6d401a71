"""Issue 11 item 2 (optional part): `quorum quarantine digest` on the real hold queue, sent through the
Postfix notice listener (postfix-conf/master.cf.notify) to the sink.

Quorum holds infected mail (`on_virus = "quarantine"`); recipients in `digest.test` asked for digests,
those in `quiet.test` did not. Held mail stays held: a digest only tells.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from tests.harness.clamd import Clamd
from tests.harness.messages import EICAR
from tests.harness.notice_listener import NoticeListenerPostfix
from tests.harness.ports import wait_for_port, wait_for_port_closed
from tests.harness.quorum import QuorumProcess, engine_table
from tests.harness.sink import Sink
from tests.harness.smtp_client import send

pytestmark = pytest.mark.integration

NOTICE_FROM = "Quarantine <postmaster@mx.quorum.test>"


@dataclass
class Stack:
    postfix: NoticeListenerPostfix
    quorum: QuorumProcess
    sink: Sink

    def hold(self, rcpt: str) -> tuple[str, str]:
        token = uuid.uuid4().hex
        raw = (
            (
                f"From: <mallory@example.org>\r\nTo: <{rcpt}>\r\nSubject: invoice {token}\r\n"
                f"Message-ID: <{token}@example.org>\r\n\r\nopen me: "
            ).encode()
            + EICAR
            + b"\r\n"
        )
        result = send(self.postfix.smtp_port, "mallory@example.org", [rcpt], raw)
        assert result.code == 250 and result.queue_id in self.postfix.hold_queue_ids(), result
        return str(result.queue_id), token

    def digest(self, *args: str) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "quorum", "quarantine", "digest", *args, "-c", str(self.quorum.config_path)]
        return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False, env=dict(os.environ))


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, clamd: Clamd) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("digest-stack")
    sink = Sink(root / "sink")
    sink.start()
    postfix = NoticeListenerPostfix(root / "postfix", sink.port)
    body = (
        '[policy]\non_virus = "quarantine"\n\n'
        + engine_table("clamav", "clamav", address=clamd.address)
        + f"""
[quarantine]
postfix_config_dir = "{postfix.config_dir}"
audit_log = "stderr"

[notify]
relay = "127.0.0.1:{postfix.notify_port}"
from = "{NOTICE_FROM}"
daily_cap = 0
timeout = "5s"

[domains."digest.test".notify]
recipient = true
events = ["digest"]
"""
    )
    quorum = QuorumProcess(root / "quorum", body).start()
    postfix.milter = quorum.postfix_address
    try:
        postfix.start()
        yield Stack(postfix, quorum, sink)
    finally:
        postfix.stop()
        quorum.stop()
        sink.stop()


@pytest.fixture
def held(stack: Stack) -> Iterator[dict[str, tuple[str, str]]]:
    stack.sink.clear()
    out = {
        "bob1": stack.hold("bob@digest.test"),
        "bob2": stack.hold("bob@digest.test"),
        "carol": stack.hold("carol@digest.test"),
        "dave": stack.hold("dave@quiet.test"),
    }
    yield out
    stack.postfix.delete("ALL")


def test_digest_lists_what_is_held_for_each_recipient(stack: Stack, held: dict[str, tuple[str, str]]) -> None:
    dry = stack.digest("--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "bob@digest.test: 2 held message(s)" in dry.stdout and "carol@digest.test: 1" in dry.stdout
    assert "dave@quiet.test" not in dry.stdout and "2 digest(s) would be sent" in dry.stdout
    assert stack.sink.count() == 0

    run = stack.digest()
    assert run.returncode == 0, run.stderr
    assert "2 digest(s): sent=2 suppressed=0 failed=0" in run.stdout
    [audit] = [line for line in run.stderr.splitlines() if "quorum.audit" in line]
    assert "action=digest" in audit and "result=ok" in audit and "recipients=2" in audit
    assert all(held[k][0] in audit for k in ("bob1", "bob2", "carol")) and held["dave"][0] not in audit

    digests = {m.rcpt_tos[0]: m for m in stack.sink.wait_for(2)}
    assert sorted(digests) == ["bob@digest.test", "carol@digest.test"]
    bob = digests["bob@digest.test"]
    text = bob.body.decode()
    for key in ("bob1", "bob2"):
        qid, token = held[key]
        assert qid in text and f"invoice {token}" in text
    assert held["carol"][0] not in text  # each recipient sees only its own mail
    assert bob.header("Subject") == "2 messages held for you"
    for m in digests.values():
        assert m.mail_from in ("", "<>") and m.header("Auto-Submitted") == "auto-generated"
        assert m.header("X-Quorum-Notice") == "digest" and m.header("From") == NOTICE_FROM
        assert b"EICAR" not in m.raw and b"open me" not in m.raw
    assert sorted(stack.postfix.hold_queue_ids()) == sorted(qid for qid, _ in held.values())  # still held


def test_digest_with_the_relay_down_fails_loudly(stack: Stack, held: dict[str, tuple[str, str]]) -> None:
    stack.postfix.listener_enabled = False
    stack.postfix.reload()
    wait_for_port_closed(stack.postfix.notify_port)
    try:
        run = stack.digest("--domain", "digest.test")
    finally:
        stack.postfix.listener_enabled = True
        stack.postfix.reload()
        wait_for_port(stack.postfix.notify_port)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "NOT SENT" in run.stderr and "failed=2" in run.stdout
    [audit] = [line for line in run.stderr.splitlines() if "quorum.audit" in line]
    assert "action=digest" in audit and "result=failed" in audit and "domain=digest.test" in audit
    assert stack.sink.count() == 0
