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

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import re2

from quorum.config.fields import Problems, Table

ACTIONS = ("reject", "quarantine", "tag", "score")
PLACES = ("subject", "body", "filename")
_HEADER_NAME = re.compile(r"^[!-9;-~]+$")  # RFC 5322 field name: printable ASCII, no colon, no space


@dataclass(frozen=True)
class Rule:
    """One validated rule. Equality and hash use the configured values, not the compiled regex,
    so rule tuples can take part in a policy fingerprint."""

    name: str
    where: str  # "subject" | "body" | "filename" | "header:<name as written>"
    pattern: str
    ignore_case: bool
    action: str
    score: float
    regex: Any = field(compare=False, hash=False, repr=False)  # re2._Regexp

    @property
    def header(self) -> str | None:
        """The header name (lower case) for `where = "header:NAME"`, else None."""
        return self.where[7:].lower() if self.where.startswith("header:") else None


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
        rule = _parse_rule(Table(item, key, problems), names)
        if rule is not None:
            rules.append(rule)
    return tuple(rules)


def _required_str(t: Table, name: str, hint: str) -> str:
    if name not in t.data:
        t.raw(name)
        t.problems.error(t.key(name), f"missing; {hint}")
        return ""
    value = t.str(name, "")
    if name in t.data and isinstance(t.data[name], str) and not value.strip():
        t.problems.error(t.key(name), f"must not be empty; {hint}")
        return ""
    return value


def _parse_where(t: Table) -> str:
    hint = 'set where to "subject", "header:NAME", "body" or "filename"'
    where = _required_str(t, "where", hint)
    if not where or where in PLACES:
        return where
    if where.startswith("header:"):
        name = where[7:].strip()
        if _HEADER_NAME.match(name):
            return "header:" + name
        t.problems.error(t.key("where"), f'{where!r}: {name!r} is not a header name; write e.g. "header:X-Mailer"')
        return ""
    t.problems.error(t.key("where"), f"{where!r} is not a place to match; {hint}")
    return ""


def _parse_rule(t: Table, names: set[str]) -> Rule | None:
    errors_before = len(t.problems.errors)
    name = _required_str(t, "name", 'give the rule a name for logs, e.g. name = "casino-spam"').strip()
    if name and name in names:
        t.problems.error(t.key("name"), f"{name!r} is used by another rule here; give each rule its own name")
    names.add(name)
    where = _parse_where(t)
    ignore_case = t.bool("ignore_case", False)
    pattern = _required_str(t, "pattern", "write an RE2 regular expression, e.g. pattern = '(?i)free money'")
    regex = None
    if pattern:
        try:
            regex = compile_pattern(pattern, ignore_case)
        except ValueError as exc:
            t.problems.error(
                t.key("pattern"),
                f"RE2 cannot compile {pattern!r}: {exc}; "
                "RE2 has no backreferences or look-around: rewrite without them",
            )
    action = ""
    if "action" not in t.data:
        t.raw("action")
        t.problems.error(t.key("action"), f"missing; set action to one of {' | '.join(ACTIONS)}")
    else:
        action = t.choice("action", "", ACTIONS)
    score = _parse_score(t, action)
    t.reject_unknown()
    if len(t.problems.errors) != errors_before or regex is None:
        return None
    return Rule(name, where, pattern, ignore_case, action, score, regex)


def _parse_score(t: Table, action: str) -> float:
    if "score" not in t.data:
        t.raw("score")
        if action == "score":
            t.problems.error(t.key("score"), 'required with action = "score"; add e.g. score = 3.0')
        return 0.0
    score = t.float("score", 0.0)
    if not math.isfinite(score):
        t.problems.error(t.key("score"), f"must be a finite number, got {score}")
        return 0.0
    return score
