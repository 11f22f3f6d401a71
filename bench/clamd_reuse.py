"""clamd transports: one connection per scan vs a pool of IDSESSION connections (`reuse = true`),
each streaming the message (INSTREAM) or, on the unix socket, passing it as a descriptor (FILDES,
`fdpass`, the default there).

Starts a real clamd from tests/harness/clamd.py (local signatures) unless `--clamd` is given, and
scans the same messages through the ClamAV adapter every way, interleaved in rounds so drift hits
all alike: sequentially (one scan at a time: latency) and from `--threads` threads at once
(throughput). Prints per-scan p50/p99 latency, scans/s and clamd's CPU per scan (from /proc, when
this script started clamd) for each.

    .venv/bin/python bench/clamd_reuse.py [--count 2000] [--threads 8] [--size 5000] [--unix]
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "milter")]

from tests.harness.clamd import Clamd  # noqa: E402

from quorum.config.model import EngineSettings  # noqa: E402
from quorum.engines import ScanCall, build_engine  # noqa: E402
from quorum.engines.clamav import ClamAV  # noqa: E402
from quorum.message import Envelope, Message  # noqa: E402
from quorum.verdict import Status  # noqa: E402


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def make_message(size: int, i: int) -> Message:
    body = (f"message {i} " + "lorem ipsum dolor sit amet " * (size // 27 + 1))[:size]
    raw = f"From: a@example.com\r\nTo: b@example.org\r\nSubject: bench {i}\r\n\r\n{body}\r\n".encode()
    return Message.from_bytes(raw, Envelope())


Mode = tuple[bool, bool]  # (reuse, fdpass)
NAMES = {
    (False, False): "INSTREAM, connection per scan",
    (True, False): "INSTREAM, IDSESSION pool",
    (False, True): "FILDES, connection per scan",
    (True, True): "FILDES, IDSESSION pool",
}


def engine(address: str, mode: Mode, threads: int) -> ClamAV:
    reuse, fdpass = mode
    options = {"address": address, "reuse": reuse, "fdpass": fdpass}
    e = build_engine(EngineSettings("clamav", "clamav", concurrency=threads, options=options))
    assert isinstance(e, ClamAV)
    return e


def cpu_seconds(pid: int | None) -> float:
    if pid is None:
        return float("nan")
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(e: ClamAV, messages: list[Message], threads: int) -> tuple[list[float], float]:
    latencies: list[float] = []
    lock = threading.Lock()

    def one(m: Message) -> None:
        start = time.perf_counter()
        v = e.scan(m, ScanCall(time.monotonic() + 10))
        elapsed = time.perf_counter() - start
        if v.status is not Status.CLEAN:
            raise RuntimeError(f"unexpected verdict {v}")
        with lock:
            latencies.append(elapsed)

    start = time.perf_counter()
    if threads == 1:
        for m in messages:
            one(m)
    else:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(one, messages))
    return latencies, time.perf_counter() - start


def bench(address: str, count: int, threads: int, size: int, rounds: int, clamd_pid: int | None) -> None:
    messages = [make_message(size, i) for i in range(max(1, count // rounds))]
    modes = [m for m in NAMES if not m[1] or address.startswith("/")]  # descriptors: unix socket only
    for label, workers in (("sequential", 1), (f"{threads} threads", threads)):
        results: dict[Mode, tuple[list[float], float, float]] = {
            m: ([], 0.0, 0.0) for m in modes
        }  # latencies, wall s, clamd CPU s
        engines = {m: engine(address, m, workers) for m in modes}
        for e in engines.values():  # warm-up (and open the sessions)
            run(e, messages[: workers * 2], workers)
        for m, e in engines.items():
            if m[1] and not (e.fdpass and e._proven):  # else the FILDES rows would quietly measure INSTREAM
                raise SystemExit(f"{NAMES[m]}: clamd did not take the passed descriptor (see the warning above)")
        for _ in range(rounds):
            for m in modes:
                cpu = cpu_seconds(clamd_pid)
                lat, wall = run(engines[m], messages, workers)
                old = results[m]
                results[m] = (old[0] + lat, old[1] + wall, old[2] + cpu_seconds(clamd_pid) - cpu)
        for e in engines.values():
            e.close()
        print(f"\n{label}: {len(messages) * rounds} scans each, {size} B messages, clamd at {address}")
        print(f"{'mode':<30} {'p50 ms':>8} {'p99 ms':>8} {'mean ms':>8} {'scans/s':>9} {'clamd CPU ms/scan':>18}")
        for m, (lat, wall, cpu) in results.items():
            p50, p99, mean = percentile(lat, 50) * 1e3, percentile(lat, 99) * 1e3, sum(lat) / len(lat) * 1e3
            print(
                f"{NAMES[m]:<30} {p50:8.3f} {p99:8.3f} {mean:8.3f} {len(lat) / wall:9.0f} {cpu / len(lat) * 1e3:18.3f}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clamd", help="address of a running clamd (default: start one)")
    parser.add_argument("--count", type=int, default=2000, help="scans per mode and concurrency")
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--size", type=int, default=5000, help="message body size in bytes")
    parser.add_argument("--rounds", type=int, default=4, help="interleaved rounds per mode")
    parser.add_argument("--unix", action="store_true", help="use the harness clamd's unix socket")
    args = parser.parse_args()
    if args.clamd:
        bench(args.clamd, args.count, args.threads, args.size, args.rounds, None)
        return
    with tempfile.TemporaryDirectory(prefix="clamd-reuse-") as tmp:
        server = Clamd(Path(tmp)).start()
        try:
            address = str(server.socket_path) if args.unix else server.address
            bench(
                address,
                args.count,
                args.threads,
                args.size,
                args.rounds,
                server.service.proc.pid if server.service.proc else None,
            )
        finally:
            server.stop()


if __name__ == "__main__":
    main()
