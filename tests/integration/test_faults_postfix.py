"""Fault isolation through real Postfix: a killed spamd, engines that hang, reset or answer garbage,
the scan deadline, the circuit breaker, early exit and `quorum health`.

Every fault leaves the message decided by the engines that still answer, within `scan_deadline`,
with the failure named in X-Quorum-Engines / `degraded=` and no exception in Quorum's log.
"""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator

import pytest
from tests.conftest import MailStack
from tests.harness.clamd import Clamd
from tests.harness.fake_engine import FakeEngine
from tests.harness.messages import EICAR, GTUBE, HAM, SPAMD_HAM, mail
from tests.harness.quorum import QuorumProcess, engine_table
from tests.harness.rspamd import Rspamd
from tests.harness.sink import Delivered, delivered, engines_header
from tests.harness.smtp_client import SendResult, send
from tests.harness.spamd import Spamd

pytestmark = pytest.mark.integration

DEADLINE = "scan_deadline = 2"


class Sent:
    def __init__(self, token: str, result: SendResult, elapsed: float) -> None:
        self.token = token
        self.result = result
        self.elapsed = elapsed


def submit(stack: MailStack, body: bytes = HAM, subject: str = "Lunch tomorrow") -> Sent:
    token = uuid.uuid4().hex
    start = time.monotonic()
    result = send(stack.postfix.smtp_port, "alice@example.com", ["bob@example.org"], mail(token, body, subject))
    return Sent(token, result, time.monotonic() - start)


def accepted(stack: MailStack, body: bytes = HAM, subject: str = "Lunch tomorrow") -> tuple[Delivered, Sent]:
    sent = submit(stack, body, subject)
    assert sent.result.accepted, sent.result
    return delivered(stack.sink, sent.token), sent


def no_traceback(quorum: QuorumProcess) -> None:
    text = quorum.log_text()
    assert "Traceback" not in text and " raised" not in text, text[-3000:]


@pytest.fixture
def fakes() -> Iterator[list[FakeEngine]]:
    """Fake engines a test starts; all stopped at the end."""
    started: list[FakeEngine] = []
    yield started
    for fake in started:
        fake.stop()


def fake(fakes: list[FakeEngine], mode: str, **kw: object) -> FakeEngine:
    engine = FakeEngine(mode, **kw)  # type: ignore[arg-type]
    fakes.append(engine)
    return engine


# --- a real engine dies -----------------------------------------------------------------------------------


@pytest.fixture
def own_spamd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Spamd]:
    """A spamd for this test alone: it gets killed, the session's `spamd` must survive."""
    server = Spamd(tmp_path_factory.mktemp("own-spamd")).start()
    yield server
    server.stop()


def test_killed_spamd_leaves_rspamd_and_clamav_deciding(
    mail_stack: MailStack, clamd: Clamd, rspamd: Rspamd, own_spamd: Spamd
) -> None:
    body = (
        '[policy]\non_spam = "tag"\non_spam_engine_failure = "tempfail"\n\n'
        + engine_table("clamav", "clamav", address=clamd.address)
        + engine_table("rspamd", "rspamd", url=rspamd.url)
        + engine_table("spamassassin", "spamassassin", address=own_spamd.address, breaker_failures=2)
    )
    quorum = mail_stack.start(body, milter_extra=DEADLINE)
    msg, _ = accepted(mail_stack, GTUBE, "Cheap watches")
    assert engines_header(msg)["spamassassin"].startswith("spam(1000.")
    assert "degraded" not in (msg.header("X-Quorum-Verdict") or "")

    own_spamd.kill()
    spam, _ = accepted(mail_stack, GTUBE, "Cheap watches")
    verdict = spam.header("X-Quorum-Verdict") or ""
    assert re.fullmatch(r"spam; score=\d\.\d\d; degraded=spamassassin", verdict), verdict
    assert spam.header("X-Spam-Flag") == "YES"
    items = engines_header(spam)
    assert items["rspamd"].startswith("spam(") and items["clamav"] == "clean"
    assert items["spamassassin"].startswith("error(cannot connect to 127.0.0.1:"), items

    ham, _ = accepted(mail_stack, HAM)
    assert ham.header("X-Quorum-Verdict") == "clean; degraded=spamassassin"
    assert ham.header("X-Spam-Flag") is None
    quorum.wait_for_log(
        r"engine spamassassin: circuit open after cannot connect to 127\.0\.0\.1:\d+.*\(skipped for 30s\)"
    )

    # the second failure opened the circuit: spamd is not even tried any more
    virus = submit(mail_stack, HAM + b"\r\n" + EICAR)
    assert virus.result.code == 554, virus.result
    skipped, _ = accepted(mail_stack, HAM)
    assert engines_header(skipped)["spamassassin"] == "skipped(circuit-open)"
    assert skipped.header("X-Quorum-Verdict") == "clean; degraded=spamassassin"
    lines = quorum.message_lines()
    assert sum(bool(re.search(r" degraded=spamassassin left_out=\S*spamassassin:", line)) for line in lines) == 4
    assert sum("spamassassin:skipped(circuit-open)" in line for line in lines) == 2
    no_traceback(quorum)


# --- engines that never answer ------------------------------------------------------------------------------


def test_hung_engines_never_delay_mail_beyond_scan_deadline(
    mail_stack: MailStack, clamd: Clamd, rspamd: Rspamd, fakes: list[FakeEngine]
) -> None:
    """Engines that accept the connection and never answer, with their own timeout at 60 s."""
    hang_spamd = fake(fakes, "hang")
    hang_http = fake(fakes, "http_hang")
    hang_clamd = fake(fakes, "hang")
    never = {"timeout": 60, "breaker_failures": 100}
    body = (
        '[policy]\non_spam = "tag"\non_engine_failure = "tempfail"\n\n'
        + engine_table("clamav", "clamav", address=clamd.address)
        + engine_table("rspamd", "rspamd", url=rspamd.url)
        + engine_table("hung_sa", "spamassassin", address=hang_spamd.address, **never)
        + engine_table("hung_http", "rspamd", url=hang_http.url, **never)
        + engine_table("hung_av", "clamav", address=hang_clamd.address, **never)
    )
    quorum = mail_stack.start(body, milter_extra=DEADLINE)
    results: list[tuple[Delivered, Sent]] = [accepted(mail_stack), accepted(mail_stack, GTUBE, "Cheap watches")]

    def one() -> None:
        results.append(accepted(mail_stack))

    threads = [threading.Thread(target=one) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(results) == 5
    for msg, sent in results:
        assert sent.elapsed < 10, f"answered after {sent.elapsed:.1f}s"
        items = engines_header(msg)
        assert items["hung_sa"] == items["hung_http"] == items["hung_av"] == "error(timeout)", items
        assert items["clamav"] == "clean"
        verdict = msg.header("X-Quorum-Verdict") or ""
        assert verdict.endswith("; degraded=hung_sa,hung_http,hung_av") or verdict == (
            "clean; degraded=hung_sa,hung_http,hung_av"
        ), verdict
    assert results[1][0].header("X-Spam-Flag") == "YES"  # GTUBE: rspamd still decides
    assert hang_spamd.connections >= 5 and hang_http.connections >= 5 and hang_clamd.connections >= 5
    times = [float(m) for m in re.findall(r" time=(\d+)ms txn=", "\n".join(quorum.message_lines()), re.M)]
    assert len(times) == 5 and all(1900 <= t < 3000 for t in times), times
    no_traceback(quorum)


def test_hung_engine_trips_the_breaker(mail_stack: MailStack, clamd: Clamd, fakes: list[FakeEngine]) -> None:
    """Timing out at the scan deadline counts as a failure: after N of them the hung engine is
    skipped and mail no longer waits for the deadline at all."""
    hang = fake(fakes, "hang")
    body = engine_table("clamav", "clamav", address=clamd.address) + engine_table(
        "hung", "spamassassin", address=hang.address, timeout=60, breaker_failures=2, breaker_cooldown=60
    )
    quorum = mail_stack.start(body, milter_extra=DEADLINE)
    first = [accepted(mail_stack) for _ in range(2)]
    assert [engines_header(m)["hung"] for m, _ in first] == ["error(timeout)"] * 2
    quorum.wait_for_log(r"engine hung: circuit open after timeout \(skipped for 60s\)")
    msg, sent = accepted(mail_stack)
    assert engines_header(msg)["hung"] == "skipped(circuit-open)"
    assert msg.header("X-Quorum-Verdict") == "clean; degraded=hung"
    assert sent.elapsed < 1.5, sent.elapsed
    assert hang.connections == 2
    no_traceback(quorum)


# --- engines that answer badly ---------------------------------------------------------------------------------


def test_malformed_and_reset_replies_are_error_verdicts(
    mail_stack: MailStack, clamd: Clamd, rspamd: Rspamd, fakes: list[FakeEngine]
) -> None:
    spamd_head = b"SPAMD/1.1 0 EX_OK\r\nSpam: True ; 1000.0 / 5.0\r\n\r\n"
    http_head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n"
    bad = {
        "sa_garbage": ("spamassassin", fake(fakes, "garbage")),
        "sa_oversize": ("spamassassin", fake(fakes, "oversize", prefix=spamd_head)),
        "sa_reset": ("spamassassin", fake(fakes, "reset")),
        "rs_garbage": ("rspamd", fake(fakes, "http_garbage")),
        "rs_raw_garbage": ("rspamd", fake(fakes, "garbage")),
        "rs_oversize": ("rspamd", fake(fakes, "oversize", prefix=http_head + b'{"action": "reject", "x": "')),
        "rs_reset": ("rspamd", fake(fakes, "reset")),
        "av_garbage": ("clamav", fake(fakes, "garbage")),
        "av_oversize": ("clamav", fake(fakes, "oversize", prefix=b"stream: ")),
        "av_reset": ("clamav", fake(fakes, "reset")),
    }
    body = '[policy]\non_spam = "tag"\n\n' + engine_table("clamav", "clamav", address=clamd.address)
    body += engine_table("rspamd", "rspamd", url=rspamd.url)
    for name, (type_, engine) in bad.items():
        address = {"url": engine.url} if type_ == "rspamd" else {"address": engine.address}
        body += engine_table(name, type_, breaker_failures=100, **address)  # type: ignore[arg-type]
    quorum = mail_stack.start(body, milter_extra=DEADLINE)
    for content, label in ((HAM, "clean"), (GTUBE, "spam")):
        msg, sent = accepted(mail_stack, content)
        assert sent.elapsed < 10
        items = engines_header(msg)
        assert items["clamav"] == "clean" and items["rspamd"].startswith(f"{label}(")
        for name in bad:
            assert items[name].startswith("error("), (name, items[name])
        verdict = msg.header("X-Quorum-Verdict") or ""
        assert verdict.startswith(label) and verdict.endswith("; degraded=" + ",".join(bad)), verdict
    for _, engine in bad.values():
        assert engine.connections >= 2
    assert items["sa_oversize"] == "error(spamd reply larger than 262144 bytes)"
    assert items["sa_garbage"].startswith("error(not a spamd reply")
    assert items["rs_garbage"].startswith("error(rspamd reply is not JSON")
    no_traceback(quorum)


# --- early exit ---------------------------------------------------------------------------------------------------


def test_virus_cancels_slow_scans_without_counting_them(
    mail_stack: MailStack, clamd: Clamd, fakes: list[FakeEngine]
) -> None:
    """EICAR with on_virus = reject: the 8 s spamd is cancelled, the reply comes at once, and the
    cancelled scans never open the breaker (breaker_failures = 1)."""
    slow = fake(fakes, "slow", delay=8.0, reply=SPAMD_HAM)
    body = (
        '[policy]\non_virus = "reject"\n\n'
        + engine_table("clamav", "clamav", address=clamd.address)
        + engine_table("slow", "spamassassin", address=slow.address, timeout=20, breaker_failures=1)
    )
    quorum = mail_stack.start(body, milter_extra="scan_deadline = 20")
    for _ in range(3):
        sent = submit(mail_stack, HAM + b"\r\n" + EICAR, "Invoice")
        assert sent.result.code == 554 and sent.elapsed < 4, (sent.result, sent.elapsed)
    lines = [line for line in quorum.message_lines() if "verdict=virus" in line]
    assert len(lines) == 3 and all("slow:cancelled:" in line and "left_out=slow:cancelled" in line for line in lines)
    assert "circuit open" not in quorum.log_text()
    assert slow.connections == 3  # every message reached it: the breaker stayed closed
    msg, sent = accepted(mail_stack)  # and a clean message still waits for its 8 s answer
    assert engines_header(msg)["slow"] == "clean(0.50/5.00)" and sent.elapsed >= 7.5
    no_traceback(quorum)


# --- breaker cycle and health probes --------------------------------------------------------------------------------


def test_breaker_opens_probes_and_reopens(
    mail_stack: MailStack, clamd: Clamd, rspamd: Rspamd, fakes: list[FakeEngine]
) -> None:
    reset = fake(fakes, "reset")
    body = (
        engine_table("clamav", "clamav", address=clamd.address)
        + engine_table("rspamd", "rspamd", url=rspamd.url)
        + engine_table("flaky", "spamassassin", address=reset.address, breaker_failures=2, breaker_cooldown=2)
    )
    quorum = mail_stack.start(body, milter_extra=DEADLINE)
    states = [engines_header(accepted(mail_stack)[0])["flaky"] for _ in range(3)]
    assert [s.split("(")[0] for s in states] == ["error", "error", "skipped"]
    assert states[2] == "skipped(circuit-open)" and reset.connections == 2
    time.sleep(2.2)
    probe = engines_header(accepted(mail_stack)[0])["flaky"]  # half-open: one probe goes through
    assert probe.startswith("error(") and reset.connections == 3
    assert engines_header(accepted(mail_stack)[0])["flaky"] == "skipped(circuit-open)"  # and it re-opened
    assert reset.connections == 3
    assert quorum.log_text().count("engine flaky: circuit open after") == 2
    no_traceback(quorum)


def test_health_names_the_broken_engines(
    mail_stack: MailStack, clamd: Clamd, rspamd: Rspamd, spamd: Spamd, fakes: list[FakeEngine]
) -> None:
    hang = fake(fakes, "hang")
    garbage = fake(fakes, "http_garbage")
    body = (
        engine_table("clamav", "clamav", address=clamd.address)
        + engine_table("rspamd", "rspamd", url=rspamd.url)
        + engine_table("spamassassin", "spamassassin", address=spamd.address)
        + engine_table("hung", "spamassassin", address=hang.address, timeout=60)
        + engine_table("junk", "rspamd", url=garbage.url)
    )
    quorum = mail_stack.start(body)
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "quorum", "health", "-c", str(quorum.config_path), "--timeout", "2"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    out = proc.stdout
    assert proc.returncode == 1, out
    assert time.monotonic() - start < 15
    assert re.search(r"^ok   milter inet:\d+@127\.0\.0\.1$", out, re.M), out
    for name in ("clamav", "rspamd", "spamassassin"):
        assert re.search(rf"^ok   engine {name} \(\w+\) \d+ ms$", out, re.M), out
    assert re.search(r"^FAIL engine hung \(spamassassin\): ", out, re.M), out
    assert re.search(r"^FAIL engine junk \(rspamd\): unexpected /ping reply", out, re.M), out
