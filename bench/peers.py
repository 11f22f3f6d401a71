"""Quorum against the milters it replaces, through one real Postfix (issue 13's table, in one run).

    .venv/bin/python bench/peers.py [--count 400] [--latency 60] [--rows a,b] [--rounds N] [--quick] [--json]

Rows: no milter; clamav-milter; spamass-milter; rspamd's proxy milter; the chain of the three;
Quorum with no engine, with ClamAV, with all three, and with all three in cascade mode with the
verdict cache. Peers come from Debian's packages (tests/harness/peers.py), each started here on
127.0.0.1 with its own config; rspamd resolves only through the harness NSD. Two more rows on
request put clamav-milter and Quorum + ClamAV on unix sockets (Debian's defaults for both the milter
and clamd): "clamav-milter (unix sockets)", "quorum + clamav (unix sockets)". On TCP clamav-milter
leaves Nagle on and pays the delayed-ACK stall per message (~88 ms at p50); on a unix socket it
does not. Under every table: CPU ms per message by program during the first load, from /proc.

Per row and load: `count` messages of ~5 KB over 10 SMTP sessions (bench/smtp_load.py's workers);
msg/s is the rate of 250 replies, and the row only counts ("valid") when every message got 250,
the sink received every one of them, and a probe message before and after the load went through
(`smtp-source` and our own generator are just as fast when everything gets 4xx). Two loads:
"distinct" (every body and attachment different) and "campaign" (the same attachment and a
near-identical body repeating, as in an outbreak). Then single-message latency (one message at a
time, MAIL FROM to the 250 after DATA) p50/p99, and the ratios of the issue's targets.
Numbers only: nothing here passes or fails.
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "bench")]

import cpu_share  # noqa: E402
from smtp_load import _transaction, _wait_delivered, send_over_sessions  # noqa: E402
from tests.harness.clamd import Clamd  # noqa: E402
from tests.harness.dns import DnsServer, zone_text  # noqa: E402
from tests.harness.peers import ClamavMilter, RspamdWithProxy, SpamassMilter, installed, milter_entry  # noqa: E402
from tests.harness.postfix import PostfixInstance  # noqa: E402
from tests.harness.quorum import QUORUM, QuorumProcess, engine_table  # noqa: E402
from tests.harness.redis_server import RedisAuth, RedisServer  # noqa: E402
from tests.harness.sink import Sink  # noqa: E402
from tests.harness.smtp_client import Session  # noqa: E402
from tests.harness.spamd import Spamd  # noqa: E402

SENDER, RECIPIENT = "alice@example.com", "bob@example.org"
CONCURRENCY = 10
SIZE = 5000
# The verdict cache (Redis, with the local LRU in front); a config that refuses it runs cascade alone.
CACHE_TOML = '[verdict_cache]\nttl = "1h"\n\n[redis]\nurl = "{url}"\n'

# --- messages ---------------------------------------------------------------------------------

_SENTENCES = (
    "The quarterly figures are attached, please check the totals before Friday.",
    "We moved the project meeting to Thursday afternoon in the small room.",
    "Could you send me the signed copy of the contract when you have a moment?",
    "Thanks for the quick answer yesterday, it solved the problem for the team.",
    "The new printer on the second floor works again after the update.",
    "I will be out of the office next week, Marie handles the open tickets.",
    "Here is the draft of the report; comments are welcome until Monday.",
    "The delivery arrived this morning, two boxes were slightly damaged.",
    "Please remember to book your travel through the usual agency.",
    "Lunch is on us on Friday to celebrate the release of version two.",
)


def _attachment(rng: random.Random, size: int) -> str:
    return base64.encodebytes(rng.randbytes(size)).decode().replace("\n", "\r\n")


def make_message(seq: int, run: str, campaign: bool, size: int = SIZE) -> bytes:
    """A ~`size`-byte multipart message (text + a binary attachment).

    distinct: body sentences and attachment drawn per message. campaign: one attachment and one
    body for the whole run, only the greeting name and a reference number differ.
    """
    rng = random.Random(f"{run}-{seq}")
    shared = random.Random(f"{run}-campaign")
    body_rng = shared if campaign else rng
    boundary = f"b-{run}"
    greeting = f"Hello {rng.choice(('Anna', 'Ben', 'Chloe', 'David', 'Eve'))}, reference {rng.randrange(10**6)}"
    text = "\r\n".join(body_rng.choice(_SENTENCES) for _ in range(18))
    attachment = _attachment(body_rng, max(300, size - 2300))
    head = (
        f"From: Alice <{SENDER}>\r\nTo: Bob <{RECIPIENT}>\r\n"
        f"Subject: {'Invoice' if campaign else 'Notes'} {run[:4]}-{seq}\r\n"
        "Date: Thu, 01 Jan 2026 00:00:00 +0000\r\n"
        f"Message-ID: <{run}.{seq}@example.com>\r\nMIME-Version: 1.0\r\n"
        f'Content-Type: multipart/mixed; boundary="{boundary}"\r\n\r\n'
    )
    parts = (
        f"--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{greeting}\r\n\r\n{text}\r\n"
        f'--{boundary}\r\nContent-Type: application/octet-stream; name="doc.bin"\r\n'
        f'Content-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename="doc.bin"\r\n\r\n'
        f"{attachment}--{boundary}--\r\n"
    )
    return (head + parts).encode()


def messages(count: int, campaign: bool) -> list[bytes]:
    run = uuid.uuid4().hex[:12]
    return [make_message(i, run, campaign) for i in range(count)]


# --- the services -------------------------------------------------------------------------------

ZONES = {
    "example.com": zone_text(
        "example.com",
        [
            ("@", "A", "192.0.2.1"),
            ("@", "MX", "10 mail.example.com."),
            ("mail", "A", "192.0.2.1"),
            ("@", "TXT", "v=spf1 ip4:192.0.2.0/24 ip4:127.0.0.0/8 -all"),
        ],
    ),
    "example.org": zone_text("example.org", [("@", "MX", "10 mail.example.org."), ("mail", "A", "192.0.2.2")]),
}


class Stack:
    """Every program a row may need, started on first use and stopped together."""

    def __init__(self, work: Path, stack: ExitStack) -> None:
        self.work = work
        self._stack = stack

    def _enter(self, cm: Any) -> Any:
        return self._stack.enter_context(cm)

    @cached_property
    def sink(self) -> Sink:
        return self._enter(Sink(self.work / "sink"))  # type: ignore[no-any-return]

    @cached_property
    def postfix(self) -> PostfixInstance:
        return self._enter(PostfixInstance(self.work / "postfix", self.sink.port, milter=None))  # type: ignore[no-any-return]

    @cached_property
    def clamd(self) -> Clamd:
        return self._enter(Clamd(self.work / "clamd"))  # type: ignore[no-any-return]

    @cached_property
    def dns(self) -> DnsServer:
        return self._enter(DnsServer(self.work / "dns", ZONES))  # type: ignore[no-any-return]

    @cached_property
    def rspamd(self) -> RspamdWithProxy:
        return self._enter(RspamdWithProxy(self.work / "rspamd", self.dns.port))  # type: ignore[no-any-return]

    @cached_property
    def spamd(self) -> Spamd:
        return self._enter(Spamd(self.work / "spamd"))  # type: ignore[no-any-return]

    @cached_property
    def redis(self) -> RedisServer:
        return self._enter(RedisServer(self.work / "redis", auth=RedisAuth()))  # type: ignore[no-any-return]

    @cached_property
    def clamav_milter(self) -> ClamavMilter:
        return self._enter(ClamavMilter(self.work / "clamav-milter", self.clamd.address))  # type: ignore[no-any-return]

    @cached_property
    def clamav_milter_unix(self) -> ClamavMilter:
        """Debian's defaults: clamav-milter on a unix socket, talking to clamd's unix socket."""
        milter = ClamavMilter(self.work / "clamav-milter-unix", str(self.clamd.socket_path), unix=True)
        return self._enter(milter)  # type: ignore[no-any-return]

    @cached_property
    def spamass_milter(self) -> SpamassMilter:
        return self._enter(SpamassMilter(self.work / "spamass-milter", self.spamd.port))  # type: ignore[no-any-return]


def policy(extra: str = "") -> str:
    return f'[policy]\non_virus = "reject"\non_engine_failure = "tempfail"\n{extra}\n'


def clamav_table(s: Stack) -> str:
    return engine_table("clamav", "clamav", address=s.clamd.address, timeout=20)


def clamav_unix_table(s: Stack) -> str:
    """clamd's unix socket: the message goes as a descriptor (FILDES, the adapter's default there)."""
    return engine_table("clamav", "clamav", address=str(s.clamd.socket_path), timeout=20)


def three_tables(s: Stack, weighted: bool = False) -> str:
    """The three engines; `weighted`: the cascade row's policy (rspamd weight 3 judged at its own
    "add header" score 6, SpamAssassin weight 1), under which SpamAssassin can only turn the answer
    while rspamd scores between 4 and 12 (tests/integration/test_cascade_corpus.py shows the same
    decisions as full fan-out, message by message, on the labelled corpus)."""
    rspamd = {"weight": 3.0, "threshold": 6.0} if weighted else {}
    return (
        clamav_table(s)
        + "\n"
        + engine_table("rspamd", "rspamd", url=s.rspamd.url, timeout=20, **rspamd)
        + "\n"
        + engine_table("spamassassin", "spamassassin", address=s.spamd.address, timeout=20)
    )


def check_config(path: Path) -> str:
    """'' when `quorum check-config` accepts the file, else its complaint."""
    proc = subprocess.run(
        [*QUORUM, "check-config", "-c", str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    return "" if proc.returncode == 0 else (proc.stderr or proc.stdout).strip()


class Unavailable(Exception):
    """The row cannot run on this checkout (e.g. a config option not built yet)."""


@contextmanager
def quorum(s: Stack, name: str, body: str, unix: bool = False, notes: list[str] | None = None) -> Iterator[str]:
    proc = QuorumProcess(s.work / f"quorum-{name}", body, unix=unix)
    proc.start()
    try:
        yield milter_entry(proc.postfix_address)
        if notes is not None and "clamd.sock" in body and "passed descriptors (FILDES)" not in proc.log_text():
            notes.append("clamd never took a passed descriptor: messages were streamed (INSTREAM)")
    finally:
        proc.stop()


CASCADE_POLICY = ["cascade = true", 'spam_combine = "weighted"']  # --cascade-policy adds lines


@contextmanager
def cascade_quorum(s: Stack, notes: list[str]) -> Iterator[str]:
    """Cascade + verdict cache; cascade alone (noted) when the cache table is refused; Unavailable
    when `[policy] cascade` itself is refused."""
    cascade = "\n".join(CASCADE_POLICY)
    body = policy(cascade) + three_tables(s, weighted=True) + "\n" + CACHE_TOML.format(url=s.redis.url)
    probe = s.work / "cascade-check.toml"
    probe.write_text('[milter]\nsocket = "inet:1@127.0.0.1"\n' + body)
    problem = check_config(probe)
    if problem:
        body = policy(cascade) + three_tables(s, weighted=True)
        probe.write_text('[milter]\nsocket = "inet:1@127.0.0.1"\n' + body)
        if check_config(probe):
            raise Unavailable("cascade not available")
        notes.append(f"verdict cache refused ({problem.splitlines()[0][:80]}): cascade alone")
    with quorum(s, "cascade", body) as entry:
        yield entry


def _no_milter(s: Stack, notes: list[str]) -> Iterator[str | None]:
    yield None


def _single(attr: str) -> Callable[[Stack, list[str]], Iterator[str | None]]:
    def target(s: Stack, notes: list[str]) -> Iterator[str | None]:
        peer = getattr(s, attr)
        yield milter_entry(peer.address if attr != "rspamd" else peer.milter_address)

    return target


def _chain(s: Stack, notes: list[str]) -> Iterator[str | None]:
    entries = [milter_entry(s.clamav_milter.address), milter_entry(s.spamass_milter.address)]
    entries.append(milter_entry(s.rspamd.milter_address))
    yield ", ".join(entries)


def _quorum(
    name: str, tables: Callable[[Stack], str], unix: bool = False
) -> Callable[[Stack, list[str]], Iterator[str | None]]:
    def target(s: Stack, notes: list[str]) -> Iterator[str | None]:
        with quorum(s, name, policy() + tables(s), unix=unix, notes=notes) as entry:
            yield entry

    return target


def _cascade(s: Stack, notes: list[str]) -> Iterator[str | None]:
    with cascade_quorum(s, notes) as entry:
        yield entry


ROWS: dict[str, Callable[[Stack, list[str]], Iterator[str | None]]] = {
    "no milter": _no_milter,
    "clamav-milter": _single("clamav_milter"),
    "spamass-milter": _single("spamass_milter"),
    "rspamd proxy milter": _single("rspamd"),
    "chain of the three": _chain,
    "quorum no engine": _quorum("none", lambda s: ""),
    "quorum + clamav": _quorum("clamav", clamav_table),
    "quorum all three": _quorum("all", three_tables),
    "quorum all three cascade+cache": _cascade,
    # Debian's defaults for the ClamAV pair: milter and clamd on unix sockets (no TCP, no Nagle)
    "clamav-milter (unix sockets)": _single("clamav_milter_unix"),
    "quorum + clamav (unix sockets)": _quorum("clamav-unix", clamav_unix_table, unix=True),
}
DEFAULT_ROWS = [r for r in ROWS if "unix sockets" not in r]

# --- measuring ----------------------------------------------------------------------------------


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)] if ordered else float("nan")


def load(port: int, msgs: list[bytes], sink: Sink, concurrency: int = CONCURRENCY) -> dict[str, Any]:
    """Send `msgs` over `concurrency` sessions (25 per connection); count 250s and deliveries."""
    baseline = sink.count()
    stats, seconds = send_over_sessions(port, msgs, concurrency)
    accepted = stats.codes[250]
    got, _ = _wait_delivered(lambda: sink.count() - baseline, accepted, 120.0)
    return {
        "count": len(msgs),
        "accepted": accepted,
        "delivered": got,
        "replies": {str(k): v for k, v in sorted(stats.codes.items())},
        "seconds": round(seconds, 3),
        "msg_per_s": round(accepted / seconds, 1) if seconds > 0 else 0.0,
        "valid": accepted == len(msgs) and got == accepted,
    }


def latency(port: int, msgs: list[bytes], sink: Sink) -> dict[str, Any]:
    """One message at a time over one session: MAIL FROM to the final 250, in ms."""
    times: list[float] = []
    refused = 0
    baseline = sink.count()
    sess = Session(port, timeout=120.0)
    sess.ehlo("bench.example")
    try:
        for raw in msgs:
            start = time.perf_counter()
            reply = _transaction(sess, SENDER, RECIPIENT, raw)
            elapsed = time.perf_counter() - start
            if reply.code == 250:
                times.append(elapsed * 1000)
            else:
                refused += 1
            sess.rset()
    finally:
        sess.quit()
    got, _ = _wait_delivered(lambda: sink.count() - baseline, len(times), 60.0)
    return {
        "p50_ms": round(percentile(times, 50), 1),
        "p99_ms": round(percentile(times, 99), 1),
        "refused": refused,
        "valid": refused == 0 and got == len(times),
    }


def probe(port: int, sink: Sink) -> bool:
    """One message must get 250 and arrive at the sink."""
    token = uuid.uuid4().hex
    raw = make_message(0, token, campaign=False)
    baseline = sink.count()
    sess = Session(port, timeout=120.0)
    try:
        ok = sess.ehlo("bench.example").ok and _transaction(sess, SENDER, RECIPIENT, raw).code == 250
    finally:
        sess.quit()
    return ok and _wait_delivered(lambda: sink.count() - baseline, 1, 30.0)[0] >= 1


@dataclass
class RowResult:
    name: str
    loads: dict[str, dict[str, Any]] = field(default_factory=dict)
    latency: dict[str, Any] = field(default_factory=dict)
    probes: bool = False
    notes: list[str] = field(default_factory=list)
    unavailable: str = ""
    baseline: float = 0.0  # no-milter msg/s (distinct load) measured just before this row
    cpu: dict[str, dict[str, float]] = field(default_factory=dict)  # load -> program -> CPU ms per message

    def drift_free(self, kind: str) -> float:
        """msg/s as a share of the no-milter rate measured just before: on a shared machine the
        no-milter rate itself drifts by 2x within minutes, this share much less."""
        return self.loads[kind]["msg_per_s"] / self.baseline if self.baseline else float("nan")

    @property
    def valid(self) -> bool:
        return self.probes and all(r["valid"] for r in self.loads.values()) and bool(self.latency.get("valid"))


def measure_row(s: Stack, name: str, args: argparse.Namespace) -> RowResult:
    result = RowResult(name)
    target = contextmanager(ROWS[name])
    try:
        with target(s, result.notes) as milters:
            port = s.postfix.smtp_port
            s.postfix.set_milter(None)
            baseline = load(port, messages(args.count, campaign=False), s.sink)
            result.baseline = baseline["msg_per_s"] if baseline["valid"] else 0.0
            s.postfix.set_milter(milters)
            try:
                before = probe(port, s.sink)
                load(port, messages(args.warmup, campaign=False), s.sink)
                for kind in args.loads:
                    msgs = messages(args.count, campaign=kind == "campaign")
                    cpu_before = cpu_share.snapshot()
                    result.loads[kind] = load(port, msgs, s.sink)
                    spent = cpu_share.spent(cpu_before, cpu_share.snapshot())
                    n = max(1, result.loads[kind]["accepted"])
                    result.cpu[kind] = {g: round(sec * 1000 / n, 2) for g, sec in spent.items()}
                result.latency = latency(port, messages(args.latency, campaign=False), s.sink)
                result.probes = before and probe(port, s.sink)
            finally:
                s.postfix.set_milter(None)
                s.sink.clear()
    except Unavailable as exc:
        result.unavailable = str(exc)
    return result


def smtp_source_reference(s: Stack, count: int) -> dict[str, Any]:
    """No milter, loaded by Postfix's own C generator: shows whether our Python generator is the limit."""
    s.postfix.set_milter(None)
    baseline = s.sink.count()
    start = time.monotonic()
    proc = subprocess.run(
        [
            "smtp-source",
            "-s",
            str(CONCURRENCY),
            "-m",
            str(count),
            "-l",
            str(SIZE),
            "-f",
            SENDER,
            "-t",
            RECIPIENT,
            f"127.0.0.1:{s.postfix.smtp_port}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    seconds = time.monotonic() - start
    got, end = _wait_delivered(lambda: s.sink.count() - baseline, count, 120.0)
    s.sink.clear()
    return {
        "count": count,
        "delivered": got,
        "smtp_seconds": round(seconds, 3),
        "msg_per_s_smtp": round(count / seconds, 1),
        "delivered_msg_per_s": round(got / (end - start), 1),
        "valid": proc.returncode == 0 and got == count,
    }


# --- report -------------------------------------------------------------------------------------

TARGETS = (
    # (label, numerator row, denominator row, what, target, higher is better)
    ("no engine / no milter", "quorum no engine", "no milter", "msg_per_s", 0.55, True),
    ("+ClamAV / clamav-milter", "quorum + clamav", "clamav-milter", "msg_per_s", 5.0, True),
    (
        "+ClamAV / clamav-milter, unix",
        "quorum + clamav (unix sockets)",
        "clamav-milter (unix sockets)",
        "msg_per_s",
        5.0,
        True,
    ),
    ("all three / chain", "quorum all three", "chain of the three", "msg_per_s", 1.0, True),
    ("all three p50 / chain p50", "quorum all three", "chain of the three", "p50_ms", 0.5, False),
    ("cascade+cache / chain", "quorum all three cascade+cache", "chain of the three", "msg_per_s", 2.0, True),
)


def ratios(results: dict[str, RowResult], loads: list[str]) -> list[dict[str, Any]]:
    out = []
    for label, num, den, what, target, higher in TARGETS:
        a, b = results.get(num), results.get(den)
        if a is None or b is None:
            continue
        for kind in loads if what == "msg_per_s" else ["single"]:
            if a.unavailable or b.unavailable:
                out.append({"ratio": label, "load": kind, "value": None, "target": target, "note": "n/a"})
                continue
            if what == "msg_per_s":
                x, y = a.loads[kind][what], b.loads[kind][what]
                # the same ratio with each row taken relative to its own no-milter baseline
                paired = a.drift_free(kind) / (b.drift_free(kind) if den != "no milter" else 1.0)
            else:
                x, y, paired = a.latency[what], b.latency[what], float("nan")
            value = x / y if y else float("nan")
            met = value >= target if higher else value <= target
            note = "" if a.valid and b.valid else "a row is invalid"
            out.append(
                {
                    "ratio": label,
                    "load": kind,
                    "value": round(value, 2),
                    "paired": round(paired, 2) if paired == paired else None,  # NaN: not paired
                    "target": target,
                    "met": met,
                    "note": note,
                }
            )
    return out


def report(results: dict[str, RowResult], reference: dict[str, Any] | None, args: argparse.Namespace) -> None:
    print(
        f"{args.count} messages of ~{SIZE} bytes per load, {CONCURRENCY} SMTP sessions, 25 messages per connection; "
        f"latency over {args.latency} messages one at a time; {time.strftime('%Y-%m-%d %H:%M:%S')}"
    )
    print(f"cascade row: [policy] {'; '.join(CASCADE_POLICY)}; [verdict_cache] on Redis with its local LRU")
    print("baseline = no milter, distinct load, measured just before each row (the machine is shared)")
    head = f"{'row':<34}"
    for kind in args.loads:
        head += f" {kind + ' msg/s':>16} {'acc/deliv':>11}"
    head += f" {'p50 ms':>8} {'p99 ms':>8} {'baseline':>9}  valid"
    print(head)
    for r in results.values():
        if r.unavailable:
            print(f"{r.name:<34} n/a ({r.unavailable})")
            continue
        line = f"{r.name:<34}"
        for kind in args.loads:
            x = r.loads[kind]
            line += f" {x['msg_per_s']:>16.1f} {str(x['accepted']) + '/' + str(x['delivered']):>11}"
        line += f" {r.latency['p50_ms']:>8.1f} {r.latency['p99_ms']:>8.1f} {r.baseline:>9.1f}"
        line += f"  {'yes' if r.valid else 'INVALID'}"
        extra = [n for n in r.notes]
        extra += [f"{k}: replies {x['replies']}" for k, x in r.loads.items() if not x["valid"]]
        if not r.probes:
            extra.append("probe before/after not accepted")
        print(line + (f"  ({'; '.join(extra)})" if extra else ""))
    cpu_table(results, args.loads[0])
    if reference:
        print(
            f"{'no milter, smtp-source -s 10':<34} {reference['msg_per_s_smtp']:>16.1f} "
            f"{str(reference['count']) + '/' + str(reference['delivered']):>11}  (reference: Postfix's C generator, "
            f"identical messages; delivered {reference['delivered_msg_per_s']} msg/s)"
        )
    print(
        "\nratios (target); paired = each row taken relative to the no-milter baseline measured just before it "
        "(meaningful where Postfix and the shared CPU bound the rate: no engine, ClamAV; not for spamd-bound rows)"
    )
    for x in ratios(results, args.loads):
        if x["value"] is None:
            print(f"  {x['ratio']:<28} {x['load']:<9} n/a")
            continue
        sign = ">=" if "p50" not in x["ratio"] else "<="
        mark = "met" if x["met"] else "MISSED"
        note = f" ({x['note']})" if x["note"] else ""
        paired = ""
        if x["paired"] is not None:
            ok = x["paired"] >= x["target"] if sign == ">=" else x["paired"] <= x["target"]
            paired = f"  paired {x['paired']:>5.2f} {'met' if ok else 'MISSED'}"
        line = f"  {x['ratio']:<28} {x['load']:<9} {x['value']:>6.2f}  target {sign} {x['target']:<5} {mark:<6}"
        print(line + paired + note)


def cpu_table(results: dict[str, RowResult], kind: str) -> None:
    """CPU ms per accepted message by program during the `kind` load (the load, delivery included;
    the 2-core machine's capacity is 2000 ms of CPU per second)."""
    rows = [r for r in results.values() if r.cpu.get(kind)]
    if not rows:
        return
    groups = sorted({g for r in rows for g in r.cpu[kind]}, key=lambda g: -max(r.cpu[kind].get(g, 0) for r in rows))
    print(f"\nCPU ms per message by program, {kind} load (all processes on the machine, from /proc)")
    print(f"{'row':<34}" + "".join(f" {g[:12]:>12}" for g in groups) + f" {'total':>8}")
    for r in rows:
        cpu = r.cpu[kind]
        print(f"{r.name:<34}" + "".join(f" {cpu.get(g, 0.0):>12.2f}" for g in groups) + f" {sum(cpu.values()):>8.2f}")


def run(args: argparse.Namespace) -> tuple[list[dict[str, RowResult]], dict[str, Any] | None]:
    """Every row, `args.rounds` times in rotation (row A, row B, ..., A, B, ...): each round's ratios
    compare rows measured minutes apart, so slow drift of the shared machine hits both sides alike."""
    missing = installed()
    if missing:
        raise SystemExit(f"peer milters not installed: {', '.join(missing)} (./run.sh installs them)")
    rounds: list[dict[str, RowResult]] = []
    reference = None
    with ExitStack() as stack:
        if args.workdir:  # kept afterwards: every program's log and config, for a closer look
            work = Path(args.workdir).resolve()
            work.mkdir(parents=True, exist_ok=True)
        else:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="quorum-peers-")))
        work.chmod(0o755)
        s = Stack(work, stack)
        s.postfix  # noqa: B018 - start Postfix and the sink before the first row
        for number in range(1, args.rounds + 1):
            results: dict[str, RowResult] = {}
            for name in args.rows:
                print(f"-- round {number}: {name}", file=sys.stderr, flush=True)
                results[name] = measure_row(s, name, args)
            rounds.append(results)
        if args.smtp_source:
            reference = smtp_source_reference(s, args.count)
    return rounds, reference


def summary(rounds: list[dict[str, RowResult]], loads: list[str]) -> list[dict[str, Any]]:
    """Each ratio over the rounds: its values, and in how many rounds the target was met."""
    per: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for results in rounds:
        for x in ratios(results, loads):
            if x["value"] is not None:
                per.setdefault((x["ratio"], x["load"]), []).append(x)
    return [
        {
            "ratio": label,
            "load": load,
            "values": [x["value"] for x in xs],
            "paired": [x["paired"] for x in xs],
            "target": xs[0]["target"],
            "met_in": sum(1 for x in xs if x["met"]),
            "rounds": len(xs),
        }
        for (label, load), xs in per.items()
    ]


def print_summary(rounds: list[dict[str, RowResult]], loads: list[str]) -> None:
    print(f"\nover {len(rounds)} rounds (each ratio within one round; target met in k of n rounds)")
    for x in summary(rounds, loads):
        values = " ".join(f"{v:.2f}" for v in x["values"])
        paired = " ".join(f"{v:.2f}" if v is not None else "-" for v in x["paired"])
        print(f"  {x['ratio']:<30} {x['load']:<9} {values:<24} paired {paired:<24} met {x['met_in']}/{x['rounds']}")


def rows_json(results: dict[str, RowResult], loads: list[str]) -> dict[str, Any]:
    return {
        "rows": {
            name: {
                "loads": r.loads,
                "latency": r.latency,
                "probes": r.probes,
                "cpu_ms_per_message": r.cpu,
                "valid": r.valid,
                "notes": r.notes,
                "unavailable": r.unavailable,
            }
            for name, r in results.items()
        },
        "ratios": ratios(results, loads),
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=400, help="messages per load (>= 400 for the issue's table)")
    parser.add_argument("--latency", type=int, default=60, help="messages sent one at a time for p50/p99")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=1, help="measure the rows this many times, in rotation")
    parser.add_argument("--rows", help=f"comma-separated subset of: {', '.join(ROWS)}")
    parser.add_argument("--loads", default="distinct,campaign", help="distinct, campaign or both")
    parser.add_argument("--no-smtp-source", dest="smtp_source", action="store_false")
    parser.add_argument("--quick", action="store_true", help="smoke run: 40 messages per load, 5 for latency")
    parser.add_argument("--cascade-policy", action="append", default=[], help="extra [policy] line for the cascade row")
    parser.add_argument("--workdir", help="keep the programs' logs and configs here (default: a temporary dir)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    CASCADE_POLICY.extend(args.cascade_policy)
    if args.quick:
        args.count, args.latency, args.warmup = min(args.count, 40), min(args.latency, 5), min(args.warmup, 5)
    args.rows = [r.strip() for r in args.rows.split(",")] if args.rows else list(DEFAULT_ROWS)
    unknown = [r for r in args.rows if r not in ROWS]
    if unknown:
        parser.error(f"unknown rows {unknown}; choose from {list(ROWS)}")
    args.loads = [x.strip() for x in args.loads.split(",") if x.strip()]
    if not set(args.loads) <= {"distinct", "campaign"} or not args.loads:
        parser.error("--loads: distinct and/or campaign")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so every program started here is stopped on the way out.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    rounds, reference = run(args)
    if args.json:
        doc = {**rows_json(rounds[-1], args.loads), "smtp_source": reference}
        if len(rounds) > 1:
            doc["rounds"] = [rows_json(results, args.loads) for results in rounds]
            doc["summary"] = summary(rounds, args.loads)
        print(json.dumps(doc, indent=2))
        return 0
    for number, results in enumerate(rounds, 1):
        if len(rounds) > 1:
            print(f"\n=== round {number} of {len(rounds)}")
        report(results, reference if number == len(rounds) else None, args)
    if len(rounds) > 1:
        print_summary(rounds, args.loads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
