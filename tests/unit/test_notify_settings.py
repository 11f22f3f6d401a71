"""`[notify]` and `[domains."d".notify]` validation: every problem names its dotted key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import TypeAdapter

from quorum.config.fields import Problems, Table
from quorum.notify.feature import TABLES
from quorum.notify.settings import DEFAULT_EVENTS, DomainNotify, NotifySettings, parse_domain_notify, parse_settings
from quorum.notify.tenant import parse_domain


def parse(data: dict[str, Any]) -> tuple[Any, Problems]:
    problems = Problems()
    root = Table(data, "", problems)
    settings = parse_settings(root)
    root.reject_unknown()
    return settings, problems


def test_absent_or_disabled_is_off() -> None:
    assert parse({})[0] is None
    assert parse({"notify": {"enabled": False}})[0] is None


def test_full_table(tmp_path: Path) -> None:
    settings, problems = parse(
        {
            "notify": {
                "from": "Mail Filter <postmaster@example.net>",
                "relay": "[::1]:10026",
                "daily_cap": 5,
                "templates": str(tmp_path),
                "queue_size": 10,
                "retry_backoff": "5s",
                "retry_backoff_max": "10m",
                "max_attempts": 3,
                "max_age": "2h",
            },
            "redis": {"url": "redis://127.0.0.1:6390/1"},
        }
    )
    assert problems.errors == [] and [w for w in problems.warnings if not w.startswith("redis.")] == []
    assert settings.relay == ("::1", 10026)
    assert (settings.daily_cap, settings.queue_size, settings.max_attempts) == (5, 10, 3)
    assert (settings.retry_backoff, settings.retry_backoff_max, settings.max_age) == (5.0, 600.0, 7200.0)
    assert settings.templates == tmp_path
    assert settings.redis is not None and settings.redis.url == "redis://127.0.0.1:6390/1"


def test_errors_name_the_key() -> None:
    _, problems = parse(
        {
            "notify": {
                "relay": "localhost",
                "daily_cap": -1,
                "templates": "/nonexistent/dir",
                "queue_size": 0,
                "colour": "blue",
            }
        }
    )
    keys = sorted(e.split(":", 1)[0] for e in problems.errors)
    assert keys == [
        "notify.colour",
        "notify.daily_cap",
        "notify.from",
        "notify.queue_size",
        "notify.relay",
        "notify.templates",
    ]


def test_from_must_be_an_address() -> None:
    _, problems = parse({"notify": {"from": "not an address"}})
    assert problems.errors and problems.errors[0].startswith("notify.from:")


def test_cap_without_redis_warns() -> None:
    settings, problems = parse({"notify": {"from": "pm@example.net"}})
    assert settings.redis is None
    assert any(w.startswith("notify.daily_cap:") for w in problems.warnings)


def test_redis_problems_are_reported_once_when_the_rate_limiter_reads_it_too() -> None:
    from quorum.ratelimit.settings import parse_settings as parse_ratelimit

    problems = Problems()
    root = Table(
        {
            "redis": {"url": "http://x"},
            "ratelimit": {"client_ip": {"messages": 1, "per": "1h"}},
            "notify": {"from": "pm@example.net"},
        },
        "",
        problems,
    )
    parse_ratelimit(root)
    parse_settings(root)
    root.reject_unknown()
    assert len([e for e in problems.errors if e.startswith("redis.url")]) == 1


def domain(data: Any) -> tuple[DomainNotify, Problems]:
    problems = Problems()
    return parse_domain_notify(Table(data, 'domains."example.com".notify', problems)), problems


def test_domain_defaults_tell_nobody() -> None:
    settings, problems = domain({})
    assert settings == DomainNotify()
    assert settings.events == DEFAULT_EVENTS
    assert not settings.wants("virus")
    assert problems.errors == []


def test_domain_table() -> None:
    settings, problems = domain(
        {"admin": ["postmaster@example.com"], "recipient": True, "events": ["virus", "rule", "virus"]}
    )
    assert problems.errors == []
    assert settings == DomainNotify(admin=("postmaster@example.com",), recipient=True, events=("rule", "virus"))
    assert settings.wants("virus") and settings.wants("rule") and not settings.wants("quarantine")


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"admin": "postmaster@example.com"}, "admin"),
        ({"admin": ["postmaster@example.com", "nobody"]}, "admin[1]"),
        ({"recipient": "yes"}, "recipient"),
        ({"events": ["virus", "phish"]}, "events[1]"),  # the item
        ({"sender_virus": True}, "sender_virus"),
        ({"admins": ["x@example.com"]}, "admins"),
    ],
)
def test_domain_errors_name_the_key(data: dict[str, Any], key: str) -> None:
    _, problems = domain(data)
    assert [e.split(":", 1)[0] for e in problems.errors] == [f'domains."example.com".notify.{key}']


def test_tenant_extension_parses_the_domain_key() -> None:
    problems = Problems()
    table = Table({"notify": {"recipient": True}}, 'domains."example.com"', problems)
    assert parse_domain(table, "notify") == DomainNotify(recipient=True)
    assert problems.errors == []
    table = Table({"notify": "yes"}, 'domains."example.com"', problems)
    assert parse_domain(table, "notify") == DomainNotify()
    assert problems.errors[0].startswith('domains."example.com".notify:')


@pytest.mark.parametrize("name", sorted(TABLES))
def test_tables_have_a_json_schema(name: str) -> None:
    schema = TypeAdapter(TABLES[name]).json_schema()
    assert {"from", "relay", "daily_cap"} <= set(schema["properties"]) and "redis" not in schema["properties"]
    assert schema["properties"]["relay"] == {"default": "127.0.0.1:10026", "title": "Relay", "type": "string"}


def test_messages_say_what_to_write() -> None:
    _, problems = parse({"notify": {"relay": "localhost", "templates": 5, "key_prefix": "q{x}"}})
    assert problems.errors == [
        'notify.from: missing; set the From: address of notices, e.g. "postmaster@example.net"',
        'notify.relay: \'localhost\' is not "host:port"; name the notice listener, e.g. "127.0.0.1:10026"',
        "notify.templates: expected a string, got 5; fix the value or remove the key",
        "notify.key_prefix: must not contain '{' or '}' (Redis Cluster hash tags); remove them",
    ]


def test_from_is_the_only_spelling_in_the_file_and_from_address_in_code() -> None:
    _, problems = parse({"notify": {"from_address": "pm@example.net"}})
    assert [e.split(":", 1)[0] for e in problems.errors] == ["notify.from_address"]
    made = NotifySettings(from_address="pm@example.net", relay=("::1", 25))
    assert (made.from_address, made.relay, made.redis) == ("pm@example.net", ("::1", 25), None)


def test_a_disabled_table_is_not_checked() -> None:
    settings, problems = parse({"notify": {"enabled": False, "relay": "nowhere"}})
    assert settings is None and problems.errors == []


def test_empty_templates_means_the_built_in_ones() -> None:
    settings, problems = parse({"notify": {"from": "pm@example.net", "templates": ""}})
    assert problems.errors == [] and settings.templates is None


def test_domain_messages_and_every_audience_problem_at_once() -> None:
    _, problems = domain({"events": ["digest"], "sender_virus": True})
    assert problems.errors == [
        'domains."example.com".notify.events: "digest" goes to recipients; also set recipient = true, or remove it',
        'domains."example.com".notify.sender_virus: only used with sender = true; set it or remove sender_virus',
    ]
    _, problems = domain({"admin": ["nobody"], "events": ["phish"]})
    assert problems.errors == [
        'domains."example.com".notify.admin[0]: \'nobody\' is not a plain address; use e.g. ["postmaster@example.com"]',
        'domains."example.com".notify.events[0]: must be one of virus | quarantine | rule | spam_reject | digest, '
        "got 'phish'",
    ]


def test_a_redis_record_is_checked_by_the_same_model() -> None:
    from quorum.tenants.schema import SchemaContext, parse_fragment

    entry, problems = parse_fragment(
        {"notify": {"events": ["virus", "rule"], "sender": True}}, "example.com", SchemaContext()
    )
    assert entry is not None and entry.values["notify"] == DomainNotify(sender=True, events=("rule", "virus"))
    entry, problems = parse_fragment({"notify": {"events": ["phish"]}}, "example.com", SchemaContext())
    assert entry is None and [e.split(":", 1)[0] for e in problems.errors] == ['domains."example.com".notify.events[0]']
