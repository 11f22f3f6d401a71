"""Cost of the rate-limit reservation at DATA, measured on a real redis-server on loopback.

Runs the rate-limit stage's `data()` hook (what the milter thread runs when DATA arrives) for a
typical message: authenticated sender, three recipients in two domains, a client IP; so every
message touches 7 buckets (see LIMITS: sender domain, auth user, client IP, and a messages and a
recipients counter for each of the two recipient domains). Reports:

- Redis commands per message, from Redis's own `INFO commandstats`: commands sent by Quorum
  (must be 1 on a single Redis: one EVALSHA) and, separately, the commands the script runs
  inside Redis (TIME, GET, SET), which Redis also counts there;
- checks/s from one process (1 thread, and N threads sharing the stage as milter threads do);
- added latency per message: p50 / p99 / p99.9 of `data()` (planning + one round trip);
- bytes of Redis memory per active bucket key (`used_memory` delta over many keys, and
  `MEMORY USAGE` of one key).

    .venv/bin/python bench/ratelimit_bench.py [--count 20000] [--threads 16] [--keys 100000] [--cluster] [--sentinel]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "milter")]

import redis  # noqa: E402
from tests.harness.redis_server import RedisAuth, RedisCluster, RedisSentinel, RedisServer  # noqa: E402

from quorum.assembly import parse_config  # noqa: E402
from quorum.message import Envelope  # noqa: E402
from quorum.pipeline.transaction import Connection, Transaction  # noqa: E402
from quorum.ratelimit.feature import build  # noqa: E402
from quorum.ratelimit.limiter import Reservation  # noqa: E402
from quorum.ratelimit.settings import RateLimitSettings  # noqa: E402
from quorum.ratelimit.stage import RateLimitStage  # noqa: E402

LIMITS: dict[str, Any] = {
    "sender_domain": {"messages": 10**9, "per": "1h"},
    "recipient_domain": {"messages": 10**9, "recipients": 10**9, "per": "1h"},
    "client_ip": {"messages": 10**9, "per": "1h"},
    "auth_user": {"recipients": 10**9, "per": "1h"},
}
SCRIPT_INTERNAL = ("time", "get", "set", "del")


def stage_for(redis_table: dict[str, Any], limits: dict[str, Any]) -> RateLimitStage:
    settings = parse_config({"redis": redis_table, "ratelimit": limits}).feature("ratelimit")
    assert isinstance(settings, RateLimitSettings)
    [stage] = build(None, settings)
    return stage


def session(i: int) -> Transaction:
    """Messages from 1000 sender domains / users / IPs to 500 recipient domains."""
    d = i % 1000
    env = Envelope(
        client_ip=f"10.{d // 250}.{d % 250}.{i % 7 + 1}",
        sender=f"user{i % 50}@sender{d}.example",
        recipients=[f"a@rcpt{i % 500}.example", f"b@rcpt{i % 500}.example", f"c@rcpt{(i * 7) % 500}.example"],
        macros={"{auth_authen}": f"user{d}"},
    )
    return Transaction(Connection(env.client_ip), env)


def timed(stage: RateLimitStage, start: int, count: int) -> list[float]:
    out = []
    for i in range(start, start + count):
        s = session(i)
        t0 = time.perf_counter_ns()
        reply = stage.data(s)
        out.append((time.perf_counter_ns() - t0) / 1000)
        reservation = s.results.get(Reservation)
        assert reply is None and reservation is not None and reservation.source == "redis", reply
    return out


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def commandstats(clients: list[redis.Redis]) -> dict[str, int]:
    total: dict[str, int] = {}
    for c in clients:
        for name, stat in c.info("commandstats").items():
            cmd = name.removeprefix("cmdstat_")
            total[cmd] = total.get(cmd, 0) + int(stat["calls"])
    return total


def bench_throughput(
    label: str, redis_table: dict[str, Any], masters: list[redis.Redis], args: argparse.Namespace
) -> None:
    stage = stage_for(redis_table, LIMITS)
    timed(stage, 0, 500)  # connect, load the script, warm caches
    for c in masters:
        c.config_resetstat()
    start = time.perf_counter()
    lat = timed(stage, 1000, args.count)
    elapsed = time.perf_counter() - start
    stats = commandstats(masters)
    stats.pop("config|resetstat", None)
    stats.pop("info", None)
    client = sum(n for cmd, n in stats.items() if cmd not in SCRIPT_INTERNAL)
    inside = {cmd: stats.get(cmd, 0) / args.count for cmd in SCRIPT_INTERNAL if stats.get(cmd)}
    sent = ", ".join(f"{cmd}={n}" for cmd, n in sorted(stats.items()) if cmd not in SCRIPT_INTERNAL)
    buckets = stats.get("get", 0) / args.count
    print(f"\n== {label} ({len(masters)} master(s)), {args.count} messages, {buckets:.2f} buckets each ==")
    print(f"Redis commands per message (INFO commandstats): {client / args.count:.3f}  [{sent}]")
    print("  run inside the script, per message: " + ", ".join(f"{k.upper()} {v:.2f}" for k, v in inside.items()))
    print(f"checks/s, 1 thread:   {args.count / elapsed:,.0f}")
    print(
        f"added latency per message (data() hook): p50 {statistics.median(lat):.0f} us, "
        f"p99 {pct(lat, 99):.0f} us, p99.9 {pct(lat, 99.9):.0f} us, max {max(lat):.0f} us"
    )
    per_thread = max(1, args.count // args.threads)
    workers = [
        threading.Thread(target=timed, args=(stage, 10**6 + t * per_thread, per_thread)) for t in range(args.threads)
    ]
    start = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    print(f"checks/s, {args.threads} threads: {per_thread * args.threads / (time.perf_counter() - start):,.0f}")
    stage.close()


def bench_memory(redis_table: dict[str, Any], masters: list[redis.Redis], keys: int) -> None:
    """One client_ip bucket per message: `keys` distinct live keys created through the real script."""
    for c in masters:
        c.flushall()
    before = sum(int(c.info("memory")["used_memory"]) for c in masters)
    stage = stage_for(redis_table, {"client_ip": {"messages": 10, "per": "1h"}})  # T = 6 min: all keys stay live
    for i in range(keys):
        env = Envelope(client_ip=f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", recipients=["u@x.example"])
        assert stage.data(Transaction(Connection(env.client_ip), env)) is None
    stage.close()
    after = sum(int(c.info("memory")["used_memory"]) for c in masters)
    live = sum(int(c.dbsize()) for c in masters)
    sample = next(k for c in masters for k in c.scan_iter(count=10))
    usage = next(u for c in masters if (u := c.memory_usage(sample)) is not None)
    print(f"\n== memory: {live} active bucket keys ==")
    print(f"bytes of Redis memory per active key: {(after - before) / live:.1f} (used_memory delta)")
    print(f"MEMORY USAGE of one key ({sample.decode()}): {usage} bytes; value = TAT in microseconds, with a TTL")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20000, help="messages per measurement")
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--keys", type=int, default=100_000, help="active keys for the memory measurement")
    parser.add_argument("--cluster", action="store_true", help="also measure a 3-master Redis Cluster")
    parser.add_argument("--sentinel", action="store_true", help="also measure a Sentinel-managed master")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="quorum-rl-bench-"))
    print(f"work dir {work}")
    auth = RedisAuth()  # every Redis here requires an ACL user and password, as a deployment should
    with RedisServer(work / "single", auth=auth) as server:
        masters = [server.client()]
        print(f"Redis {masters[0].info('server')['redis_version']}, redis-py {redis.__version__}")
        bench_throughput("single Redis", {"url": server.url}, masters, args)
        bench_memory({"url": server.url}, masters, args.keys)
    if args.cluster:
        with RedisCluster(work / "cluster", auth=auth) as cl:
            table = {"url": cl.urls[0], "cluster": True}
            bench_throughput("Redis Cluster", table, [n.client() for n in cl.nodes], args)
    if args.sentinel:
        with RedisSentinel(work / "sentinel", auth=auth) as sn:
            table = {
                "url": sn.master.url,  # the master's user and password; its address comes from the sentinels
                "sentinels": [f"{h}:{p}" for h, p in sn.sentinels],
                "service_name": sn.service_name,
                "sentinel_password": auth.password,
            }
            bench_throughput(
                "Sentinel (ping/publish/replconf: the sentinels' and replica's own traffic)",
                table,
                [sn.master.client()],
                args,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
