"""Per-message cost of the sender-authentication checks (SPF + DKIM + DMARC) and of a DNSBL lookup.

Starts NSD from tests/harness on loopback with the zones of tests/zones/auth.py, then runs the auth
stage's end-of-data check (what runs in parallel with the engines) on a mix of messages:
DKIM-signed (2048-bit RSA) and aligned, SPF-only, failing, and signed by two domains. Reported
with the resolver cache off (every lookup goes to the DNS server: the first message from a domain)
and on (repeat senders). Message sizes come from bench/corpus.py bodies (2-200 KB).

    .venv/bin/python bench/auth_bench.py [--count 300]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "milter"), str(REPO / "bench")]

from corpus import build_corpus  # noqa: E402
from tests.harness.dns import DnsServer  # noqa: E402
from tests.zones import auth as z  # noqa: E402

from quorum.access.dnsbl import DnsblList, check  # noqa: E402
from quorum.auth.resolver import Resolver  # noqa: E402
from quorum.auth.settings import AuthSettings, DnsSettings  # noqa: E402
from quorum.auth.stage import AuthStage  # noqa: E402
from quorum.message import Envelope, Message  # noqa: E402
from quorum.pipeline.transaction import Connection, Transaction  # noqa: E402


def workload(keys: dict[str, z.DkimKey], count: int) -> list[tuple[bytes, str, str]]:
    """(raw message, client ip, envelope sender)."""
    bodies = [s.raw.split(b"\r\n\r\n", 1)[-1].replace(b"\r\n", b"\n").replace(b"\n", b"\r\n") for s in build_corpus(40)]
    out = []
    for i in range(count):
        body = bodies[i % len(bodies)]
        kind = i % 4
        if kind == 0:  # signed + SPF, aligned: the common legitimate case
            raw = keys["aligned.test"].sign(z.message("news@aligned.test", body=body))
            out.append((raw, z.CLIENT_GOOD, "bounce@bounce.aligned.test"))
        elif kind == 1:  # SPF only
            out.append((z.message("alice@none.test", body=body), z.CLIENT_GOOD, "alice@none.test"))
        elif kind == 2:  # forged: SPF fail, unsigned, p=reject
            out.append((z.message("ceo@reject.test", body=body), z.CLIENT_BAD, "ceo@reject.test"))
        else:  # two signatures (author + ESP)
            raw = keys["thirdparty.test"].sign(keys["dkimonly.test"].sign(z.message("a@dkimonly.test", body=body)))
            out.append((raw, z.CLIENT_BAD, "bounce@thirdparty.test"))
    return out


def run(stage: AuthStage, work: list[tuple[bytes, str, str]]) -> list[float]:
    times = []
    for raw, ip, sender in work:
        env = Envelope(client_ip=ip, helo="mx.client.test", sender=sender, recipients=["u@rcpt.test"])
        msg = Message.from_bytes(raw, env)
        start = time.perf_counter()
        ctx = stage.examine(Transaction(Connection(ip), env), msg, time.monotonic() + 30)
        times.append(time.perf_counter() - start)
        assert ctx.headers and "auth_error" not in ctx.log, ctx.log
    return times


def report(label: str, times: list[float]) -> None:
    ms = sorted(t * 1000 for t in times)
    p95 = ms[int(len(ms) * 0.95) - 1]
    mean, p50 = statistics.mean(ms), statistics.median(ms)
    print(f"{label:<34} n={len(ms):<4} mean {mean:6.2f} ms  p50 {p50:6.2f} ms  p95 {p95:6.2f} ms")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=300)
    args = parser.parse_args()
    keys = z.make_keys()
    work = workload(keys, args.count)
    with tempfile.TemporaryDirectory() as tmp, DnsServer(Path(tmp), z.zones(keys)) as nsd:
        for cache in (0, 10000):
            resolver = Resolver(DnsSettings(nameservers=("127.0.0.1",), port=nsd.port, timeout=2.0, cache_size=cache))
            stage = AuthStage(AuthSettings(), resolver, "mx.bench.test")
            run(stage, work[:8])  # warm up imports and code paths
            resolver.queries = 0
            times = run(stage, work)
            report(f"SPF+DKIM+DMARC, cache {'on ' if cache else 'off'}", times)
            print(f"{'':<34} resolver calls per message (cache hits included): {resolver.queries / len(work):.1f}")
        resolver = Resolver(DnsSettings(nameservers=("127.0.0.1",), port=nsd.port, timeout=2.0, cache_size=0))
        lists = [
            DnsblList(zone="reject.bl.test", action="reject"),
            DnsblList(zone="score.bl.test", action="score", weight=0.5),
        ]
        times = []
        for i in range(args.count):
            ip = z.CLIENT_LISTED if i % 2 else f"198.51.100.{i % 250 + 1}"
            start = time.perf_counter()
            check(resolver, lists, ip, time.monotonic() + 5)
            times.append(time.perf_counter() - start)
        report("DNSBL, 2 lists (per connection)", times)
    return 0


if __name__ == "__main__":
    sys.exit(main())
