"""Fault matrix under load: one fault at a time while a clean/virus/spam mix flows through Postfix.

    python bench/faults.py                      # all faults, >= 200 messages each (>= 2,000 in all)
    python bench/faults.py --count 300 --only clamd,worker
    python bench/faults.py --list

Real Postfix, `quorum run` (fail-closed: on_engine_failure = "tempfail"; on_virus and on_spam =
"reject"), clamd, rspamd, spamd, Redis (rate limits on, generous) and NSD, all on loopback and
owned by this run (tests/harness/fault_stack.py). 10 SMTP sessions keep sending; each message has
a unique Message-ID, so the sink's deliveries are matched to the client's replies one by one.
Per fault it prints: sent, delivered, 4xx, 5xx, no reply (connection lost before a reply),
delivered without X-Quorum-Verdict, viruses delivered, duplicates, lost (250 but never delivered),
ghost (refused but delivered), and the time after the fault ended until every message sent got
its healthy outcome again (clean: delivered, verdict not degraded; EICAR/GTUBE: 5xx). Exit status
1 when an invariant was broken (see Row.problems in tests/harness/fault_load.py).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
for path in (REPO_ROOT, REPO_ROOT / "milter"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from tests.harness.fault_load import Row  # noqa: E402
from tests.harness.fault_stack import FaultStack, faults, run_phase, table  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=220, help="messages per fault (at least)")
    parser.add_argument("--sessions", type=int, default=10, help="concurrent SMTP sessions")
    parser.add_argument("--hold", type=float, default=10.0, help="seconds a killed/stopped service stays down")
    parser.add_argument("--stop-hold", type=float, default=20.0, help="seconds clamd stays SIGSTOPped")
    parser.add_argument("--scan-deadline", type=float, default=5.0)
    parser.add_argument("--breaker-cooldown", type=float, default=5.0)
    parser.add_argument("--only", help="comma-separated words; run the faults whose name contains one")
    parser.add_argument("--list", action="store_true", help="list the faults and exit")
    parser.add_argument("--workdir", help="keep logs here (default: a temporary directory)")
    parser.add_argument("--code", help="directory holding the quorum package to run (default: this checkout's milter/)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="quorum-faults-") as tmp:
        workdir = Path(args.workdir or tmp)
        code = Path(args.code) if args.code else REPO_ROOT / "milter"
        stack = FaultStack(workdir, args.scan_deadline, args.breaker_cooldown, code)
        if args.list:
            stack.rspamd = stack.quorum = stack.postfix = None  # type: ignore[assignment]
            for fault in faults(stack, args.hold, args.stop_hold):
                print(fault.name)
            return 0
        started = time.monotonic()
        with stack:
            print(f"stack up in {time.monotonic() - started:.0f}s (logs in {workdir})", flush=True)
            selected = faults(stack, args.hold, args.stop_hold)
            if args.only:
                words = [w.strip().lower() for w in args.only.split(",") if w.strip()]
                selected = [f for f in selected if any(w in f.name.lower() for w in words)]
            rows: list[Row] = []
            for fault in selected:
                row = run_phase(
                    stack, fault, args.count, args.sessions, log=lambda m: print(f"  {m}", file=sys.stderr, flush=True)
                )
                rows.append(row)
                print(row.line() if len(rows) > 1 else f"{Row.HEAD}\n{row.line()}", flush=True)
            tracebacks = stack.quorum.log_text().count("Traceback")
        print()
        print(table(rows))
        print(
            f"\n{sum(r.sent for r in rows)} messages, {args.sessions} sessions, scan_deadline={args.scan_deadline}s, "
            f"breaker_cooldown={args.breaker_cooldown}s, hold={args.hold}s, clamd stop={args.stop_hold}s; "
            f"tracebacks in quorum's log: {tracebacks}; total {time.monotonic() - started:.0f}s"
        )
        problems = [p for r in rows for p in r.problems()]
        for problem in problems:
            print(f"INVARIANT BROKEN: {problem}")
        return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
