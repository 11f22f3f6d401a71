"""Session records on a real single Redis, Sentinel and Cluster: written by the background writer
(hourly hash-tagged keys on the Cluster, spread over its masters), capped, read back by
`quorum stats` (the real CLI)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.harness.redis_server import RedisAuth, RedisCluster, RedisSentinel, RedisServer

from quorum.assembly import parse_config
from quorum.records import streams
from quorum.records.feature import client_factory
from quorum.records.settings import RecordsSettings
from quorum.records.writer import RecordWriter

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module", params=["single", "sentinel", "cluster"])
def backend(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Any]]:
    workdir = tmp_path_factory.mktemp(f"records-{request.param}")
    if request.param == "single":
        server: Any = RedisServer(workdir, auth=RedisAuth()).start()
        table = {"url": server.url}
    elif request.param == "sentinel":
        server = RedisSentinel(workdir, replica=False, auth=RedisAuth()).start()
        table = {
            "url": server.master.url,  # the master's user and password; its address comes from the sentinels
            "sentinels": [f"{h}:{p}" for h, p in server.sentinels],
            "service_name": server.service_name,
            "sentinel_password": server.auth.password,
        }
    else:
        server = RedisCluster(workdir, auth=RedisAuth()).start()
        table = {"url": server.urls[0], "cluster": True, "cluster_nodes": [f"{h}:{p}" for h, p in server.startup_nodes]}
    try:
        yield request.param, table
    finally:
        server.stop()


def settings_for(table: dict[str, Any], **records: Any) -> RecordsSettings:
    s = parse_config({"redis": table, "records": {"flush_interval": "20ms", **records}}).feature("records")
    assert isinstance(s, RecordsSettings)
    return s


def record(i: int, ts: float, **extra: Any) -> dict[str, Any]:
    verdict = "spam" if i % 3 == 0 else "clean"
    return {
        "v": 1,
        "ts": ts,
        "txn": f"t{i}",
        "verdict": verdict,
        "action": "tag" if verdict == "spam" else "accept",
        "sender_domain": "a.example",
        "recipient_domains": ["b.example"],
        "client_ip": "192.0.2.1",
        "engines": [{"engine": "rspamd", "category": "antispam", "status": verdict, "elapsed_ms": 10.0}],
        **extra,
    }


def test_records_written_in_the_background_are_read_back_by_stats(backend: tuple[str, Any], tmp_path: Path) -> None:
    mode, table = backend
    s = settings_for(table, stream=f"test:{mode}:records", max_len=1000)
    client = client_factory(s)()
    now = time.time()
    hours = [now - 3600 * h for h in (5, 4, 3, 2, 1, 0)]  # six hours: six keys on the Cluster
    writer = RecordWriter(s, client_factory(s))
    n = 0
    for ts in hours:
        for _ in range(20):
            assert writer.submit(record(n, ts))
            n += 1
    deadline = time.monotonic() + 10
    while writer.written < n and time.monotonic() < deadline:
        time.sleep(0.02)
    writer.close()
    assert (writer.written, writer.dropped) == (n, 0)
    back = list(streams.read(client, s, now - 6 * 3600))
    assert sorted(r["txn"] for r in back) == sorted(f"t{i}" for i in range(n))
    assert len(list(streams.read(client, s, now - 2.5 * 3600))) >= 60  # the window limits what is read
    keys = streams.keys_between(s, now - 5 * 3600, now)
    if mode == "cluster":
        assert s.hourly and all("{" in k for k in keys)
        owners = {client.get_node_from_key(k).port for k in keys}
        assert len(owners) >= 2, owners  # the hours spread over the masters
        assert all(0 < client.ttl(k) <= s.retention for k in keys)
    else:
        assert keys == [s.stream]
    config = tmp_path / "quorum.toml"
    config.write_text(_toml(table, s.stream))
    run = subprocess.run(
        [sys.executable, "-m", "quorum", "stats", "-c", str(config), "--since", "7h", "--json"],
        capture_output=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr.decode()
    stats = json.loads(run.stdout)
    assert stats["records"] == n
    assert stats["totals"]["verdict"] == {"clean": 80, "spam": 40}
    assert stats["engines"]["rspamd"]["detections"] == 40
    run = subprocess.run(
        [sys.executable, "-m", "quorum", "stats", "-c", str(config), "--since", "90m", "--domain", "B.example"],
        capture_output=True,
        timeout=60,
    )
    assert run.returncode == 0 and b"40 record(s)" in run.stdout, run.stdout + run.stderr
    client.close()


def test_stream_length_is_capped(backend: tuple[str, Any]) -> None:
    mode, table = backend
    s = settings_for(table, stream=f"test:{mode}:capped", max_len=100, shard="none")
    writer = RecordWriter(s, client_factory(s), start=False)
    for start in range(0, 1000, 100):
        writer.write([record(i, time.time()) for i in range(start, start + 100)])
    client = client_factory(s)()
    length = client.xlen(s.stream)
    client.close()
    assert writer.written == 1000
    assert 100 <= length < 300, length  # MAXLEN ~ trims whole nodes: about max_len, never unbounded


def test_redis_down_drops_and_counts(tmp_path: Path) -> None:
    from tests.harness.ports import free_port

    s = settings_for({"url": f"redis://127.0.0.1:{free_port()}/0", "timeout": "100ms"}, backoff="50ms")
    writer = RecordWriter(s, client_factory(s), warn_interval=3600)
    start = time.monotonic()
    for i in range(50):
        writer.submit(record(i, time.time()))
    assert time.monotonic() - start < 0.05  # submit never waits on Redis
    writer.close(timeout=5)
    assert writer.written == 0 and writer.dropped == 50


def _toml(table: dict[str, Any], stream: str) -> str:
    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return json.dumps(v)

    lines = [
        "[redis]",
        *(f"{k} = {value(v)}" for k, v in table.items()),
        "",
        "[records]",
        f"stream = {json.dumps(stream)}",
    ]
    return "\n".join(lines) + "\n"


def test_stats_reports_redis_unreachable(tmp_path: Path) -> None:
    from tests.harness.ports import free_port

    config = tmp_path / "quorum.toml"
    config.write_text(_toml({"url": f"redis://127.0.0.1:{free_port()}/0"}, "x"))
    run = subprocess.run([sys.executable, "-m", "quorum", "stats", "-c", str(config)], capture_output=True, timeout=60)
    assert run.returncode == 1 and b"error: Redis (single" in run.stderr
