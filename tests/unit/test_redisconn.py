"""quorum.redisconn: one `[redis]` connection builder and one "Redis down" policy for every feature.

The policy (RedisHealth): after a failure Redis is left alone for `backoff` seconds, then exactly
one caller probes it; one warning per `warn_interval`, one line when it is back, and every failure
counted in `quorum_redis_failures_total{feature}`. Every feature that talks to Redis uses it.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import pytest
import redis
from prometheus_client import REGISTRY
from redis.sentinel import SentinelConnectionPool
from tests.unit.test_records_writer import settings as records_settings
from tests.unit.test_tenants_effective import FakeStore, redis_policies

from quorum import redisconn
from quorum.backscatter.store import MessageIdStore
from quorum.notify.cap import DailyCap
from quorum.ratelimit.buckets import Charge
from quorum.ratelimit.fallback import LocalBuckets
from quorum.ratelimit.limiter import Limiter
from quorum.ratelimit.settings import Rule
from quorum.records.writer import RecordWriter
from quorum.redisconn import RedisHealth, RedisSettings
from quorum.verdictcache.store import VerdictStore, entry_key

log = logging.getLogger("quorum.test.redisconn")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def failures(feature: str) -> float:
    return REGISTRY.get_sample_value("quorum_redis_failures_total", {"feature": feature}) or 0.0


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


# -- the policy ----------------------------------------------------------------------------------------
def test_backoff_then_one_probe_then_recovery(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    health = RedisHealth("t-probe", log, backoff=2.0, clock=clock)
    assert health.available() and not health.failing
    health.failed(ConnectionError("refused"))
    assert health.failing and not health.available()
    clock.now += 1.9
    assert not health.available()
    clock.now += 0.2
    assert health.available()  # the probe
    assert not health.available()  # everyone else waits for it
    health.ok()
    assert not health.failing and health.available() and health.available()
    assert warnings(caplog) == [
        "t-probe: Redis unavailable (ConnectionError: refused); retrying every 2s",
        "t-probe: Redis reachable again",
    ]
    health.ok()  # healthy: nothing more is logged
    assert len(warnings(caplog)) == 2


def test_one_warning_per_interval_and_the_rest_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, log.name)
    clock = Clock()
    health = RedisHealth("t-warn", log, backoff=1.0, warn_interval=60.0, clock=clock)
    for _ in range(30):  # a 30 s outage, probed every second
        health.failed(TimeoutError("timed out"))
        clock.now += 1.0
    assert len(warnings(caplog)) == 1
    assert sum("still unavailable" in r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG) == 29
    health.ok()
    health.failed(TimeoutError("again"))  # flapping within the interval: no new warning
    assert len(warnings(caplog)) == 2 and "reachable again" in warnings(caplog)[-1]
    clock.now += 60
    health.failed(TimeoutError("later"))
    assert len(warnings(caplog)) == 3 and "later" in warnings(caplog)[-1]
    assert health.failures == 32


def test_failures_are_counted_per_feature() -> None:
    before_a, before_b = failures("t-a"), failures("t-b")
    a, b = RedisHealth("t-a", log), RedisHealth("t-b", log)
    a.failed(OSError("x"))
    a.failed(OSError("x"))
    b.failed(OSError("x"))
    assert failures("t-a") == before_a + 2 and failures("t-b") == before_b + 1


def test_a_template_field_in_the_error_text_is_not_formatted(caplog: pytest.LogCaptureFixture) -> None:
    health = RedisHealth("t-fmt", log, where="Redis single redis://{x}@h", down="{where}: {reason} {backoff:g}s")
    health.failed(ValueError("bad {feature} %s"))
    assert warnings(caplog) == ["Redis single redis://{x}@h: ValueError: bad {feature} %s 1s"]


def test_only_one_of_many_threads_probes() -> None:
    clock = Clock()
    health = RedisHealth("t-threads", log, backoff=1.0, clock=clock)
    health.failed(OSError("down"))
    clock.now += 1.0
    barrier = threading.Barrier(16)
    answers: list[bool] = []

    def probe() -> None:
        barrier.wait()
        answers.append(health.available())

    threads = [threading.Thread(target=probe) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert answers.count(True) == 1


# -- every feature that talks to Redis uses it ---------------------------------------------------------
def broken() -> Any:
    raise ConnectionError("connection refused")


def limiter_fails() -> Any:
    limiter = Limiter(broken, LocalBuckets(), backoff=1.0)
    charge = Charge("sender_domain", "example.com", Rule("messages", 10, 60.0), "t:{example.com}", 1)
    assert limiter.reserve([charge]).source == "local"
    return limiter


def tenants_fail() -> Any:
    store, clock = FakeStore(), Clock()
    store.down = True
    tp = redis_policies(store, clock)
    tp.policy_for("x@a.example")
    return tp


def records_fail() -> Any:
    writer = RecordWriter(records_settings(), broken, start=False)
    writer.write([{"ts": 1.0}])
    return writer


def notify_fails() -> Any:
    cap = DailyCap(5, broken)
    assert cap.allow("a@example.com")
    return cap


def backscatter_fails() -> Any:
    store = MessageIdStore(broken)
    assert store.known(["<a@b>"]) is None
    return store


def verdict_cache_fails() -> Any:
    store = VerdictStore(broken, 60, 10, "t:", entry_key(b"k" * 32))
    assert store.get_many(["a"]) == {}
    return store


@pytest.mark.parametrize(
    ("feature", "fail"),
    [
        ("ratelimit", limiter_fails),
        ("tenants", tenants_fail),
        ("records", records_fail),
        ("notify", notify_fails),
        ("backscatter", backscatter_fails),
        ("verdict_cache", verdict_cache_fails),
    ],
)
def test_every_redis_feature_backs_off_warns_and_counts_alike(
    feature: str, fail: Any, caplog: pytest.LogCaptureFixture
) -> None:
    before = failures(feature)
    with caplog.at_level(logging.WARNING):
        user = fail()
    health = user.health
    assert isinstance(health, RedisHealth) and health.feature == feature
    assert health.failing and not health.available()  # backing off
    assert failures(feature) == before + 1
    assert len(warnings(caplog)) == 1 and "connection refused" in warnings(caplog)[0]


def test_the_verdict_cache_lru_is_bounded_and_entries_expire() -> None:
    clock = Clock()
    store = VerdictStore(None, 60, 3, "t:", clock=clock)
    store.put_many({"a": "clean", "b": "clean", "c": "clean"})
    assert store.get_many(["a"]) == {"a": "clean"}  # a is now the most recently used
    store.put_many({"d": "infected:X"})
    assert store.get_many(["a", "b", "c", "d"]) == {"a": "clean", "c": "clean", "d": "infected:X"}
    clock.now += 61
    assert store.get_many(["a", "c", "d"]) == {}
    assert VerdictStore(None, 60, 0, "t:").get_many([]) == {}  # local_entries = 0: no local cache
    none = VerdictStore(None, 60, 0, "t:")
    none.put_many({"a": "clean"})
    assert none.get_many(["a"]) == {}


# -- connections ---------------------------------------------------------------------------------------
def kwargs(client: Any) -> dict[str, Any]:
    return dict(client.connection_pool.connection_kwargs)


def test_connect_single_unix_and_tls_without_retries(tmp_path: Any) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    single = redisconn.connect(RedisSettings(url="redis://127.0.0.1:1/3", timeout=0.2, connect_timeout=0.1))
    assert isinstance(single, redis.Redis)
    k = kwargs(single)
    assert (k["host"], k["port"], k["db"], k["socket_timeout"], k["socket_connect_timeout"]) == (
        "127.0.0.1",
        1,
        3,
        0.2,
        0.1,
    )
    assert k["retry"]._retries == 0
    unix = redisconn.connect(RedisSettings(url="unix:///run/redis.sock", password="pw"))
    assert unix.connection_pool.connection_class is redis.UnixDomainSocketConnection
    assert kwargs(unix)["path"] == "/run/redis.sock" and kwargs(unix)["password"] == "pw"
    tls = redisconn.connect(RedisSettings(url="rediss://127.0.0.1:1/0", tls_ca_file=str(ca)))
    assert tls.connection_pool.connection_class is redis.SSLConnection
    assert kwargs(tls)["ssl_ca_certs"] == str(ca)


def test_connect_sentinel_master() -> None:
    s = RedisSettings(
        url="redis://quorum@127.0.0.1:1/2", sentinels=(("127.0.0.1", 2),), service_name="m", password="pw"
    )
    client = redisconn.connect(s)
    assert isinstance(client, redis.Redis) and isinstance(client.connection_pool, SentinelConnectionPool)
    k = kwargs(client)
    assert (k["db"], k["username"], k["password"]) == (2, "quorum", "pw")


def test_the_old_import_paths_keep_working() -> None:
    from quorum.ratelimit import settings as old
    from quorum.ratelimit.backend import RedisBackend
    from quorum.ratelimit.connect import connect

    assert old.RedisSettings is RedisSettings
    assert old.parse_redis is redisconn.parse_redis and old.shared_redis is redisconn.shared_redis
    backend = connect(RedisSettings(url="redis://127.0.0.1:1/0"))
    assert isinstance(backend, RedisBackend) and isinstance(backend.client, redis.Redis)  # type: ignore[attr-defined]
