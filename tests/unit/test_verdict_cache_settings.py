"""`[verdict_cache]`: bounds, every problem at its key, off when disabled, the unsigned-Redis warning."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import TypeAdapter

from quorum.config.fields import Problems, Table
from quorum.verdictcache.feature import TABLES
from quorum.verdictcache.settings import VerdictCacheSettings, parse_settings

REDIS = {"url": "redis://127.0.0.1:6379/0"}


def parsed(data: dict[str, Any]) -> tuple[VerdictCacheSettings | None, Problems]:
    problems = Problems()
    return parse_settings(Table(data, "", problems)), problems


def test_absent_is_off_and_an_empty_table_is_on_with_the_defaults() -> None:
    assert parsed({}) == (None, Problems())
    settings, problems = parsed({"verdict_cache": {}})
    assert settings == VerdictCacheSettings() and problems == Problems()
    settings, _ = parsed({"verdict_cache": {"ttl": "10m", "max_size": "2M", "local_entries": 0}})
    assert settings is not None and (settings.ttl, settings.max_size, settings.local_entries) == (600.0, 2 << 20, 0)


def test_every_problem_names_its_key() -> None:
    table = {"ttl": "0.5s", "local_entries": -1, "key_prefix": 1, "max_parts": 0, "max_size": 512, "max_part": 1}
    _, problems = parsed({"verdict_cache": table})
    assert problems.errors == [
        "verdict_cache.ttl: must be at least 1.0, got 0.5",
        "verdict_cache.local_entries: must be at least 0, got -1",
        "verdict_cache.key_prefix: expected a string, got 1; fix the value or remove the key",
        "verdict_cache.max_parts: must be at least 1, got 0",
        "verdict_cache.max_size: must be at least 1024, got 512",
        "verdict_cache.max_part: unknown key; did you mean 'max_parts'? (see README, Configuration)",
    ]


def test_disabled_is_off_but_still_checked() -> None:
    settings, problems = parsed({"verdict_cache": {"enabled": False}, "redis": REDIS})
    assert settings is None and not any(w.startswith("verdict_cache") for w in problems.warnings)
    _, problems = parsed({"verdict_cache": {"enabled": False, "ttl": 0}})
    assert problems.errors == ["verdict_cache.ttl: must be at least 1.0, got 0.0"]


def test_redis_without_an_hmac_key_is_not_used_and_check_config_says_so() -> None:
    settings, problems = parsed({"verdict_cache": {}, "redis": REDIS})
    assert settings is not None and settings.redis is not None and settings.redis.hmac_key is None
    assert any(w.startswith("verdict_cache: not shared through Redis") for w in problems.warnings)


@pytest.mark.parametrize("name", sorted(TABLES))
def test_the_tables_have_a_json_schema(name: str) -> None:
    schema = TypeAdapter(TABLES[name]).json_schema()
    assert set(schema["properties"]) == {"enabled", "ttl", "local_entries", "key_prefix", "max_parts", "max_size"}
