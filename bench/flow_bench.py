"""What a concurrency slot costs (issue 20): the flow stage's Redis calls per message against a local
redis-server started here, from one thread and from 10 at once.

    .venv/bin/python bench/flow_bench.py [--messages 5000]

Per message the stage makes one call at MAIL FROM (every sender subject at once), one per new
recipient domain at RCPT, and one when the transaction ends; each is one script round trip.
Prints p50/p90/p99 of each call and of a whole message (MAIL FROM + one RCPT domain + end), in ms.
Numbers only: nothing passes or fails.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "milter")]

from tests.harness.redis_server import RedisAuth, RedisServer  # noqa: E402

from quorum.flow.slots import Slots, Subject  # noqa: E402
from quorum.redisconn import RedisSettings, connect  # noqa: E402


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def run(slots: Slots, n: int, worker: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"take": [], "rcpt": [], "give": [], "message": []}
    for i in range(n):
        slot = f"w{worker}-{i}"
        senders = [Subject("auth_user", f"user{i % 500}@example.com", 10), Subject("client_ip", "198.51.100.7", 100)]
        rcpt = Subject("recipient_domain", f"d{i % 50}.example", 100)
        t0 = time.perf_counter()
        slots.take(slot, senders)
        t1 = time.perf_counter()
        slots.take(slot, [rcpt])
        t2 = time.perf_counter()
        slots.give(slot, [s.key(slots.prefix) for s in [*senders, rcpt]])
        t3 = time.perf_counter()
        out["take"].append((t1 - t0) * 1000)
        out["rcpt"].append((t2 - t1) * 1000)
        out["give"].append((t3 - t2) * 1000)
        out["message"].append((t3 - t0) * 1000)
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=5000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp) / "redis", auth=RedisAuth()).start()
        try:
            settings = RedisSettings(url=server.url)
            for threads in (1, 10):
                pool = [Slots(lambda: connect(settings), "quorum:flow:bench:", 300) for _ in range(threads)]
                run(pool[0], 200, 99)  # warm-up: the script cached, connections open
                each = args.messages // threads
                with ThreadPoolExecutor(threads) as ex:
                    parts = list(ex.map(run, pool, [each] * threads, range(threads)))
                print(f"\n{threads} thread(s), {args.messages} messages (ms)")
                print(f"{'call':<10}{'p50':>8}{'p90':>8}{'p99':>8}{'mean':>8}")
                for name in ("take", "rcpt", "give", "message"):
                    values = [v for p in parts for v in p[name]]
                    print(f"{name:<10}{pct(values, 50):>8.3f}{pct(values, 90):>8.3f}{pct(values, 99):>8.3f}"
                          f"{statistics.fmean(values):>8.3f}")  # fmt: skip
                for s in pool:
                    s.close()
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
