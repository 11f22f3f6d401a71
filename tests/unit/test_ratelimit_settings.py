"""[redis] and [ratelimit] parsing: defaults, overrides, and errors that name the key and the fix."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest
from pydantic import TypeAdapter

from quorum.assembly import parse_config
from quorum.config import ConfigError
from quorum.ratelimit.feature import TABLES
from quorum.ratelimit.settings import RateLimitSettings, Rule, format_duration


def settings(data: dict[str, Any]) -> RateLimitSettings:
    value = parse_config(data).feature("ratelimit")
    assert isinstance(value, RateLimitSettings)
    return value


def errors(data: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as exc:
        parse_config(data)
    return str(exc.value)


ISSUE_EXAMPLE = {
    "redis": {"url": "redis://127.0.0.1:6379/0"},
    "ratelimit": {
        "enabled": True,
        "sender_domain": {"messages": 500, "per": "1h"},
        "recipient_domain": {"messages": 5000, "per": "1h"},
        "client_ip": {"messages": 200, "per": "10m"},
        "auth_user": {"recipients": 1000, "per": "1h"},
        "domains": {"bulk.example": {"sender_domain": {"messages": 50000, "per": "1h"}}},
    },
}


def test_issue_example_parses() -> None:
    s = settings(ISSUE_EXAMPLE)
    assert s.defaults["sender_domain"] == (Rule("messages", 500, 3600.0),)
    assert s.defaults["client_ip"] == (Rule("messages", 200, 600.0),)
    assert s.defaults["auth_user"] == (Rule("recipients", 1000, 3600.0),)
    assert s.domains["bulk.example"].kinds["sender_domain"] == (Rule("messages", 50000, 3600.0),)
    assert s.redis.mode == "single" and s.redis.timeout == 0.25


def test_absent_or_disabled_is_none_and_redis_alone_is_not_unknown() -> None:
    assert parse_config({}).feature("ratelimit") is None
    assert parse_config({"redis": {"url": "redis://x:1/0"}}).feature("ratelimit") is None
    assert (
        parse_config({"ratelimit": {"enabled": False, "sender_domain": {"messages": 1}}}).feature("ratelimit") is None
    )


def test_both_units_a_list_of_windows_and_zero_is_unlimited() -> None:
    s = settings(
        {
            "ratelimit": {
                "sender_domain": [{"messages": 10, "recipients": 100, "per": "1m"}, {"messages": 500, "per": "1d"}],
                "client_ip": {"messages": 0},
                "domains": {"Big.Example.": {"exempt": True}, "free.example": {"recipient_domain": {"messages": 0}}},
                "networks": {
                    "10.0.0.0/8": {"exempt": True},
                    "10.1.0.0/16": {"client_ip": {"messages": 5, "per": "1s"}},
                },
            }
        }
    )
    assert s.defaults["sender_domain"] == (
        Rule("messages", 10, 60.0),
        Rule("recipients", 100, 60.0),
        Rule("messages", 500, 86400.0),
    )
    assert s.defaults["client_ip"] == ()
    assert s.domains["big.example"].exempt
    assert s.domains["free.example"].kinds["recipient_domain"] == ()
    assert [str(net) for net in s.networks] == ["10.1.0.0/16", "10.0.0.0/8"]  # longest prefix first
    assert s.networks[ipaddress.ip_network("10.0.0.0/8")].exempt


def test_cluster_and_sentinel_modes() -> None:
    s = settings(
        {
            "redis": {"url": "redis://127.0.0.1:7000", "cluster": True, "cluster_nodes": ["127.0.0.1:7001"]},
            "ratelimit": {},
        }
    )
    assert s.redis.mode == "cluster" and s.redis.cluster_nodes == (("127.0.0.1", 7001),)
    s = settings(
        {
            "redis": {"sentinels": ["127.0.0.1:26379", "[::1]:26380"], "service_name": "quorum", "timeout": "100ms"},
            "ratelimit": {},
        }
    )
    assert s.redis.mode == "sentinel"
    assert s.redis.sentinels == (("127.0.0.1", 26379), ("::1", 26380))
    assert s.redis.timeout == s.redis.connect_timeout == 0.1


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            {"ratelimit": {"sender_domain": {"messages": 5}}},
            'ratelimit.sender_domain.per: missing; set the window, e.g. per = "1h"',
        ),
        ({"ratelimit": {"sender_domain": {"per": "1h"}}}, "ratelimit.sender_domain: set messages and/or recipients"),
        (
            {"ratelimit": {"sender_domain": {"messages": -1, "per": "1h"}}},
            "ratelimit.sender_domain.messages: must be at least 0",
        ),
        (
            {"ratelimit": {"sender_domain": {"messages": 5, "per": "soon"}}},
            "ratelimit.sender_domain.per: expected seconds",
        ),
        (
            {"ratelimit": {"sender_domain": {"messages": 5, "per": "1h", "burst": 3}}},
            "ratelimit.sender_domain.burst: unknown key",
        ),
        ({"ratelimit": {"sender_domain": 500}}, "ratelimit.sender_domain: expected a table such as"),
        (
            {"ratelimit": {"sender_domain": [{"messages": 1, "per": "1h"}, {"messages": 2, "per": "60m"}]}},
            "two limits count messages per 1h",
        ),
        ({"ratelimit": {"sender_domain": {"messages": 10**9, "per": "1s"}}}, "more than one per microsecond"),
        ({"ratelimit": {"sender_domain": {"messages": 1, "per": "1.0001s"}}}, "must be whole milliseconds"),
        ({"ratelimit": {"senders": {}}}, "ratelimit.senders: unknown key"),
        (
            {"ratelimit": {"domains": {"x.example": {"client_ip": {"messages": 1, "per": "1h"}}}}},
            '[ratelimit.networks."192.0.2.0/24"]',
        ),
        ({"ratelimit": {"domains": {"user@x.example": {"exempt": True}}}}, "not a domain name"),
        (
            {"ratelimit": {"networks": {"10.0.0.300/8": {"exempt": True}}}},
            'ratelimit.networks."10.0.0.300/8": not an IP address',
        ),
        ({"ratelimit": {"key_prefix": "{q}:"}}, "ratelimit.key_prefix: must not contain '{' or '}'"),
        (
            {"redis": {"url": "http://127.0.0.1:6379"}, "ratelimit": {}},
            "redis.url: 'http://127.0.0.1:6379': use redis://",
        ),
        (
            {"redis": {"cluster": True, "sentinels": ["h:1"], "service_name": "q"}, "ratelimit": {}},
            "redis.cluster: a Redis Cluster is not used through Sentinel",
        ),
        ({"redis": {"sentinels": ["127.0.0.1:26379"]}, "ratelimit": {}}, "redis.service_name: missing"),
        (
            {"redis": {"sentinels": ["127.0.0.1:port"], "service_name": "q"}, "ratelimit": {}},
            "redis.sentinels[0]: '127.0.0.1:port' is not \"host:port\"",
        ),
        ({"redis": {"cluster_nodes": ["h:1"]}, "ratelimit": {}}, "redis.cluster_nodes: only used with cluster = true"),
        ({"redis": {"timeout": "0"}, "ratelimit": {}}, "redis.timeout: must be at least 0.01"),
        ({"redis": {"urll": "redis://x"}, "ratelimit": {}}, "redis.urll: unknown key"),
    ],
)
def test_errors_name_the_key_and_the_fix(data: dict[str, Any], expected: str) -> None:
    assert expected in errors(data)


@pytest.mark.parametrize(
    ("seconds", "text"), [(3600, "1h"), (600, "10m"), (90, "90s"), (0.5, "500ms"), (86400 * 2, "2d")]
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_rule_interval_is_whole_microseconds() -> None:
    assert Rule("messages", 500, 3600.0).interval_us == 7_200_000
    assert Rule("messages", 7, 3600.0).interval_us == 514_285_714
    assert Rule("messages", 3, 0.05).interval_us == 16_667


def test_no_limits_is_a_warning() -> None:
    config = parse_config({"ratelimit": {"client_ip": {"messages": 0}}})
    assert any("ratelimit: no limits configured" in w for w in config.warnings)
    example = {**ISSUE_EXAMPLE, "ratelimit": {**ISSUE_EXAMPLE["ratelimit"], "recipient_domain_share": 0.2}}
    assert not [w for w in parse_config(example).warnings if w.startswith("ratelimit")]


# --- recipient_domain_share: one client's share of a recipient domain's bucket -------------------


def test_recipient_domain_share_defaults_off_and_parses() -> None:
    s = settings(ISSUE_EXAMPLE)
    assert s.recipient_domain_share == 1.0 and s.recipient_domain_share_by == "client_ip"
    data = {
        "ratelimit": {
            "recipient_domain": {"messages": 100, "per": "1h"},
            "recipient_domain_share": 0.2,
            "recipient_domain_share_by": "sender",
            "domains": {
                "big.example": {"recipient_domain_share": 0.5},
                "other.example": {"recipient_domain": {"messages": 10, "per": "1m"}},
            },
        }
    }
    s = settings(data)
    assert s.recipient_domain_share == 0.2 and s.recipient_domain_share_by == "sender"
    assert s.share(s.domains["big.example"]) == 0.5
    assert s.share(s.domains["other.example"]) == 0.2  # its own limits, the default share
    assert s.share(None) == 0.2


def test_a_recipient_domain_bucket_without_a_share_is_warned_about() -> None:
    warnings = parse_config({"ratelimit": {"recipient_domain": {"messages": 100, "per": "1h"}}}).warnings
    (warning,) = [w for w in warnings if w.startswith("ratelimit.recipient_domain_share:")]
    assert "any single sender" in warning and "recipient_domain_share (e.g. 0.2)" in warning
    # Only a per-domain limit without a share: that domain is named.
    data = {"ratelimit": {"domains": {"t.example": {"recipient_domain": {"messages": 9, "per": "1h"}}}}}
    assert any("recipient_domain of t.example" in w for w in parse_config(data).warnings)
    data["ratelimit"]["domains"]["t.example"]["recipient_domain_share"] = 0.3
    assert not [w for w in parse_config(data).warnings if "recipient_domain_share" in w]
    # No recipient_domain limit at all: nothing to guard.
    quiet = parse_config({"ratelimit": {"client_ip": {"messages": 9, "per": "1h"}}})
    assert not [w for w in quiet.warnings if "recipient_domain_share" in w]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, "ratelimit.recipient_domain_share: must be above 0"),
        (0.0, "ratelimit.recipient_domain_share: must be above 0"),
        (-0.5, "ratelimit.recipient_domain_share: must be at least 0"),
        (1.5, "ratelimit.recipient_domain_share: must be at most 1"),
        (float("nan"), "ratelimit.recipient_domain_share: must be a finite number"),
        (float("inf"), "ratelimit.recipient_domain_share: must be a finite number"),
        ("20%", "ratelimit.recipient_domain_share"),
        (True, "ratelimit.recipient_domain_share"),
    ],
)
def test_bad_share_names_the_key(value: Any, expected: str) -> None:
    data = {"ratelimit": {"recipient_domain": {"messages": 100, "per": "1h"}, "recipient_domain_share": value}}
    assert expected in errors(data)
    domain = {"ratelimit": {"domains": {"d.example": {"recipient_domain_share": value}}}}
    assert expected.replace("ratelimit.", 'ratelimit.domains."d.example".') in errors(domain)


def test_bad_share_by_names_the_key_and_the_choices() -> None:
    message = errors({"ratelimit": {"recipient_domain_share_by": "helo"}})
    assert "ratelimit.recipient_domain_share_by: must be one of client_ip | sender, got 'helo'" in message
    # Networks take no share (a share is of a recipient domain).
    assert "recipient_domain_share" in errors(
        {"ratelimit": {"networks": {"192.0.2.0/24": {"recipient_domain_share": 0.5}}}}
    )


# --- the models: every problem at once, under the key as written; `quorum schema` -----------------


def test_every_problem_is_reported_under_the_key_as_written() -> None:
    message = errors(
        {
            "ratelimit": {
                "sender_domain": {"messages": 5, "pre": "1h"},  # one table: no [0] in its key
                "client_ip": [{"messages": 5, "per": "1h"}, {"mesages": 5, "per": "1m"}],
                "domains": {"A.example": {"sender_domian": {}}, "b@x": {}},
                "networks": {"10.0.0.0/8": {"exemt": True}, "nope": {}},
            }
        }
    ).splitlines()
    assert message == [
        "ratelimit.sender_domain.pre: unknown key; did you mean 'per'? (see README, Configuration)",
        "ratelimit.client_ip[1].mesages: unknown key; did you mean 'messages'? (see README, Configuration)",
        "ratelimit.domains.\"A.example\".sender_domian: unknown key; did you mean 'sender_domain'? "
        "(see README, Configuration)",
        'ratelimit.domains."b@x": not a domain name; use the bare domain, e.g. [ratelimit.domains."example.com"]',
        "ratelimit.networks.\"10.0.0.0/8\".exemt: unknown key; did you mean 'exempt'? (see README, Configuration)",
        'ratelimit.networks.nope: not an IP address or network; use e.g. "192.0.2.0/24" or "2001:db8::/48"',
    ]


def test_a_domain_twice_and_every_redis_conflict_at_once() -> None:
    twice = {"ratelimit": {"domains": {"A.example": {"exempt": True}, "a.example.": {}}}}
    assert 'ratelimit.domains."a.example.": a.example is configured twice' in errors(twice)
    twice = {"ratelimit": {"networks": {"10.0.0.0/8": {"exempt": True}, "10.0.0.1/8": {}}}}
    assert "ratelimit.networks.\"10.0.0.1/8\": 10.0.0.0/8 is configured twice ('10.0.0.0/8' too)" in errors(twice)
    message = errors(
        {
            "redis": {
                "url": "redis://u:p@127.0.0.1/0",
                "password_file": "/dev/null",
                "cluster_nodes": ["h:1"],
                "service_name": "q",
                "tls_cert_file": "/dev/null",
            },
            "ratelimit": {},
        }
    )
    for key in ("password_file", "cluster_nodes", "sentinels", "tls_cert_file"):
        assert f"\nredis.{key}: " in f"\n{message}", key
    assert "redis.password: unknown key; did you mean 'password_file'?" in errors(
        {"redis": {"password": "x"}, "ratelimit": {}}
    )


@pytest.mark.parametrize("name", sorted(TABLES))
def test_tables_have_a_json_schema(name: str) -> None:
    schema = TypeAdapter(TABLES[name]).json_schema()
    assert schema["type"] == "object" and schema["additionalProperties"] is False
    assert set(schema["properties"]) >= {"ratelimit": {"sender_domain", "domains", "networks"}, "redis": {"url"}}[name]
