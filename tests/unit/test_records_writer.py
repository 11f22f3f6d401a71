"""The records writer: batched pipelined XADDs, never blocking, dropping (and counting) when Redis fails."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from prometheus_client import REGISTRY
from pydantic import TypeAdapter

from quorum.assembly import parse_config
from quorum.records import streams
from quorum.records.feature import TABLES
from quorum.records.settings import RecordsSettings
from quorum.records.writer import RecordWriter


class FakePipe:
    def __init__(self, client: FakeRedis) -> None:
        self.client = client
        self.ops: list[tuple[Any, ...]] = []

    def xadd(self, key: str, fields: dict[str, str], maxlen: int, approximate: bool) -> None:
        self.ops.append(("xadd", key, fields[streams.FIELD], maxlen, approximate))

    def expire(self, key: str, seconds: int) -> None:
        self.ops.append(("expire", key, seconds))

    def execute(self) -> list[Any]:
        if self.client.fail.is_set():
            raise ConnectionError("connection refused")
        self.client.batches.append(self.ops)
        return [b"1-0"] * len(self.ops)


class FakeRedis:
    def __init__(self) -> None:
        self.batches: list[list[tuple[Any, ...]]] = []
        self.fail = threading.Event()
        self.closed = 0

    def pipeline(self, transaction: bool = False) -> FakePipe:
        assert transaction is False
        return FakePipe(self)

    def close(self) -> None:
        self.closed += 1


def dropped(reason: str) -> float:
    return REGISTRY.get_sample_value("quorum_records_dropped_total", {"reason": reason}) or 0.0


def settings(**records: Any) -> RecordsSettings:
    config = parse_config({"redis": {"url": "redis://127.0.0.1:1/0"}, "records": records})
    s = config.feature("records")
    assert isinstance(s, RecordsSettings)
    return s


def test_records_go_out_in_one_pipelined_batch_with_a_capped_length() -> None:
    client = FakeRedis()
    w = RecordWriter(settings(max_len=1000, flush_interval="50ms"), lambda: client)
    for i in range(5):
        assert w.submit({"ts": time.time(), "txn": str(i)})
    w.close()
    ops = [op for batch in client.batches for op in batch]
    assert [op[0] for op in ops] == ["xadd"] * 5
    assert {op[1] for op in ops} == {"quorum:records"}
    assert {(op[3], op[4]) for op in ops} == {(1000, True)}
    assert len(client.batches) == 1 and w.written == 5


def test_hourly_shards_are_hash_tagged_and_expire() -> None:
    client = FakeRedis()
    s = settings(shard="hour", retention="2d")
    w = RecordWriter(s, lambda: client, start=False)
    t = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC
    w.write([{"ts": t}, {"ts": t + 1}, {"ts": t + 3600}])
    [batch] = client.batches
    assert [op[:2] for op in batch] == [
        ("xadd", "quorum:records:{2023111422}"),
        ("expire", "quorum:records:{2023111422}"),
        ("xadd", "quorum:records:{2023111422}"),
        ("xadd", "quorum:records:{2023111423}"),
        ("expire", "quorum:records:{2023111423}"),
    ]
    assert batch[1][2] == 2 * 86400
    assert streams.keys_between(s, t - 7200, t) == [
        "quorum:records:{2023111420}",
        "quorum:records:{2023111421}",
        "quorum:records:{2023111422}",
    ]


def test_cluster_shards_by_hour_unless_told_otherwise() -> None:
    cluster = {"url": "redis://127.0.0.1:7000", "cluster": True}
    s = parse_config({"redis": cluster, "records": {}}).feature("records")
    assert s.hourly
    s = parse_config({"redis": cluster, "records": {"shard": "none"}}).feature("records")
    assert not s.hourly


def test_redis_down_drops_and_counts_then_recovers() -> None:
    client = FakeRedis()
    client.fail.set()
    before = dropped("redis_down")
    w = RecordWriter(settings(backoff="100ms"), lambda: client, start=False, warn_interval=3600)
    w.write([{"ts": 1.0}, {"ts": 2.0}])
    assert w.dropped == 2 and dropped("redis_down") == before + 2 and client.closed == 1
    w.write([{"ts": 3.0}])  # within the back-off: not even tried
    assert w.dropped == 3 and not client.batches
    client.fail.clear()
    time.sleep(0.15)
    w.write([{"ts": 4.0}])
    assert w.written == 1 and len(client.batches) == 1


def test_connect_failure_is_a_drop_not_an_exception() -> None:
    def refuse() -> Any:
        raise OSError("no route")

    w = RecordWriter(settings(), refuse, start=False, warn_interval=3600)
    w.write([{"ts": 1.0}])
    assert w.dropped == 1


def test_a_full_queue_drops_without_blocking() -> None:
    before = dropped("queue_full")
    w = RecordWriter(settings(queue_size=10), FakeRedis, start=False)
    assert all(w.submit({"ts": 1.0}) for _ in range(10))
    start = time.monotonic()
    assert not w.submit({"ts": 1.0})
    assert time.monotonic() - start < 0.05
    assert dropped("queue_full") == before + 1 and w.pending == 10


@pytest.mark.parametrize(
    ("records", "redis", "problem"),
    [
        ({"max_len": 5}, True, "records.max_len: must be at least 100"),
        ({"shard": "day"}, True, "records.shard: must be one of auto | none | hour"),
        ({"stream": "a {b}"}, True, "records.stream: 'a {b}': use a plain key without spaces or braces"),
        ({"retention": "30m"}, True, "records.retention: must be at least 3600.0, got 1800.0"),
        ({"batch": "200"}, True, "records.batch: expected a whole number, got '200'"),
        ({"flush_interval": float("nan")}, True, "records.flush_interval: must be a finite number"),
        ({"bogus": 1}, True, "records.bogus: unknown key"),
        ({"max_lenght": 1}, True, "records.max_lenght: unknown key; did you mean 'max_len'?"),
        ({}, False, "records: records go to a Redis Stream: add [redis]"),
    ],
)
def test_config_problems_name_the_key(records: dict[str, Any], redis: bool, problem: str) -> None:
    from quorum.config import ConfigError

    data: dict[str, Any] = {"records": records}
    if redis:
        data["redis"] = {"url": "redis://127.0.0.1:6379/0"}
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    assert any(p.startswith(problem) for p in info.value.problems), info.value.problems


def test_disabled_records_build_nothing() -> None:
    config = parse_config({"records": {"enabled": False, "max_len": 1000}})
    assert config.feature("records") is None


def test_every_problem_of_the_table_in_one_run() -> None:
    from quorum.config import ConfigError

    with pytest.raises(ConfigError) as info:
        parse_config({"records": {"max_len": 5, "shard": "day", "queue_size": 5}})
    assert sorted(p.split(":")[0] for p in info.value.problems) == [
        "records",  # no [redis]
        "records.max_len",
        "records.queue_size",
        "records.shard",
    ]


@pytest.mark.parametrize("name", sorted(TABLES))
def test_the_tables_have_a_json_schema(name: str) -> None:
    schema = TypeAdapter(TABLES[name]).json_schema()
    assert {"stream", "max_len", "shard", "retention"} <= set(schema["properties"])
