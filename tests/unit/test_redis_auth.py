"""[redis] authentication and TLS keys, the check-config warnings for an unauthenticated Redis, and
the verdict cache's HMAC against everything a writer of Redis could plant (a fake Redis here; the
real Postfix + clamd + ACL/TLS Redis run is tests/security/test_sec_redis_trust.py)."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import pytest
from tests.unit.test_verdict_cache import EICARISH, FakeAV, FakeRedis, call, multipart, single

from quorum.assembly import parse_config
from quorum.cli import main as quorum_main
from quorum.config.fields import Problems, Table
from quorum.ratelimit.settings import RedisSettings, parse_redis
from quorum.verdict import Status
from quorum.verdictcache.cached import CachedScan
from quorum.verdictcache.feature import make_cache
from quorum.verdictcache.settings import VerdictCacheSettings
from quorum.verdictcache.store import VerdictStore, entry_key, sign

KEY = entry_key(b"gateway-shared-key-0123456789abcdef")
PREFIX = "t:{vc}:"


def redis_table(data: dict[str, Any]) -> tuple[RedisSettings, Problems]:
    problems = Problems()
    return parse_redis(Table(data, "redis", problems)), problems


def secret(tmp_path: Path, name: str, text: str, mode: int = 0o600) -> str:
    path = tmp_path / name
    path.write_text(text)
    path.chmod(mode)
    return str(path)


# --- [redis] keys and warnings ---------------------------------------------------------------


def test_a_url_without_a_password_is_warned_about() -> None:
    _, problems = redis_table({"url": "redis://127.0.0.1:6379/0"})
    assert problems.errors == []
    [warning] = problems.warnings
    assert warning.startswith("redis.url: Redis without authentication") and "password_file" in warning


@pytest.mark.parametrize(
    "url", ["redis://10.0.0.5:6379/0", "unix:///run/redis/redis.sock", "rediss://redis.example:6380/0"]
)
def test_every_scheme_without_a_password_is_warned_about(url: str) -> None:
    _, problems = redis_table({"url": url})
    assert any("without authentication" in w for w in problems.warnings)


def test_a_password_in_the_url_or_a_file_is_authentication(tmp_path: Path) -> None:
    s, problems = redis_table({"url": "redis://quorum:s3cret@127.0.0.1:6379/0"})
    assert problems.warnings == [] and s.password is None  # redis-py reads it from the url
    path = secret(tmp_path, "pw", "from-the-file\n")
    s, problems = redis_table({"url": "redis://quorum@127.0.0.1:6379/0", "password_file": path})
    assert problems.errors == [] and problems.warnings == []
    assert s.password == "from-the-file" and s.auth_kwargs() == {"password": "from-the-file"}
    assert "from-the-file" not in repr(s)


def test_password_file_problems_name_the_key(tmp_path: Path) -> None:
    _, problems = redis_table({"url": "redis://quorum@127.0.0.1/0", "password_file": str(tmp_path / "missing")})
    assert any(e.startswith("redis.password_file: cannot read") for e in problems.errors)
    _, problems = redis_table({"url": "redis://quorum@127.0.0.1/0", "password_file": secret(tmp_path, "e", "\n")})
    assert any(e.startswith("redis.password_file: the file is empty") for e in problems.errors)
    both = {"url": "redis://quorum:x@127.0.0.1/0", "password_file": secret(tmp_path, "pw", "y")}
    _, problems = redis_table(both)
    assert any(e.startswith("redis.password_file: the url carries a password too") for e in problems.errors)
    _, problems = redis_table({"url": "redis://q@127.0.0.1/0", "password_file": secret(tmp_path, "o", "y", 0o644)})
    assert any(w.startswith("redis.password_file:") and "every user" in w for w in problems.warnings)


def test_a_password_in_clear_over_the_network_is_warned_about(tmp_path: Path) -> None:
    _, problems = redis_table({"url": "redis://quorum:x@redis.example:6379/0"})
    assert any("clear text" in w for w in problems.warnings)
    _, problems = redis_table({"url": "redis://quorum:x@[::1]:6379/0"})
    assert problems.warnings == []


def test_tls_files(tmp_path: Path) -> None:
    ca = secret(tmp_path, "ca.crt", "pem", 0o644)
    s, problems = redis_table({"url": "rediss://quorum:x@redis.example:6380/0", "tls_ca_file": ca})
    assert problems.errors == [] and problems.warnings == [] and s.tls
    assert s.auth_kwargs() == {"ssl_ca_certs": ca}
    _, problems = redis_table({"url": "redis://quorum:x@127.0.0.1/0", "tls_ca_file": ca})
    assert any(e.startswith("redis.tls_ca_file: TLS files need a rediss:// url") for e in problems.errors)
    _, problems = redis_table({"url": "rediss://quorum:x@h/0", "tls_ca_file": str(tmp_path / "nope")})
    assert any(e.startswith("redis.tls_ca_file: cannot read") for e in problems.errors)
    _, problems = redis_table({"url": "rediss://quorum:x@h/0", "tls_cert_file": ca})
    assert any("both tls_cert_file and tls_key_file" in e for e in problems.errors)


def test_sentinels_without_a_password_are_warned_about(tmp_path: Path) -> None:
    base = {"url": "redis://quorum:x@127.0.0.1/0", "sentinels": ["127.0.0.1:26379"], "service_name": "q"}
    _, problems = redis_table(base)
    assert any(w.startswith("redis.sentinel_password:") for w in problems.warnings)
    s, problems = redis_table({**base, "sentinel_password_file": secret(tmp_path, "sp", "spw\n")})
    assert problems.warnings == [] and s.sentinel_password == "spw"


def test_hmac_key_file(tmp_path: Path) -> None:
    s, problems = redis_table(
        {"url": "redis://quorum:x@127.0.0.1/0", "hmac_key_file": secret(tmp_path, "k", "k" * 32 + "\n")}
    )
    assert problems.errors == [] and s.hmac_key == b"k" * 32 and b"k" * 32 not in repr(s).encode()
    _, problems = redis_table({"url": "redis://quorum:x@127.0.0.1/0", "hmac_key_file": secret(tmp_path, "s", "short")})
    assert any(e.startswith("redis.hmac_key_file: the key has 5 bytes") for e in problems.errors)


def test_check_config_warns_for_redis_without_auth(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "quorum.toml"
    config.write_text(
        '[engines.clamav]\ntype = "clamav"\naddress = "127.0.0.1:3310"\n'
        '[redis]\nurl = "redis://127.0.0.1:6379/0"\n'
        '[ratelimit]\nclient_ip = { messages = 10, per = "1m" }\n'
        "[verdict_cache]\n"
        '[tenants]\nstore = "redis"\n'
    )
    assert quorum_main(["check-config", "-c", str(config)]) == 0
    out = capsys.readouterr().out
    # One warning for the table, however many features read it; and one for the unsigned cache.
    assert out.count("warning: redis.url: Redis without authentication") == 1, out
    assert "warning: verdict_cache: not shared through Redis: [redis] has no hmac_key_file" in out


# --- the verdict cache's HMAC ----------------------------------------------------------------


def store(redis: FakeRedis, key: bytes | None = KEY, local: int = 0) -> VerdictStore:
    return VerdictStore(lambda: redis, 60, local, "t:", key)


def av_key(av: FakeAV, body: bytes) -> str:
    """The cache key of a single-part body, computed as the cache does (as an attacker can)."""
    version = hashlib.sha256(av.sig_version.encode()).hexdigest()[:16]
    return f"{PREFIX}{av.type_name}:{version}:{hashlib.sha256(body).hexdigest()}"


INFECTED = EICARISH + b"\r\n"


@pytest.mark.parametrize(
    "planted",
    [
        "clean",  # an unsigned entry, as the cache wrote it before
        "v1:" + "0" * 64 + ":clean",  # a made-up MAC
        "v1:" + "0" * 63 + ":clean",  # malformed
        "v1::clean",
        "clean:v1:" + "0" * 64,
        "",
    ],
)
def test_a_forged_clean_entry_does_not_whitelist_malware(planted: str) -> None:
    redis, av = FakeRedis(), FakeAV()
    redis.data[av_key(av, INFECTED)] = planted
    c = CachedScan(store(redis), 50)
    v = c.scan(av, single(INFECTED), call())
    assert v.status is Status.INFECTED and "cache" not in v.extra and len(av.scanned) == 1
    assert c.store.forged == 1
    # The genuine verdict overwrote the plant.
    assert redis.data[av_key(av, INFECTED)].endswith(":infected:Bad.Payload")


def test_a_genuine_entry_moved_to_another_key_is_refused() -> None:
    """Replay: a genuine `clean` entry (of a harmless file) copied under the malware's key."""
    redis, av = FakeRedis(), FakeAV()
    c = CachedScan(store(redis), 50)
    assert c.scan(av, single(b"harmless\r\n"), call()).status is Status.CLEAN
    redis.data[av_key(av, INFECTED)] = redis.data[av_key(av, b"harmless\r\n")]
    assert redis.data[av_key(av, INFECTED)].endswith(":clean")
    assert c.scan(av, single(INFECTED), call()).status is Status.INFECTED
    assert c.store.forged == 1


def test_an_entry_signed_with_another_key_is_refused() -> None:
    redis, av = FakeRedis(), FakeAV()
    other = entry_key(b"another-deployment-key-0123456789")
    redis.data[av_key(av, INFECTED)] = sign(other, av_key(av, INFECTED), "clean")
    c = CachedScan(store(redis), 50)
    assert c.scan(av, single(INFECTED), call()).status is Status.INFECTED and c.store.forged == 1
    # ... and one signed with ours (what an attacker who had the key file could do) is trusted:
    # the key is the secret. Here to show the test would notice a cache that ignores every entry.
    redis.data[av_key(av, b"other\r\n")] = sign(KEY, av_key(av, b"other\r\n"), "clean")
    v = c.scan(av, single(b"other\r\n"), call())
    assert v.extra.get("cache") == "hit"


def test_a_forged_attachment_entry_does_not_reduce_the_scan_to_the_text_parts() -> None:
    redis, av = FakeRedis(), FakeAV()
    c = CachedScan(store(redis), 50)
    version = hashlib.sha256(av.sig_version.encode()).hexdigest()[:16]
    redis.data[f"{PREFIX}{av.type_name}:{version}:{hashlib.sha256(EICARISH).hexdigest()}"] = "clean"
    v = c.scan(av, multipart("see attachment", EICARISH), call())
    assert v.status is Status.INFECTED and v.extra.get("cache") != "attachments" and c.store.forged == 1


def test_a_forged_infected_entry_does_not_refuse_clean_mail() -> None:
    redis, av = FakeRedis(), FakeAV()
    redis.data[av_key(av, b"invoice\r\n")] = "infected:Planted.FalsePositive"
    c = CachedScan(store(redis), 50)
    assert c.scan(av, single(b"invoice\r\n"), call()).status is Status.CLEAN and c.store.forged == 1


def test_non_text_garbage_is_ignored() -> None:
    redis, av = FakeRedis(), FakeAV()
    redis.data[av_key(av, INFECTED)] = b"\xff\xfe\x00clean"  # type: ignore[assignment]
    c = CachedScan(store(redis), 50)
    assert c.scan(av, single(INFECTED), call()).status is Status.INFECTED and c.store.forged == 1


def test_genuine_entries_are_shared_and_forgeries_logged_once_a_minute(caplog: pytest.LogCaptureFixture) -> None:
    redis, av = FakeRedis(), FakeAV()
    one, other = CachedScan(store(redis), 50), CachedScan(store(redis), 50)
    assert one.scan(av, single(b"shared\r\n"), call()).status is Status.CLEAN
    assert other.scan(av, single(b"shared\r\n"), call()).extra.get("cache") == "hit"
    assert len(av.scanned) == 1
    caplog.set_level(logging.ERROR, "quorum.verdictcache")
    for n in range(3):
        redis.data[av_key(av, INFECTED)] = "clean"
        assert other.scan(av, single(INFECTED), call()).status is Status.INFECTED, n
    assert other.store.forged == 3
    assert len(caplog.records) == 1
    assert "HMAC does not verify" in caplog.records[0].getMessage()


def test_without_a_key_redis_is_never_used(caplog: pytest.LogCaptureFixture) -> None:
    redis, av = FakeRedis(), FakeAV()
    redis.data[av_key(av, INFECTED)] = "clean"
    c = CachedScan(store(redis, key=None), 50)
    assert c.scan(av, single(INFECTED), call()).status is Status.INFECTED
    assert redis.mgets == 0 and redis.data == {av_key(av, INFECTED): "clean"}  # nothing read, nothing written
    caplog.set_level(logging.WARNING, "quorum.verdictcache")
    cache = make_cache(VerdictCacheSettings(redis=RedisSettings()))
    assert cache.store._factory is None
    assert "no hmac_key_file" in caplog.text


def test_the_config_key_reaches_the_cache(tmp_path: Path) -> None:
    config = parse_config(
        {
            "engines": {"clamav": {"type": "clamav", "address": "127.0.0.1:3310"}},
            "redis": {"url": "redis://q:x@127.0.0.1/0", "hmac_key_file": secret(tmp_path, "k", "z" * 40)},
            "verdict_cache": {},
        }
    )
    assert not any("verdict_cache" in w for w in config.warnings)
    cache = make_cache(config.feature("verdict_cache"))
    assert cache.store._key == entry_key(b"z" * 40) and cache.store._factory is not None


def test_a_secret_path_that_is_no_file_is_an_error(tmp_path: Path) -> None:
    import os

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for path in (str(fifo), str(tmp_path), "a\x00b"):
        _, problems = redis_table({"url": "redis://q@127.0.0.1/0", "password_file": path})
        assert any(e.startswith("redis.password_file:") for e in problems.errors), path
