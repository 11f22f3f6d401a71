"""SMTP load generator: N messages over C concurrent sessions, msg/s for acceptance and delivery.

    python bench/smtp_load.py --port 2525 --count 500 --concurrency 10 --size 5000
    python bench/smtp_load.py --postfix --count 500            # own sink + Postfix, no milter
    python bench/smtp_load.py --postfix --milter inet:127.0.0.1:9900

Each connection sends several messages in one session (RSET between) and
reconnects after --per-session messages or any failure. "SMTP" time runs
until the last 250 after DATA; "delivered" time until the sink has them all
(--sink-port starts a sink here, --sink-dir counts another sink's .eml files,
--postfix starts both a sink and a dedicated Postfix). Importable:
`run_load(port, count, concurrency, size, ...) -> dict`.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tests.harness.smtp_client import Reply, Session  # noqa: E402

LINE = "The quick brown fox jumps over the lazy dog, again and again and again.\r\n"


def make_message(run: str, seq: int, size: int) -> bytes:
    """A plain-text message of about `size` bytes with a unique Message-ID."""
    head = (
        f"From: Load <load@bench.example>\r\nTo: Sink <sink@bench.example>\r\n"
        f"Subject: load {run} #{seq}\r\nMessage-ID: <{run}.{seq}@bench.example>\r\n"
        f"Date: Thu, 01 Jan 2026 00:00:00 +0000\r\n\r\n"
    )
    lines = max(1, (size - len(head)) // len(LINE))
    return (head + LINE * lines).encode()


class _Stats:
    """Thread-safe reply counters and the time of the last accepted message."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.codes: Counter[int] = Counter()
        self.last_ok = 0.0

    def record(self, reply: Reply) -> None:
        with self.lock:
            self.codes[reply.code] += 1
            if reply.code == 250:
                self.last_ok = max(self.last_ok, time.monotonic())


def _transaction(sess: Session, sender: str, rcpt: str, raw: bytes) -> Reply:
    for reply in (sess.mail(sender), sess.rcpt(rcpt)):
        if not reply.ok:
            return reply
    return sess.data(raw)


def _open(port: int, host: str, timeout: float) -> Session | None:
    sess = Session(port, host, timeout)
    if sess.banner.code == 220 and sess.ehlo("bench.example").ok:
        return sess
    sess.close()
    return None


def _worker(port: int, host: str, jobs: list[bytes], per_session: int, stats: _Stats, timeout: float) -> None:
    """Send `jobs` over sessions of at most `per_session` messages, RSET in between."""
    sess: Session | None = None
    sent_in_session = 0
    for raw in jobs:
        if sess is None or sent_in_session >= per_session:
            if sess is not None:
                sess.quit()
            sess, sent_in_session = _open(port, host, timeout), 0
        if sess is None:
            stats.record(Reply(0, "connect failed"))
            continue
        reply = _transaction(sess, "load@bench.example", "sink@bench.example", raw)
        stats.record(reply)
        sent_in_session += 1
        if reply.code == 0 or sess.rset().code != 250:
            sess.close()
            sess = None
    if sess is not None:
        sess.quit()


def _wait_delivered(delivered: Callable[[], int], target: int, timeout: float) -> tuple[int, float]:
    """Poll `delivered()` until it reaches `target`; returns (count, monotonic time)."""
    deadline = time.monotonic() + timeout
    count = delivered()
    while count < target and time.monotonic() < deadline:
        time.sleep(0.02)
        count = delivered()
    return count, time.monotonic()


def send_over_sessions(
    port: int,
    messages: list[bytes],
    concurrency: int = 10,
    host: str = "127.0.0.1",
    per_session: int = 25,
    timeout: float = 120.0,
) -> tuple[_Stats, float]:
    """Send `messages` over `concurrency` parallel SMTP sessions (`per_session` messages per
    connection); the reply counts and the seconds from the start to the last 250."""
    shares = [messages[i::concurrency] for i in range(concurrency)]
    stats = _Stats()
    args = [(port, host, share, per_session, stats, timeout) for share in shares if share]
    threads = [threading.Thread(target=_worker, args=a, daemon=True) for a in args]
    start = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return stats, (stats.last_ok or time.monotonic()) - start


def run_load(
    port: int,
    count: int = 500,
    concurrency: int = 10,
    size: int = 5000,
    host: str = "127.0.0.1",
    per_session: int = 25,
    delivered: Callable[[], int] | None = None,
    delivery_timeout: float = 300.0,
    timeout: float = 120.0,
) -> dict[str, Any]:
    """Send `count` messages of ~`size` bytes over `concurrency` sessions; return the measurements.

    `delivered` (optional) returns how many messages the final sink holds; the
    run then also waits for `count` more than at the start.
    """
    run = uuid.uuid4().hex[:12]
    messages = [make_message(run, seq, size) for seq in range(count)]
    baseline = delivered() if delivered else 0
    start = time.monotonic()
    stats, smtp_seconds = send_over_sessions(port, messages, concurrency, host, per_session, timeout)
    accepted = stats.codes[250]
    result: dict[str, Any] = {
        "count": count,
        "concurrency": concurrency,
        "size": len(messages[0]),
        "accepted": accepted,
        "non_250": count - accepted,
        "replies": dict(sorted(stats.codes.items())),
        "smtp_seconds": round(smtp_seconds, 3),
        "smtp_msg_per_s": round(accepted / smtp_seconds, 1) if smtp_seconds > 0 else 0.0,
    }
    if delivered is not None:
        got, end = _wait_delivered(lambda: delivered() - baseline, accepted, delivery_timeout)
        result["delivered"] = got
        result["delivery_seconds"] = round(end - start, 3)
        result["delivered_msg_per_s"] = round(got / (end - start), 1)
    return result


def count_eml(directory: Path) -> Callable[[], int]:
    """A `delivered` callback counting a Sink's NNNNNN.eml files in `directory`."""
    return lambda: sum(1 for _ in directory.glob("*.eml"))


@contextmanager
def _targets(args: argparse.Namespace) -> Iterator[tuple[int, Callable[[], int] | None]]:
    """The SMTP port to load and the delivery counter, starting sink/Postfix as asked."""
    from tests.harness.postfix import PostfixInstance
    from tests.harness.sink import Sink

    with ExitStack() as stack:
        delivered: Callable[[], int] | None = count_eml(Path(args.sink_dir)) if args.sink_dir else None
        port = args.port
        if args.sink_port or args.postfix:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="smtp-load-")))
            sink = stack.enter_context(Sink(work / "sink", port=args.sink_port or None))
            delivered = sink.count
            if args.postfix:
                postfix = stack.enter_context(PostfixInstance(work / "postfix", sink.port, milter=args.milter))
                port = postfix.smtp_port
        if port is None:
            raise SystemExit("--port is required unless --postfix is given")
        yield port, delivered


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, help="SMTP port to load (Postfix's smtpd)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--size", type=int, default=5000, help="approximate message size in bytes")
    parser.add_argument("--per-session", type=int, default=25, help="messages per SMTP connection")
    parser.add_argument("--sink-port", type=int, help="start a sink on this port and wait for delivery to it")
    parser.add_argument("--sink-dir", help="wait until this many more .eml files appear in DIR")
    parser.add_argument("--postfix", action="store_true", help="start a sink and a dedicated Postfix and load it")
    parser.add_argument("--milter", help="with --postfix: milter address, e.g. inet:127.0.0.1:9900")
    parser.add_argument("--delivery-timeout", type=float, default=300.0)
    parser.add_argument("--json", action="store_true", help="print the result as JSON only")
    args = parser.parse_args(argv)
    with _targets(args) as (port, delivered):
        result = run_load(
            port, args.count, args.concurrency, args.size, args.host, args.per_session, delivered, args.delivery_timeout
        )
    if args.json:
        print(json.dumps(result))
    else:
        _report(result)
    return 0 if result["non_250"] == 0 else 1


def _report(result: dict[str, Any]) -> None:
    print(f"{result['count']} messages of {result['size']} bytes over {result['concurrency']} connections")
    print(f"SMTP accepted: {result['accepted']} in {result['smtp_seconds']}s = {result['smtp_msg_per_s']} msg/s")
    print(f"non-250 replies: {result['non_250']} {result['replies']}")
    if "delivered" in result:
        print(
            f"delivered: {result['delivered']} in {result['delivery_seconds']}s = {result['delivered_msg_per_s']} msg/s"
        )


if __name__ == "__main__":
    sys.exit(main())
