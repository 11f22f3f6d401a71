"""Rate limits against real Redis: a single server, a 3-master Cluster and a Sentinel setup, each
with an ACL user and password (the `default` user off), and once more over TLS.

Library level (no Postfix): the stage and limiter as the milter uses them, the script's
arithmetic against the reference model, concurrency across threads and processes, faults.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import textwrap
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from tests.harness.redis_server import RedisAuth, RedisCluster, RedisSentinel, RedisServer, make_tls
from tests.unit.test_ratelimit_gcra import Clock, Spec, replay, scenarios

from quorum.assembly import parse_config
from quorum.cli import main as quorum_main
from quorum.message import Envelope
from quorum.pipeline.stages import Action, Outcome
from quorum.pipeline.transaction import Connection, Transaction
from quorum.ratelimit.buckets import Planner
from quorum.ratelimit.cli import usage
from quorum.ratelimit.cluster import ClusterBackend
from quorum.ratelimit.connect import connect
from quorum.ratelimit.feature import build, make_limiter
from quorum.ratelimit.limiter import Reservation
from quorum.ratelimit.settings import RateLimitSettings
from quorum.ratelimit.stage import RateLimitStage

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
AUTH = RedisAuth()  # every Redis of this module requires it


@dataclass
class Deployment:
    mode: str
    redis_table: dict[str, Any]
    masters: Callable[[], list[redis.Redis]]  # direct clients to the current master(s)

    def flush(self) -> None:
        for c in self.masters():
            with c:
                c.flushall()

    def config(self, ratelimit: dict[str, Any]) -> dict[str, Any]:
        return {"redis": dict(self.redis_table), "ratelimit": ratelimit}

    def settings(self, ratelimit: dict[str, Any]) -> RateLimitSettings:
        s = parse_config(self.config(ratelimit)).feature("ratelimit")
        assert isinstance(s, RateLimitSettings)
        return s

    def owner(self, key: str) -> redis.Redis:
        """The master that holds `key` (on a Cluster the others answer MOVED)."""
        for c in self.masters():
            try:
                if c.exists(key):
                    return c
            except redis.ResponseError:
                pass
        raise AssertionError(f"no master holds {key}")

    def all_keys(self) -> dict[int, list[bytes]]:
        out = {}
        for c in self.masters():
            with c:
                out[int(c.connection_pool.connection_kwargs["port"])] = sorted(
                    k if isinstance(k, bytes) else k.encode() for k in c.keys("*")
                )
        return out


def single(server: RedisServer) -> Deployment:
    return Deployment("single", {"url": server.url}, lambda: [server.client()])


def cluster(cl: RedisCluster) -> Deployment:
    def masters() -> list[redis.Redis]:
        return [n.client() for n in cl.nodes if n.service.running]

    return Deployment(
        "cluster",
        {"url": cl.urls[0], "cluster": True, "cluster_nodes": [f"127.0.0.1:{p}" for _, p in cl.startup_nodes]},
        masters,
    )


def sentinel(sn: RedisSentinel) -> Deployment:
    def masters() -> list[redis.Redis]:
        return [sn.master_client()]

    table: dict[str, Any] = {"sentinels": [f"{h}:{p}" for h, p in sn.sentinels], "service_name": sn.service_name}
    if sn.auth:  # the url gives the master's user, password (and TLS); its address comes from the sentinels
        table["url"] = sn.master.url
        table["sentinel_password"] = sn.auth.password
    return Deployment("sentinel", table, masters)


# redis_single and redis_cluster (tests/conftest.py) require an ACL user and password too.


@pytest.fixture(scope="module")
def redis_sentinel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisSentinel]:
    with RedisSentinel(tmp_path_factory.mktemp("sentinel"), auth=AUTH) as sn:
        yield sn


@pytest.fixture(params=["single", "cluster", "sentinel"])
def deployment(request: pytest.FixtureRequest) -> Iterator[Deployment]:
    mode = request.param
    server = request.getfixturevalue(f"redis_{mode}")
    d = single(server) if mode == "single" else cluster(server) if mode == "cluster" else sentinel(server)
    d.flush()
    yield d
    d.flush()


def stage_for(d: Deployment, ratelimit: dict[str, Any]) -> RateLimitStage:
    [stage] = build(None, d.settings(ratelimit))
    return stage


def msg(
    sender: str = "alice@example.com",
    rcpts: tuple[str, ...] = ("bob@dest.test",),
    ip: str = "192.0.2.1",
    user: str = "alice",
) -> Transaction:
    macros = {"{auth_authen}": user} if user else {}
    env = Envelope(client_ip=ip, sender=sender, recipients=list(rcpts), macros=macros)
    return Transaction(Connection(ip), env)


def admitted(stage: RateLimitStage, session: Transaction) -> bool:
    reply = stage.data(session)
    assert reply is None or (reply.code, reply.xcode) == ("451", "4.7.1")
    return reply is None


def test_exact_boundary_and_reply(deployment: Deployment) -> None:
    stage = stage_for(deployment, {"sender_domain": {"messages": 5, "per": "1h"}})
    assert all(admitted(stage, msg()) for _ in range(5))
    reply = stage.data(msg())
    assert reply is not None
    assert reply.text == "rate limit exceeded for sender_domain example.com; retry in 720s"
    assert stage.limiter.failures == 0
    keys = [k for ks in deployment.all_keys().values() for k in ks]
    assert keys == [b"quorum:rl:sd:m1h:{example.com}"]
    # The key expires with its TAT: nothing to clean up.
    assert 3_590_000 < deployment.owner(keys[0].decode()).pttl(keys[0]) <= 3_600_000
    stage.close()


def test_refused_message_gives_its_reservation_back(deployment: Deployment) -> None:
    stage = stage_for(deployment, {"sender_domain": {"messages": 2, "per": "1h"}})
    sessions = [msg(), msg()]
    assert all(admitted(stage, s) for s in sessions)
    assert not admitted(stage, msg())
    stage.finished(sessions[0], Outcome(Action.REJECT))  # e.g. a virus: 554, not sent
    assert admitted(stage, msg())
    stage.aborted(sessions[1])  # the client went away after DATA
    assert admitted(stage, msg())
    assert not admitted(stage, msg())
    stage.close()


def test_window_expiry_with_a_short_window(deployment: Deployment) -> None:
    stage = stage_for(deployment, {"client_ip": {"messages": 3, "per": "500ms"}})
    assert all(admitted(stage, msg(user="")) for _ in range(3))
    reply = stage.data(msg(user=""))
    assert reply is not None and "client_ip 192.0.2.1" in reply.text and "retry in 1s" in reply.text
    time.sleep(0.55)
    assert all(admitted(stage, msg(user="")) for _ in range(3))
    assert not admitted(stage, msg(user=""))
    stage.close()


def test_override_and_exemption(deployment: Deployment) -> None:
    stage = stage_for(
        deployment,
        {
            "sender_domain": {"messages": 1, "per": "1h"},
            "domains": {
                "bulk.example": {"sender_domain": {"messages": 3, "per": "1h"}},
                "vip.example": {"exempt": True},
            },
        },
    )
    assert admitted(stage, msg("a@example.com")) and not admitted(stage, msg("a@example.com"))
    assert all(admitted(stage, msg("a@bulk.example")) for _ in range(3))
    assert not admitted(stage, msg("a@bulk.example"))
    assert all(admitted(stage, msg("a@vip.example")) for _ in range(20))
    stage.close()


def test_all_or_none_across_buckets(deployment: Deployment) -> None:
    # Varied names: CRC16 maps names that differ in one character to nearby slots (one master).
    domains = [f"{hashlib.sha1(str(i).encode()).hexdigest()[:8]}.test" for i in range(12)]
    full = domains[5]
    stage = stage_for(
        deployment, {"recipient_domain": {"messages": 1, "per": "1h"}, "client_ip": {"messages": 20, "per": "1h"}}
    )
    assert admitted(stage, msg(rcpts=(f"x@{full}",)))  # now full
    reply = stage.data(msg(rcpts=tuple(f"x@{d}" for d in domains)))
    assert reply is not None and f"recipient_domain {full}" in reply.text
    # Nothing was taken from the eleven buckets that had room, nor from the client IP bucket.
    limiter_backend = connect(stage.settings.redis)
    keys = [
        Planner(stage.settings).key("recipient_domain", stage.settings.defaults["recipient_domain"][0], d)
        for d in domains
    ]
    _now, tats = limiter_backend.peek(keys)
    assert [bool(t) for t in tats] == [d == full for d in domains]
    ip_key = "quorum:rl:ip:m1h:{192.0.2.1}"
    now, [ip_tat] = limiter_backend.peek([ip_key])
    assert usage(stage.settings.defaults["client_ip"][0], ip_tat, now)["used"] == 1
    if deployment.mode == "cluster":
        assert isinstance(limiter_backend, ClusterBackend)
        assert len({limiter_backend.node_of(k) for k in keys}) == 3  # the message really spanned every master
    limiter_backend.close()
    assert all(admitted(stage, msg(rcpts=(f"x@{d}",))) for d in domains if d != full)
    stage.close()


def test_script_matches_the_reference_model(deployment: Deployment) -> None:
    """script.lua (and, on a Cluster, the per-slot fan-out with its compensation) == the model."""
    clock = Clock()
    backend = connect(deployment.settings({}).redis, clock=clock)

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(scenarios())
    def check(scenario: tuple[list[Spec], list[tuple[Any, ...]]]) -> None:
        clock.now = Clock().now
        replay(backend, clock, *scenario, prefix=f"model:{uuid.uuid4().hex[:8]}:")

    check()
    backend.close()


def test_cluster_keys_spread_over_the_masters(redis_cluster: RedisCluster) -> None:
    d = cluster(redis_cluster)
    d.flush()
    stage = stage_for(d, {"sender_domain": {"messages": 5, "recipients": 50, "per": "1h"}})
    for i in range(60):
        assert admitted(stage, msg(f"a@sender{i}.test"))
    per_master = d.all_keys()
    assert len(per_master) == 3
    assert all(len(keys) >= 10 for keys in per_master.values()), {p: len(k) for p, k in per_master.items()}
    for keys in per_master.values():  # a domain's buckets (messages and recipients) share a slot
        tags = Counter(k.split(b"{")[1] for k in keys)
        assert set(tags.values()) == {2}
    stage.close()
    d.flush()


def test_commands_per_message_on_a_single_redis(redis_single: RedisServer) -> None:
    d = single(redis_single)
    d.flush()
    stage = stage_for(
        d,
        {
            "sender_domain": {"messages": 500, "per": "1h"},
            "recipient_domain": {"messages": 5000, "recipients": 9000, "per": "1h"},
            "client_ip": {"messages": 200, "per": "10m"},
            "auth_user": {"recipients": 1000, "per": "1h"},
        },
    )
    assert admitted(stage, msg())  # connects and loads the script
    with redis_single.client() as c:
        c.config_resetstat()
        for i in range(50):
            assert admitted(stage, msg(rcpts=("a@one.test", "b@two.test", f"c@x{i}.test")))
        stats = c.info("commandstats")
    client_commands = {
        k: v["calls"] for k, v in stats.items() if k not in SCRIPT_INTERNAL and k != "cmdstat_config|resetstat"
    }
    assert client_commands == {"cmdstat_evalsha": 50}
    stage.close()


SCRIPT_INTERNAL = {"cmdstat_time", "cmdstat_get", "cmdstat_set", "cmdstat_del"}


def test_script_reloaded_after_noscript(deployment: Deployment) -> None:
    stage = stage_for(deployment, {"sender_domain": {"messages": 3, "per": "1h"}})
    assert admitted(stage, msg())
    for c in deployment.masters():
        with c:
            c.script_flush()
    assert admitted(stage, msg()) and admitted(stage, msg()) and not admitted(stage, msg())
    assert stage.limiter.failures == 0
    stage.close()


CHILD = textwrap.dedent(
    """
    import json, sys, threading
    from quorum.assembly import parse_config
    from quorum.message import Envelope
    from quorum.ratelimit.buckets import Planner
    from quorum.ratelimit.feature import make_limiter

    settings = parse_config(json.loads(sys.argv[1])).feature("ratelimit")
    threads, attempts = int(sys.argv[2]), int(sys.argv[3])
    limiter, planner = make_limiter(settings), Planner(settings)
    counts = {"admitted": 0, "released": 0, "refused": 0, "local": 0}
    lock = threading.Lock()
    barrier = threading.Barrier(threads)

    def work(t):
        env = Envelope(client_ip="192.0.2.9", sender="x@hammer.test", recipients=["r@dest.test"],
                       macros={"{auth_authen}": f"user{t}"})
        barrier.wait()
        for n in range(attempts):
            d = limiter.reserve(planner.message(env, sender_trusted=True))
            give_back = d.admitted and (t + n) % 3 == 0
            if give_back:
                limiter.release(d.reservation)
            with lock:
                counts["admitted" if d.admitted else "refused"] += 1
                counts["released"] += give_back
                counts["local"] += d.source == "local"

    pool = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for p in pool:
        p.start()
    for p in pool:
        p.join()
    print(json.dumps(counts))
    """
)


def test_threads_and_processes_never_exceed_the_limit(deployment: Deployment) -> None:
    """2 processes x 32 threads hammer one sender domain (limit 100/day) with give-backs mixed in."""
    limit = 100
    config = deployment.config({"sender_domain": {"messages": limit, "per": "1d"}})
    env = {**os.environ, "PYTHONPATH": str(REPO / "milter")}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, json.dumps(config), "32", "12"], stdout=subprocess.PIPE, text=True, env=env
        )
        for _ in range(2)
    ]
    results = [json.loads(p.communicate(timeout=120)[0]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    total = {k: sum(r[k] for r in results) for k in results[0]}
    assert total["local"] == 0, total  # every decision was made in Redis
    assert total["admitted"] + total["refused"] == 2 * 32 * 12
    kept = total["admitted"] - total["released"]
    assert kept == limit, total  # full, and never past the limit
    s = deployment.settings(config["ratelimit"])
    backend = connect(s.redis)
    rule = s.defaults["sender_domain"][0]
    now, [tat] = backend.peek(["quorum:rl:sd:m1d:{hammer.test}"])
    assert usage(rule, tat, now)["used"] == limit
    backend.close()


def test_cli_show_and_reset(deployment: Deployment, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ratelimit = {
        "sender_domain": {"messages": 10, "per": "1h"},
        "recipient_domain": {"recipients": 100, "per": "10m"},
        "domains": {"vip.example": {"exempt": True}},
    }
    stage = stage_for(deployment, ratelimit)
    for _ in range(3):
        assert admitted(stage, msg(rcpts=("a@example.com", "b@example.com")))
    stage.close()
    path = tmp_path / "quorum.toml"
    path.write_text(_toml(deployment.config(ratelimit)))
    assert quorum_main(["ratelimit", "show", "example.com", "-c", str(path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("sender_domain example.com: 3 used of 10 messages per 1h, 7 left; empty in 18m")
    assert out[1].startswith("recipient_domain example.com: 6 used of 100 recipients per 10m, 94 left; empty in 36s")
    assert quorum_main(["ratelimit", "show", "vip.example", "-c", str(path)]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "sender_domain vip.example: exempt",
        "recipient_domain vip.example: exempt",
    ]
    assert quorum_main(["ratelimit", "reset", "sender_domain:example.com", "-c", str(path)]) == 0
    assert "1 bucket(s), 1 had usage" in capsys.readouterr().out
    assert quorum_main(["ratelimit", "show", "example.com", "--json", "-c", str(path)]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["kind"], r["used"]) for r in rows] == [("sender_domain", 0), ("recipient_domain", 6)]
    assert quorum_main(["ratelimit", "show", "client_ip:not-an-ip", "-c", str(path)]) == 2


def _toml(data: dict[str, Any], prefix: str = "") -> str:
    simple = {k: v for k, v in data.items() if not isinstance(v, dict) or _inline(v)}
    tables = {k: v for k, v in data.items() if k not in simple}
    lines = [f"[{prefix}]"] if prefix and simple else []
    lines += [f"{json.dumps(k)} = {_value(v)}" for k, v in simple.items()]
    for k, v in tables.items():
        lines.append(_toml(v, f"{prefix}.{json.dumps(k)}" if prefix else json.dumps(k)))
    return "\n".join(lines) + "\n"


def _inline(v: dict[str, Any]) -> bool:
    return all(not isinstance(x, dict) for x in v.values())


def _value(v: Any) -> str:
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {_value(x)}" for k, x in v.items()) + " }"
    return json.dumps(v)


# -- faults ----------------------------------------------------------------------------------------


def keep_sending(stage: RateLimitStage, until: Callable[[], bool], seconds: float, pause: float = 0.02) -> list[str]:
    """Messages every `pause` s until `until()` or the deadline: every one must be decided (mail flows)."""
    sources: list[str] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        s = msg()
        start = time.monotonic()
        assert stage.data(s) is None  # generous limit: always admitted, from Redis or locally
        assert time.monotonic() - start < 1.5  # a dead Redis costs at most a short timeout
        reservation = s.results.get(Reservation)
        assert reservation is not None
        sources.append(reservation.source)
        if until():
            return sources
        time.sleep(pause)
    raise AssertionError(f"condition not reached in {seconds}s; sources: {sources[-20:]}")


FAULT_LIMITS = {"sender_domain": {"messages": 100000, "per": "1h"}, "backoff": "200ms"}


def _fault_stage(d: Deployment) -> RateLimitStage:
    s = d.settings(FAULT_LIMITS)
    return RateLimitStage(s, make_limiter(s))


def _wait_recovered(stage: RateLimitStage, caplog: pytest.LogCaptureFixture, seconds: float) -> list[str]:
    def back() -> bool:
        return not stage.limiter.degraded and "reachable again" in caplog.text

    return keep_sending(stage, back, seconds)


def test_single_redis_killed_and_restarted(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "quorum.ratelimit")
    with RedisServer(tmp_path / "r", auth=AUTH) as server:
        stage = _fault_stage(single(server))
        keep_sending(stage, lambda: True, 1)
        server.kill()
        sources = keep_sending(stage, lambda: stage.limiter.degraded, 5)
        assert sources[-1] == "local"
        assert "Redis unavailable" in caplog.text and "fail open" in caplog.text
        server.start()
        _wait_recovered(stage, caplog, 10)
        assert admitted(stage, msg())
        with server.client() as c:
            assert c.exists("quorum:rl:sd:m1h:{example.com}")  # counting resumed in Redis
        stage.close()
    warnings = [r for r in caplog.records if "Redis unavailable" in r.getMessage()]
    assert len(warnings) == 1  # once per warn_interval, however many messages


def test_cluster_master_killed_and_restarted(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "quorum.ratelimit")
    with RedisCluster(tmp_path / "c", auth=AUTH) as cl:
        d = cluster(cl)
        stage = _fault_stage(d)
        keep_sending(stage, lambda: True, 1)
        probe = connect(d.settings({}).redis)
        assert isinstance(probe, ClusterBackend)
        victim = next(n for n in cl.nodes if probe.node_of("quorum:rl:sd:m1h:{example.com}").endswith(f":{n.port}"))
        probe.close()
        victim.kill()
        sources = keep_sending(stage, lambda: stage.limiter.degraded, 5)
        assert sources[-1] == "local" and "Redis unavailable" in caplog.text
        victim.start()  # rejoins with its nodes.conf and serves its slots again
        _wait_recovered(stage, caplog, 20)
        with victim.client() as c:
            assert c.exists("quorum:rl:sd:m1h:{example.com}")
        stage.close()


def test_sentinel_failover(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "quorum.ratelimit")
    with RedisSentinel(tmp_path / "s", auth=AUTH) as sn:
        d = sentinel(sn)
        stage = _fault_stage(d)
        keep_sending(stage, lambda: True, 1)
        old = sn.master_address()
        sn.master.kill()
        keep_sending(stage, lambda: stage.limiter.degraded, 5)
        assert "Redis unavailable" in caplog.text

        def promoted() -> bool:
            return sn.master_address() != old and not stage.limiter.degraded and "reachable again" in caplog.text

        keep_sending(stage, promoted, 30)
        assert sn.replica is not None and sn.master_address() == ("127.0.0.1", sn.replica.port)
        with sn.replica.client() as c:
            assert c.exists("quorum:rl:sd:m1h:{example.com}")  # counting on the new master
        stage.close()


def test_unreachable_redis_costs_one_short_timeout(tmp_path: Path) -> None:
    """A hung Redis (SIGSTOP: connects, never answers) costs one socket timeout per backoff period."""
    import signal

    with RedisServer(tmp_path / "r", auth=AUTH) as server:
        s = single(server).settings({"sender_domain": {"messages": 1000, "per": "1h"}, "backoff": "1s"})
        stage = RateLimitStage(s, make_limiter(s))
        assert admitted(stage, msg())
        server.service.signal(signal.SIGSTOP)
        try:
            times = []
            for _ in range(20):
                start = time.monotonic()
                assert admitted(stage, msg())
                times.append(time.monotonic() - start)
            assert max(times) < s.redis.timeout + 0.2
            assert sum(t > s.redis.timeout / 2 for t in times) == 1  # one timeout, then local for the backoff
        finally:
            server.service.signal(signal.SIGCONT)
        stage.close()


@pytest.mark.parametrize("mode", ["single", "cluster", "sentinel"])
def test_tls_and_password_file(mode: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """rediss:// with tls_ca_file and the password in password_file (not in the config), for each
    deployment; a wrong password is Redis down: fail open with the in-process limiter, one warning."""
    tls = make_tls(tmp_path / "tls")
    auth = RedisAuth()
    ctx: Any = (
        RedisServer(tmp_path / "r", auth=auth, tls=tls)
        if mode == "single"
        else RedisCluster(tmp_path / "c", auth=auth, tls=tls)
        if mode == "cluster"
        else RedisSentinel(tmp_path / "s", auth=auth, tls=tls, replica=False)
    )
    with ctx as server:
        d = single(server) if mode == "single" else cluster(server) if mode == "cluster" else sentinel(server)
        password = auth.write_password(tmp_path / "redis-password")
        table = dict(d.redis_table)
        for node in [server] if mode == "single" else getattr(server, "nodes", [getattr(server, "master", None)]):
            assert node is not None and node.tls is not None
        table["url"] = table["url"].replace(f":{auth.password}@", "@")
        assert auth.password not in table["url"]
        table.pop("sentinel_password", None)
        table.update({"password_file": str(password), "tls_ca_file": str(tls.ca_file)})
        if mode == "sentinel":
            table["sentinel_password_file"] = str(password)
        limits = {"sender_domain": {"messages": 1000, "per": "1h"}}
        config = parse_config({"redis": table, "ratelimit": limits})
        assert config.warnings == ()
        s = config.feature("ratelimit")
        stage = RateLimitStage(s, make_limiter(s))
        try:
            for _ in range(3):
                assert admitted(stage, msg())
            assert not stage.limiter.degraded
            d.owner("quorum:rl:sd:m1h:{example.com}")  # counted in Redis (raises when no master holds it)
        finally:
            stage.close()
        caplog.set_level(logging.INFO, "quorum.ratelimit")
        password.write_text("wrong\n")
        s = parse_config({"redis": table, "ratelimit": limits}).feature("ratelimit")
        stage = RateLimitStage(s, make_limiter(s))
        try:
            for _ in range(3):
                assert admitted(stage, msg())  # fail open
            assert stage.limiter.degraded and "Redis unavailable" in caplog.text
        finally:
            stage.close()
