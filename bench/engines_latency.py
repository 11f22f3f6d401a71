"""Per-message scan latency with each engine alone and with clamav + rspamd + spamassassin together.

The pipeline fans out to all engines in parallel, so all three together should cost about as
much as the slowest engine alone: the acceptance is all-three p50 <= 1.2 x slowest single p50.

Starts clamd, rspamd (+ NSD for its DNS) and spamd from tests/harness in a temporary directory
unless addresses are given. Messages come from bench/corpus.py (deterministic) and are sent one
at a time; configurations are interleaved per message so drift affects them all alike.

    .venv/bin/python bench/engines_latency.py [--count 120] [--direct]
    .venv/bin/python bench/engines_latency.py --clamd 127.0.0.1:3310 --rspamd http://127.0.0.1:11333 \\
        --spamd 127.0.0.1:783
"""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "milter"), str(REPO / "bench")]

from corpus import Sample, build_corpus  # noqa: E402

from quorum.assembly import build_pipeline, parse_config  # noqa: E402
from quorum.engines import Engine, ScanCall, build_engine  # noqa: E402
from quorum.message import Envelope, Message  # noqa: E402
from quorum.pipeline.transaction import Connection, Transaction  # noqa: E402
from quorum.verdict import Status  # noqa: E402

SINGLES = ("clamav", "rspamd", "spamassassin")
ACCEPTANCE = 1.20


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def envelope(sample: Sample) -> Envelope:
    return Envelope(
        client_ip="192.0.2.1",
        client_name="mail.example.com",
        helo="mail.example.com",
        sender=sample.sender,
        recipients=[sample.recipient],
        macros={"i": sample.name.replace("-", "")[:12].upper()},
    )


def engine_tables(addresses: dict[str, str], timeout: float) -> dict[str, dict[str, Any]]:
    return {
        "clamav": {"type": "clamav", "address": addresses["clamav"], "timeout": timeout},
        "rspamd": {"type": "rspamd", "url": addresses["rspamd"], "timeout": timeout},
        "spamassassin": {"type": "spamassassin", "address": addresses["spamassassin"], "timeout": timeout},
    }


# --- the two ways to scan one message ---------------------------------------------------------

Scanner = Callable[[Sample], str]


def pipeline_scanner(
    tables: dict[str, dict[str, Any]], names: tuple[str, ...], deadline: float, pool: ThreadPoolExecutor
) -> tuple[Scanner, Callable[[], None]]:
    config = parse_config(
        {
            "milter": {"scan_deadline": deadline},
            "policy": {"on_virus": "reject", "on_spam": "tag", "spam_combine": "any"},
            "engines": {n: tables[n] for n in names},
        }
    )
    pipeline = build_pipeline(config)

    def scan(sample: Sample) -> str:
        message = Message.from_bytes(sample.raw, envelope(sample))
        try:
            env = message.envelope
            result = pipeline.check(Transaction(Connection(env.client_ip), env), message)
        finally:
            message.close()
        errors = [v.engine for v in result.decision.verdicts if v.status is Status.ERROR]
        return result.decision.label + (f" (error: {','.join(errors)})" if errors else "")

    return scan, pipeline.close


def direct_scanner(
    tables: dict[str, dict[str, Any]], names: tuple[str, ...], deadline: float, pool: ThreadPoolExecutor
) -> tuple[Scanner, Callable[[], None]]:
    """The adapters without the pipeline: a plain parallel fan-out, every engine to the end."""
    config = parse_config({"engines": {n: tables[n] for n in names}})
    engines: list[Engine] = [build_engine(s) for s in config.engines]

    def scan(sample: Sample) -> str:
        message = Message.from_bytes(sample.raw, envelope(sample))
        call = ScanCall(time.monotonic() + deadline)
        try:
            futures = [pool.submit(e.scan, message, call) for e in engines]
            wait(futures)
        finally:
            message.close()
        labels = []
        for f in futures:
            exc = f.exception()
            labels.append(f"error({exc})" if exc else str(f.result().status))
        return ",".join(labels)

    def close() -> None:
        for e in engines:
            e.close()

    return scan, close


# --- services ---------------------------------------------------------------------------------


def start_services(stack: contextlib.ExitStack, addresses: dict[str, str | None]) -> dict[str, str]:
    from tests.harness.clamd import Clamd
    from tests.harness.dns import ENGINE_ZONES, DnsServer
    from tests.harness.rspamd import Rspamd
    from tests.harness.spamd import Spamd

    work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="quorum-bench-")))
    out: dict[str, str] = {}
    if addresses["clamav"] is None:
        print("starting clamd ...", flush=True)
        clamd = stack.enter_context(Clamd(work / "clamd"))
        out["clamav"] = clamd.address
    if addresses["rspamd"] is None:
        print("starting nsd + rspamd ...", flush=True)
        dns = stack.enter_context(DnsServer(work / "dns", ENGINE_ZONES))
        rspamd = stack.enter_context(Rspamd(work / "rspamd", dns.port))
        out["rspamd"] = rspamd.url
    if addresses["spamassassin"] is None:
        print("starting spamd ...", flush=True)
        spamd = stack.enter_context(Spamd(work / "spamd"))
        out["spamassassin"] = spamd.address
    return {name: out.get(name) or str(addresses[name]) for name in SINGLES}


# --- main -------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clamd", help="clamd host:port or socket path (default: start one)")
    parser.add_argument("--rspamd", help="rspamd normal worker URL (default: start one)")
    parser.add_argument("--spamd", help="spamd host:port or socket path (default: start one)")
    parser.add_argument("--count", type=int, default=120, help="messages per configuration (default 120)")
    parser.add_argument("--warmup", type=int, default=6, help="unmeasured messages first (default 6)")
    parser.add_argument("--deadline", type=float, default=30.0, help="scan deadline, seconds")
    parser.add_argument("--direct", action="store_true", help="call the adapters directly, without the pipeline")
    parser.add_argument("--seed", type=int, default=20240301)
    args = parser.parse_args()

    corpus = build_corpus(args.count + args.warmup, args.seed)
    sizes = [s.size for s in corpus]
    print(
        f"corpus: {len(corpus)} messages ({Counter(s.kind for s in corpus)}), "
        f"{min(sizes) // 1000}-{max(sizes) // 1000} KB, median {percentile(sizes, 50) // 1000} KB"
    )
    configs: dict[str, tuple[str, ...]] = {name: (name,) for name in SINGLES}
    configs["all three"] = SINGLES
    make = direct_scanner if args.direct else pipeline_scanner

    with contextlib.ExitStack() as stack:
        given = {"clamav": args.clamd, "rspamd": args.rspamd, "spamassassin": args.spamd}
        addresses = start_services(stack, given)
        print("engines:", ", ".join(f"{k}={v}" for k, v in addresses.items()))
        tables = engine_tables(addresses, timeout=min(20.0, args.deadline))
        pool = stack.enter_context(ThreadPoolExecutor(32, thread_name_prefix="bench"))
        scanners: dict[str, Scanner] = {}
        for name, names in configs.items():
            scan, close = make(tables, names, args.deadline, pool)
            stack.callback(close)
            scanners[name] = scan
        latencies: dict[str, list[float]] = {name: [] for name in configs}
        labels: dict[str, dict[str, Counter[str]]] = {name: {} for name in configs}
        order = list(scanners)
        for i, sample in enumerate(corpus):
            # Interleaved, in rotating order: drift and load from other processes hit every
            # configuration alike, and no configuration always runs right after another.
            shift = i % len(order)
            for name in order[shift:] + order[:shift]:
                start = time.perf_counter()
                label = scanners[name](sample)
                elapsed = time.perf_counter() - start
                if i >= args.warmup:
                    latencies[name].append(elapsed)
                    labels[name].setdefault(sample.kind, Counter())[label] += 1

    mode = "adapters directly" if args.direct else "pipeline"
    print(f"\nper-message latency, {args.count} messages, one at a time, via the {mode} (ms)")
    print(f"{'configuration':<14} {'p50':>8} {'p90':>8} {'p99':>8} {'mean':>8} {'max':>8}  results by kind")
    for name, values in latencies.items():
        ms = [v * 1000 for v in values]
        results = "; ".join(f"{kind}: {dict(c)}" for kind, c in sorted(labels[name].items()))
        print(
            f"{name:<14} {percentile(ms, 50):8.1f} {percentile(ms, 90):8.1f} {percentile(ms, 99):8.1f} "
            f"{sum(ms) / len(ms):8.1f} {max(ms):8.1f}  {results}"
        )
    slowest = max(SINGLES, key=lambda n: percentile(latencies[n], 50))
    ratio = percentile(latencies["all three"], 50) / percentile(latencies[slowest], 50)
    verdict = "PASS" if ratio <= ACCEPTANCE else "FAIL"
    paired = [latencies["all three"][i] / max(latencies[n][i] for n in SINGLES) for i in range(len(latencies[slowest]))]
    print(f"\nall-three p50 / slowest single p50 ({slowest}) = {ratio:.3f} (acceptance <= {ACCEPTANCE:.2f}: {verdict})")
    print(
        f"per message, all-three / slowest single for that message: p50 {percentile(paired, 50):.3f}, "
        f"p90 {percentile(paired, 90):.3f}"
    )
    return 0 if ratio <= ACCEPTANCE else 1


if __name__ == "__main__":
    sys.exit(main())
