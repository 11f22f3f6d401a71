"""Issue 11 item 2: `quorum quarantine` on the real hold queue of a real Postfix.

Quorum (ClamAV, `on_virus = "quarantine"`) holds infected mail for two domains; the CLI lists per
domain with reasons, releases to the sink exactly once, deletes, expires only what is old, refuses
what Quorum did not hold, and writes one audit line per action (stderr, and syslog via a socket).
"""

from __future__ import annotations

import email.utils
import json
import os
import re
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.conftest import MailStack
from tests.harness.clamd import Clamd
from tests.harness.messages import EICAR
from tests.harness.postfix import PostfixInstance
from tests.harness.postfix_queue import age_held_message
from tests.harness.quorum import QuorumProcess, engine_table
from tests.harness.sink import Sink
from tests.harness.smtp_client import send

pytestmark = pytest.mark.integration

QUORUM = [sys.executable, "-m", "quorum"]
DAY = 86400
POSTFIX_HOLDS = "held-by-postfix@tenant-a.example"  # Postfix's own HOLD action, without Quorum


def infected(token: str, rcpt: str) -> bytes:
    return (
        (
            f"From: Mallory <mallory@example.com>\r\nTo: <{rcpt}>\r\nSubject: invoice {token}\r\n"
            f"Date: {email.utils.formatdate()}\r\nMessage-ID: <{token}@example.com>\r\n\r\n"
        ).encode()
        + b"open me: "
        + EICAR
        + b"\r\n"
    )


def clean(token: str, rcpt: str) -> bytes:
    return f"From: a@example.com\r\nTo: <{rcpt}>\r\nSubject: ok {token}\r\n\r\nhello\r\n".encode()


def hold(postfix: PostfixInstance, rcpt: str) -> tuple[str, str]:
    """Send an infected message for `rcpt`; (queue id, token) of the held message."""
    token = uuid.uuid4().hex
    result = send(postfix.smtp_port, "mallory@example.com", [rcpt], infected(token, rcpt))
    assert result.code == 250 and result.queue_id, result
    assert result.queue_id in postfix.hold_queue_ids()
    return result.queue_id, token


class Cli:
    def __init__(self, config: Path) -> None:
        self.config = config

    def __call__(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        argv = [*QUORUM, "quarantine", *args, "-c", str(self.config)]
        return subprocess.run(
            argv, capture_output=True, text=True, timeout=120, check=False, env={**os.environ, **(env or {})}
        )

    def json_list(self, *args: str) -> list[dict[str, object]]:
        proc = self("list", "--json", *args)
        assert proc.returncode == 0, proc.stderr
        return list(json.loads(proc.stdout))


def audit_lines(proc: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in proc.stderr.splitlines() if " quorum.audit[" in line]


@pytest.fixture(scope="module")
def syslog_socket(tmp_path_factory: pytest.TempPathFactory) -> Iterator[socket.socket]:
    path = tmp_path_factory.mktemp("syslog") / "log.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(5)
    yield sock
    sock.close()


@pytest.fixture(scope="module")
def stack(mail_stack: MailStack, clamd: Clamd, syslog_socket: socket.socket) -> QuorumProcess:
    body = (
        '[policy]\non_virus = "quarantine"\n\n'
        + engine_table("clamav", "clamav", address=clamd.address)
        + "\n[quarantine]\n"
        + f'postfix_config_dir = "{mail_stack.postfix.config_dir}"\n'
        + 'audit_log = "both"\n'
        + f'syslog_address = "{syslog_socket.getsockname()}"\n'
    )
    hold_rule = f"check_recipient_access inline:{{ {POSTFIX_HOLDS}=HOLD }}"
    mail_stack.postfix.set_main({"smtpd_end_of_data_restrictions": hold_rule})
    return mail_stack.start(body)


@pytest.fixture
def cli(stack: QuorumProcess, postfix: PostfixInstance, sink: Sink, syslog_socket: socket.socket) -> Iterator[Cli]:
    if postfix.hold_queue_ids():
        postfix.delete("ALL")
    sink.clear()
    _drain(syslog_socket)
    yield Cli(stack.config_path)
    if postfix.hold_queue_ids():
        postfix.delete("ALL")


def _drain(sock: socket.socket) -> list[str]:
    out = []
    sock.setblocking(False)
    try:
        while True:
            out.append(sock.recv(65536).decode(errors="replace"))
    except BlockingIOError:
        pass
    finally:
        sock.settimeout(5)
    return out


def test_list_per_domain_release_once_delete(
    cli: Cli, postfix: PostfixInstance, sink: Sink, syslog_socket: socket.socket
) -> None:
    qid_a, token_a = hold(postfix, "bob@tenant-a.example")
    qid_b, token_b = hold(postfix, "carol@tenant-b.example")
    # Held by Postfix for another reason (no X-Quorum-Quarantine): not ours to list or release.
    foreign = send(postfix.smtp_port, "a@example.com", [POSTFIX_HOLDS], clean("f", POSTFIX_HOLDS))
    assert foreign.code == 250 and foreign.queue_id in postfix.hold_queue_ids(), foreign

    listed = cli.json_list("--domain", "tenant-a.example")
    assert [m["queue_id"] for m in listed] == [qid_a]
    assert listed[0]["recipients"] == ["bob@tenant-a.example"]
    assert listed[0]["sender"] == "mallory@example.com"
    assert re.match(r"virus Eicar-Test-Signature\S* found by clamav", str(listed[0]["reason"])), listed
    assert {m["queue_id"] for m in cli.json_list()} == {qid_a, qid_b}
    text = cli("list", "--domain", "TENANT-B.example")
    assert qid_b in text.stdout and qid_a not in text.stdout and "reason: virus Eicar" in text.stdout
    assert re.search(r"user='root' action=list messages=\S*" + qid_b + r" result=ok", "\n".join(audit_lines(text)))

    show = cli("show", qid_a)
    assert show.returncode == 0, show.stderr
    assert "reason:     virus Eicar-Test-Signature" in show.stdout
    assert f"Message-ID: <{token_a}@example.com>" in show.stdout
    assert "EICAR" not in show.stdout  # headers only, never the content

    # Release: reported only once Postfix has it back; delivered to the sink exactly once.
    release = cli("release", qid_a, env={"SUDO_USER": "alice"})
    assert release.returncode == 0, release.stderr
    assert re.search(rf"^{qid_a}: released \(", release.stdout, re.MULTILINE), release.stdout
    (line,) = audit_lines(release)
    assert f"user='alice (via sudo as root)' action=release messages={qid_a} result=ok done=1" in line
    assert any(f"action=release messages={qid_a} result=ok" in m for m in _syslog(syslog_socket, "action=release"))
    sink.wait_for(1, timeout=30)
    postfix.wait_queue_empty(timeout=30)
    time.sleep(1.5)  # a second delivery would have happened by now (queue_run_delay 1s)
    assert [m for m in sink.messages() if token_a.encode() in m.raw].__len__() == 1
    assert qid_a not in postfix.hold_queue_ids()

    # Releasing again, or what Quorum did not hold, fails: non-zero, never "released".
    again = cli("release", qid_a, foreign.queue_id, "NOSUCHID12")
    assert again.returncode == 1
    assert "released (" not in again.stdout
    assert f"{qid_a}: NOT released: not held by Quorum" in again.stderr
    assert f"{foreign.queue_id}: NOT released: not held by Quorum" in again.stderr
    assert foreign.queue_id in postfix.hold_queue_ids()
    (line,) = audit_lines(again)
    assert "action=release" in line and "result=failed done=0" in line

    delete = cli("delete", qid_b)
    assert delete.returncode == 0, delete.stderr
    assert f"{qid_b}: deleted" in delete.stdout
    assert qid_b not in [e["queue_id"] for e in postfix.queue()]
    assert f"action=delete messages={qid_b} result=ok" in audit_lines(delete)[0]
    assert not [m for m in sink.messages() if token_b.encode() in m.raw]
    assert cli.json_list() == []


def test_release_and_delete_by_domain(cli: Cli, postfix: PostfixInstance, sink: Sink) -> None:
    a1, t1 = hold(postfix, "bob@tenant-a.example")
    a2, t2 = hold(postfix, "eve@tenant-a.example")
    b1, _ = hold(postfix, "carol@tenant-b.example")
    release = cli("release", "--domain", "tenant-a.example")
    assert release.returncode == 0, release.stderr
    assert {a1, a2} == set(re.findall(r"^(\S+): released", release.stdout, re.MULTILINE))
    (line,) = audit_lines(release)
    assert "domain=tenant-a.example" in line and a1 in line and a2 in line and b1 not in line
    sink.wait_for(2, timeout=30)
    postfix.wait_queue_empty(timeout=30)
    assert sorted(t for t in (t1, t2) for m in sink.messages() if t.encode() in m.raw) == sorted([t1, t2])
    assert [m["queue_id"] for m in cli.json_list()] == [b1]
    delete = cli("delete", "--domain", "tenant-b.example")
    assert delete.returncode == 0 and f"{b1}: deleted" in delete.stdout, delete.stderr
    assert cli.json_list() == []


def test_expire_removes_only_old_messages(cli: Cli, postfix: PostfixInstance) -> None:
    old, _ = hold(postfix, "bob@tenant-a.example")
    young, _ = hold(postfix, "carol@tenant-b.example")
    before = {str(e["queue_id"]): int(str(e["arrival_time"])) for e in postfix.queue()}
    assert age_held_message(postfix.queue_dir, old, 40 * DAY) == before[old] - 40 * DAY
    after = {str(e["queue_id"]): int(str(e["arrival_time"])) for e in postfix.queue()}
    assert after[old] == before[old] - 40 * DAY  # Postfix itself now sees it as 40 days old

    listed = cli.json_list("--older-than", "30d")
    assert [m["queue_id"] for m in listed] == [old]
    expire = cli("expire", "--older-than", "30d")
    assert expire.returncode == 0, expire.stderr
    assert f"{old}: expired" in expire.stdout and young not in expire.stdout
    assert f"action=expire messages={old} result=ok done=1" in audit_lines(expire)[0]
    assert postfix.hold_queue_ids() == [young]

    nothing = cli("expire", "--older-than", "30d")
    assert nothing.returncode == 0 and "0 expired" in nothing.stdout
    assert "action=expire messages=- result=ok done=0" in audit_lines(nothing)[0]


def test_expire_uses_the_configured_retention(
    cli: Cli, stack: QuorumProcess, postfix: PostfixInstance, tmp_path: Path
) -> None:
    old, _ = hold(postfix, "bob@tenant-a.example")
    young, _ = hold(postfix, "carol@tenant-b.example")
    age_held_message(postfix.queue_dir, old, 8 * DAY)
    age_held_message(postfix.queue_dir, young, 6 * DAY)
    config = tmp_path / "retention.toml"
    config.write_text(stack.config_path.read_text() + 'retention = "7d"\n')
    missing = cli("expire")
    assert missing.returncode == 2 and "--older-than" in missing.stderr
    expire = Cli(config)("expire")
    assert expire.returncode == 0, expire.stderr
    assert f"{old}: expired" in expire.stdout
    assert postfix.hold_queue_ids() == [young]


def _syslog(sock: socket.socket, needle: str) -> list[str]:
    deadline = time.monotonic() + 5
    got: list[str] = []
    while time.monotonic() < deadline:
        got += _drain(sock)
        if any(needle in g for g in got):
            break
        time.sleep(0.05)
    return got
