"""Peak memory of `quorum run` while large messages pass through Postfix and the engines concurrently.

    .venv/bin/python bench/memory.py [--messages 20] [--concurrency N] [--size 20M] [--engines clamav|all] [--json]
    .venv/bin/python bench/memory.py --messages 50 --size 25M --engines all      # issue 13's target

Starts its own clamd, sink, Postfix and Quorum (tests/harness); with `--engines all` also NSD,
rspamd and spamd, all three engines voting. Limits are raised to fit the messages: Postfix
`message_size_limit`, Quorum `max_message_size` and each engine's `max_size`, and clamd's
StreamMaxLength/MaxFileSize/MaxScanSize when the messages would exceed them (SpamAssassin's
`max_size` is `--sa-max-size`, by default the message size too: every engine gets every message).
Concurrency defaults to the number of messages: all of them in flight at once.
Peak RSS is the kernel's high-water mark (VmHWM in /proc/PID/status) of the supervisor and
of the milter worker process, read once before the load (idle) and after it; the target of
issue 13 is their sum under 300 MB for 50 concurrent 25 MB messages with all engines.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import threading
from collections import Counter
from contextlib import ExitStack
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "bench")]

from smtp_load import run_load  # noqa: E402
from tests.harness.clamd import Clamd  # noqa: E402
from tests.harness.dns import ENGINE_ZONES, DnsServer  # noqa: E402
from tests.harness.postfix import PostfixInstance  # noqa: E402
from tests.harness.quorum import QuorumProcess, engine_table  # noqa: E402
from tests.harness.rspamd import Rspamd  # noqa: E402
from tests.harness.sink import Sink  # noqa: E402
from tests.harness.spamd import Spamd  # noqa: E402

MB = 1024 * 1024


class BigClamd(Clamd):
    """The harness clamd with its stream/file/scan size limits raised to `limit_mb`."""

    def __init__(self, workdir: Path, limit_mb: int) -> None:
        super().__init__(workdir)
        self.limit_mb = limit_mb

    def _write_config(self) -> Path:
        conf = super()._write_config()
        text = conf.read_text()
        for key in ("StreamMaxLength", "MaxFileSize"):
            text = re.sub(rf"(?m)^{key} .*$", f"{key} {self.limit_mb}M", text)
        text = re.sub(r"(?m)^MaxScanSize .*$", f"MaxScanSize {max(100, 4 * self.limit_mb)}M", text)
        conf.write_text(text)
        return conf


def status_kb(pid: int, field: str) -> int:
    """A `kB` field of /proc/PID/status (VmHWM, VmRSS), 0 once the process is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    match = re.search(rf"^{field}:\s+(\d+) kB", status, re.M)
    return int(match.group(1)) if match else 0


def parse_size(text: str) -> int:
    """`25M`, `512K`, `1G` or bytes."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([KMG]?)i?B?", text.strip(), re.I)
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r}: use a size like 25M, 512K or 1000000")
    return int(float(match.group(1)) * {"": 1, "K": 1024, "M": MB, "G": 1024 * MB}[match.group(2).upper()])


def run(args: argparse.Namespace) -> dict[str, Any]:
    size = args.size
    limit_mb = int(size * 1.5 / MB) + 1  # headroom for Received:/our headers and the envelope
    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="quorum-memory-")))
        clamd = stack.enter_context(BigClamd(work / "clamd", limit_mb))
        sink = stack.enter_context(Sink(work / "sink"))
        postfix = stack.enter_context(PostfixInstance(work / "postfix", sink.port, milter=None))
        postfix.set_main({"message_size_limit": str((limit_mb + 1) * MB)})
        body = '[policy]\non_virus = "reject"\non_engine_failure = "tempfail"\n\n' + engine_table(
            "clamav", "clamav", address=clamd.address, max_size=f"{limit_mb}M", timeout="120s"
        )
        if args.engines == "all":
            dns = stack.enter_context(DnsServer(work / "dns", ENGINE_ZONES))
            rspamd = stack.enter_context(Rspamd(work / "rspamd", dns.port))
            spamd = stack.enter_context(Spamd(work / "spamd"))
            sa_max = args.sa_max_size if args.sa_max_size is not None else limit_mb * MB
            body += engine_table("rspamd", "rspamd", url=rspamd.url, max_size=f"{limit_mb}M", timeout="170s")
            body += engine_table("spamassassin", "spamassassin", address=spamd.address, max_size=sa_max, timeout="170s")
        if args.auth:  # DKIM verification on (SPF/DMARC off: no DNS needed); unsigned mail, as the load sends
            body += "\n[auth]\nspf = false\ndmarc = false\ndkim = true\n"
        extra = f'max_message_size = "{limit_mb}M"\nscan_deadline = "180s"\n'
        proc = stack.enter_context(QuorumProcess(work / "quorum", body, milter_extra=extra))
        postfix.set_milter(proc.postfix_address)
        supervisor = proc.pid
        assert supervisor is not None
        (worker,) = proc.worker_pids()

        warm = run_load(postfix.smtp_port, 1, 1, MB, delivered=sink.count, timeout=600)
        sink.clear()
        idle = {"supervisor": status_kb(supervisor, "VmHWM"), "worker": status_kb(worker, "VmHWM")}

        sampled = [0]
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(0.05):
                sampled[0] = max(sampled[0], status_kb(worker, "VmRSS"))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        load = run_load(
            postfix.smtp_port,
            args.messages,
            args.concurrency or args.messages,
            size,
            per_session=1,
            delivered=sink.count,
            delivery_timeout=600,
            timeout=600,
        )
        stop.set()
        sampler.join()
        peak = {"supervisor": status_kb(supervisor, "VmHWM"), "worker": status_kb(worker, "VmHWM")}
        delivered_messages = sink.messages()
        if load["replies"].get(250, 0) < args.messages:
            print("quorum log (tail), not every message was accepted:", file=sys.stderr)
            print(proc.log_text()[-4000:], file=sys.stderr)
        verdicts = dict(Counter(m.header("X-Quorum-Verdict") or "-" for m in delivered_messages).most_common())
        engines = dict(
            Counter(_engine_labels(m.header("X-Quorum-Engines") or "-") for m in delivered_messages).most_common()
        )
        smtp_seconds = load["smtp_seconds"]
        return {
            "count": args.messages,
            "concurrency": args.concurrency or args.messages,
            "engines": args.engines + (" + [auth] dkim" if args.auth else ""),
            "message_bytes": load["size"],
            "warmup_reply": warm["replies"],
            "replies": load["replies"],
            "delivered": load.get("delivered", 0),
            "x_quorum_verdict": verdicts,
            "x_quorum_engines": engines,
            "smtp_seconds": smtp_seconds,
            "smtp_msg_per_s": load["smtp_msg_per_s"],
            "delivered_msg_per_s": load.get("delivered_msg_per_s", 0.0),
            "mb_per_s": round(load["accepted"] * load["size"] / MB / smtp_seconds, 1) if smtp_seconds else 0.0,
            "idle_hwm_mb": {k: round(v / 1024, 1) for k, v in idle.items()},
            "peak_hwm_mb": {k: round(v / 1024, 1) for k, v in peak.items()},
            "peak_hwm_total_mb": round(sum(peak.values()) / 1024, 1),
            "worker_rss_sampled_max_mb": round(sampled[0] / 1024, 1),
        }


def _engine_labels(value: str) -> str:
    """`clamav=clean, rspamd=clean(1.20/15.00)` without the scores: one entry per kind of outcome."""
    return re.sub(r"\(-?[\d.]+/[\d.]+[^)]*\)", "", value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", "--count", dest="messages", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=0, help="SMTP sessions at once (default: --messages)")
    parser.add_argument("--size", type=parse_size, default=20 * MB, help="message size, e.g. 25M (default 20M)")
    parser.add_argument("--size-mb", type=int, help="message size in MiB (old spelling of --size)")
    parser.add_argument("--engines", choices=("clamav", "all"), default="clamav")
    parser.add_argument("--sa-max-size", type=parse_size, help="SpamAssassin's max_size (default: fits the messages)")
    parser.add_argument("--auth", action="store_true", help="also [auth] with DKIM verification on (up to 5M)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.size_mb is not None:
        args.size = args.size_mb * MB
    r = run(args)
    if args.json:
        print(json.dumps(r, indent=2))
        return 0
    print(f"{r['count']} messages of {r['message_bytes'] / MB:.1f} MiB, {r['concurrency']} concurrent SMTP sessions")
    print(f"engines: {r['engines']}")
    print(f"replies: {r['replies']}  delivered: {r['delivered']}  X-Quorum-Verdict: {r['x_quorum_verdict']}")
    print("X-Quorum-Engines of the delivered messages (count):")
    for value, n in r["x_quorum_engines"].items():
        print(f"  {n:4}  {value}")
    print(
        f"throughput: {r['smtp_msg_per_s']} msg/s accepted ({r['mb_per_s']} MiB/s), "
        f"{r['delivered_msg_per_s']} msg/s delivered"
    )
    print(f"idle VmHWM:  supervisor {r['idle_hwm_mb']['supervisor']} MB, worker {r['idle_hwm_mb']['worker']} MB")
    print(
        f"peak VmHWM:  supervisor {r['peak_hwm_mb']['supervisor']} MB, worker {r['peak_hwm_mb']['worker']} MB, "
        f"total {r['peak_hwm_total_mb']} MB (worker VmRSS sampled max {r['worker_rss_sampled_max_mb']} MB)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
