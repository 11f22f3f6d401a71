"""ClamAV + rspamd + SpamAssassin behind real Postfix: GTUBE tagged, quarantined or rejected per
`on_spam`, ham clean, EICAR refused whatever the spam engines say, combination modes, shadow mode,
one log line per decision and the same decision from `quorum scan`."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from tests.conftest import MailStack
from tests.harness.clamd import Clamd
from tests.harness.messages import EICAR, GTUBE, HAM, mail
from tests.harness.quorum import QuorumProcess, engine_table
from tests.harness.rspamd import Rspamd
from tests.harness.sink import delivered, engines_header
from tests.harness.smtp_client import SendResult, send
from tests.harness.spamd import Spamd

pytestmark = pytest.mark.integration


def submit(stack: MailStack, body: bytes, subject: str = "Lunch tomorrow") -> tuple[str, SendResult]:
    token = uuid.uuid4().hex
    result = send(stack.postfix.smtp_port, "alice@example.com", ["bob@example.org"], mail(token, body, subject))
    return token, result


def log_line(quorum: QuorumProcess, qid: str, timeout: float = 10.0) -> str:
    """The one quorum.message decision line for Postfix queue id `qid`."""
    deadline = time.monotonic() + timeout
    while True:
        lines = [line for line in quorum.message_lines() if f"qid={qid} " in line and " verdict=" in line]
        if lines or time.monotonic() > deadline:
            assert len(lines) == 1, f"expected one decision line for {qid}:\n" + "\n".join(quorum.message_lines())
            return lines[0]
        time.sleep(0.05)


def config(
    clamd: Clamd, rspamd: Rspamd, spamd: Spamd, policy: str = "", rspamd_extra: str = "", spamd_extra: str = ""
) -> str:
    return (
        f'[policy]\non_virus = "reject"\non_engine_failure = "tempfail"\n{policy}\n\n'
        + engine_table("clamav", "clamav", address=clamd.address, timeout=20)
        + engine_table("rspamd", "rspamd", url=rspamd.url, timeout=20)
        + rspamd_extra
        + "\n"
        + engine_table("spamassassin", "spamassassin", address=spamd.address, timeout=20)
        + spamd_extra
    )


@pytest.fixture(scope="module")
def engines(clamd: Clamd, rspamd: Rspamd, spamd: Spamd) -> tuple[Clamd, Rspamd, Spamd]:
    return clamd, rspamd, spamd


def test_gtube_is_tagged_by_both_spam_engines(mail_stack: MailStack, engines: tuple[Clamd, Rspamd, Spamd]) -> None:
    quorum = mail_stack.start(config(*engines, policy='on_spam = "tag"'))
    token, result = submit(mail_stack, GTUBE, "Cheap watches")
    assert result.accepted, result
    msg = delivered(mail_stack.sink, token)
    verdicts = engines_header(msg)
    assert verdicts["clamav"] == "clean"
    assert verdicts["rspamd"].startswith("spam("), verdicts
    assert verdicts["spamassassin"].startswith("spam(1000."), verdicts
    assert msg.header("X-Spam-Flag") == "YES"
    assert re.fullmatch(r"spam; score=\d\.\d\d", msg.header("X-Quorum-Verdict") or ""), msg.header("X-Quorum-Verdict")
    line = log_line(quorum, result.queue_id or "")
    assert " verdict=spam action=tag " in line and "reason='spam by any of 2 vote(s), score " in line
    assert re.search(r"engines=clamav:clean:\d+ms,rspamd:spam\([^)]*\):\d+ms,spamassassin:spam\([^)]*\):\d+ms", line)


def test_gtube_is_quarantined(mail_stack: MailStack, engines: tuple[Clamd, Rspamd, Spamd]) -> None:
    quorum = mail_stack.start(config(*engines, policy='on_spam = "quarantine"'))
    postfix = mail_stack.postfix
    token, result = submit(mail_stack, GTUBE, "Cheap watches")
    assert result.accepted, result
    qid = result.queue_id
    assert qid is not None
    try:
        deadline = time.monotonic() + 10
        while qid not in postfix.hold_queue_ids() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert qid in postfix.hold_queue_ids()
        held = postfix.postcat(qid)
        assert "X-Spam-Flag: YES" in held and "X-Quorum-Verdict: spam; score=" in held
        assert re.search(r"X-Quorum-Quarantine: spam score \d\.\d\d", held)
        assert token in held
        assert not any(token in (m.header("Message-ID") or "") for m in mail_stack.sink.messages())
        assert " verdict=spam action=quarantine " in log_line(quorum, qid)
        postfix.wait_for_log(rf"{qid}: milter-hold: END-OF-MESSAGE from .*: milter triggers HOLD action")
    finally:
        postfix.delete(qid)


def test_gtube_is_rejected(mail_stack: MailStack, engines: tuple[Clamd, Rspamd, Spamd]) -> None:
    quorum = mail_stack.start(config(*engines, policy='on_spam = "reject"'))
    _, result = submit(mail_stack, GTUBE, "Cheap watches")
    assert (result.code, result.text) == (550, "5.7.1 message classified as spam"), result
    line = quorum.wait_for_log(r".*quorum\.message.* verdict=spam action=reject .*").group(0)
    assert "reply='550 5.7.1 message classified as spam'" in line


def test_ham_is_clean(mail_stack: MailStack, engines: tuple[Clamd, Rspamd, Spamd]) -> None:
    quorum = mail_stack.start(config(*engines, policy='on_spam = "reject"'))
    token, result = submit(mail_stack, HAM)
    assert result.accepted, result
    msg = delivered(mail_stack.sink, token)
    assert msg.header("X-Quorum-Verdict") == "clean"
    assert msg.header("X-Spam-Flag") is None
    verdicts = engines_header(msg)
    assert verdicts["clamav"] == "clean"
    assert verdicts["rspamd"].startswith("clean("), verdicts
    assert verdicts["spamassassin"].startswith("clean("), verdicts
    assert " verdict=clean action=accept " in log_line(quorum, result.queue_id or "")


@pytest.mark.parametrize("on_spam", ["tag", "reject"])
def test_eicar_is_refused_whatever_the_spam_engines_say(
    mail_stack: MailStack, engines: tuple[Clamd, Rspamd, Spamd], on_spam: str
) -> None:
    """EICAR inside GTUBE spam, and EICAR inside ham: the virus decides (554, not 550 or 250)."""
    quorum = mail_stack.start(config(*engines, policy=f'on_spam = "{on_spam}"'))
    for body in (GTUBE + b"\r\n" + EICAR, HAM + b"\r\n" + EICAR):
        _, result = submit(mail_stack, body, "Your invoice")
        assert result.code == 554, result
        # the harness clamd loads EICAR as an own (.UNOFFICIAL) signature
        assert re.fullmatch(r"5\.7\.1 message contains a virus \(Eicar-Test-Signature(\.UNOFFICIAL)?\)", result.text), (
            result
        )
    lines = [line for line in quorum.message_lines() if "verdict=virus" in line]
    assert len(lines) == 2 and all("action=reject" in line and "clamav:infected" in line for line in lines)
    assert "Traceback" not in quorum.log_text()


def test_weighted_combination_through_postfix(mail_stack: MailStack, engines: tuple[Clamd, Rspamd, Spamd]) -> None:
    """GTUBE: rspamd score/threshold and SpamAssassin's 1000/5 (clamped to 2.0) averaged."""
    quorum = mail_stack.start(
        config(*engines, policy='on_spam = "tag"\nspam_combine = "weighted"', rspamd_extra="weight = 3.0\n")
    )
    token, result = submit(mail_stack, GTUBE, "Cheap watches")
    assert result.accepted, result
    msg = delivered(mail_stack.sink, token)
    m = re.fullmatch(r"spam\(([\d.]+)/([\d.]+)\)", engines_header(msg)["rspamd"])
    assert m, engines_header(msg)
    rspamd_norm = min(float(m.group(1)) / float(m.group(2)), 2.0)
    expected = (3.0 * rspamd_norm + 2.0) / 4.0
    assert msg.header("X-Quorum-Verdict") == f"spam; score={expected:.2f}"
    assert "reason='spam by weighted of 2 vote(s)" in log_line(quorum, result.queue_id or "")


def test_shadow_engine_and_threshold_override(mail_stack: MailStack, engines: tuple[Clamd, Rspamd, Spamd]) -> None:
    """rspamd with its own threshold far above GTUBE's score votes clean; SpamAssassin in shadow
    mode says spam and is reported, but the message is clean."""
    quorum = mail_stack.start(
        config(
            *engines,
            policy='on_spam = "reject"\nspam_combine = "any"',
            rspamd_extra="threshold = 500.0\n",
            spamd_extra='mode = "shadow"\n',
        )
    )
    token, result = submit(mail_stack, GTUBE, "Cheap watches")
    assert result.accepted, result
    msg = delivered(mail_stack.sink, token)
    verdicts = engines_header(msg)
    assert re.fullmatch(r"clean\([\d.]+/500\.00\)", verdicts["rspamd"]), verdicts
    assert verdicts["spamassassin"].startswith("spam(1000."), verdicts
    assert msg.header("X-Quorum-Verdict") == "clean" and msg.header("X-Spam-Flag") is None
    assert "left_out=spamassassin:shadow" in log_line(quorum, result.queue_id or "")


def test_quorum_scan_explains_the_same_decision(
    mail_stack: MailStack, engines: tuple[Clamd, Rspamd, Spamd], tmp_path: Path
) -> None:
    quorum = mail_stack.start(config(*engines, policy='on_spam = "tag"'))
    eml = tmp_path / "gtube.eml"
    eml.write_bytes(mail(uuid.uuid4().hex, GTUBE, "Cheap watches"))
    argv = [sys.executable, "-m", "quorum", "scan", "-c", str(quorum.config_path), str(eml)]
    base = ["--sender", "alice@example.com", "--rcpt", "bob@example.org"]
    out = subprocess.run([*argv, *base, "--json"], capture_output=True, text=True, timeout=60, check=True).stdout
    doc = json.loads(out)
    assert (doc["verdict"], doc["action"]) == ("spam", "tag")
    by_engine = {e["engine"]: e for e in doc["engines"]}
    assert by_engine["clamav"]["status"] == "clean"
    assert by_engine["rspamd"]["status"] == by_engine["spamassassin"]["status"] == "spam"
    assert all(e["circuit"] == "closed" for e in doc["engines"])
    assert "X-Spam-Flag: YES" in doc["headers_added"]
    assert any(r.startswith("spam by any of 2 vote(s)") for r in doc["reasons"])
    text = subprocess.run([*argv, *base], capture_output=True, text=True, timeout=60, check=True).stdout
    assert text.startswith("verdict: spam (score ")
    assert re.search(r"^  spamassassin +spam +[\d.]+ ms  1000\.\d\d/5\.00$", text, re.M), text
    assert "  why: spam by any of 2 vote(s)" in text
