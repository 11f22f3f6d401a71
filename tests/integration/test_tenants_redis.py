"""Tenant records against real Redis: a single server and the harness's 3-master Cluster.

The CLI (`quorum domain set|show|list|delete`) and the resolver as the milter uses it: a change
applies within the refresh time (and at once through pub/sub), Redis stopped keeps the cached
records, and a record written by other means that fails validation is ignored with an error.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
from tests.harness.redis_server import RedisAuth, RedisCluster, RedisServer

from quorum.assembly import load_config
from quorum.cli import main as quorum_main
from quorum.config import Config
from quorum.tenants import TenantPolicies

pytestmark = pytest.mark.integration

CONFIG = """
[engines.clamav]
type = "clamav"
address = "127.0.0.1:3310"

[engines.rspamd]
type = "rspamd"
url = "http://127.0.0.1:11333"

[engines.spamassassin]
type = "spamassassin"
address = "127.0.0.1:783"

[redis]
{redis}

[tenants]
store = "redis"
refresh = "{refresh}"
key_prefix = "{prefix}"
backoff = "200ms"

[domains."*.wild.example"]
policy.on_spam = "quarantine"

[domains."file.example"]
engines = ["clamav", "rspamd"]
"""


@dataclass
class Deployment:
    mode: str
    redis_table: str
    masters: Callable[[], list[redis.Redis]]
    workdir: Path

    def config_file(self, refresh: str = "5s", prefix: str = "quorum:tenant:") -> Path:
        path = self.workdir / f"quorum-{self.mode}-{refresh}-{prefix.strip(':')}.toml"
        path.write_text(CONFIG.format(redis=self.redis_table, refresh=refresh, prefix=prefix))
        return path

    def flush(self) -> None:
        for c in self.masters():
            with c:
                c.flushall()

    def raw_set(self, key: str, value: bytes) -> None:
        """Write a key as another tool would, on whichever master owns it."""
        for c in self.masters():
            with c:
                try:
                    c.set(key, value)
                    return
                except redis.ResponseError as exc:
                    if "MOVED" not in str(exc):
                        raise
        raise AssertionError(f"no master accepted {key}")


def single(server: RedisServer, workdir: Path) -> Deployment:
    return Deployment("single", f'url = "{server.url}"', lambda: [server.client()], workdir)


def cluster(cl: RedisCluster, workdir: Path) -> Deployment:
    nodes = ", ".join(f'"127.0.0.1:{p}"' for _, p in cl.startup_nodes)
    table = f'url = "{cl.urls[0]}"\ncluster = true\ncluster_nodes = [{nodes}]'
    return Deployment("cluster", table, lambda: [n.client() for n in cl.nodes if n.service.running], workdir)


@pytest.fixture(params=["single", "cluster"])
def deployment(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Deployment]:
    server = request.getfixturevalue(f"redis_{request.param}")
    d = single(server, tmp_path) if request.param == "single" else cluster(server, tmp_path)
    d.flush()
    yield d
    d.flush()


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = quorum_main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def fragment(tmp_path: Path, text: str, name: str = "fragment.toml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def load(path: Path) -> Config:
    return load_config(path)


def test_set_show_list_delete(deployment: Deployment, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = str(deployment.config_file())
    good = fragment(tmp_path, 'engines = ["clamav"]\n[policy]\non_spam = "reject"\n[replies]\nspam = "No spam, A."\n')
    for domain in ("a.wild.example", "Bücher.example", "plain.example"):
        code, out, err = cli(capsys, "domain", "set", domain, "--file", good, "-c", cfg)
        assert code == 0, err
    assert "stored xn--bcher-kva.example" in out or "stored plain.example" in out

    code, out, _ = cli(capsys, "domain", "list", "--json", "-c", cfg)
    assert code == 0
    assert json.loads(out) == [
        {"domain": "*.wild.example", "source": "file"},
        {"domain": "a.wild.example", "source": "redis"},
        {"domain": "file.example", "source": "file"},
        {"domain": "plain.example", "source": "redis"},
        {"domain": "xn--bcher-kva.example", "source": "redis"},
    ]

    code, out, _ = cli(capsys, "domain", "show", "A.Wild.Example", "--json", "-c", cfg)
    assert code == 0
    shown = json.loads(out)
    assert shown["matched"] == ["file:*.wild.example", "redis:a.wild.example"]
    assert shown["record"] == {"state": "valid", "keys": 3}
    values = {v["key"]: (v["value"], v["source"]) for v in shown["values"]}
    assert values["policy.on_spam"] == ("reject", "redis")  # redis over the file's quarantine
    assert values["engines"] == (["clamav"], "redis")
    assert values["replies.spam"] == ("No spam, A.", "redis")
    assert values["policy.on_virus"] == ("reject", "global")
    assert values["replies.disclose_virus_name"] == (False, "file")

    code, out, _ = cli(capsys, "domain", "show", "user@bücher.example", "-c", cfg)
    assert code == 0 and "policy.on_spam" in out and '"reject"  (redis)' in out

    code, out, _ = cli(capsys, "domain", "show", "b.wild.example", "-c", cfg)
    assert code == 0 and "file:*.wild.example" in out and '"quarantine"  (file)' in out

    code, out, _ = cli(capsys, "domain", "delete", "a.wild.example", "-c", cfg)
    assert code == 0 and "deleted a.wild.example" in out
    code, _, err = cli(capsys, "domain", "delete", "a.wild.example", "-c", cfg)
    assert code == 1 and "no record for a.wild.example" in err
    code, out, _ = cli(capsys, "domain", "show", "a.wild.example", "--json", "-c", cfg)
    assert json.loads(out)["matched"] == ["file:*.wild.example"]


def test_set_refuses_an_invalid_fragment(
    deployment: Deployment, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = str(deployment.config_file())
    bad = fragment(tmp_path, '[policy]\non_spam = "bounce"\n[engines.rspamd]\nweight = -2\n')
    code, _, err = cli(capsys, "domain", "set", "x.example", "--file", bad, "-c", cfg)
    assert code == 2
    assert 'error: domains."x.example".policy.on_spam: must be one of tag | quarantine | reject' in err
    assert 'error: domains."x.example".engines.rspamd.weight: must be at least 0.0' in err
    assert "nothing was stored" in err
    code, _, err = cli(capsys, "domain", "set", "*.x.example", "--file", bad, "-c", cfg)
    assert code == 2 and "wildcards are matched in the config file only" in err
    code, out, _ = cli(capsys, "domain", "list", "-c", cfg)
    assert "x.example" not in out.replace("file.example", "")


def test_a_change_applies_within_refresh(
    deployment: Deployment, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg_path = deployment.config_file(refresh="300ms")
    policies = TenantPolicies(load(cfg_path), listen=False)
    try:
        assert policies.policy_for("bob@r.example") is policies.global_policy
        reject = fragment(tmp_path, '[policy]\non_spam = "reject"\n')
        assert cli(capsys, "domain", "set", "r.example", "--file", reject, "-c", str(cfg_path))[0] == 0
        time.sleep(0.35)  # the negative entry of r.example expires
        p = policies.policy_for("bob@r.example")
        assert p.policy.on_spam == "reject" and p.provenance["policy.on_spam"] == "redis"
        lookups = policies.stats.lookups
        for _ in range(20):
            policies.policy_for("bob@r.example")
        assert policies.stats.lookups == lookups  # one GET per domain and refresh interval
    finally:
        policies.close()


def test_pubsub_applies_a_change_at_once(
    deployment: Deployment, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg_path = deployment.config_file(refresh="1h")
    policies = TenantPolicies(load(cfg_path))
    try:
        time.sleep(0.5)  # the listener subscribes
        assert policies.policy_for("bob@p.example").policy.on_spam == "tag"
        reject = fragment(tmp_path, '[policy]\non_spam = "reject"\n')
        assert cli(capsys, "domain", "set", "p.example", "--file", reject, "-c", str(cfg_path))[0] == 0
        deadline = time.monotonic() + 5
        while policies.policy_for("bob@p.example").policy.on_spam != "reject":
            assert time.monotonic() < deadline, "the change was not announced"
            time.sleep(0.05)
        assert cli(capsys, "domain", "delete", "p.example", "-c", str(cfg_path))[0] == 0
        while policies.policy_for("bob@p.example").policy.on_spam != "tag":
            assert time.monotonic() < deadline, "the deletion was not announced"
            time.sleep(0.05)
    finally:
        policies.close()


def test_invalid_record_is_ignored_with_an_error(
    deployment: Deployment, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg_path = deployment.config_file(refresh="100ms")
    deployment.raw_set("quorum:tenant:file.example", b'{"policy": {"on_spam": "bounce"}, "bypass": true}')
    policies = TenantPolicies(load(cfg_path), listen=False)
    try:
        with caplog.at_level(logging.ERROR, logger="quorum.tenants"):
            p = policies.policy_for("bob@file.example")
        assert p.sources == ("file:file.example",) and not p.bypass and p.engines == ("clamav", "rspamd")
        errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errors) == 1
        assert "file.example" in errors[0] and 'domains."file.example".policy.on_spam: must be one of' in errors[0]
    finally:
        policies.close()
    code, out, _ = cli(capsys, "domain", "show", "file.example", "-c", str(cfg_path))
    assert code == 0 and "redis record IGNORED" in out and "policy.on_spam" in out


def test_redis_stopped_keeps_cached_records(
    request: pytest.FixtureRequest, tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """Own servers (they are stopped): a single Redis and a Cluster."""
    auth = RedisAuth()
    with RedisServer(tmp_path / "single", auth=auth) as server, RedisCluster(tmp_path / "cluster", auth=auth) as cl:
        for d, stop in ((single(server, tmp_path), server.stop), (cluster(cl, tmp_path), cl.stop)):
            cfg_path = d.config_file(refresh="200ms")
            reject = fragment(tmp_path, '[policy]\non_spam = "reject"\n')
            assert cli(capsys, "domain", "set", "kept.example", "--file", reject, "-c", str(cfg_path))[0] == 0
            policies = TenantPolicies(load(cfg_path), listen=False)
            try:
                assert policies.policy_for("a@kept.example").policy.on_spam == "reject"
                stop()
                time.sleep(0.25)
                with caplog.at_level(logging.WARNING, logger="quorum.tenants"):
                    started = time.monotonic()
                    for _ in range(50):
                        assert policies.policy_for("a@kept.example").policy.on_spam == "reject", d.mode
                        assert policies.policy_for("a@file.example").engines == ("clamav", "rspamd")
                    elapsed = time.monotonic() - started
                assert policies.stats.errors >= 1
                assert elapsed < 2.0, f"{d.mode}: lookups while Redis is down must back off"
                warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
                assert len(warnings) == 1 and "last known domain records keep applying" in warnings[0]
                caplog.clear()
            finally:
                policies.close()
            code, _, err = cli(capsys, "domain", "list", "-c", str(cfg_path))
            assert code == 1 and "error: Redis" in err
