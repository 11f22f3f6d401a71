"""Issue 17 item 8, for the tests themselves: every Redis the tests and benchmarks start requires
an ACL user and password (the `default` user off), so each Redis-backed feature is exercised the
way it must be deployed, and a client or url that forgets the credentials fails loudly (NOAUTH)
instead of passing against an open Redis.

The shared fixtures (`redis_single`, `redis_cluster`) refuse anonymous clients and accept their
own `url`, `client()` and `cli_args()`; and no test, harness or benchmark file constructs a Redis
without `auth=` (only the demo, which runs the embedded default config, stays open).
"""

from __future__ import annotations

import ast
import subprocess
from pathlib import Path

import pytest
import redis
from redis.cluster import ClusterNode
from redis.cluster import RedisCluster as ClusterClient
from redis.exceptions import RedisClusterException
from tests.harness.redis_server import RedisCluster, RedisServer

from quorum.assembly import parse_config
from quorum.ratelimit.connect import connect
from quorum.ratelimit.settings import RateLimitSettings
from quorum.redisconn import RedisSettings

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
CONSTRUCTORS = {"RedisServer", "RedisCluster", "RedisSentinel"}
# The demo runs the embedded default config (redis://127.0.0.1:6379/0): deliberately open, loopback only.
OPEN_ALLOWED = {"tests/harness/demo.py"}


def test_redis_single_refuses_a_client_without_credentials(redis_single: RedisServer) -> None:
    assert redis_single.auth is not None
    with redis.Redis(host="127.0.0.1", port=redis_single.port, socket_timeout=5) as anonymous:
        with pytest.raises(redis.AuthenticationError):
            anonymous.ping()
    with redis.Redis.from_url(redis_single.bare_url, socket_timeout=5) as user_only:
        with pytest.raises(redis.AuthenticationError):
            user_only.ping()
    wrong = redis_single.url.replace(f":{redis_single.auth.password}@", ":not-the-password@")
    with redis.Redis.from_url(wrong, socket_timeout=5) as guessed:
        with pytest.raises(redis.AuthenticationError):
            guessed.ping()
    with redis.Redis.from_url(redis_single.url, socket_timeout=5) as by_url, redis_single.client() as c:
        assert by_url.ping() and c.ping()
        assert c.acl_whoami() in (b"quorum", "quorum")


def test_redis_cli_needs_the_fixture_arguments(redis_single: RedisServer) -> None:
    bare = subprocess.run(
        ["redis-cli", "-h", "127.0.0.1", "-p", str(redis_single.port), "PING"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert "NOAUTH" in bare.stdout + bare.stderr, bare
    done = subprocess.run(
        ["redis-cli", *redis_single.cli_args(), "PING"], capture_output=True, text=True, timeout=30, check=True
    )
    assert done.stdout.strip() == "PONG"


def test_quorum_reaches_the_fixture_only_with_its_credentials(redis_single: RedisServer) -> None:
    """What every feature does (they all connect through `[redis]`): with the fixture's url it
    works; with the url stripped of the password the backend cannot run a command."""

    def settings(url: str) -> RedisSettings:
        s = parse_config({"redis": {"url": url}, "ratelimit": {}}).feature("ratelimit")
        assert isinstance(s, RateLimitSettings)
        return s.redis

    good = connect(settings(redis_single.url)).client  # type: ignore[attr-defined]
    try:
        assert good.ping()
    finally:
        good.close()
    bad = connect(settings(redis_single.bare_url)).client  # type: ignore[attr-defined]
    try:
        with pytest.raises(redis.AuthenticationError):
            bad.ping()
    finally:
        bad.close()


def test_redis_cluster_refuses_a_client_without_credentials(redis_cluster: RedisCluster) -> None:
    assert redis_cluster.auth is not None
    for node in redis_cluster.nodes:
        with redis.Redis(host="127.0.0.1", port=node.port, socket_timeout=5) as anonymous:
            with pytest.raises(redis.AuthenticationError):
                anonymous.ping()
    with pytest.raises(RedisClusterException, match=r"(?i)noauth|authenticat"):
        ClusterClient(startup_nodes=[ClusterNode(h, p) for h, p in redis_cluster.startup_nodes], socket_timeout=5)
    client = redis_cluster.client()
    try:
        client.set("quorum:test:auth", "1")
        assert client.get("quorum:test:auth") == b"1"
        client.delete("quorum:test:auth")
    finally:
        client.close()
    for url in redis_cluster.urls:
        with redis.Redis.from_url(url, socket_timeout=5) as c:
            assert c.ping()


def _open_constructions(path: Path) -> list[str]:
    """`RedisServer(...)`/`RedisCluster(...)`/`RedisSentinel(...)` calls in `path` without `auth=`."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
        if name in CONSTRUCTORS and not any(k.arg == "auth" for k in node.keywords):
            found.append(f"{path.relative_to(REPO)}:{node.lineno}: {name}(...) without auth=")
    return found


def test_no_test_or_benchmark_starts_an_open_redis() -> None:
    files = sorted({*(REPO / "tests").rglob("*.py"), *(REPO / "bench").glob("*.py")})
    assert len(files) > 50
    problems = [p for f in files if str(f.relative_to(REPO)) not in OPEN_ALLOWED for p in _open_constructions(f)]
    assert not problems, "start Redis with auth=RedisAuth() (tests/harness/redis_server.py):\n" + "\n".join(problems)
    # The check itself sees an open construction where there is one.
    assert _open_constructions(REPO / "tests" / "harness" / "demo.py")
