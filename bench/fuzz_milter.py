"""Fuzz Quorum's milter socket with random and mutated milter command sequences; print counts.

    .venv/bin/python bench/fuzz_milter.py [--sequences 100000] [--seconds 900] [--seed 1] [--threads 4]
                                          [--config clamd|none|both] [--odd-macros 0.0] [--crash-bound 5]

Starts its own clamd (local signatures) and `quorum run` (tests/harness), talks to the socket with
an independent MTA-side codec (tests/harness/milter_client.py), then checks on a fresh connection
that a clean message is accepted with a verdict and EICAR is refused, and prints: sequences per
kind, answers seen, worker restarts (SIGSEGV), tracebacks (and the distinct exceptions), one-line
answers to protocol abuse, worker RSS and threads before/after.

--odd-macros P keeps a macro packet whose strings do not pair up in a fraction P of the sequences:
libmilter's smfi_getsymval then reads past the end of its macro list (a SIGSEGV in C).
--crash-bound R measures what such a crash costs, R times: K sessions held open mid-message, one
crashing connection, how many of the K are cut and how long until the worker answers again.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO)]

from tests.fuzz import milter_fuzz as fz  # noqa: E402
from tests.harness import milter_client as mc  # noqa: E402
from tests.harness.clamd import Clamd  # noqa: E402
from tests.harness.messages import HAM, mail  # noqa: E402
from tests.harness.quorum import QuorumProcess, engine_table  # noqa: E402


def run_config(name: str, body: str, workdir: Path, args: argparse.Namespace) -> bool:
    print(f"\n== config: {name}")
    with QuorumProcess(workdir / name, body) as quorum:
        pid = fz.wait_settled(quorum)
        clean, virus = fz.clean_and_virus(quorum.socket)
        rss0, threads0 = fz.rss_kb(pid), fz.threads_of(pid)
        print(f"before: worker pid {pid} RSS {rss0 / 1024:.1f} MiB, {threads0} threads; clean: {clean}; EICAR: {virus}")
        stats = fz.fuzz(quorum.socket, args.sequences, args.seconds, args.seed, args.threads, args.odd_macros)
        pid = fz.wait_settled(quorum)
        time.sleep(12)  # longer than the deadline: anything still running now is stuck
        t0 = time.monotonic()
        clean, virus = fz.clean_and_virus(quorum.socket)
        answer_s = time.monotonic() - t0
        rss1, threads1 = fz.rss_kb(pid), fz.threads_of(pid)
        report = fz.read_log(quorum.log_text())
    rate = stats.sequences / stats.seconds if stats.seconds else 0
    print(f"sequences: {stats.sequences} in {stats.seconds:.0f}s ({rate:.0f}/s); by kind: {dict(stats.kinds)}")
    print(f"answers seen: {dict(stats.answers.most_common())}; connections refused: {stats.connect_errors}")
    print(f"worker restarts: {report.restarts} (SIGSEGV: {report.segfaults})")
    print(f"tracebacks in the log: {report.tracebacks}; bare exception reports: {report.bare_exceptions}")
    for line, n in report.distinct.most_common():
        print(f"  {n:6d}  {line}")
    print("one-line answers to protocol abuse:")
    for line, n in report.clean_warnings.most_common():
        print(f"  {n:6d}  {line}")
    print(f"after: worker pid {pid} RSS {rss1 / 1024:.1f} MiB, {threads1} threads")
    print(f"fresh connection after the run ({answer_s:.2f}s): clean: {clean}; EICAR: {virus}")
    virus_ok = virus.startswith("refused 5") if "clamd" in name else True
    return clean.startswith("accepted clean") and virus_ok and report.tracebacks == 0


# -- what one libmilter crash costs -------------------------------------------------------------
def open_mid_message(spec: str) -> mc.Connection:
    conn = mc.Connection(spec, timeout=30)
    conn.negotiate()
    conn.send(mc.macros(mc.CONNECT, {b"j": b"mx", b"{client_addr}": b"192.0.2.1"}))
    for raw in (mc.connect(b"c.example", b"192.0.2.1"), mc.helo(b"c.example"), mc.mail(b"<a@example.com>")):
        conn.step(raw)
    conn.step(mc.rcpt(b"<b@example.org>"))
    conn.step(mc.data())
    conn.step(mc.header(b"Subject", b" held open"))
    return conn


def finish(conn: mc.Connection) -> bool:
    try:
        conn.step(mc.eoh())
        conn.send(mc.eom())
        final, _ = conn.read_final()
        return final.cmd == mc.CONTINUE
    except (OSError, mc.MilterProtocolError, TimeoutError):
        return False
    finally:
        conn.close()


def finish_all(conns: list[mc.Connection]) -> int:
    """Try to finish every held session; return how many were cut."""
    results: list[bool] = []
    finishers = [threading.Thread(target=lambda c=c: results.append(finish(c))) for c in conns]
    for t in finishers:
        t.start()
    for t in finishers:
        t.join()
    return results.count(False)


def crash_once(spec: str, before: list[int], quorum: QuorumProcess) -> float:
    """Send odd macro lists until the worker dies; return seconds from death to answering again."""
    for _ in range(500):
        try:
            with mc.Connection(spec, timeout=5) as c:
                c.negotiate()
                mc.send_message(c, mail("odd", HAM), connect_macros=[b"{client_addr}"] * 3)
        except (OSError, mc.MilterProtocolError, TimeoutError):
            died = time.monotonic()
            while quorum.worker_pids() == before:
                time.sleep(0.01)
            fz.wait_settled(quorum, 120)
            with mc.Connection(spec, timeout=30) as c:  # a real answer, not just an accepting socket
                c.negotiate()
                mc.send_message(c, mail("after", HAM))
            return time.monotonic() - died
    raise RuntimeError("no crash in 500 tries")


def crash_bound(workdir: Path, rounds: int, held: int) -> None:
    print(f"\n== one crashing connection vs {held} sessions held open mid-message ({rounds} rounds)")
    with QuorumProcess(workdir / "crash", "") as quorum:
        for n in range(rounds):
            fz.wait_settled(quorum)
            before = quorum.worker_pids()
            conns = [open_mid_message(quorum.socket) for _ in range(held)]
            downtime = crash_once(quorum.socket, before, quorum)
            cut = finish_all(conns)
            print(f"round {n + 1}: sessions cut {cut}/{held}; worker answering again after {downtime:.2f}s")
        restarts = fz.read_log(quorum.log_text()).restarts
    print(f"restarts: {restarts} (the supervisor doubles its backoff for a worker that lived < 60 s, up to 30 s)")


def socket_reach(workdir: Path) -> None:
    """Who can connect to the unix socket: its mode and group, and a try as user nobody."""
    print("\n== unix socket reach")
    with QuorumProcess(workdir / "unix", "", unix=True) as quorum:
        st = os.stat(quorum.socket_path)
        import grp

        print(f"{quorum.socket_path}: mode {st.st_mode & 0o777:o}, group {grp.getgrgid(st.st_gid).gr_name}")
        pid = os.fork()
        if pid == 0:  # child: become nobody and try
            try:
                os.setgid(65534)
                os.setuid(65534)
                mc.open_socket(quorum.socket, 2).close()
                os._exit(0)
            except PermissionError:
                os._exit(13)
            except BaseException:
                os._exit(1)
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        print("connect as nobody: " + {0: "ALLOWED", 13: "refused (EACCES)"}.get(code, f"failed ({code})"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sequences", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=900)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--config", choices=("clamd", "none", "both"), default="clamd")
    parser.add_argument("--odd-macros", type=float, default=0.0)
    parser.add_argument("--crash-bound", type=int, default=0, metavar="ROUNDS")
    parser.add_argument("--held", type=int, default=20, help="sessions held open per crash round")
    args = parser.parse_args()
    os.environ.setdefault("PYTHONFAULTHANDLER", "1")  # a crashing worker logs where it was
    workdir = Path(tempfile.mkdtemp(prefix="quorum-fuzz-"))
    ok = True
    if args.crash_bound:
        crash_bound(workdir, args.crash_bound, args.held)
        if os.geteuid() == 0:
            socket_reach(workdir)
        return 0
    clamd = Clamd(workdir / "clamd").start() if args.config in ("clamd", "both") else None
    try:
        if args.config in ("none", "both"):
            ok &= run_config("no engines", "", workdir, args)
        if clamd is not None:
            body = "[policy]\n" + engine_table("clamav", "clamav", address=clamd.address)
            ok &= run_config("clamd", body, workdir, args)
    finally:
        if clamd is not None:
            clamd.stop()
    print("\nOK" if ok else "\nFAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
