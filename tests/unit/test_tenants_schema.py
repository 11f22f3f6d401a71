"""The `[domains."d"]` schema: file tables and Redis fragments, errors naming the dotted key and the fix."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import TypeAdapter

from quorum.assembly import parse_config
from quorum.config import Config, ConfigError
from quorum.config.model import EngineTable
from quorum.tenants import SchemaContext, parse_fragment
from quorum.tenants.extensions import DomainExtension, register_extension, unregister_extension
from quorum.tenants.feature import TABLES
from quorum.tenants.settings import TenantSettings

ENGINES: dict[str, Any] = {
    "clamav": {"type": "clamav", "address": "127.0.0.1:3310"},
    "rspamd": {"type": "rspamd", "url": "http://127.0.0.1:11333"},
    "spamassassin": {"type": "spamassassin", "address": "127.0.0.1:783"},
    "old": {"type": "clamav", "address": "127.0.0.1:3311", "enabled": False},
}


def config(domains: dict[str, Any] | None = None, **tables: Any) -> Config:
    data: dict[str, Any] = {"engines": ENGINES, **tables}
    if domains is not None:
        data["domains"] = domains
    return parse_config(data)


def problems(domains: dict[str, Any], **tables: Any) -> list[str]:
    with pytest.raises(ConfigError) as info:
        config(domains, **tables)
    return info.value.problems


def tenants(cfg: Config) -> TenantSettings:
    settings = cfg.feature("tenants")
    assert isinstance(settings, TenantSettings)
    return settings


def test_absent_means_no_feature() -> None:
    assert config().feature("tenants") is None


def test_every_key_parses() -> None:
    cfg = config(
        {
            "Example.COM": {
                "engines": ["clamav", "rspamd"],
                "policy": {"on_spam": "reject", "spam_reject_score": 12},
                "dmarc_enforce": "reject",
                "dnsbl": False,
                "bypass": False,
                "replies": {"spam": "no thanks", "virus": "infected: {name}", "disclose_virus_name": True},
                "rules": [{"name": "r", "where": "body", "pattern": "win(ner)?", "action": "reject"}],
            },
            "*.example.org": {"engines": {"rspamd": {"weight": 2, "threshold": 7.5, "mode": "shadow"}}},
        },
        auth={},
    )
    entries = tenants(cfg).domains
    assert sorted(entries) == ["*.example.org", "example.com"]
    values = entries["example.com"].values
    assert values["engines"] == ("clamav", "rspamd")
    assert values["policy.on_spam"] == "reject"
    assert values["policy.spam_reject_score"] == 12.0
    assert "policy.on_virus" not in values  # unset keys keep the layer below
    assert values["replies.disclose_virus_name"] is True
    assert len(values["rules"]) == 1
    assert entries["*.example.org"].values == {
        "engines.rspamd.weight": 2.0,
        "engines.rspamd.threshold": 7.5,
        "engines.rspamd.mode": "shadow",
    }


@pytest.mark.parametrize(
    ("domains", "expected"),
    [
        (
            {"example.com": {"policy": {"on_spam": "bounce"}}},
            "domains.\"example.com\".policy.on_spam: must be one of tag | quarantine | reject, got 'bounce'",
        ),
        (
            {"example.com": {"policy": {"spam_quorum": 0}}},
            'domains."example.com".policy.spam_quorum: must be at least 1, got 0',
        ),
        (
            {"example.com": {"policy": {"on_spamm": "tag"}}},
            "domains.\"example.com\".policy.on_spamm: unknown key; did you mean 'on_spam'",
        ),
        ({"example.com": {"engine": []}}, 'domains."example.com".engine: unknown key'),
        (
            {"example.com": {"engines": ["clamav", "sophos"]}},
            "domains.\"example.com\".engines: unknown engine 'sophos'; configured engines: clamav, rspamd",
        ),
        (
            {"example.com": {"engines": ["old"]}},
            "domains.\"example.com\".engines: engine 'old' is disabled in [engines.old]; enable it there",
        ),
        ({"example.com": {"engines": ["clamav", "clamav"]}}, "'clamav' is listed twice"),
        ({"example.com": {"engines": "clamav"}}, 'domains."example.com".engines: expected a list of engine names'),
        (
            {"example.com": {"engines": {"rspamd": {"weight": -1}}}},
            'domains."example.com".engines.rspamd.weight: must be at least 0.0',
        ),
        (
            {"example.com": {"engines": {"rspamd": {"timeout": 3}}}},
            'domains."example.com".engines.rspamd.timeout: unknown key',
        ),
        (
            {"example.com": {"engines": {"old": {"enabled": True}}}},
            "domains.\"example.com\".engines.old.enabled: engine 'old' is disabled",
        ),
        (
            {"example.com": {"dmarc_enforce": "yes"}},
            'domains."example.com".dmarc_enforce: must be one of off | quarantine | reject',
        ),
        ({"example.com": {"dnsbl": "no"}}, 'domains."example.com".dnsbl: expected true or false'),
        ({"example.com": {"bypass": 1}}, 'domains."example.com".bypass: expected true or false'),
        ({"example.com": {"replies": {"spam": ""}}}, 'domains."example.com".replies.spam: empty'),
        ({"example.com": {"replies": {"spam": "a\r\nb"}}}, "replies.spam: contains control characters"),
        ({"example.com": {"replies": {"spam": "x" * 401}}}, "replies.spam: 401 characters"),
        (
            {"example.com": {"replies": {"rule": "refused by {engine}"}}},
            'domains."example.com".replies.rule: unknown placeholder {engine}; allowed here: {rule}',
        ),
        (
            {"example.com": {"replies": {"virus": "virus {name}"}}},
            'domains."example.com".replies.virus: {name} discloses the virus name; set disclose_virus_name = true',
        ),
        ({"example.com": {"replies": {"bounce": "x"}}}, 'domains."example.com".replies.bounce: unknown key'),
        ({"example.com": {"rules": [{"name": "r", "where": "body", "pattern": "("}]}}, "rules[0].pattern"),
        ({"example.com": "reject"}, 'domains."example.com": expected a table'),
        ({"exa mple.com": {}}, 'domains."exa mple.com": label'),
        ({"a.*.example.com": {}}, 'a wildcard is only allowed as the first label, as in "*.example.com"'),
        ({"Example.com": {}, "example.COM.": {}}, "configured twice"),
        (
            {"example.com": {"policy": {"spam_combine": "quorum", "spam_quorum": 2}, "engines": ["rspamd"]}},
            'domains."example.com".policy.spam_quorum: 2 exceeds the 1 voting antispam engine(s) this domain uses',
        ),
    ],
)
def test_errors_name_the_dotted_key(domains: dict[str, Any], expected: str) -> None:
    found = problems(domains)
    assert any(expected in p for p in found), found


def test_all_problems_at_once() -> None:
    found = problems({"a.example": {"policy": {"on_spam": "x"}}, "b.example": {"dnsbl": 3}})
    assert len(found) == 2


def test_warnings() -> None:
    cfg = config({"example.com": {"dnsbl": True, "dmarc_enforce": "reject"}})
    assert any("dnsbl: no [[dnsbl]] list is configured" in w for w in cfg.warnings)
    assert any("dmarc_enforce: DMARC is not evaluated" in w for w in cfg.warnings)


def test_tenants_table() -> None:
    cfg = config(
        {},
        tenants={"store": "redis", "refresh": "2s", "cache_size": 500, "key_prefix": "t:"},
        redis={"url": "redis://127.0.0.1:6390/0"},
    )
    s = tenants(cfg)
    assert (s.store, s.refresh, s.cache_size, s.key_prefix) == ("redis", 2.0, 500, "t:")
    assert s.redis is not None and s.redis.url == "redis://127.0.0.1:6390/0"
    assert tenants(config(tenants={})).redis is None  # store = "file": [redis] is not needed


@pytest.mark.parametrize(
    ("tables", "expected"),
    [
        ({"tenants": {"store": "memcached"}}, "tenants.store: must be one of file | redis"),
        ({"tenants": {"refresh": "soon"}}, "tenants.refresh: expected seconds or a duration"),
        ({"tenants": {"key_prefix": "{t}:"}}, "tenants.key_prefix: must not contain '{' or '}'"),
        ({"tenants": {"cache_size": 1}}, "tenants.cache_size: must be at least 16"),
        ({"tenants": {"colour": 1}}, "tenants.colour: unknown key"),
        ({"tenants": {"store": "redis"}, "redis": {"url": "http://x"}}, "redis.url: 'http://x': use redis://"),
    ],
)
def test_tenants_table_errors(tables: dict[str, Any], expected: str) -> None:
    found = problems({}, **tables)
    assert any(expected in p for p in found), found


def test_redis_problems_reported_once_with_ratelimit() -> None:
    found = problems(
        {},
        tenants={"store": "redis"},
        redis={"url": "http://x"},
        ratelimit={"sender_domain": {"messages": 5, "per": "1h"}},
    )
    assert len([p for p in found if p.startswith("redis.url")]) == 1


def ctx() -> SchemaContext:
    return SchemaContext.from_config(config())


def test_fragment_same_schema() -> None:
    entry, found = parse_fragment({"policy": {"on_spam": "reject"}}, "Example.com", ctx())
    assert entry is not None and entry.name == "example.com" and not found.errors
    wrapped = {"domains": {"example.com": {"policy": {"on_spam": "reject"}}}}
    same, _ = parse_fragment(wrapped, "example.com", ctx())
    assert same is not None and same.values == entry.values


@pytest.mark.parametrize(
    ("data", "domain", "expected"),
    [
        ({"policy": {"on_spam": "bounce"}}, "example.com", 'domains."example.com".policy.on_spam: must be one of'),
        ({"policy": {"on_spam": None}}, "example.com", 'domains."example.com".policy.on_spam: null is not a value'),
        ({"bypass": True}, "*.example.com", "wildcards are matched in the config file only"),
        (["engines"], "example.com", 'domains."example.com": expected a table'),
        ({}, "exa mple.com", 'domains."exa mple.com": label'),
        ({"domains": {"other.com": {}}}, "example.com", 'domains."example.com".domains: unknown key'),
    ],
)
def test_fragment_errors(data: Any, domain: str, expected: str) -> None:
    entry, found = parse_fragment(data, domain, ctx())
    assert entry is None
    assert any(expected in p for p in found.errors), found.errors


class _Ext:
    @staticmethod
    def parse_domain(table: Any, key: str) -> Any:
        value = table.raw(key)
        if value not in ("reject", "tag", "off"):
            table.problems.error(table.key(key), "must be one of reject | tag | off")
        return value


def test_extension_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "tests_fake_backscatter", _Ext)
    register_extension(DomainExtension("colour", "tests_fake_backscatter"))
    try:
        cfg = config({"example.com": {"colour": "reject"}})
        assert tenants(cfg).domains["example.com"].values["colour"] == "reject"
        found = problems({"example.com": {"colour": "maybe"}})
        assert found == ['domains."example.com".colour: must be one of reject | tag | off']
    finally:
        unregister_extension("colour")
    assert any("colour: unknown key" in p for p in problems({"example.com": {"colour": "reject"}}))


# -- non-finite numbers in tenant records (issue 17, item 5) ----------------------------------

NON_FINITE_RECORDS = [
    ('{"engines": {"rspamd": {"threshold": NaN}}}', 'domains."example.com".engines.rspamd.threshold'),
    ('{"engines": {"rspamd": {"threshold": Infinity}}}', 'domains."example.com".engines.rspamd.threshold'),
    ('{"engines": {"rspamd": {"weight": -Infinity}}}', 'domains."example.com".engines.rspamd.weight'),
    ('{"engines": {"rspamd": {"weight": 1e999}}}', 'domains."example.com".engines.rspamd.weight'),
    ('{"policy": {"spam_reject_score": NaN}}', 'domains."example.com".policy.spam_reject_score'),
    ('{"policy": {"cascade_clean_below": NaN}}', 'domains."example.com".policy.cascade_clean_below'),
    ('{"policy": {"spam_quorum": 1e400}}', 'domains."example.com".policy.spam_quorum'),
]


@pytest.mark.parametrize(("record", "key"), NON_FINITE_RECORDS, ids=[k for _, k in NON_FINITE_RECORDS])
def test_non_finite_numbers_in_a_redis_record_are_refused(record: str, key: str) -> None:
    """JSON as Python reads it accepts NaN and Infinity: a record with `threshold: NaN` made the engine
    never vote spam for that domain (nan compares false with every score)."""
    import json

    entry, found = parse_fragment(json.loads(record), "example.com", ctx())
    assert entry is None
    assert any(p.startswith(f"{key}: ") for p in found.errors), found.errors


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_numbers_in_the_file_are_refused(value: float) -> None:
    found = problems({"example.com": {"engines": {"rspamd": {"threshold": value}}}})
    assert any(p.startswith('domains."example.com".engines.rspamd.threshold: must be a finite number') for p in found)


def test_a_deeply_nested_record_is_refused_not_raised() -> None:
    deep: Any = {}
    node = deep
    for _ in range(5000):
        node["x"] = {}
        node = node["x"]
    entry, found = parse_fragment({"rules": deep}, "example.com", ctx())
    assert entry is None and found.errors


# -- one model for the file and the records, and for `quorum schema` (issue 18) --------------------


@pytest.mark.parametrize("name", sorted(TABLES))
def test_tables_have_a_json_schema(name: str) -> None:
    assert TypeAdapter(TABLES[name]).json_schema()


def test_the_domain_schema_lists_every_key() -> None:
    schema = TypeAdapter(TABLES["domains"]).json_schema()
    domain = schema["$defs"][schema["additionalProperties"]["$ref"].rsplit("/", 1)[1]]
    keys = {"engines", "policy", "replies", "dmarc_enforce", "dnsbl", "bypass", "rules"}
    assert keys | {"notify", "backscatter", "quarantine_retention"} <= set(domain["properties"])
    assert domain["additionalProperties"] is False
    overrides = schema["$defs"]["EngineOverrides"]["properties"]
    assert set(overrides) == {"enabled", "mode", "weight", "threshold"}
    assert overrides["weight"]["minimum"] == EngineTable.model_fields["weight"].metadata[0].ge


@pytest.mark.parametrize(
    ("replies", "expected"),
    [
        ({"spam": "a\tb"}, "replies.spam: contains control characters"),
        ({"spam": "x" * 401}, "replies.spam: 401 characters"),
        ({"spam": " "}, "replies.spam: empty"),
        ({"rule": "refused by {engine}"}, "replies.rule: unknown placeholder {engine}; allowed here: {rule}"),
    ],
)
def test_global_and_domain_replies_share_one_model(replies: dict[str, Any], expected: str) -> None:
    assert any(
        p.startswith(f'domains."example.com".{expected}') for p in problems({"example.com": {"replies": replies}})
    )
    assert any(p.startswith(expected) for p in problems({}, replies=replies))
    assert config({"example.com": {"replies": {"spam": "x" * 400}}}, replies={"spam": "x" * 400})  # the same bound


def test_a_record_reports_its_nulls_and_every_other_problem_once() -> None:
    record = {"policy": {"on_spam": None, "on_virus": "explode"}, "dnsbl": None, "bypass": 1}
    entry, found = parse_fragment(record, "example.com", ctx())
    assert entry is None
    assert sorted(found.errors) == [
        'domains."example.com".bypass: expected true or false, got 1; fix the value or remove the key',
        'domains."example.com".dnsbl: null is not a value; remove the key to keep the default',
        'domains."example.com".policy.on_spam: null is not a value; remove the key to keep the default',
        "domains.\"example.com\".policy.on_virus: must be one of reject | quarantine | discard | tag, got 'explode'",
    ]
