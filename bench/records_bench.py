"""Session records: what they cost per message, against a real redis-server on loopback.

Reports
- milter-thread cost per message: building the record from the transaction and its outcome and
  queueing it (`RecordsStage.finished`), p50 / p99 in microseconds: this is what an SMTP reply
  can wait on (nothing else of the records does);
- writer throughput: records per second through pipelined XADD MAXLEN ~ (batch 200), single Redis
  and a 3-master Cluster (hourly hash-tagged keys), and the writer thread's CPU per record;
- Redis memory per record in the stream.

    .venv/bin/python bench/records_bench.py [--records 50000]
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "milter")]

from tests.harness.redis_server import RedisAuth, RedisCluster, RedisServer  # noqa: E402

from quorum.assembly import parse_config  # noqa: E402
from quorum.records.feature import client_factory  # noqa: E402
from quorum.records.stage import RecordsStage  # noqa: E402
from quorum.records.writer import RecordWriter  # noqa: E402


def sample() -> tuple[Any, Any]:
    sys.path.insert(0, str(REPO / "tests" / "unit"))
    from test_records_record import outcome, transaction  # the realistic three-engine message

    return transaction(), outcome()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


def milter_cost(settings: Any, n: int) -> None:
    txn, out = sample()
    writer = RecordWriter(settings, lambda: None, start=False)  # nothing drains: measure submit only
    writer._queue.maxsize = n + 1  # noqa: SLF001 - room for every record
    stage = RecordsStage(writer)
    times = []
    for _ in range(n):
        start = time.perf_counter_ns()
        stage.finished(txn, out)
        times.append((time.perf_counter_ns() - start) / 1000)
    print(f"milter thread per message: p50 {percentile(times, 50):.1f} us, p99 {percentile(times, 99):.1f} us")


def throughput(label: str, table: dict[str, Any], n: int, memory: Any = None) -> None:
    settings = parse_config({"redis": table, "records": {"max_len": n * 2}}).feature("records")
    txn, out = sample()
    from quorum.records.record import from_outcome

    records = [from_outcome(txn, out) for _ in range(n)]
    writer = RecordWriter(settings, client_factory(settings), start=False)
    before = memory() if memory else 0
    cpu0 = resource.getrusage(resource.RUSAGE_SELF).ru_utime + resource.getrusage(resource.RUSAGE_SELF).ru_stime
    start = time.perf_counter()
    for i in range(0, n, settings.batch):
        writer.write(records[i : i + settings.batch])
    elapsed = time.perf_counter() - start
    cpu = resource.getrusage(resource.RUSAGE_SELF).ru_utime + resource.getrusage(resource.RUSAGE_SELF).ru_stime - cpu0
    assert writer.written == n, (writer.written, writer.dropped)
    line = f"{label}: {n / elapsed:,.0f} records/s written, writer CPU {1e6 * cpu / n:.1f} us/record"
    if memory:
        line += f", Redis memory {(memory() - before) / n:.0f} bytes/record"
    print(line)
    writer._close_client()  # noqa: SLF001


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=50_000)
    args = parser.parse_args()
    n = args.records
    with tempfile.TemporaryDirectory() as tmp:
        auth = RedisAuth()  # an ACL user and password, as a deployment should have
        with RedisServer(Path(tmp) / "single", auth=auth) as server:
            table = {"url": server.url}
            milter_cost(parse_config({"redis": table, "records": {}}).feature("records"), n)

            def used() -> int:
                with server.client() as c:
                    return int(c.info("memory")["used_memory"])

            throughput("single Redis", table, n, used)
        with RedisCluster(Path(tmp) / "cluster", auth=auth) as cluster:
            throughput("Redis Cluster (hourly keys)", {"url": cluster.urls[0], "cluster": True}, n)


if __name__ == "__main__":
    main()
