"""The fault matrix: the whole mail path on loopback, one fault at a time while mail flows.

`FaultStack` starts its own NSD, clamd, rspamd, spamd, Redis, sink, `quorum run` (fail-closed:
on_engine_failure = "tempfail") and a Postfix in front, so killing them harms no other test.
`faults()` lists the faults, `run_phase()` drives one: load starts, the fault is injected once a
quarter of the messages are through, held, ended, and the load goes on until the phase has sent
its count and the stack is healthy again (or a time cap); the phase's `Row` is then accounted
from the client's replies and the sink's deliveries. Used by bench/faults.py and
tests/integration/test_fault_matrix.py.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests.harness.clamd import Clamd
from tests.harness.dns import DnsServer, zone_text
from tests.harness.fault_load import DOMAIN, DeliveryIndex, Load, Row, account, recovery, wait_until
from tests.harness.postfix import PostfixInstance
from tests.harness.quorum import QUORUM, QuorumProcess, engine_table
from tests.harness.redis_server import RedisAuth, RedisServer
from tests.harness.rspamd import Rspamd
from tests.harness.sink import Sink
from tests.harness.spamd import Spamd


def zones() -> dict[str, str]:
    """The sender domain (SPF for loopback, DMARC p=reject) and what rspamd looks up for the mix."""
    return {
        DOMAIN: zone_text(
            DOMAIN,
            [
                ("@", "TXT", "v=spf1 ip4:127.0.0.0/8 -all"),
                ("@", "MX", f"10 mail.{DOMAIN}."),
                ("mail", "A", "127.0.0.1"),
                ("_dmarc", "TXT", "v=DMARC1; p=reject"),
            ],
        ),
        "example.org": zone_text("example.org", [("@", "MX", "10 mail.example.org."), ("mail", "A", "192.0.2.2")]),
    }


def quorum_body(stack: FaultStack, breaker_cooldown: float) -> str:
    engine = {"breaker_cooldown": breaker_cooldown}
    return (
        "[policy]\n"
        'on_virus = "reject"\n'
        'on_engine_failure = "tempfail"\n'
        'on_spam = "reject"\n'
        'on_spam_engine_failure = "accept"\n\n'
        + engine_table("clamav", "clamav", address=stack.clamd.address, **engine)
        + engine_table("rspamd", "rspamd", url=stack.rspamd.url, **engine)
        + engine_table("spamassassin", "spamassassin", address=stack.spamd.address, **engine)
        + f'\n[redis]\nurl = "{stack.redis.url}"\n\n'
        "[ratelimit]\n"
        'sender_domain = { messages = 1000000, per = "1h" }\n'
        'recipient_domain = { messages = 1000000, per = "1h" }\n'
        'client_ip = { messages = 1000000, per = "1h" }\n\n'
        '[auth]\ntrusted_networks = []\ndmarc_enforce = "reject"\n\n'
        f'[dns]\nnameservers = ["127.0.0.1"]\nport = {stack.dns.port}\ntimeout = "1s"\n'
    )


REPO_CODE = Path(__file__).resolve().parents[2] / "milter"


class SnapshotQuorum(QuorumProcess):
    """`quorum run` importing Quorum from a copy of the code taken when the stack started.

    A restarted worker or `quorum run` imports the code afresh: without the copy, a phase that
    restarts Quorum would run whatever the working tree holds by then (edits in progress included).
    """

    def __init__(self, workdir: Path, body: str, code: Path, milter_extra: str = "") -> None:
        super().__init__(workdir, body, milter_extra=milter_extra)
        self.code = code

    def start(self, timeout: float = 30.0) -> SnapshotQuorum:
        env = {"PYTHONUNBUFFERED": "1", "QUORUM_ALLOW_ROOT": "1", "PYTHONPATH": str(self.code)}
        self.service.spawn([*QUORUM, "run", "-c", str(self.config_path)], ready=self._ready, timeout=timeout, env=env)
        return self


class FaultStack:
    """Every service of the mail path, owned by this stack alone.

    `code`: a directory holding the `quorum` package to run (default: this checkout's milter/), copied
    at start.
    """

    def __init__(
        self, workdir: Path, scan_deadline: float = 5.0, breaker_cooldown: float = 5.0, code: Path = REPO_CODE
    ) -> None:
        self.workdir = Path(workdir)
        self.code = Path(code)
        self.scan_deadline = scan_deadline
        self.breaker_cooldown = breaker_cooldown
        self.dns = DnsServer(self.workdir / "nsd", zones())
        self.clamd = Clamd(self.workdir / "clamd")
        self.spamd = Spamd(self.workdir / "spamd")
        self.redis = RedisServer(self.workdir / "redis", auth=RedisAuth())  # ACL user + password
        self.sink = Sink(self.workdir / "sink")
        self.rspamd: Rspamd
        self.quorum: QuorumProcess
        self.postfix: PostfixInstance
        self._started: list[Callable[[], None]] = []

    def start(self) -> FaultStack:
        try:
            for service in (self.dns, self.clamd, self.spamd, self.redis):
                service.start()
                self._started.append(service.stop)
            self.rspamd = Rspamd(self.workdir / "rspamd", self.dns.port).start()
            self._started.append(self.rspamd.stop)
            self.sink.start()
            self._started.append(self.sink.stop)
            snapshot = self.workdir / "code"
            shutil.copytree(
                self.code / "quorum",
                snapshot / "quorum",
                ignore=shutil.ignore_patterns("__pycache__"),
                dirs_exist_ok=True,
            )
            self.quorum = SnapshotQuorum(
                self.workdir / "quorum",
                quorum_body(self, self.breaker_cooldown),
                snapshot,
                milter_extra=f"scan_deadline = {self.scan_deadline}",
            ).start()
            self._started.append(self.quorum.stop)
            self.postfix = PostfixInstance(self.workdir / "postfix", self.sink.port, milter=self.quorum.postfix_address)
            self.postfix.start()
            self._started.append(self.postfix.stop)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for stop in reversed(self._started):
            stop()
        self._started.clear()

    def __enter__(self) -> FaultStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        # a phase may leave a service stopped (SIGSTOP) if it failed half-way: wake them before stopping
        for service in (self.clamd.service, self.spamd.service):
            if service.proc is not None and service.running:
                try:
                    os.killpg(service.proc.pid, signal.SIGCONT)
                except ProcessLookupError:
                    pass
        self.stop()


@dataclass(frozen=True)
class Fault:
    """`inject()` starts the fault, `end()` (after `hold` seconds) repairs it; None: it ends by itself."""

    name: str
    inject: Callable[[], object]
    end: Callable[[], object] | None = None
    hold: float = 0.0


def _signal_group(pid: int | None, sig: int) -> None:
    if pid is None:
        raise RuntimeError("service not running")
    os.killpg(pid, sig)


def _pid(service_proc: object) -> int | None:
    return getattr(service_proc, "pid", None)


def kill_quorum(quorum: QuorumProcess) -> None:
    """SIGKILL the supervisor and its worker at once (no drain, no cleanup), and reap them.

    The worker runs in its own session, so killing the supervisor's process group alone would
    leave it draining as an orphan that still holds the milter socket (see the report of issue 9).
    """
    proc = quorum.service.proc
    if proc is None:
        raise RuntimeError("quorum not running")
    workers = quorum.worker_pids()
    os.killpg(proc.pid, signal.SIGKILL)
    for pid in workers:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(10)
    quorum.service.proc = None
    wait_until(lambda: not any(_alive(pid) for pid in workers), 10, step=0.05)


def _alive(pid: int) -> bool:
    """A process that is not a zombie (an orphan is reaped by init, which may take a while)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def kill_worker(quorum: QuorumProcess) -> None:
    """SIGKILL the libmilter worker (the child of `quorum run`) while it has messages in flight."""
    workers = quorum.worker_pids()
    if not workers:
        raise RuntimeError("no worker process under quorum run")
    for pid in workers:
        os.kill(pid, signal.SIGKILL)


def reloads(quorum: QuorumProcess, count: int = 10, gap: float = 0.5) -> None:
    for _ in range(count):
        quorum.reload(wait=True)
        time.sleep(gap)


def faults(stack: FaultStack, hold: float = 10.0, stop_hold: float = 20.0) -> list[Fault]:
    """The matrix, in order. `stop_hold`: how long clamd stays SIGSTOPped; `hold`: the other outages."""
    s = stack
    return [
        Fault("clamd killed+restarted", s.clamd.kill, s.clamd.start, hold),
        Fault(
            f"clamd SIGSTOP {stop_hold:.0f}s",
            lambda: _signal_group(_pid(s.clamd.service.proc), signal.SIGSTOP),
            lambda: _signal_group(_pid(s.clamd.service.proc), signal.SIGCONT),
            stop_hold,
        ),
        Fault("rspamd killed+restarted", s.rspamd.kill, s.rspamd.start, hold),
        Fault(
            "spamd hung (SIGSTOP)",
            lambda: _signal_group(_pid(s.spamd.service.proc), signal.SIGSTOP),
            lambda: _signal_group(_pid(s.spamd.service.proc), signal.SIGCONT),
            hold,
        ),
        Fault("redis killed+restarted", s.redis.kill, s.redis.start, hold),
        Fault("dns server stopped", s.dns.stop, s.dns.start, hold),
        Fault("milter worker SIGKILL", lambda: kill_worker(s.quorum)),
        Fault("quorum run SIGKILL+restart", lambda: kill_quorum(s.quorum), s.quorum.start, min(hold, 3.0)),
        Fault("10 reloads (SIGHUP)", lambda: reloads(s.quorum)),
        Fault("postfix reload", s.postfix.reload),
    ]


def run_phase(
    stack: FaultStack,
    fault: Fault,
    count: int,
    sessions: int = 10,
    healthy_run: int = 20,
    max_after: float = 120.0,
    log: Callable[[str], None] = lambda _: None,
) -> Row:
    """Send at least `count` messages with `fault` injected after a quarter of them; stop once
    `healthy_run` messages in a row sent after the fault ended got their healthy outcome (or
    `max_after` seconds after it ended)."""
    phase = "".join(c if c.isalnum() else "-" for c in fault.name.lower()).strip("-")
    index = DeliveryIndex(stack.sink)
    start = time.monotonic()
    load = Load(stack.postfix.smtp_port, phase, sessions=sessions).start()
    try:
        wait_until(lambda: load.completed() >= count // 4, timeout=300)
        log(f"{fault.name}: inject after {load.completed()} messages")
        injected = time.monotonic()
        fault.inject()
        if fault.end is not None:
            time.sleep(max(0.0, injected + fault.hold - time.monotonic()))
            fault.end()
        fault_end = time.monotonic()
        log(f"{fault.name}: ended after {fault_end - injected:.1f}s, {load.completed()} messages")

        def done() -> bool:
            index.refresh()
            _, good = recovery(load.outcomes(), index, fault_end, final=False)
            return load.completed() >= count and good >= healthy_run

        wait_until(done, timeout=max_after, step=0.5)
        healthy_at = time.monotonic()
    finally:
        load.stop()
    outcomes = load.outcomes()
    stack.postfix.wait_queue_empty(timeout=120)
    accepted = sum(o.code == 250 for o in outcomes)
    wait_until(lambda: sum(bool(index.refresh().get(o.msg_id)) for o in outcomes if o.code == 250) >= accepted, 30)
    time.sleep(0.5)  # a late duplicate would show up here
    index.refresh()
    return account(fault.name, outcomes, index, fault_end, time.monotonic() - start, healthy_at)


def table(rows: list[Row]) -> str:
    total = Row("total")
    for row in rows:
        for name in ("sent", "delivered", "tempfail", "reject", "no_reply", "no_verdict", "virus_delivered"):
            setattr(total, name, getattr(total, name) + getattr(row, name))
        for name in ("duplicates", "lost", "ghost", "clean_5xx", "seconds"):
            setattr(total, name, getattr(total, name) + getattr(row, name))
    total.recover = max((r.recover for r in rows if r.recover is not None), default=0.0)
    return "\n".join([Row.HEAD, *(r.line() for r in rows), total.line()])
