"""The verdict cache against the real programs: clamd (its signature version keys the entries, and
reloading a new database invalidates them) and Redis, single and Cluster (one round trip a message),
each with an ACL user and password (and TLS), the entries signed with `[redis] hmac_key_file`."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.harness.clamd import Clamd
from tests.harness.redis_server import RedisAuth, RedisCluster, RedisServer, make_tls

import quorum.engines.clamav as clamav_mod
from quorum.assembly import build_pipeline, parse_config
from quorum.engines.base import ScanCall
from quorum.message import Message
from quorum.verdict import Status
from quorum.verdictcache.feature import make_cache

pytestmark = pytest.mark.integration

MARKER = b"Quorum-cache-marker-7c1e"


def build_db(workdir: Path, version: int, signatures: dict[str, bytes]) -> Path:
    """An unsigned daily.cud with `version` (sigtool), as a signature update would bring."""
    workdir.mkdir(parents=True, exist_ok=True)
    for p in workdir.iterdir():
        p.unlink()
    (workdir / "COPYING").write_text("test signatures\n")
    (workdir / "daily.ndb").write_text("".join(f"{n}:0:*:{body.hex()}\n" for n, body in signatures.items()))
    subprocess.run(
        [
            "sigtool",
            "--unsigned",
            "--build=daily.cud",
            f"--cvd-version={version}",
            "--no-cdiff",
            f"--datadir={workdir}",
        ],
        cwd=workdir,
        input=b"quorum\n",
        check=True,
        capture_output=True,
        timeout=60,
    )
    return workdir / "daily.cud"


@pytest.fixture
def own_clamd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Clamd]:
    monkeypatch.setattr(clamav_mod, "VERSION_TTL", 0.0)  # see a reload at once (30 s in production)
    with Clamd(tmp_path / "clamd") as server:
        shutil.copy(build_db(tmp_path / "sig7", 7, {"Quorum.Other": b"unrelated-signature-xyz"}), server.dbdir)
        server.reload()
        yield server


def mail(body: bytes) -> Message:
    return Message.from_bytes(b"Subject: offer\r\n\r\n" + body + b"\r\n")


def test_a_signature_update_invalidates_cached_verdicts(own_clamd: Clamd, tmp_path: Path) -> None:
    config = parse_config(
        {"engines": {"clamav": {"type": "clamav", "address": own_clamd.address}}, "verdict_cache": {"ttl": "1h"}}
    )
    pipeline = build_pipeline(config)
    (runner,) = pipeline.runners
    try:
        assert "/7/" in runner.engine.version(ScanCall(time.monotonic() + 5))
        first = runner.run(mail(MARKER), ScanCall(time.monotonic() + 10))
        again = runner.run(mail(MARKER), ScanCall(time.monotonic() + 10))
        assert first.status is Status.CLEAN and "cache" not in first.extra
        assert again.status is Status.CLEAN and again.extra["cache"] == "hit"
        # Version 8 knows the marker: the clean entry of version 7 must not answer any more.
        shutil.copy(build_db(tmp_path / "sig8", 8, {"Quorum.Cache.Marker": MARKER}), own_clamd.dbdir)
        own_clamd.reload()
        assert "/8/" in runner.engine.version(ScanCall(time.monotonic() + 5))
        after = runner.run(mail(MARKER), ScanCall(time.monotonic() + 10))
        assert after.status is Status.INFECTED and after.names[0].startswith("Quorum.Cache.Marker")
        assert "cache" not in after.extra
    finally:
        pipeline.close()


@pytest.mark.parametrize("deployment", ["single", "single+tls", "cluster", "cluster+tls"])
def test_shared_through_redis_with_one_round_trip(
    deployment: str, own_clamd: Clamd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    auth = RedisAuth()
    tls = make_tls(tmp_path / "tls") if deployment.endswith("+tls") else None
    key_file = tmp_path / "hmac.key"
    key_file.write_text("k" * 32)
    key_file.chmod(0o600)
    redis_table: dict[str, object] = {"hmac_key_file": str(key_file)}
    if tls:
        redis_table["tls_ca_file"] = str(tls.ca_file)
    if deployment.startswith("single"):
        ctx: RedisServer | RedisCluster = RedisServer(tmp_path / "redis", auth=auth, tls=tls)
    else:
        ctx = RedisCluster(tmp_path / "cluster", auth=auth, tls=tls)
        redis_table["cluster"] = True
    with ctx as server:
        url = server.url if isinstance(server, RedisServer) else server.urls[0]
        config = parse_config(
            {
                "engines": {"clamav": {"type": "clamav", "address": own_clamd.address}},
                "redis": {"url": url, **redis_table},
                "verdict_cache": {"local_entries": 0},
            }
        )
        assert config.warnings == ()
        settings = config.feature("verdict_cache")
        one, other = make_cache(settings), make_cache(settings)  # two Quorum instances
        engine = build_pipeline(config).runners[0].engine
        try:
            v1 = one.scan(engine, mail(b"shared body"), ScanCall(time.monotonic() + 10))
            v2 = other.scan(engine, mail(b"shared body"), ScanCall(time.monotonic() + 10))
            assert v1.status is Status.CLEAN and v2.extra.get("cache") == "hit"
            assert one.store.round_trips == 1 and other.store.round_trips == 1
            assert one.store.forged == 0 and other.store.forged == 0
        finally:
            one.store.close()
            other.store.close()
            engine.close()
