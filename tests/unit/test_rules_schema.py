"""`[[rules]]` / `[[domains."d".rules]]` parsing and the `[mime]` limits: every problem named by its key."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import TypeAdapter

from quorum.assembly import parse_config
from quorum.config.fields import ConfigError, Problems, Table
from quorum.rules import MimeLimits, Rule, parse_rules
from quorum.rules.feature import TABLES, RulesSettings, parse


def rule(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"name": "r", "where": "body", "pattern": "free", "action": "reject"}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def errors_of(value: Any, key: str = "rules") -> list[str]:
    problems = Problems()
    parse_rules(value, key, problems)
    return problems.errors


def test_a_valid_rule_is_typed_and_compiled() -> None:
    problems = Problems()
    (r,) = parse_rules([rule(ignore_case=True, score=1.5)], "rules", problems)
    assert problems.errors == []
    assert (r.name, r.where, r.pattern, r.ignore_case, r.action, r.score) == ("r", "body", "free", True, "reject", 1.5)
    assert r.regex.search("FREE") is not None


def test_absent_rules_are_none() -> None:
    assert parse_rules(None, "rules", Problems()) == ()


@pytest.mark.parametrize("where", ["subject", "body", "filename", "header:X-Mailer", "header:List-Unsubscribe"])
def test_each_place(where: str) -> None:
    assert errors_of([rule(where=where)]) == []


def test_header_rule_knows_its_header() -> None:
    (r,) = parse_rules([rule(where="header:X-Mailer")], "rules", Problems())
    assert r.header == "x-mailer"
    (s,) = parse_rules([rule(where="subject")], "rules", Problems())
    assert s.header is None


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"pattern": "(a)\\1"}, "rules[0].pattern: RE2 cannot compile '(a)\\\\1': invalid escape sequence: \\1"),
        ({"pattern": "(?<=x)y"}, "rules[0].pattern: RE2 cannot compile '(?<=x)y': invalid perl operator: (?<="),
        ({"pattern": None}, "rules[0].pattern: missing"),
        ({"pattern": ""}, "rules[0].pattern: must not be empty"),
        ({"where": "nowhere"}, "rules[0].where: 'nowhere' is not a place to match"),
        ({"where": "header:"}, "rules[0].where: 'header:': '' is not a header name"),
        ({"where": "header:Bad Name"}, "rules[0].where: 'header:Bad Name': 'Bad Name' is not a header name"),
        ({"where": None}, "rules[0].where: missing"),
        ({"action": "nuke"}, "rules[0].action: must be one of reject | quarantine | tag | score, got 'nuke'"),
        ({"action": None}, "rules[0].action: missing"),
        ({"action": "score"}, 'rules[0].score: required with action = "score"'),
        ({"action": "score", "score": "high"}, "rules[0].score: expected a number"),
        ({"score": float("nan")}, "rules[0].score: must be a finite number"),
        ({"ignore_case": "yes"}, "rules[0].ignore_case: expected true or false"),
        ({"name": None}, "rules[0].name: missing; give the rule a name"),
        ({"name": " "}, "rules[0].name: must not be empty; give the rule a name"),
        ({"score": True}, "rules[0].score: expected a number"),
        ({"score": 1e16}, "rules[0].score: must be at most 1000000000000000.0, got 1e+16"),
        ({"colour": "red"}, "rules[0].colour: unknown key"),
    ],
)
def test_problems_name_the_key(overrides: dict[str, Any], expected: str) -> None:
    errors = errors_of([rule(**overrides)])
    assert any(e.startswith(expected) for e in errors), errors


def test_every_problem_of_a_rule_is_reported_at_once() -> None:
    errors = errors_of([{"name": "", "where": "x", "pattern": "(", "ignore_case": 1, "action": "score", "extra": 1}])
    keys = sorted(e.split(":", 1)[0] for e in errors)
    assert keys == [f"rules[0].{k}" for k in ("extra", "ignore_case", "name", "pattern", "score", "where")], errors


def test_ignore_case_is_compiled_in_and_names_are_stripped() -> None:
    (r,) = parse_rules([rule(name=" casino ", pattern="spins", ignore_case=True)], "rules", Problems())
    assert r.name == "casino" and r.regex.search("FREE SPINS") is not None
    (s,) = parse_rules([rule(pattern="spins")], "rules", Problems())
    assert s.regex.search("FREE SPINS") is None and s.where == "body"


def test_the_index_and_table_key_are_in_the_name() -> None:
    errors = errors_of([rule(), rule(name="b", pattern="(")], key='domains."example.com".rules')
    assert errors and errors[0].startswith('domains."example.com".rules[1].pattern: RE2 cannot compile')


def test_invalid_rules_are_dropped_valid_ones_kept() -> None:
    problems = Problems()
    rules = parse_rules([rule(name="a"), rule(name="b", action="nuke")], "rules", problems)
    assert [r.name for r in rules] == ["a"] and len(problems.errors) == 1


def test_duplicate_names_are_refused() -> None:
    assert any("rules[1].name: 'r' is used by another rule" in e for e in errors_of([rule(), rule()]))


def test_rules_without_a_name_are_not_duplicates() -> None:
    errors = errors_of([rule(name=None), rule(name=None)])
    assert errors == [
        'rules[0].name: missing; give the rule a name for logs, e.g. name = "casino-spam"',
        'rules[1].name: missing; give the rule a name for logs, e.g. name = "casino-spam"',
    ]


def test_not_an_array_or_not_tables() -> None:
    assert errors_of({"name": "x"})[0].startswith("rules: expected an array of tables")
    assert errors_of(["x"])[0].startswith("rules[0]: expected a table")


def test_score_is_optional_for_other_actions() -> None:
    (r,) = parse_rules([rule(action="tag")], "rules", Problems())
    assert r.score == 0.0
    (s,) = parse_rules([rule(action="score", score=-2)], "rules", Problems())
    assert s.score == -2.0  # negative scores lower the total (known-good phrases)


def test_rules_compare_by_configuration_not_by_compiled_regex() -> None:
    a = parse_rules([rule()], "rules", Problems())
    b = parse_rules([rule()], "rules", Problems())
    assert a == b and hash(a) == hash(b)
    assert isinstance(a[0], Rule)


def test_feature_without_rules_or_mime_has_defaults() -> None:
    """Always settings: tenants may bring rules of their own at any time."""
    assert parse(Table({}, "", Problems())) == RulesSettings(rules=(), limits=MimeLimits())


def test_feature_reads_rules_and_mime_limits() -> None:
    problems = Problems()
    root = Table({"rules": [rule()], "mime": {"max_parts": 50, "max_depth": 5, "body_max_bytes": "64k"}}, "", problems)
    settings = parse(root)
    assert problems.errors == []
    assert isinstance(settings, RulesSettings)
    assert settings.limits == MimeLimits(max_parts=50, max_depth=5, body_max_bytes=65536)
    assert [r.name for r in settings.rules] == ["r"]


def test_mime_defaults() -> None:
    assert MimeLimits() == MimeLimits(max_parts=500, max_depth=20, body_max_bytes=1 << 20)


@pytest.mark.parametrize(
    ("mime", "expected"),
    [
        ({"max_parts": 0}, "mime.max_parts: must be at least 1, got 0"),
        ({"max_parts": 100_001}, "mime.max_parts: must be at most 100000, got 100001"),
        ({"max_depth": "5"}, "mime.max_depth: expected a whole number, got '5'; fix the value or remove the key"),
        ({"body_max_bytes": 0}, "mime.body_max_bytes: must be at least 1, got 0"),
        ({"body_max_bytes": "lots"}, "mime.body_max_bytes: expected bytes or a size such as \"25M\", got 'lots'"),
    ],
)
def test_mime_bounds(mime: dict[str, Any], expected: str) -> None:
    problems = Problems()
    settings = parse(Table({"mime": mime}, "", problems))
    assert any(e.startswith(expected) for e in problems.errors), problems.errors
    assert settings.limits == MimeLimits()  # an invalid table: its defaults stand in


@pytest.mark.parametrize("name", sorted(TABLES))
def test_tables_have_a_json_schema(name: str) -> None:
    schema = TypeAdapter(TABLES[name]).json_schema()
    if name == "rules":
        assert schema["type"] == "array"
        keys = schema["$defs"]["Rule"]["properties"]
        assert sorted(keys) == ["action", "ignore_case", "name", "pattern", "score", "where"]  # regex is no key
        assert keys["action"]["enum"] == ["reject", "quarantine", "tag", "score"]
    else:
        assert schema["properties"]["max_depth"]["maximum"] == 100


def test_through_the_config_loader() -> None:
    config = parse_config({"rules": [rule()]})
    settings = config.feature("rules")
    assert settings is not None and settings.rules[0].name == "r"
    with pytest.raises(ConfigError) as info:
        parse_config({"rules": [rule(pattern="(?=x)")], "mime": {"max_depth": 1000, "typo": 1}})
    problems = info.value.problems
    assert any(p.startswith("rules[0].pattern: RE2 cannot compile") for p in problems)
    assert "mime.max_depth: must be at most 100, got 1000" in problems
    assert any(p.startswith("mime.typo: unknown key") for p in problems)
