"""Quorum signing against Quorum + OpenDKIM as two milters, through one real Postfix (issue 19's table, in one run).

    .venv/bin/python bench/signing_peers.py [--count 400] [--rounds 3] [--rows 1,3,8] [--quick] [--json]

Rows: Postfix alone (no milter); Quorum with no engine and no [signing]; Quorum (no signing) then
Debian's OpenDKIM signing with RSA-2048 as a second milter (tests/harness/opendkim.py: its own config
on 127.0.0.1, relaxed/relaxed); Quorum signing with RSA-2048, with Ed25519, and with both (RFC 8463
dual signing). One more row puts OpenDKIM on a unix socket (Debian's default, local:/run/opendkim/
opendkim.sock): over TCP on loopback OpenDKIM runs at ~100 msg/s here with ~2 ms CPU per message,
waiting rather than working (like clamav-milter's Nagle/delayed-ACK stall in bench/peers.py), so
the ratios are given against both. `--rows 8` adds OpenDKIM as the only milter. Every row goes
through the same Postfix instance and sink, and the rows are measured in rotation `--rounds` times
(row A, B, ..., A, B, ...), so the shared machine's drift hits all rows alike.

Per row: `count` messages of ~5 KB (bench/peers.py's distinct messages, From: alice@example.com)
over 10 SMTP sessions, 25 messages per connection, each session authenticated with XCLIENT
LOGIN=alice (Postfix hands the milters {auth_authen}, so Quorum signs; OpenDKIM signs 127.0.0.1 and
authenticated clients alike). msg/s is the rate of 250 replies; a row only counts ("valid") when
every message got 250, the sink received every one, a probe before and after went through
(`smtp-source` is as fast when everything gets 4xx), every delivered message carries the row's
DKIM-Signature fields (its selectors, counted on every message the sink got), and the first and last
delivered message verify with dkimpy against the published records (every signature "pass", not
just present). Under each round: CPU ms per message by program during the load, from /proc
(bench/cpu_share.py, with OpenDKIM as its own group).

Summary over the rounds: median msg/s and the spread (min-max) per row over its valid rounds; the
ratios "Quorum signing RSA-2048 / Quorum + OpenDKIM" and "Quorum signing Ed25519 / Quorum +
OpenDKIM" (the issue's target: >= 1.5), each within one round, against OpenDKIM on TCP and on the
unix socket; Quorum's (and OpenDKIM's) CPU ms per message per row, and the Ed25519 signing CPU
delta, Quorum CPU ms/msg of the Ed25519 row minus the no-signing row's (the issue's target: <= 1 ms).
Numbers only: nothing here passes or fails.
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import statistics
import sys
import tempfile
import threading
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
import dkim  # noqa: E402
from peers import CONCURRENCY, RECIPIENT, SENDER, SIZE, make_message, messages, policy  # noqa: E402
from peers import Stack as PeerStack  # noqa: E402
from smtp_load import _Stats, _transaction, _wait_delivered  # noqa: E402
from tests.harness.dkim_keys import PKCS1, KeyFile, write_ed25519, write_rsa  # noqa: E402
from tests.harness.opendkim import OpenDkim, installed  # noqa: E402
from tests.harness.peers import milter_entry  # noqa: E402
from tests.harness.quorum import QuorumProcess  # noqa: E402
from tests.harness.sink import Sink  # noqa: E402
from tests.harness.smtp_client import Reply, Session  # noqa: E402

DOMAIN = SENDER.split("@", 1)[1]
LOGIN = "alice"
PER_SESSION = 25

# cpu_share's groups, with OpenDKIM apart from "other" (snapshot() looks group_of up at each call)
_group_of = cpu_share.group_of


def _group_with_opendkim(pid: int, comm: str, cmdline: str) -> str:
    return "opendkim" if comm == "opendkim" else _group_of(pid, comm, cmdline)


cpu_share.group_of = _group_with_opendkim

# --- keys and the programs ------------------------------------------------------------------------


@dataclass(frozen=True)
class Keys:
    """Quorum's RSA-2048 (s=q1) and Ed25519 (s=qed) keys, OpenDKIM's RSA-2048 (s=od1, PKCS#1 as
    opendkim-genkey writes it), and the TXT records that would publish them."""

    rsa: KeyFile
    ed: KeyFile
    od: KeyFile

    @classmethod
    def generate(cls, where: Path) -> Keys:
        return cls(
            write_rsa(where / "q1.pem", 2048),
            write_ed25519(where / "qed.pem"),
            write_rsa(where / "od1.pem", 2048, PKCS1),
        )

    @property
    def records(self) -> dict[bytes, bytes]:
        return {
            f"{sel}._domainkey.{DOMAIN}.".encode(): key.record.encode()
            for sel, key in (("q1", self.rsa), ("qed", self.ed), ("od1", self.od))
        }


class Stack(PeerStack):
    """bench/peers.py's Stack (sink, Postfix) plus the keys and OpenDKIM."""

    @cached_property
    def keys(self) -> Keys:
        return Keys.generate(self.work / "keys")

    @cached_property
    def opendkim(self) -> OpenDkim:
        return self._enter(OpenDkim(self.work / "opendkim", DOMAIN, "od1", self.keys.od.path))  # type: ignore[no-any-return]

    @cached_property
    def opendkim_unix(self) -> OpenDkim:
        """Debian's default socket for OpenDKIM: a unix socket."""
        milter = OpenDkim(self.work / "opendkim-unix", DOMAIN, "od1", self.keys.od.path, unix=True)
        return self._enter(milter)  # type: ignore[no-any-return]


def signing_toml(keys: list[tuple[str, KeyFile]]) -> str:
    entries = "".join(
        f'[[signing.keys]]\ndomain = "{DOMAIN}"\nselector = "{sel}"\nkey = "{k.path}"\n' for sel, k in keys
    )
    return '\n[signing]\nlog_interval = "1h"\n\n' + entries


@contextmanager
def quorum(s: Stack, name: str, body: str) -> Iterator[str]:
    proc = QuorumProcess(s.work / f"quorum-{name}", body)
    proc.start()
    try:
        yield milter_entry(proc.postfix_address)
    finally:
        proc.stop()


def _no_milter(s: Stack) -> Iterator[str | None]:
    yield None


def _quorum(name: str, keys: Callable[[Keys], list[tuple[str, KeyFile]]]) -> Callable[[Stack], Iterator[str | None]]:
    def target(s: Stack) -> Iterator[str | None]:
        chosen = keys(s.keys)
        with quorum(s, name, policy() + (signing_toml(chosen) if chosen else "")) as entry:
            yield entry

    return target


def _quorum_opendkim(attr: str) -> Callable[[Stack], Iterator[str | None]]:
    def target(s: Stack) -> Iterator[str | None]:
        with quorum(s, "before-opendkim", policy()) as entry:
            yield f"{entry}, {milter_entry(getattr(s, attr).address)}"

    return target


def _opendkim_alone(s: Stack) -> Iterator[str | None]:
    yield milter_entry(s.opendkim.address)


@dataclass(frozen=True)
class Row:
    target: Callable[[Stack], Iterator[str | None]]
    selectors: tuple[str, ...]  # the DKIM-Signature s= every delivered message must carry, in any order


ROWS: dict[str, Row] = {
    "postfix alone": Row(_no_milter, ()),
    "quorum, no signing": Row(_quorum("plain", lambda k: []), ()),
    "quorum + opendkim (RSA-2048)": Row(_quorum_opendkim("opendkim"), ("od1",)),
    "quorum signing RSA-2048": Row(_quorum("rsa", lambda k: [("q1", k.rsa)]), ("q1",)),
    "quorum signing Ed25519": Row(_quorum("ed", lambda k: [("qed", k.ed)]), ("qed",)),
    "quorum signing RSA-2048 + Ed25519": Row(_quorum("dual", lambda k: [("q1", k.rsa), ("qed", k.ed)]), ("q1", "qed")),
    # OpenDKIM on Debian's default socket (a unix socket): over TCP it waits on the network stack
    "quorum + opendkim (RSA-2048, unix socket)": Row(_quorum_opendkim("opendkim_unix"), ("od1",)),
    # on request (--rows 8): OpenDKIM as the only milter
    "opendkim alone (RSA-2048)": Row(_opendkim_alone, ("od1",)),
}
DEFAULT_ROWS = list(ROWS)[:7]
OPENDKIM_ROW = "quorum + opendkim (RSA-2048)"
OPENDKIM_UNIX_ROW = "quorum + opendkim (RSA-2048, unix socket)"
PLAIN_ROW = "quorum, no signing"
RSA_ROW, ED_ROW, DUAL_ROW = "quorum signing RSA-2048", "quorum signing Ed25519", "quorum signing RSA-2048 + Ed25519"

# --- load (authenticated sessions) ----------------------------------------------------------------


def _open(port: int, timeout: float) -> Session | None:
    """A session authenticated as LOGIN through XCLIENT (then EHLO again), or None."""
    sess = Session(port, timeout=timeout)
    if sess.banner.code == 220 and sess.ehlo("bench.example").ok:
        if sess.xclient({"LOGIN": LOGIN}).code == 220 and sess.ehlo("bench.example").ok:
            return sess
    sess.close()
    return None


def _worker(port: int, jobs: list[bytes], stats: _Stats, timeout: float) -> None:
    """bench/smtp_load.py's worker with XCLIENT LOGIN= on every connection."""
    sess: Session | None = None
    sent = 0
    for raw in jobs:
        if sess is None or sent >= PER_SESSION:
            if sess is not None:
                sess.quit()
            sess, sent = _open(port, timeout), 0
        if sess is None:
            stats.record(Reply(0, "connect or XCLIENT failed"))
            continue
        reply = _transaction(sess, SENDER, RECIPIENT, raw)
        stats.record(reply)
        sent += 1
        if reply.code == 0 or sess.rset().code != 250:
            sess.close()
            sess = None
    if sess is not None:
        sess.quit()


def send_authenticated(port: int, msgs: list[bytes], concurrency: int = CONCURRENCY) -> tuple[_Stats, float]:
    shares = [msgs[i::concurrency] for i in range(concurrency)]
    stats = _Stats()
    threads = [threading.Thread(target=_worker, args=(port, sh, stats, 120.0), daemon=True) for sh in shares if sh]
    start = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return stats, (stats.last_ok or time.monotonic()) - start


def load(port: int, msgs: list[bytes], sink: Sink) -> dict[str, Any]:
    baseline = sink.count()
    stats, seconds = send_authenticated(port, msgs)
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


def probe(port: int, sink: Sink) -> bool:
    """One authenticated message must get 250 and arrive at the sink."""
    return bool(load(port, [make_message(0, uuid.uuid4().hex, campaign=False)], sink)["valid"])


# --- signatures -----------------------------------------------------------------------------------

_FIELD = re.compile(rb"(?im)^DKIM-Signature:([^\r\n]*(?:\r?\n[ \t][^\r\n]*)*)")


def selectors(raw: bytes) -> list[str]:
    """The s= of each DKIM-Signature field in the header, in order."""
    head = re.split(rb"\r?\n\r?\n", raw, maxsplit=1)[0]
    out = []
    for value in _FIELD.findall(head):
        m = re.search(rb"(?:^|;)\s*s=([^;]*)", b"".join(value.split()))
        out.append(m.group(1).decode() if m else "?")
    return out


def dkimpy_results(raw: bytes, records: dict[bytes, bytes]) -> list[str]:
    """Each signature verified by dkimpy against `records`: "s=SEL pass" or "s=SEL fail"."""

    def dnsfunc(name: bytes, timeout: float = 5) -> bytes | None:
        return records.get(name if isinstance(name, bytes) else name.encode())

    sels = selectors(raw)
    out = []
    for idx, sel in enumerate(sels):
        try:
            ok = dkim.DKIM(raw, logger=None).verify(idx=idx, dnsfunc=dnsfunc)
        except dkim.DKIMException as exc:
            ok = False
            sel = f"{sel} ({exc})"
        out.append(f"s={sel} {'pass' if ok else 'fail'}")
    return out


def check_signatures(delivered: list[bytes], expected: tuple[str, ...], records: dict[bytes, bytes]) -> dict[str, Any]:
    """Every delivered message carries exactly the `expected` selectors; the first and last verify."""
    wrong = sum(1 for raw in delivered if sorted(selectors(raw)) != sorted(expected))
    sample = [delivered[0], delivered[-1]] if delivered else []
    verified = [dkimpy_results(raw, records) for raw in sample] if expected else []
    passed = bool(sample) and all(v and all(x.endswith(" pass") for x in v) for v in verified) if expected else True
    return {
        "checked": len(delivered),
        "expected_per_message": len(expected),
        "selectors": list(expected),
        "wrong": wrong,
        "dkimpy": verified,
        "ok": wrong == 0 and bool(delivered) and passed,
    }


# --- measuring ------------------------------------------------------------------------------------


@dataclass
class RowResult:
    name: str
    load: dict[str, Any] = field(default_factory=dict)
    probes: bool = False
    signatures: dict[str, Any] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)  # program -> CPU ms per accepted message
    error: str = ""

    @property
    def valid(self) -> bool:
        return not self.error and self.probes and bool(self.load.get("valid")) and bool(self.signatures.get("ok"))

    @property
    def rate(self) -> float:
        return float(self.load.get("msg_per_s", 0.0))


def measure_row(s: Stack, name: str, args: argparse.Namespace) -> RowResult:
    result = RowResult(name)
    row = ROWS[name]
    port = s.postfix.smtp_port
    try:
        with contextmanager(row.target)(s) as milters:
            s.postfix.set_milter(milters)
            try:
                before = probe(port, s.sink)
                load(port, messages(args.warmup, campaign=False), s.sink)
                s.sink.clear()
                msgs = messages(args.count, campaign=False)
                cpu_before = cpu_share.snapshot()
                result.load = load(port, msgs, s.sink)
                spent = cpu_share.spent(cpu_before, cpu_share.snapshot())
                n = max(1, result.load["accepted"])
                result.cpu = {g: round(sec * 1000 / n, 2) for g, sec in spent.items()}
                delivered = [m.raw for m in s.sink.messages()]
                result.signatures = check_signatures(delivered, row.selectors, s.keys.records)
                result.probes = before and probe(port, s.sink)
            finally:
                s.postfix.set_milter(None)
                s.sink.clear()
    except (RuntimeError, TimeoutError) as exc:  # a program would not start
        result.error = str(exc).splitlines()[0][:200]
    return result


def run(args: argparse.Namespace) -> list[dict[str, RowResult]]:
    if any("opendkim" in r for r in args.rows) and not installed():
        raise SystemExit("opendkim not installed (apt-get install opendkim opendkim-tools)")
    rounds: list[dict[str, RowResult]] = []
    with ExitStack() as stack:
        if args.workdir:
            work = Path(args.workdir).resolve()
            work.mkdir(parents=True, exist_ok=True)
        else:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="quorum-signing-peers-")))
        work.chmod(0o755)
        s = Stack(work, stack)
        s.postfix  # noqa: B018 - start Postfix and the sink before the first row
        s.keys  # noqa: B018
        if any("opendkim" in r for r in args.rows):
            problem = s.opendkim.check()
            if problem:
                raise SystemExit(f"opendkim refuses its config: {problem}")
        for number in range(1, args.rounds + 1):
            results: dict[str, RowResult] = {}
            for name in args.rows:
                print(f"-- round {number}: {name}", file=sys.stderr, flush=True)
                results[name] = measure_row(s, name, args)
            rounds.append(results)
    return rounds


# --- report ---------------------------------------------------------------------------------------

RATIOS = (
    # label, numerator, denominator, target (>=)
    ("quorum signing RSA-2048 / quorum + opendkim", RSA_ROW, OPENDKIM_ROW, 1.5),
    ("quorum signing Ed25519 / quorum + opendkim", ED_ROW, OPENDKIM_ROW, 1.5),
    ("quorum dual signing / quorum + opendkim", DUAL_ROW, OPENDKIM_ROW, None),
    ("quorum signing RSA-2048 / quorum + opendkim unix", RSA_ROW, OPENDKIM_UNIX_ROW, 1.5),
    ("quorum signing Ed25519 / quorum + opendkim unix", ED_ROW, OPENDKIM_UNIX_ROW, 1.5),
)
DELTAS = (
    # label, row, reference row, target (<=): Quorum's CPU ms per message, row minus reference
    ("Ed25519 signing CPU (Quorum, ms/msg)", ED_ROW, PLAIN_ROW, 1.0),
    ("RSA-2048 signing CPU (Quorum, ms/msg)", RSA_ROW, PLAIN_ROW, None),
    ("dual signing CPU (Quorum, ms/msg)", DUAL_ROW, PLAIN_ROW, None),
)


def spread(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"median": None, "min": None, "max": None, "n": 0}
    return {
        "median": round(statistics.median(values), 2),
        "min": round(min(values), 2),
        "max": round(max(values), 2),
        "n": len(values),
    }


def _fmt(x: dict[str, Any], width: int = 7, digits: int = 1) -> str:
    if x["median"] is None:
        return f"{'n/a':>{width}} {'':<17}"
    rng = f"{x['min']:.{digits}f}-{x['max']:.{digits}f}"
    return f"{x['median']:>{width}.{digits}f} {rng:<17}"


def summary(rounds: list[dict[str, RowResult]]) -> dict[str, Any]:
    rows: dict[str, Any] = {}
    for name in rounds[0]:
        valid = [r[name] for r in rounds if r[name].valid]
        rows[name] = {
            "msg_per_s": spread([r.rate for r in valid]),
            "quorum_cpu_ms": spread([r.cpu.get("quorum", 0.0) for r in valid]),
            "opendkim_cpu_ms": spread([r.cpu.get("opendkim", 0.0) for r in valid]),
            "postfix_cpu_ms": spread([r.cpu.get("postfix", 0.0) for r in valid]),
            "valid_rounds": len(valid),
            "rounds": len(rounds),
        }
    ratios = []
    for label, num, den, target in RATIOS:
        if num not in rounds[0] or den not in rounds[0]:
            continue
        values = [r[num].rate / r[den].rate for r in rounds if r[num].valid and r[den].valid and r[den].rate]
        ratios.append({"ratio": label, "values": [round(v, 2) for v in values], **spread(values), "target": target})
    deltas = []
    for label, row, ref, target in DELTAS:
        if row not in rounds[0] or ref not in rounds[0]:
            continue
        values = [
            r[row].cpu.get("quorum", 0.0) - r[ref].cpu.get("quorum", 0.0)
            for r in rounds
            if r[row].valid and r[ref].valid
        ]
        deltas.append({"delta": label, "values": [round(v, 2) for v in values], **spread(values), "target": target})
    return {"rows": rows, "ratios": ratios, "deltas": deltas}


def report_round(results: dict[str, RowResult], number: int, total: int, args: argparse.Namespace) -> None:
    print(f"\n=== round {number} of {total}")
    head = f"{'row':<42} {'msg/s':>7} {'acc/deliv':>9} {'DKIM sigs (s=) on every msg':<28} {'dkimpy':<10} valid"
    print(head)
    for r in results.values():
        if r.error:
            print(f"{r.name:<42} n/a ({r.error})")
            continue
        sig = r.signatures
        sels = "+".join(sig["selectors"]) or "none"
        sigs = f"{sels} ({sig['checked'] - sig['wrong']}/{sig['checked']} ok)"
        flat = [x for v in sig["dkimpy"] for x in v]
        dk = "-" if not sig["selectors"] else ("pass" if sig["ok"] and flat else "FAIL")
        acc = f"{r.load['accepted']}/{r.load['delivered']}"
        line = f"{r.name:<42} {r.rate:>7.1f} {acc:>9} {sigs:<28} {dk:<10} {'yes' if r.valid else 'INVALID'}"
        extra = []
        if not r.load["valid"]:
            extra.append(f"replies {r.load['replies']}")
        if not r.probes:
            extra.append("probe before/after not accepted")
        if sig["selectors"] and not sig["ok"]:
            extra.append(f"dkimpy: {sig['dkimpy']}")
        print(line + (f"  ({'; '.join(extra)})" if extra else ""))
    groups = ["quorum", "opendkim", "postfix", "bench (load + sink)", "other"]
    step = 1000 / cpu_share.TICK / max(1, args.count)
    print(
        "CPU ms per message by program during the load (all processes on the machine, from /proc; "
        f"one clock tick = {step:.3f} ms per message at this count)"
    )
    print(f"{'row':<42}" + "".join(f" {g[:12]:>12}" for g in groups) + f" {'total':>8}")
    for r in results.values():
        if r.cpu:
            print(
                f"{r.name:<42}"
                + "".join(f" {r.cpu.get(g, 0.0):>12.2f}" for g in groups)
                + f" {sum(r.cpu.values()):>8.2f}"
            )


def print_summary(doc: dict[str, Any], args: argparse.Namespace) -> None:
    print(f"\n=== summary over {args.rounds} rounds (median, min-max over each row's valid rounds)")
    print(
        f"{'row':<42} {'msg/s':>7} {'spread':<17} {'quorum ms':>9} {'spread':<17} "
        f"{'opendkim ms':>11} {'spread':<17} valid"
    )
    for name, x in doc["rows"].items():
        print(
            f"{name:<42} {_fmt(x['msg_per_s'])} {_fmt(x['quorum_cpu_ms'], 9, 2)} "
            f"{_fmt(x['opendkim_cpu_ms'], 11, 2)} {x['valid_rounds']}/{x['rounds']}"
        )
    print("\nratios of msg/s, each within one round (issue 19's target: >= 1.5)")
    for x in doc["ratios"]:
        values = " ".join(f"{v:.2f}" for v in x["values"]) or "n/a"
        target = f"target >= {x['target']}" if x["target"] else "(for reference)"
        print(f"  {x['ratio']:<50} {_fmt(x, 6, 2)} rounds: {values:<20} {target}")
    print("\nsigning CPU: Quorum CPU ms/msg of the row minus 'quorum, no signing', each within one round")
    for x in doc["deltas"]:
        values = " ".join(f"{v:.2f}" for v in x["values"]) or "n/a"
        target = f"target <= {x['target']} ms" if x["target"] else "(for reference)"
        print(f"  {x['delta']:<50} {_fmt(x, 6, 2)} rounds: {values:<20} {target}")


def rows_json(results: dict[str, RowResult]) -> dict[str, Any]:
    return {
        name: {
            "load": r.load,
            "probes": r.probes,
            "signatures": r.signatures,
            "cpu_ms_per_message": r.cpu,
            "valid": r.valid,
            "error": r.error,
        }
        for name, r in results.items()
    }


def pick_rows(text: str) -> list[str]:
    """Comma-separated row numbers (1-based, in ROWS order) or names (names may contain commas)."""
    names = list(ROWS)
    out: list[str] = []
    pending = ""
    for part in text.split(","):
        if not pending and part.strip().isdigit() and 1 <= int(part) <= len(names):
            out.append(names[int(part) - 1])
            continue
        pending = f"{pending},{part}" if pending else part
        if pending.strip() in ROWS:
            out.append(pending.strip())
            pending = ""
    return out + ([pending.strip()] if pending else [])


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=400, help="messages per row and round")
    parser.add_argument("--warmup", type=int, default=20, help="messages sent before each measured load")
    parser.add_argument("--rounds", type=int, default=3, help="measure the rows this many times, in rotation")
    parser.add_argument(
        "--rows",
        help="comma-separated row numbers or names: " + "; ".join(f"{i} {n}" for i, n in enumerate(ROWS, 1)),
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: 100 messages per row, 5 of warm-up")
    parser.add_argument("--workdir", help="keep the programs' logs and configs here (default: a temporary dir)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.count, args.warmup = min(args.count, 100), min(args.warmup, 5)
    args.rows = pick_rows(args.rows) if args.rows else list(DEFAULT_ROWS)
    unknown = [r for r in args.rows if r not in ROWS]
    if unknown:
        numbered = "; ".join(f"{i} {name}" for i, name in enumerate(ROWS, 1))
        parser.error(f"unknown rows {unknown}; choose numbers or names from: {numbered}")
    if args.rounds < 1:
        parser.error("--rounds: at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so every program started here is stopped on the way out.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    rounds = run(args)
    doc = summary(rounds)
    if args.json:
        print(json.dumps({"rounds": [rows_json(r) for r in rounds], "summary": doc}, indent=2))
        return 0
    print(
        f"{args.count} messages of ~{SIZE} bytes per row and round, {CONCURRENCY} SMTP sessions authenticated "
        f"with XCLIENT LOGIN={LOGIN}, {PER_SESSION} messages per connection; {time.strftime('%Y-%m-%d %H:%M:%S')}"
    )
    for number, results in enumerate(rounds, 1):
        report_round(results, number, len(rounds), args)
    print_summary(doc, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
