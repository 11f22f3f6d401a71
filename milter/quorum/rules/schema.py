"""The rule table: `name`, `where`, `pattern` (RE2), `ignore_case`, `action`, `score`.

    [[rules]]
    name = "casino"
    where = "body"                 # "subject" | "header:NAME" | "body" | "filename"
    pattern = '\\bfree\\s+spins\\b'
    ignore_case = true             # default false: RE2 is case-sensitive unless asked
    action = "reject"              # "reject" | "quarantine" | "tag" | "score"
    score = 5.0                    # required for action = "score", optional otherwise

The same parser reads the global `[[rules]]` and each `[[domains."d".rules]]`, so a rule means
the same thing wherever it is written; problems are named `rules[2].pattern: ...`.
"""

from __future__ import annotations

import functools
import re
import typing
from collections.abc import Mapping
from typing import Any, Literal

import re2
from pydantic import ValidationError, ValidationInfo, field_validator, model_validator

from quorum.config.problems import Problems
from quorum.config.schema import Float, Settings, dotted, explain

Action = Literal["reject", "quarantine", "tag", "score"]
ACTIONS: tuple[str, ...] = typing.get_args(Action)
PLACES = ("subject", "body", "filename")
_HEADER_NAME = re.compile(r"^[!-9;-~]+$")  # RFC 5322 field name: printable ASCII, no colon, no space
# What to write when a key is missing or empty.
HINTS = {
    "name": 'give the rule a name for logs, e.g. name = "casino-spam"',
    "where": 'set where to "subject", "header:NAME", "body" or "filename"',
    "pattern": "write an RE2 regular expression, e.g. pattern = '(?i)free money'",
    "action": f"set action to one of {' | '.join(ACTIONS)}",
}


class Rule(Settings):
    """One validated rule, its pattern compiled at load (`regex`). Equality and hash use the
    configured values, not the compiled regex, so rule tuples can take part in a policy fingerprint."""

    name: str
    where: str  # "subject" | "body" | "filename" | "header:<name as written>"
    ignore_case: bool = False  # before `pattern`: the pattern is compiled with it
    pattern: str
    action: Action
    score: Float = 0.0  # required with action = "score"

    @property
    def header(self) -> str | None:
        """The header name (lower case) for `where = "header:NAME"`, else None."""
        return self.where[7:].lower() if self.where.startswith("header:") else None

    @functools.cached_property
    def regex(self) -> Any:  # re2._Regexp: kept beside the fields (not one of them)
        return compile_pattern(self.pattern, self.ignore_case)

    @model_validator(mode="before")
    @classmethod
    def _score_required(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("action") == "score" and "score" not in data:
            return {**data, "score": None}  # refused by _score, under the score key
        return data

    @field_validator("score", mode="before")
    @classmethod
    def _score(cls, value: Any) -> Any:
        if value is None:
            raise ValueError('required with action = "score"; add e.g. score = 3.0')
        return value

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return _filled(value, "name").strip()

    @field_validator("where")
    @classmethod
    def _where(cls, value: str) -> str:
        if _filled(value, "where") in PLACES:
            return value
        if not value.startswith("header:"):
            raise ValueError(f"{value!r} is not a place to match; {HINTS['where']}")
        name = value[7:].strip()
        if not _HEADER_NAME.match(name):
            raise ValueError(f'{value!r}: {name!r} is not a header name; write e.g. "header:X-Mailer"')
        return "header:" + name

    @field_validator("pattern")
    @classmethod
    def _pattern(cls, value: str, info: ValidationInfo) -> str:
        _filled(value, "pattern")
        try:
            compile_pattern(value, info.data.get("ignore_case") is True)
        except ValueError as exc:
            raise ValueError(
                f"RE2 cannot compile {value!r}: {exc}; RE2 has no backreferences or look-around: rewrite without them"
            ) from None
        return value

    @model_validator(mode="after")
    def _compiled(self) -> Rule:
        self.regex  # noqa: B018 - compiled now, at load, not on the first message
        return self


def _filled(value: str, key: str) -> str:
    if not value.strip():
        raise ValueError(f"must not be empty; {HINTS[key]}")
    return value


def compile_pattern(pattern: str, ignore_case: bool) -> Any:
    """RE2 regex; raises ValueError with RE2's own message."""
    options = re2.Options()
    options.log_errors = False
    options.case_sensitive = not ignore_case
    try:
        return re2.compile(pattern, options)
    except re2.error as exc:
        detail = exc.args[0] if exc.args else exc
        if isinstance(detail, bytes):
            detail = detail.decode("utf-8", "replace")
        raise ValueError(str(detail)) from None


def parse_rules(value: Any, table_key: str, problems: Problems) -> tuple[Rule, ...]:
    """Rules from an array of tables (`value` is what TOML gave for `table_key`, None if absent).

    Every problem is collected in `problems` under `table_key[i].key`; invalid rules are dropped.
    """
    if value is None:
        return ()
    if not isinstance(value, list):
        problems.error(table_key, f"expected an array of tables ([[{table_key}]] with name, where, pattern, action)")
        return ()
    rules: list[Rule] = []
    names: set[str] = set()
    for i, item in enumerate(value):
        key = f"{table_key}[{i}]"
        if not isinstance(item, Mapping):
            problems.error(key, "expected a table with name, where, pattern and action")
            continue
        name = item["name"].strip() if isinstance(item.get("name"), str) else ""
        taken = bool(name) and name in names
        if taken:
            problems.error(f"{key}.name", f"{name!r} is used by another rule here; give each rule its own name")
        names.add(name)
        try:
            rule = Rule.model_validate(dict(item))
        except ValidationError as exc:
            for error in exc.errors(include_url=False):
                loc = tuple(error["loc"])
                hint = HINTS.get(str(loc[0])) if error["type"] == "missing" and len(loc) == 1 else None
                problems.error(dotted(key, loc), f"missing; {hint}" if hint else explain(error, Rule, loc))
            continue
        if not taken:
            rules.append(rule)
    return tuple(rules)
