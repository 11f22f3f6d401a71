"""SMTP throughput through a real Postfix: no milter, then Quorum (ClamAV) over a unix socket and TCP.

    .venv/bin/python bench/throughput.py [--count 500] [--concurrency 10] [--size 5000] [--json]

Starts its own clamd, sink, Postfix and `quorum run` (tests/harness) in a temporary directory.
Each configuration gets a short warm-up first; then `count` messages of ~`size` bytes go out over
`concurrency` SMTP sessions (bench/smtp_load.py). Prints msg/s for SMTP acceptance (last 250 after
DATA) and for delivery (the sink holds them all). Numbers only, no pass/fail.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "bench")]

from smtp_load import run_load  # noqa: E402
from tests.harness.clamd import Clamd  # noqa: E402
from tests.harness.postfix import PostfixInstance  # noqa: E402
from tests.harness.quorum import QuorumProcess, engine_table  # noqa: E402
from tests.harness.sink import Sink  # noqa: E402

WARMUP = 20


def quorum_body(clamd: Clamd) -> str:
    return '[policy]\non_virus = "reject"\non_engine_failure = "tempfail"\n\n' + engine_table(
        "clamav", "clamav", address=clamd.address
    )


@contextmanager
def quorum(work: Path, clamd: Clamd, transport: str, body: str | None = None) -> Iterator[QuorumProcess]:
    # A unix socket must be reachable by smtpd (user postfix): group postfix, as an operator sets it.
    extra = 'socket_group = "postfix"\n' if transport == "unix" else ""
    proc = QuorumProcess(
        work / f"quorum-{transport}-{body is not None}",
        quorum_body(clamd) if body is None else body,
        unix=transport == "unix",
        milter_extra=extra,
    )
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


def measure(port: int, sink: Sink, args: argparse.Namespace) -> dict[str, Any]:
    run_load(port, WARMUP, min(args.concurrency, WARMUP), args.size, delivered=sink.count)
    sink.clear()
    result = run_load(port, args.count, args.concurrency, args.size, per_session=args.per_session, delivered=sink.count)
    verdicts: dict[str, int] = {}
    for msg in sink.messages():
        value = msg.header("X-Quorum-Verdict") or "-"
        verdicts[value] = verdicts.get(value, 0) + 1
    result["x_quorum_verdict"] = verdicts
    sink.clear()
    return result


def run(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    results: dict[str, dict[str, Any]] = {}
    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="quorum-throughput-")))
        work.chmod(0o755)  # smtpd (user postfix) must reach the milter's unix socket below
        clamd = stack.enter_context(Clamd(work / "clamd"))
        sink = stack.enter_context(Sink(work / "sink"))
        postfix = stack.enter_context(PostfixInstance(work / "postfix", sink.port, milter=None))
        results["postfix, no milter"] = measure(postfix.smtp_port, sink, args)
        for transport in ("unix", "tcp"):
            with quorum(work, clamd, transport) as proc:
                postfix.set_milter(proc.postfix_address)
                results[f"quorum + clamav, {transport}"] = measure(postfix.smtp_port, sink, args)
            postfix.set_milter(None)
        # The milter's own cost: the same pipeline with no engine configured.
        with quorum(work, clamd, "tcp", body="") as proc:
            postfix.set_milter(proc.postfix_address)
            results["quorum, no engine, tcp"] = measure(postfix.smtp_port, sink, args)
        postfix.set_milter(None)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--size", type=int, default=5000, help="approximate message size in bytes")
    parser.add_argument("--per-session", type=int, default=25, help="messages per SMTP connection")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    results = run(args)
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    first = next(iter(results.values()))
    print(f"{args.count} messages of {first['size']} bytes, {args.concurrency} concurrent SMTP sessions")
    print(f"{'configuration':<26} {'SMTP msg/s':>10} {'delivered msg/s':>16} {'non-250':>8}  X-Quorum-Verdict")
    for name, r in results.items():
        print(
            f"{name:<26} {r['smtp_msg_per_s']:>10.1f} {r['delivered_msg_per_s']:>16.1f} {r['non_250']:>8}  "
            f"{r['x_quorum_verdict']}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
