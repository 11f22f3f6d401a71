"""Redis Cluster counting is shared between processes with every redis-py that pyproject allows.

redis-py < 5.3 requires `ChannelPool.get_connection(command_name)`; calling it bare raised a
TypeError that the limiter took for "Redis unavailable", so on a Cluster each process silently
counted on its own. Run this module with the minimum pinned redis-py too (see the README's
"Redis" notes): `pip install 'redis==<minimum>'` in a scratch venv, then pytest this file.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from tests.harness.redis_server import RedisAuth, RedisCluster

from quorum.assembly import parse_config
from quorum.ratelimit.buckets import Charge
from quorum.ratelimit.cluster import ClusterBackend
from quorum.ratelimit.feature import make_limiter
from quorum.ratelimit.limiter import Limiter
from quorum.ratelimit.settings import RateLimitSettings, Rule

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def pinned_minimum() -> tuple[int, ...]:
    import tomllib

    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    [spec] = [d for d in deps if d.startswith("redis")]
    low = spec.split(">=", 1)[1].split(",", 1)[0]
    return tuple(int(p) for p in low.split("."))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    with RedisCluster(tmp_path_factory.mktemp("cluster"), auth=RedisAuth()) as cl:
        yield cl


def settings_for(cl: RedisCluster) -> RateLimitSettings:
    nodes = [f"127.0.0.1:{p}" for _, p in cl.startup_nodes]
    config = parse_config({"redis": {"url": cl.urls[0], "cluster": True, "cluster_nodes": nodes}, "ratelimit": {}})
    s = config.feature("ratelimit")
    assert isinstance(s, RateLimitSettings)
    return s


def charges(domains: list[str], limit: int) -> tuple[Charge, ...]:
    rule = Rule("messages", limit, 3600.0)
    return tuple(Charge("sender_domain", d, rule, f"quorum:rl:test:{{{d}}}", 1) for d in domains)


def test_cluster_counting_is_shared_between_limiters(
    cluster: RedisCluster, caplog: pytest.LogCaptureFixture, record_property: pytest.RecordProperty
) -> None:
    record_property("redis_py", redis.__version__)
    print(f"redis-py {redis.__version__} (pyproject minimum {'.'.join(map(str, pinned_minimum()))})")
    assert tuple(int(p) for p in redis.__version__.split(".")[:2]) >= pinned_minimum()[:2]
    for node in cluster.nodes:
        with node.client() as c:
            c.flushall()
    caplog.set_level(logging.WARNING, "quorum.ratelimit")
    s = settings_for(cluster)
    first: Limiter = make_limiter(s)  # two milter workers (or two hosts) on the same Cluster
    second: Limiter = make_limiter(s)
    # Three domains, so one reservation spans several hash slots (and masters).
    message = charges(["a.example", "b.example", "c.example"], limit=3)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", DeprecationWarning)  # redis-py >= 5.3 warns on a command name
            decisions = [limiter.reserve(message) for limiter in (first, second, first, second)]
        assert [d.admitted for d in decisions] == [True, True, True, False]
        assert {d.source for d in decisions} == {"redis"}
        assert isinstance(first._backend, ClusterBackend)
        assert first.failures == second.failures == 0
        assert not [r for r in caplog.records if r.name == "quorum.ratelimit"], caplog.text
    finally:
        first.close()
        second.close()
