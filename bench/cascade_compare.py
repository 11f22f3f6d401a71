"""Full fan-out vs the cost-aware cascade vs cascade + verdict cache, message by message.

    .venv/bin/python bench/cascade_compare.py [--combine any,weighted] [--campaign 30] [--redis] [--json]

Starts its own NSD, clamd (local signatures + a hash signature of the ClamAV test program), rspamd
and spamd (and redis-server with --redis). The labelled corpus (ham/spam/virus) is the one the
`quorum evaluate` integration test builds from material no test wrote. Every message goes through
`Pipeline.check` once per mode (configs differ only in `[policy] cascade` and `[verdict_cache]`);
the engines' costs are measured on warm-up messages first, as a running Quorum's would be.

Printed: a table per combine mode (file, label, each mode's decision, whether SpamAssassin was
asked, the clamav cache result) with totals; then a campaign-like load (the same attachment and
near-identical bodies repeating, once with an infected and once with a clean attachment) with
cache hits and the clamd and SpamAssassin scans each mode made. A benchmark: it prints numbers,
it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "milter")]

from tests.harness.cascade_corpus import (  # noqa: E402
    MODES,
    TESTFILES,
    Row,
    campaign,
    clamd_for_testfiles,
    compare,
    config_text,
    modes,
    table,
    totals,
    warmup_messages,
)
from tests.harness.dns import ENGINE_ZONES, DnsServer  # noqa: E402
from tests.harness.labelled_corpus import build_corpus, messages  # noqa: E402
from tests.harness.redis_server import RedisAuth, RedisServer  # noqa: E402
from tests.harness.rspamd import Rspamd  # noqa: E402
from tests.harness.spamd import Spamd  # noqa: E402


def print_totals(title: str, rows: list[Row], mode_names: list[str]) -> dict[str, Any]:
    t = totals(rows, mode_names)
    print(f"\n{title}: totals")
    for m in mode_names:
        x = t[m]
        print(
            f"  {m:14} identical to full: {x['identical_to_full']}/{x['messages']}  scans {x['scans']}  "
            f"SA asked on ham/spam/virus: {x['sa_asked_by_label']}  clamav cache hits: {x['cache_hits']}"
        )
    full_sa = t["full"]["scans"].get("spamassassin", 0)
    for m in mode_names[1:]:
        sa = t[m]["scans"].get("spamassassin", 0)
        clam = t[m]["scans"].get("clamav", 0)
        print(
            f"  {m}: SpamAssassin scans {sa} of {full_sa} ({full_sa - sa} saved), "
            f"clamd scans {clam} of {t['full']['scans'].get('clamav', 0)}"
        )
    print(
        "  (a cache miss on infected multipart mail costs one more clamd scan per attachment: each is scanned"
        " alone to name the infected one, which is what later messages are answered from)"
    )
    return t


def run_campaign(texts: dict[str, str], combine: str, count: int, work: Path, warm: list[bytes]) -> dict[str, Any]:
    """An outbreak: `count` messages with one infected attachment, `count` with one clean attachment,
    near-identical bodies; every mode gets the same messages in the same order (cache cold at start)."""
    infected = (TESTFILES / "clam.zip").read_bytes()
    clean = random.Random(7).randbytes(150_000)
    load = campaign(count, infected, "invoice.zip", f"virus-{combine}") + campaign(
        count, clean, "invoice.pdf", f"clean-{combine}"
    )
    result: dict[str, Any] = {}
    with modes(texts, work) as built:
        compare([], built, warm)  # costs only
        for name, mode in built.items():
            start = time.monotonic()
            outcomes = [mode.check(raw) for raw in load]
            seconds = time.monotonic() - start
            decided = [str(o.decided) for o in outcomes]
            result[name] = {
                "seconds": round(seconds, 2),
                "clamd_scans": sum(o.scans.get("clamav", 0) for o in outcomes),
                "clamd_bytes": mode.counted.bytes.get("clamav", 0),
                "sa_scans": sum(o.scans.get("spamassassin", 0) for o in outcomes),
                "cache": {c: sum(1 for o in outcomes if o.cache == c) for c in ("miss", "hit", "attachments")},
                "decisions": {d: decided.count(d) for d in sorted(set(decided))},
                "_decided": decided,
            }
    reference = result["full"].pop("_decided")
    for name in MODES[1:]:
        mine = result[name].pop("_decided")
        result[name]["identical_to_full"] = sum(1 for a, b in zip(mine, reference, strict=True) if a == b)
    print(
        f"\n=== campaign load, spam_combine = {combine!r}: {count} x the same infected attachment (clam.zip) "
        f"+ {count} x the same clean 150 KB attachment, near-identical bodies, one message at a time ==="
    )
    for name in MODES:
        r = result[name]
        print(
            f"  {name:14} {len(load)} msgs in {r['seconds']:.2f}s ({len(load) / r['seconds']:.1f} msg/s)  "
            f"clamd scans {r['clamd_scans']} ({r['clamd_bytes'] / 1024:.0f} KiB)  SA scans {r['sa_scans']}  "
            f"clamav cache {r['cache']}"
            + (f"  identical to full {r['identical_to_full']}/{len(load)}" if "identical_to_full" in r else "")
        )
    print(f"  decisions (full): {result['full']['decisions']}")
    f, c = result["full"], result["cascade+cache"]
    print(
        f"  saved by cascade+cache: {f['clamd_scans'] - c['clamd_scans']} clamd scans "
        f"({(f['clamd_bytes'] - c['clamd_bytes']) / 1024:.0f} KiB not sent), "
        f"{f['sa_scans'] - c['sa_scans']} SpamAssassin scans"
    )
    return {"messages": len(load), "modes": result}


def run(args: argparse.Namespace) -> dict[str, Any]:
    report: dict[str, Any] = {"corpus": {}, "campaign": {}}
    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="quorum-cascade-")))
        print("starting nsd, clamd, rspamd, spamd ...", file=sys.stderr, flush=True)
        dns = stack.enter_context(DnsServer(work / "dns", ENGINE_ZONES))
        clamd = stack.enter_context(clamd_for_testfiles(work / "clamd"))
        rspamd = stack.enter_context(Rspamd(work / "rspamd", dns.port))
        spamd = stack.enter_context(Spamd(work / "spamd"))
        redis = stack.enter_context(RedisServer(work / "redis", auth=RedisAuth())) if args.redis else None
        redis_url = redis.url if redis is not None else None

        def cold() -> None:
            """Every section starts with an empty shared cache (each pipeline has its own LRU anyway)."""
            if redis is not None:
                with redis.client() as client:
                    client.flushall()

        build_corpus(work / "corpus")
        samples = messages(work / "corpus")
        warm = warmup_messages()

        for combine in args.combine:
            texts = {
                m: config_text(m, combine, clamd.address, rspamd.url, spamd.address, redis_url=redis_url) for m in MODES
            }
            cold()
            with modes(texts, work) as built:
                rows, costs = compare(samples, built, warm)
                deferred = built["cascade"].deferred()
                # a second pass of the cache mode: what an outbreak of the same corpus costs
                second = [built["cascade+cache"].check(raw) for _, _, raw in samples]
            title = f"spam_combine = {combine!r}"
            print(f"\n=== labelled corpus, {title} ===")
            print(
                "measured cost per scan (median, warm-up): "
                + ", ".join(f"{k} {v * 1000:.1f} ms" for k, v in sorted(costs.items()))
                + f"; cascade defers: {', '.join(deferred) or 'nothing'}"
            )
            print(table(rows, list(MODES)))
            t = print_totals(title, rows, list(MODES))
            same_second = sum(1 for r, o in zip(rows, second, strict=True) if o.decided == r.outcomes["full"].decided)
            hits = sum(1 for o in second if o.cache in ("hit", "attachments"))
            clam2 = sum(o.scans.get("clamav", 0) for o in second)
            print(
                f"  cascade+cache, the corpus again: identical to full {same_second}/{len(rows)}, "
                f"clamav cache hits {hits}, clamd scans {clam2}"
            )
            report["corpus"][combine] = {
                "costs_ms": {k: round(v * 1000, 2) for k, v in costs.items()},
                "deferred": deferred,
                "totals": t,
                "second_pass": {"identical_to_full": same_second, "cache_hits": hits, "clamd_scans": clam2},
                "rows": [
                    {
                        "file": r.name,
                        "label": r.truth,
                        **{m: str(r.outcomes[m].decided) for m in MODES},
                        **{f"sa_asked_{m}": r.outcomes[m].sa_asked for m in MODES},
                    }
                    for r in rows
                ],
            }

        for combine in args.combine:
            texts = {
                m: config_text(m, combine, clamd.address, rspamd.url, spamd.address, redis_url=redis_url) for m in MODES
            }
            cold()
            report["campaign"][combine] = run_campaign(texts, combine, args.campaign, work, warm)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--combine", default="any,weighted", help="comma-separated spam_combine modes")
    parser.add_argument("--campaign", type=int, default=30, help="messages per campaign attachment (default 30)")
    parser.add_argument("--redis", action="store_true", help="the verdict cache in a real redis-server")
    parser.add_argument("--json", action="store_true", help="also print the whole report as JSON")
    args = parser.parse_args(argv)
    args.combine = [c.strip() for c in args.combine.split(",") if c.strip()]
    report = run(args)
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
