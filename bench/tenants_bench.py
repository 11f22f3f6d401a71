"""Tenant lookups against a real redis-server on loopback, with 100,000 domain records.

Fills Redis with `--domains` records (`quorum:tenant:dNNNNN.example`, drawn from 16 realistic
variants: engines lists, per-engine weights, policy keys, reply texts, a keyword rule) and runs
`TenantPolicies.policy_for()` as the milter does at RCPT time. Reports:

- per-lookup cost, p50 / p99 / p99.9 in microseconds, for
  * a cache miss on a domain with a record (one GET, JSON decode, schema validation, merge),
  * a cache miss on a domain without a record (one GET answering nil: the negative entry),
  * a cache hit (no Redis command);
- Redis `used_memory` delta for the records (bytes per domain);
- process RSS growth while the cache holds `--cache` domains (default 100,000: every record).

    .venv/bin/python bench/tenants_bench.py [--domains 100000] [--cache 100000] [--misses 20000] [--cluster]
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "milter")]

import redis  # noqa: E402
from tests.harness.redis_server import RedisAuth, RedisCluster, RedisServer  # noqa: E402

from quorum.assembly import parse_config  # noqa: E402
from quorum.tenants import TenantPolicies, TenantSettings  # noqa: E402
from quorum.tenants.store import encode  # noqa: E402

ENGINES: dict[str, Any] = {
    "clamav": {"type": "clamav", "address": "127.0.0.1:3310"},
    "rspamd": {"type": "rspamd", "url": "http://127.0.0.1:11333"},
    "spamassassin": {"type": "spamassassin", "address": "127.0.0.1:783"},
}
ON_SPAM = ("tag", "quarantine", "reject", "tag")
ENGINE_LISTS = (["clamav", "rspamd"], ["clamav", "rspamd", "spamassassin"])


def record(i: int) -> dict[str, Any]:
    """One of 16 variants; the reply text names the customer, so every record's bytes differ."""
    v = i % 16
    rec: dict[str, Any] = {
        "engines": ENGINE_LISTS[v % 2],
        "policy": {"on_spam": ON_SPAM[(v // 2) % 4], "on_virus": "reject"},
        "replies": {"spam": f"Message refused by the mail policy of customer {i}"},
    }
    if v >= 8:
        rec["engines"] = {"rspamd": {"weight": 1.5, "threshold": 7.0}}
        rec["dmarc_enforce"] = "quarantine"
        rec["rules"] = [{"name": "invoice", "where": "subject", "pattern": "(?i)overdue invoice", "action": "reject"}]
    return rec


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def fill(masters: list[redis.Redis], cluster: Any, count: int) -> None:
    client = cluster if cluster is not None else masters[0]
    batch = 2000
    for start in range(0, count, batch):
        pipe = client.pipeline(transaction=False)
        for i in range(start, min(count, start + batch)):
            pipe.set(f"quorum:tenant:d{i:06d}.example", encode(record(i)))
        pipe.execute()


def used_memory(masters: list[redis.Redis]) -> int:
    return sum(int(c.info("memory")["used_memory"]) for c in masters)


def timed(policies: TenantPolicies, recipients: list[str]) -> list[float]:
    out = []
    clock = time.perf_counter
    for rcpt in recipients:
        t0 = clock()
        policies.policy_for(rcpt)
        out.append((clock() - t0) * 1e6)
    return out


def report(label: str, samples: list[float]) -> None:
    print(
        f"{label:<44} p50 {pct(samples, 50):8.1f} us   p99 {pct(samples, 99):8.1f} us   "
        f"p99.9 {pct(samples, 99.9):8.1f} us   (n={len(samples)})"
    )


def run(mode: str, redis_table: dict[str, Any], masters: list[redis.Redis], cluster: Any, args: Any) -> None:
    for c in masters:
        c.flushall()
    before = used_memory(masters)
    t0 = time.monotonic()
    fill(masters, cluster, args.domains)
    after = used_memory(masters)
    print(f"\n== Redis {mode}: {args.domains} domain records written in {time.monotonic() - t0:.1f}s")
    print(
        f"Redis used_memory delta: {(after - before) / 2**20:.1f} MiB, {(after - before) / args.domains:.0f} B/domain"
    )
    cfg = parse_config(
        {
            "engines": ENGINES,
            "redis": redis_table,
            "tenants": {"store": "redis", "refresh": "1h", "cache_size": args.cache},
            "domains": {"*.example.net": {"policy": {"on_spam": "quarantine"}}},
        }
    )
    settings = cfg.feature("tenants")
    assert isinstance(settings, TenantSettings)
    policies = TenantPolicies(cfg, settings, listen=False)
    policies.policy_for("warm@d000000.example")  # connect (a Cluster reads its slot map)
    misses = [f"user@d{i:06d}.example" for i in range(1, args.misses + 1)]
    report("miss, record (GET + validate + merge)", timed(policies, misses))
    absent = [f"user@none{i:06d}.example" for i in range(args.misses)]
    report("miss, no record (GET nil: negative entry)", timed(policies, absent))
    report("hit (cached record)", timed(policies, misses))
    report("hit (negative entry)", timed(policies, absent))
    policies.close()

    # memory: the cache holding --cache domains with records
    gc.collect()
    base_rss = rss_kib()
    policies = TenantPolicies(cfg, settings, listen=False)
    t0 = time.monotonic()
    for i in range(min(args.cache, args.domains)):
        policies.policy_for(f"user@d{i:06d}.example")
    elapsed = time.monotonic() - t0
    gc.collect()
    grown = rss_kib() - base_rss
    n = policies.cached_domains
    print(f"cache filled with {n} domains in {elapsed:.1f}s ({elapsed / n * 1e6:.0f} us/domain incl. GET)")
    print(f"process RSS growth: {grown / 1024:.1f} MiB ({grown * 1024 / max(n, 1):.0f} B/cached domain)")
    hits = [f"user@d{i:06d}.example" for i in range(0, n, max(1, n // 20000))]
    report(f"hit with {n} domains cached", timed(policies, hits))
    stats = policies.stats
    print(f"Redis GETs: {stats.lookups}, errors: {stats.errors}, invalid records: {stats.invalid}")
    policies.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--domains", type=int, default=100_000)
    parser.add_argument("--cache", type=int, default=100_000)
    parser.add_argument("--misses", type=int, default=20_000)
    parser.add_argument("--cluster", action="store_true", help="also on a 3-master Redis Cluster")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="quorum-tenants-bench-"))
    auth = RedisAuth()  # an ACL user and password, as a deployment should have
    with RedisServer(work / "single", auth=auth) as server:
        run("single", {"url": server.url}, [server.client()], None, args)
    if args.cluster:
        with RedisCluster(work / "cluster", auth=auth) as cl:
            nodes = cl.node_list
            client = cl.client()
            table = {"url": cl.urls[0], "cluster": True, "cluster_nodes": nodes}
            run("cluster (3 masters)", table, [n.client() for n in cl.nodes], client, args)
            client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
