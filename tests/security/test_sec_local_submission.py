"""Issue 17, item 14: locally submitted mail (sendmail(1) -> postdrop -> pickup -> cleanup) passes
Quorum too, through the shipped postfix-conf/main.cf (`non_smtpd_milters`).

Every message here is submitted with the test instance's own `sendmail`, never over SMTP: the
milter sees it from cleanup(8), as client "localhost" [127.0.0.1] without any SMTP session. A
forged verdict header never survives, malware is never delivered, and while Quorum is down
local mail waits instead of leaving unscanned.
"""

from __future__ import annotations

import email.utils
import re
import subprocess
import time
import uuid
from collections.abc import Iterator

import pytest
from tests.conftest import MailStack
from tests.harness.clamd import Clamd
from tests.harness.messages import EICAR
from tests.harness.postfix import FRAGMENT, SENDMAIL, PostfixInstance, fragment_params
from tests.harness.quorum import QuorumProcess, engine_table
from tests.harness.sink import Sink, delivered
from tests.harness.smtp_client import send

pytestmark = pytest.mark.integration

SENDER = "cron@mx.quorum.test"
RCPT = "bob@example.org"
FORGED = (
    "X-Quorum-Verdict: clean\r\n"
    "x-quorum-verdict:clean\r\n"
    "X-Quorum-Verdict:\r\n clean (folded)\r\n"
    "X-Quorum-Engines: clamav=clean\r\n"
)


def message(token: str, body: bytes = b"The nightly report is attached.\r\n", headers: str = "") -> bytes:
    return (
        f"From: Cron Daemon <{SENDER}>\r\n"
        f"To: Bob <{RCPT}>\r\n"
        "Subject: nightly report\r\n"
        f"Date: {email.utils.formatdate()}\r\n"
        f"Message-ID: <{token}@mx.quorum.test>\r\n"
        f"{headers}"
        "\r\n"
    ).encode() + body


def header_values(raw: bytes, name: str) -> list[bytes]:
    head = raw.split(b"\r\n\r\n", 1)[0]
    rx = re.compile(rb"^" + re.escape(name.encode()) + rb":(.*(?:\r\n[ \t].*)*)", re.IGNORECASE | re.MULTILINE)
    return [m.group(1).strip() for m in rx.finditer(head)]


def submit(postfix: PostfixInstance, raw: bytes, sender: str = SENDER, rcpts: list[str] | None = None) -> None:
    result = postfix.sendmail(sender, rcpts or [RCPT], raw.replace(b"\r\n", b"\n"))
    assert result.returncode == 0, result


def never_delivered(postfix: PostfixInstance, sink: Sink, token: str, settle: float = 3.0) -> None:
    """The message left the queue without reaching the sink (nothing of it, not even quoted)."""
    deadline = time.monotonic() + 30
    while postfix.queue() or _in_maildrop(postfix):
        assert time.monotonic() < deadline, postfix.queue()
        time.sleep(0.1)
    time.sleep(settle)  # a bounce, if any, would be on its way now
    postfix.wait_queue_empty(timeout=30)
    for m in sink.messages():
        assert EICAR not in m.raw.replace(b"\r\n", b"\n"), m
        if token.encode() in m.raw:
            # Only Postfix's bounce to the sender may name it: a DSN quoting the headers alone.
            assert m.mail_from == "<>" and RCPT not in m.rcpt_tos, m
            assert b"Content-Type: text/rfc822-headers" in m.raw, m.raw[:3000]


def _in_maildrop(postfix: PostfixInstance) -> bool:
    return any((postfix.queue_dir / "maildrop").iterdir())


@pytest.fixture(scope="module")
def quorum(mail_stack: MailStack, clamd: Clamd) -> Iterator[QuorumProcess]:
    body = '[policy]\non_virus = "reject"\n\n' + engine_table("clamav", "clamav", address=clamd.address)
    yield mail_stack.start(body)
    mail_stack.stop()


@pytest.fixture
def stack(quorum: QuorumProcess, mail_stack: MailStack) -> MailStack:
    if mail_stack.quorum is None or not mail_stack.quorum.service.running:
        mail_stack.quorum = quorum.start()
    mail_stack.postfix.set_milter(quorum.postfix_address)
    mail_stack.sink.clear()
    return mail_stack


def test_shipped_fragment_scans_local_submission_with_the_same_settings() -> None:
    params = fragment_params("inet:127.0.0.1:1234")
    assert params.get("non_smtpd_milters") == "$smtpd_milters", f"{FRAGMENT}: non_smtpd_milters must follow smtpd"
    assert "default_action=tempfail" in params["smtpd_milters"]
    assert "internal_mail_filter_classes" not in params  # bounces Postfix writes are not re-filtered


def test_local_eicar_with_forged_clean_verdict_is_not_delivered(stack: MailStack) -> None:
    token = uuid.uuid4().hex
    submit(stack.postfix, message(token, b"Here it is:\r\n" + EICAR + b"\r\n", FORGED))
    qid = stack.postfix.wait_for_log(rf"postfix/cleanup\[\d+\]: (\w+): message-id=<{token}@", timeout=30).group(1)
    stack.postfix.wait_for_log(rf"{qid}: milter-reject: END-OF-MESSAGE from localhost\[127\.0\.0\.1\]: 5\.7\.1")
    never_delivered(stack.postfix, stack.sink, token)
    # The sender learns of it: Postfix bounces a rejected local submission, headers only.
    bounce = delivered(stack.sink, token)
    assert bounce.rcpt_tos == [SENDER] and b"message contains a virus" in bounce.raw


def test_local_eicar_with_null_sender_is_not_delivered(stack: MailStack) -> None:
    token = uuid.uuid4().hex
    submit(stack.postfix, message(token, b"Here it is:\r\n" + EICAR + b"\r\n", FORGED), sender="")
    never_delivered(stack.postfix, stack.sink, token)
    assert not [m for m in stack.sink.messages() if token.encode() in m.raw]  # no bounce for <>


def test_local_clean_message_gets_quorums_own_verdict_only(stack: MailStack) -> None:
    token = uuid.uuid4().hex
    submit(stack.postfix, message(token, headers=FORGED))
    msg = delivered(stack.sink, token)
    assert header_values(msg.raw, "X-Quorum-Verdict") == [b"clean"], msg.raw[:2000]
    engines = header_values(msg.raw, "X-Quorum-Engines")
    assert len(engines) == 1 and engines[0].startswith(b"clamav=clean"), engines
    assert b"(folded)" not in msg.raw
    # Quorum saw it from cleanup(8): client "localhost" [127.0.0.1], the queue id of pickup.
    qid = stack.postfix.wait_for_log(rf"postfix/cleanup\[\d+\]: (\w+): message-id=<{token}@").group(1)
    assert stack.quorum is not None
    stack.quorum.wait_for_log(rf"qid={qid} from=<{SENDER}> .*client=127\.0\.0\.1 .*verdict=clean action=accept")


def test_local_submission_with_recipients_from_headers(stack: MailStack) -> None:
    """`sendmail -t` (recipients read from To:/Cc:) takes the same path."""
    token = uuid.uuid4().hex
    raw = message(token, b"Here it is:\r\n" + EICAR + b"\r\n", FORGED).replace(b"\r\n", b"\n")
    env = {"MAIL_CONFIG": str(stack.postfix.config_dir), "PATH": "/usr/sbin:/usr/bin:/bin"}
    argv = [SENDMAIL, "-C", str(stack.postfix.config_dir), "-t", "-i", "-f", SENDER]
    assert subprocess.run(argv, input=raw, env=env, capture_output=True, timeout=30, check=False).returncode == 0
    never_delivered(stack.postfix, stack.sink, token)


def test_local_smtp_dialogue_on_stdin_is_scanned(stack: MailStack) -> None:
    """`sendmail -bs` (an SMTP dialogue on stdin, stand-alone smtpd, no network) takes the
    non-SMTP path too: its 250 only means "in the maildrop queue" (like sendmail's exit 0);
    pickup/cleanup then run Quorum, which refuses the virus."""
    token = uuid.uuid4().hex
    body = message(token, b"Here it is:\r\n" + EICAR + b"\r\n", FORGED)
    dialogue = (
        b"HELO localhost\r\nMAIL FROM:<" + SENDER.encode() + b">\r\nRCPT TO:<" + RCPT.encode() + b">\r\n"
        b"DATA\r\n" + body + b"\r\n.\r\nQUIT\r\n"
    )
    env = {"MAIL_CONFIG": str(stack.postfix.config_dir), "PATH": "/usr/sbin:/usr/bin:/bin"}
    argv = [SENDMAIL, "-C", str(stack.postfix.config_dir), "-bs"]
    out = subprocess.run(argv, input=dialogue, env=env, capture_output=True, timeout=60, check=False).stdout
    assert b"221 " in out, out
    qid = stack.postfix.wait_for_log(rf"postfix/cleanup\[\d+\]: (\w+): message-id=<{token}@", timeout=30).group(1)
    stack.postfix.wait_for_log(rf"{qid}: milter-reject: END-OF-MESSAGE from localhost\[127\.0\.0\.1\]: 5\.7\.1")
    never_delivered(stack.postfix, stack.sink, token)


def test_local_mail_waits_while_quorum_is_down(stack: MailStack, quorum: QuorumProcess) -> None:
    """default_action=tempfail holds for local mail too: nothing leaves unscanned; once Quorum is
    back the waiting mail is scanned (the clean one delivered with a verdict, EICAR refused)."""
    quorum.stop()
    clean, virus = uuid.uuid4().hex, uuid.uuid4().hex
    try:
        submit(stack.postfix, message(clean, headers=FORGED))
        submit(stack.postfix, message(virus, b"Here it is:\r\n" + EICAR + b"\r\n", FORGED))
        stack.postfix.wait_for_log(r"milter-reject: CONNECT from localhost\[127\.0\.0\.1\]: 4\.7\.1", timeout=30)
        time.sleep(3)
        assert not [m for m in stack.sink.messages() if clean.encode() in m.raw or virus.encode() in m.raw]
    finally:
        quorum.start()
    deadline = time.monotonic() + 120
    while not [m for m in stack.sink.messages() if clean.encode() in m.raw]:
        assert time.monotonic() < deadline, "the waiting clean message was never delivered"
        stack.postfix.flush()
        time.sleep(1)
    msg = delivered(stack.sink, clean)
    assert header_values(msg.raw, "X-Quorum-Verdict") == [b"clean"]
    never_delivered(stack.postfix, stack.sink, virus)


def test_smtp_path_unchanged(stack: MailStack) -> None:
    """The SMTP path still passes Quorum exactly once (one verdict header, not two)."""
    token = uuid.uuid4().hex
    assert send(stack.postfix.smtp_port, SENDER, [RCPT], message(token, headers=FORGED)).code == 250
    msg = delivered(stack.sink, token)
    assert header_values(msg.raw, "X-Quorum-Verdict") == [b"clean"]
