"""Fan-out under one deadline, early exit and cancellation, and the runner's fault isolation
(size limit, breaker, concurrency limit, exceptions), with fake engines."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar

import pytest

from quorum.config.model import EngineSettings, PolicySettings
from quorum.engines.base import Engine, EngineError, ScanCall
from quorum.message import Envelope, Message
from quorum.pipeline.breaker import BreakerState, CircuitBreaker
from quorum.pipeline.fanout import fan_out
from quorum.pipeline.policy import Policy
from quorum.pipeline.runner import EngineRunner
from quorum.pipeline.stages import Reply, Stage
from quorum.pipeline.transaction import Connection, Findings, Scan, Transaction
from quorum.verdict import Category, Status, Verdict

Behaviour = Callable[["FakeEngine", ScanCall], Verdict]


class FakeEngine(Engine):
    """Runs `behaviour`; counts scans and remembers when the last one returned."""

    type_name = "fake"
    category: ClassVar[Category] = Category.ANTISPAM

    def __init__(self, settings: EngineSettings, behaviour: Behaviour) -> None:
        super().__init__(settings)
        self.behaviour = behaviour
        self.scans = 0
        self.returned = threading.Event()

    def scan(self, message: Message, call: ScanCall) -> Verdict:
        self.scans += 1
        try:
            return self.behaviour(self, call)
        finally:
            self.returned.set()

    def ping(self, timeout: float) -> None:
        return None


class FakeAV(FakeEngine):
    category: ClassVar[Category] = Category.ANTIVIRUS


def answer(status: Status, delay: float = 0.0, **kw: object) -> Behaviour:
    def run(engine: FakeEngine, call: ScanCall) -> Verdict:
        time.sleep(delay)
        return engine.verdict(status, **kw)

    return run


def hang(engine: FakeEngine, call: ScanCall) -> Verdict:
    """Blocked reading a socket the engine never answers on, like a wedged daemon. Its own I/O
    timeout is longer than the call's budget: only `call.cancel()` can free the thread."""
    ours, theirs = socket.socketpair()
    with ours, theirs:
        call.track(ours)
        ours.settimeout(call.remaining() + 30)
        if ours.recv(1) == b"":
            raise EngineError("connection closed")
    raise EngineError("unexpected data")


def raise_(exc: BaseException) -> Behaviour:
    def run(engine: FakeEngine, call: ScanCall) -> Verdict:
        raise exc

    return run


def runner(
    name: str, behaviour: Behaviour, av: bool = False, clock: Callable[[], float] | None = None, **settings: object
) -> EngineRunner:
    s = EngineSettings(name, "fake", **settings)  # type: ignore[arg-type]
    r = EngineRunner((FakeAV if av else FakeEngine)(s, behaviour))
    if clock is not None:
        r.breaker = CircuitBreaker(s.breaker_failures, s.breaker_cooldown, clock=clock)
    return r


def fake(r: EngineRunner) -> FakeEngine:
    assert isinstance(r.engine, FakeEngine)
    return r.engine


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(16) as executor:
        yield executor


def msg(size: int = 100) -> Message:
    return Message.from_bytes(b"Subject: test\r\n\r\n" + b"x" * size + b"\r\n", Envelope(client_ip="192.0.2.1"))


def run(
    pool: ThreadPoolExecutor,
    runners: list[EngineRunner],
    seconds: float = 5.0,
    stages: list[Stage] | None = None,
    on_virus: str = "reject",
    txn: Transaction | None = None,
    **kw: object,
) -> tuple[list[Verdict], float, Scan]:
    policy = Policy(PolicySettings(on_virus=on_virus), {r.name: r.settings for r in runners})
    message = msg()
    txn = txn or Transaction(Connection("192.0.2.1"), message.envelope)
    start = time.monotonic()
    found = fan_out(
        pool,
        runners,
        stages or [],
        txn,
        message,
        start + seconds,
        policy.settled,
        **kw,  # type: ignore[arg-type]
    )
    return found.verdicts, time.monotonic() - start, found.scan


def by_name(verdicts: list[Verdict]) -> dict[str, Verdict]:
    return {v.engine: v for v in verdicts}


def wait_returned(*runners: EngineRunner, timeout: float = 5.0) -> None:
    for r in runners:
        assert fake(r).returned.wait(timeout), f"{r.name} still blocked"
    time.sleep(0.05)  # the runner accounts right after scan() returns


# --- fan-out ---------------------------------------------------------------------------------------------


def test_all_engines_answer_in_parallel(pool: ThreadPoolExecutor) -> None:
    runners = [
        runner("clamav", answer(Status.CLEAN, 0.3), av=True),
        runner("rspamd", answer(Status.SPAM, 0.3, score=9.0, threshold=6.0)),
        runner("spamassassin", answer(Status.CLEAN, 0.3)),
    ]
    verdicts, elapsed, _ = run(pool, runners)
    assert [v.engine for v in verdicts] == ["clamav", "rspamd", "spamassassin"]
    assert [v.status for v in verdicts] == [Status.CLEAN, Status.SPAM, Status.CLEAN]
    assert elapsed < 0.8  # parallel, not 0.9 s in sequence
    assert all(0.25 < v.elapsed < 0.8 for v in verdicts)


def test_deadline_bounds_a_hung_engine(pool: ThreadPoolExecutor) -> None:
    hung = runner("hung", hang, timeout=60.0)
    fast = runner("rspamd", answer(Status.CLEAN))
    verdicts, elapsed, _ = run(pool, [hung, fast], seconds=0.5)
    assert 0.45 <= elapsed < 1.0
    v = by_name(verdicts)
    assert v["hung"].status is Status.ERROR and v["hung"].error == "timeout" and v["hung"].label() == "error(timeout)"
    assert v["rspamd"].status is Status.CLEAN
    wait_returned(hung, timeout=1.0)  # cancel() shut its socket down: the worker thread is free again


def test_engine_timeout_shorter_than_the_deadline(pool: ThreadPoolExecutor) -> None:
    def until_budget(engine: FakeEngine, call: ScanCall) -> Verdict:
        time.sleep(call.remaining())
        raise TimeoutError("timed out")

    slow = runner("slow", until_budget, timeout=0.3)
    verdicts, elapsed, _ = run(pool, [slow], seconds=5.0)
    assert elapsed < 1.0 and verdicts[0].error == "timeout"


def test_deadline_timeout_counts_for_the_breaker(pool: ThreadPoolExecutor) -> None:
    """A hung engine must trip its breaker, or every message waits the full scan_deadline forever."""
    hung = runner("hung", hang, timeout=60.0, breaker_failures=2)
    run(pool, [hung], seconds=0.3)
    wait_returned(hung)
    assert hung.breaker.state is BreakerState.CLOSED
    fake(hung).returned.clear()
    run(pool, [hung], seconds=0.3)
    wait_returned(hung)
    assert hung.breaker.state is BreakerState.OPEN
    verdicts, elapsed, _ = run(pool, [hung], seconds=0.3)
    assert verdicts[0].label() == "skipped(circuit-open)" and elapsed < 0.1
    assert fake(hung).scans == 2


def test_early_exit_on_a_virus_cancels_the_rest(pool: ThreadPoolExecutor) -> None:
    clamav = runner("clamav", answer(Status.INFECTED, names=("Eicar-Test-Signature",)), av=True)
    rspamd = runner("rspamd", hang, breaker_failures=1)
    spamassassin = runner("spamassassin", hang, breaker_failures=1)
    verdicts, elapsed, _ = run(pool, [clamav, rspamd, spamassassin], seconds=10.0)
    assert elapsed < 1.0
    assert [v.status for v in verdicts] == [Status.INFECTED, Status.CANCELLED, Status.CANCELLED]
    wait_returned(rspamd, spamassassin, timeout=1.0)
    # cancelled is not a failure: with breaker_failures = 1 one counted failure would open them
    assert rspamd.breaker.state is BreakerState.CLOSED and spamassassin.breaker.state is BreakerState.CLOSED


def test_no_early_exit_when_a_virus_is_only_tagged(pool: ThreadPoolExecutor) -> None:
    clamav = runner("clamav", answer(Status.INFECTED, names=("X",)), av=True)
    rspamd = runner("rspamd", answer(Status.SPAM, 0.3))
    verdicts, _, _ = run(pool, [clamav, rspamd], on_virus="tag")
    assert [v.status for v in verdicts] == [Status.INFECTED, Status.SPAM]


def test_shadow_virus_does_not_exit_early(pool: ThreadPoolExecutor) -> None:
    shadow = runner("clamav2", answer(Status.INFECTED, names=("X",)), av=True, mode="shadow")
    rspamd = runner("rspamd", answer(Status.CLEAN, 0.3))
    verdicts, _, _ = run(pool, [shadow, rspamd])
    assert [v.status for v in verdicts] == [Status.INFECTED, Status.CLEAN]


def test_a_stage_reply_settles_and_cancels_engines(pool: ThreadPoolExecutor) -> None:
    class Dmarc(Stage):
        name = "dmarc"

        def examine(self, txn: Transaction, message: Message, deadline: float) -> Findings:
            found = Findings(self.name)
            found.decide(Reply.reject("550", "5.7.1", "DMARC reject"), "dmarc=fail")
            return found

    slow = runner("rspamd", hang)
    verdicts, elapsed, ctx = run(pool, [slow], stages=[Dmarc()])
    assert elapsed < 1.0 and verdicts[0].status is Status.CANCELLED
    assert ctx.reply is not None and ctx.reply.code == "550"
    wait_returned(slow, timeout=1.0)


def test_early_exit_cancelling_a_probe_lets_the_next_message_probe(pool: ThreadPoolExecutor) -> None:
    now = [0.0]
    clamav = runner("clamav", answer(Status.INFECTED, names=("X",)), av=True)
    rspamd = runner("rspamd", hang, clock=lambda: now[0], breaker_failures=1, breaker_cooldown=10)
    rspamd.breaker.failure()
    now[0] = 10.0  # half-open: the next scan is the probe
    verdicts, _, _ = run(pool, [clamav, rspamd])
    assert verdicts[1].status is Status.CANCELLED
    wait_returned(rspamd)
    assert rspamd.breaker.state is BreakerState.HALF_OPEN and rspamd.breaker.allow()


def test_stage_failures_and_overruns_are_contained(pool: ThreadPoolExecutor, caplog: pytest.LogCaptureFixture) -> None:
    class Broken(Stage):
        name = "broken"

        def examine(self, txn: Transaction, message: Message, deadline: float) -> Findings:
            raise RuntimeError("bug")

    class Slow(Stage):
        name = "slow"

        def examine(self, txn: Transaction, message: Message, deadline: float) -> Findings:
            time.sleep(1.0)
            return Findings(self.name, log={"slow": "late"})

    caplog.set_level(logging.WARNING)
    verdicts, elapsed, ctx = run(pool, [runner("rspamd", answer(Status.CLEAN))], seconds=0.4, stages=[Broken(), Slow()])
    assert verdicts[0].status is Status.CLEAN and elapsed < 0.9
    assert ctx.log == {"broken_error": "RuntimeError", "slow_timeout": "yes"}
    assert "stage broken failed at end-of-data" in caplog.text


def test_progress_is_called_while_waiting(pool: ThreadPoolExecutor) -> None:
    calls: list[float] = []
    run(pool, [runner("slow", answer(Status.CLEAN, 2.3))], progress=lambda: calls.append(1.0), progress_interval=1.0)
    assert len(calls) == 2

    def broken() -> None:
        raise OSError("Postfix went away")

    verdicts, _, _ = run(pool, [runner("slow", answer(Status.CLEAN, 1.2))], progress=broken, progress_interval=1.0)
    assert verdicts[0].status is Status.CLEAN


# --- the runner: what reaches the engine, and what comes back --------------------------------------------


def test_oversized_message_is_skipped_without_a_scan() -> None:
    r = runner("spamassassin", answer(Status.CLEAN), max_size=50)
    v = r.run(msg(100), ScanCall(time.monotonic() + 5))
    assert v.label() == "skipped(too-large)" and fake(r).scans == 0
    assert r.breaker.state is BreakerState.CLOSED


@pytest.mark.parametrize(
    ("exc", "error"),
    [
        (
            EngineError("garbage reply b'\\x00\\x1b[31m'\r\nInjected: yes"),
            "garbage reply b'\\x00\\x1b[31m' Injected: yes",
        ),
        (ConnectionResetError(104, "Connection reset by peer"), "[Errno 104] Connection reset by peer"),
        (ValueError("invalid literal"), "invalid literal"),
        (RuntimeError("adapter bug"), "internal RuntimeError"),
        (KeyError("score"), "internal KeyError"),
    ],
)
def test_every_failure_becomes_an_error_verdict(exc: Exception, error: str) -> None:
    r = runner("e", raise_(exc))
    v = r.run(msg(), ScanCall(time.monotonic() + 5))
    assert v.status is Status.ERROR and v.error == error


def test_breaker_opens_skips_and_probes() -> None:
    now = [0.0]
    outcome: list[Behaviour] = [raise_(EngineError("cannot connect"))]
    r = runner("rspamd", lambda e, c: outcome[0](e, c), clock=lambda: now[0], breaker_failures=3, breaker_cooldown=30)
    for _ in range(3):
        assert r.run(msg(), ScanCall(time.monotonic() + 5)).status is Status.ERROR
    assert r.breaker.state is BreakerState.OPEN
    for _ in range(5):
        assert r.run(msg(), ScanCall(time.monotonic() + 5)).label() == "skipped(circuit-open)"
    assert fake(r).scans == 3
    now[0] = 30.0
    v = r.run(msg(), ScanCall(time.monotonic() + 5))  # the probe fails: open again
    assert v.status is Status.ERROR and fake(r).scans == 4 and r.breaker.state is BreakerState.OPEN
    now[0] = 60.0
    outcome[0] = answer(Status.CLEAN)
    assert r.run(msg(), ScanCall(time.monotonic() + 5)).status is Status.CLEAN  # the probe answers
    assert r.breaker.state is BreakerState.CLOSED


def test_breaker_state_changes_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="quorum.engines")
    now = [0.0]
    outcome: list[Behaviour] = [raise_(EngineError("cannot connect"))]
    r = runner("spamassassin", lambda e, c: outcome[0](e, c), clock=lambda: now[0], breaker_failures=2)
    r.run(msg(), ScanCall(time.monotonic() + 5))
    r.run(msg(), ScanCall(time.monotonic() + 5))
    assert "engine spamassassin: circuit open after cannot connect (skipped for 30s)" in caplog.text
    now[0] = 30.0
    outcome[0] = answer(Status.CLEAN)
    r.run(msg(), ScanCall(time.monotonic() + 5))
    assert "engine spamassassin: answered again, circuit closed" in caplog.text


def test_concurrency_limit(pool: ThreadPoolExecutor) -> None:
    active = [0]
    peak = [0]
    lock = threading.Lock()

    def slow(engine: FakeEngine, call: ScanCall) -> Verdict:
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        time.sleep(0.3)
        with lock:
            active[0] -= 1
        return engine.verdict(Status.CLEAN)

    r = runner("rspamd", slow, concurrency=2, breaker_failures=1)
    futures = [r.submit(msg(), ScanCall(time.monotonic() + 0.5)) for _ in range(6)]
    verdicts = [f.result(5) for f in futures]
    assert peak[0] == 2
    statuses = sorted(v.label() for v in verdicts)
    # 2 + 2 start within 0.5 s on the engine's own pool of 2; the last 2 start after their budget is
    # gone: they never reached the engine, which is a failure to check the message (never
    # "cancelled", which would pass as unchecked), but not held against the engine's breaker.
    assert statuses == ["clean"] * 4 + ["error(queued)"] * 2
    assert r.breaker.state is BreakerState.CLOSED  # our own queueing is not the engine's failure


def test_saturated_antivirus_never_lets_a_message_pass_unscanned(pool: ThreadPoolExecutor) -> None:
    """Issue 17 item 1: more messages than the antivirus engine has slots, each with a short
    budget. Every message is either scanned (the virus refused) or tempfailed; none is accepted
    with the antivirus result `cancelled`. Before the fix 2 of 8 were accepted as "unchecked"."""
    av = runner("clamav", answer(Status.INFECTED, 0.3, names=("Eicar-Signature",)), av=True, concurrency=2, timeout=0.5)
    policy = Policy(PolicySettings(), {"clamav": av.settings})

    def one(_: int) -> tuple[str, str]:
        message = msg()
        txn = Transaction(Connection("192.0.2.1"), message.envelope)
        # The engine's own timeout (0.5 s) is far shorter than the scan deadline: a scan that waited
        # for a slot that long comes back before the fan-out ends, and must not come back "cancelled".
        found = fan_out(pool, [av], [], txn, message, time.monotonic() + 5, policy.settled)
        d = policy.decide(found.verdicts, found.scan)
        return str(d.action), found.verdicts[0].label()

    with ThreadPoolExecutor(8) as callers:
        outcomes = list(callers.map(one, range(8)))
    assert {action for action, _ in outcomes} <= {"reject", "tempfail"}, outcomes
    assert sum(action == "tempfail" for action, _ in outcomes) >= 2, outcomes  # 4 scans fit in 0.5 s
    assert not any(label == "cancelled" for _, label in outcomes), outcomes
    assert av.breaker.state is BreakerState.CLOSED


def test_a_cascade_engine_never_started_before_the_deadline_is_a_timeout(pool: ThreadPoolExecutor) -> None:
    """An engine that had not even been submitted when the deadline came is a failure, not `cancelled`."""
    first = runner("rspamd", answer(Status.CLEAN, 1.0))
    later = runner("spamassassin", answer(Status.CLEAN))
    verdicts, _, _ = run(pool, [first, later], seconds=0.3, later=[later], can_change=lambda *_: True)
    assert by_name(verdicts)["spamassassin"].label() == "error(timeout)"


def test_a_check_that_fails_after_its_transaction_ended_is_quiet(
    pool: ThreadPoolExecutor, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 17 item 12: a stage check still running when its fan-out ended reads a released body
    (SpoolClosed); that is the transaction's end, not a bug: no traceback, nothing reaches the log."""
    from quorum.message import SpoolClosed

    started, release = threading.Event(), threading.Event()
    returned = threading.Event()

    class LateReader(Stage):
        name = "auth"

        def examine(self, txn: Transaction, message: Message, deadline: float) -> Findings:
            started.set()
            release.wait(5)
            try:
                raise SpoolClosed("message body already released (its transaction ended)")
            finally:
                returned.set()

    caplog.set_level(logging.DEBUG, logger="quorum.pipeline")
    _, _, scan = run(pool, [], seconds=0.2, stages=[LateReader()])
    assert started.is_set() and scan.log["auth_timeout"] == "yes"
    release.set()
    assert returned.wait(5)
    time.sleep(0.05)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info], caplog.text


# --- transactions never share state with tasks that outlived them (issue 9, defects 1, 7, 8, 9) ------


def test_a_late_stage_result_is_dropped_and_counted_not_written_into_the_next_transaction(
    pool: ThreadPoolExecutor,
) -> None:
    from quorum import metrics

    release = threading.Event()

    class LateAuth(Stage):
        name = "auth"

        def examine(self, txn: Transaction, message: Message, deadline: float) -> Findings:
            release.wait(5)
            return Findings(self.name, log={"spf": f"pass-for-{txn.envelope.sender}"})

    stage = LateAuth()
    first = Transaction(Connection("192.0.2.1"), msg().envelope)
    first.envelope.sender = "forged@first.test"
    before = metrics.LATE_RESULTS._value.get()
    _, _, scan = run(pool, [], seconds=0.2, stages=[stage], txn=first)
    assert "spf" not in scan.log and scan.log["auth_timeout"] == "yes"
    release.set()  # the late check finishes while the next transaction runs
    second = Transaction(Connection("192.0.2.1"), msg().envelope)
    second.envelope.sender = "honest@second.test"
    _, _, scan2 = run(pool, [], seconds=2.0, stages=[stage], txn=second)
    assert scan2.log["spf"] == "pass-for-honest@second.test"
    deadline = time.monotonic() + 2
    while metrics.LATE_RESULTS._value.get() == before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert metrics.LATE_RESULTS._value.get() == before + 1


def test_a_slow_engine_cannot_starve_or_trip_a_healthy_one(pool: ThreadPoolExecutor) -> None:
    """Each engine queues on its own executor: with the slow engine's pool saturated by many
    messages at once, the healthy engine still answers every message and keeps its circuit closed."""
    slow = runner("slow", hang, concurrency=2, breaker_failures=100)
    healthy = runner("healthy", answer(Status.CLEAN, 0.01), concurrency=4, breaker_failures=1)
    with ThreadPoolExecutor(12) as callers:
        results = list(callers.map(lambda _: run(pool, [slow, healthy], seconds=0.5)[0], range(12)))
    assert all(by_name(v)["healthy"].status is Status.CLEAN for v in results)
    assert healthy.breaker.state is BreakerState.CLOSED


def test_no_busy_wait_without_a_progress_callback(pool: ThreadPoolExecutor, monkeypatch: pytest.MonkeyPatch) -> None:
    """Defect 8: `quorum scan` has no progress callback; the wait must not spin."""
    import quorum.pipeline.fanout as fanout_mod

    calls = [0]
    real_wait = fanout_mod.wait

    def counting_wait(*args: Any, **kw: Any) -> Any:
        calls[0] += 1
        return real_wait(*args, **kw)

    monkeypatch.setattr(fanout_mod, "wait", counting_wait)
    run(pool, [runner("slow", answer(Status.CLEAN, 0.6))], progress_interval=0.05)
    assert calls[0] <= 3


def test_spool_readers_after_close_fail_cleanly() -> None:
    """Defect 9: a reader that comes after the transaction released the body gets an OSError the
    runner turns into an error verdict, never an AttributeError, and concurrent close is safe."""
    from quorum.message import BodySpool, SpoolClosed

    spool = BodySpool(memory_limit=10)
    spool.write(b"x" * 100)  # on disk
    errors: list[BaseException] = []

    def read() -> None:
        for _ in range(200):
            try:
                with spool.reader() as f:
                    f.read()
            except SpoolClosed:
                pass
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)

    threads = [threading.Thread(target=read) for _ in range(4)]
    for t in threads:
        t.start()
    spool.close()
    for t in threads:
        t.join()
    assert errors == []
    with pytest.raises(OSError):
        spool.reader()


class _SlowCheck(Stage):
    """A check that takes `seconds` and answers `temperror` for DMARC when it had no time left."""

    name = "auth"

    def __init__(self, seconds: float, enforcing: bool = True) -> None:
        self.seconds = seconds
        self.enforcing = enforcing

    def enforces(self, txn: Transaction) -> bool:
        return self.enforcing

    def complete(self, txn: Transaction, findings: Findings) -> bool:
        return findings.log.get("dmarc") != "temperror"

    def examine(self, txn: Transaction, message: Message, deadline: float) -> Findings:
        left = deadline - time.monotonic()
        time.sleep(min(self.seconds, max(0.0, left - 0.05)))
        return Findings(self.name, log={"dmarc": "pass" if left > self.seconds else "temperror"})


def test_a_check_queued_past_its_fair_share_with_an_incomplete_answer_is_unfinished() -> None:
    """Two stage workers, four messages: the checks of the last two start with almost no budget
    left and come back `temperror`: unfinished (the policy then tempfails), never a pass."""
    with ThreadPoolExecutor(2) as stage_pool, ThreadPoolExecutor(4) as callers:

        def one(_: int) -> Scan:
            return run(stage_pool, [], seconds=1.0, stages=[_SlowCheck(0.6)])[2]

        scans = list(callers.map(one, range(4)))
    late = [s for s in scans if s.unfinished]
    assert len(late) >= 1 and all(s.unfinished == ["auth"] for s in late), [s.log for s in scans]
    assert all(s.log.get("dmarc") == "pass" for s in scans if not s.unfinished), [s.log for s in scans]


def test_a_late_check_that_cannot_refuse_is_not_unfinished() -> None:
    with ThreadPoolExecutor(1) as stage_pool, ThreadPoolExecutor(3) as callers:
        scans = list(
            callers.map(lambda _: run(stage_pool, [], seconds=1.0, stages=[_SlowCheck(0.6, False)])[2], range(3))
        )
    assert not any(s.unfinished for s in scans)
