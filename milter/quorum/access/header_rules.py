"""Header regex rules, Postfix header_checks style, matched with RE2 (linear time: no rule can hang
the milter, whatever the pattern or the header).

    /^Subject:.*casino/i   REJECT Casino offers are not wanted here
    !/^Message-ID:/        WARN no Message-ID
    /^X-Mailer: Bulk/      HOLD

Each logical header is matched as `Name: value` with folding removed. Matching is case-insensitive
by default, as in Postfix; the `i` flag is accepted (it does not toggle), `(?-i)` inside a pattern
makes it case-sensitive. `!/.../` fires when no header of the message matches (unlike Postfix,
which tests each header line on its own). Actions: `REJECT [text]`
(554 5.7.1), `DISCARD`, `HOLD` (hold queue), `WARN [text]` (log only). Patterns RE2 cannot run
(backreferences, look-around) are load errors naming the file and line.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import re2

from quorum.access.tables import TableError, logical_lines
from quorum.message import Header

ACTIONS = ("REJECT", "DISCARD", "HOLD", "WARN")
_FLAGS = set("i")


@dataclass(frozen=True)
class HeaderRule:
    pattern: str
    negate: bool
    action: str
    text: str
    source: str
    regex: Any  # re2._Regexp


@dataclass(frozen=True)
class HeaderMatch:
    rule: HeaderRule
    header: str  # the matched `Name: value`, for logs (not for replies)


def _options() -> Any:
    options = re2.Options()
    options.log_errors = False
    options.case_sensitive = False
    return options


def _split_pattern(line: str, where: str) -> tuple[str, bool, str, str]:
    """(pattern, negate, flags, rest) from `[!]/pattern/flags rest`; `\\/` escapes a slash."""
    negate = line.startswith("!")
    body = line[1:] if negate else line
    if not body.startswith("/"):
        raise TableError(f"{where}: a rule starts with /pattern/ (or !/pattern/)")
    i = 1
    while i < len(body):
        if body[i] == "\\":
            i += 2
            continue
        if body[i] == "/":
            break
        i += 1
    else:
        raise TableError(f"{where}: the pattern has no closing /")
    pattern = body[1:i].replace("\\/", "/")
    after = body[i + 1 :]
    flags = ""
    while after and after[0].isalpha():
        flags, after = flags + after[0], after[1:]
    if set(flags) - _FLAGS:
        raise TableError(f"{where}: unknown flag(s) {flags!r}; only i is supported, use (?-i) for case-sensitive")
    return pattern, negate, flags, after.strip()


def parse_rules(text: str, path: str) -> list[HeaderRule]:
    rules: list[HeaderRule] = []
    options = _options()
    for number, line in logical_lines(text, path):
        where = f"{path}:{number}"
        pattern, negate, _flags, rest = _split_pattern(line, where)
        if not pattern:
            raise TableError(f"{where}: empty pattern")
        word, *more = rest.split(None, 1) if rest else [""]
        action = word.upper()
        if action not in ACTIONS:
            raise TableError(f"{where}: unknown action {word!r}; use REJECT [text], DISCARD, HOLD or WARN [text]")
        text_ = more[0].strip() if more else ""
        if text_ and action not in ("REJECT", "WARN"):
            raise TableError(f"{where}: {action} takes no text; remove {text_!r}")
        try:
            regex = re2.compile(pattern, options)
        except re2.error as exc:
            detail = exc.args[0].decode(errors="replace") if exc.args and isinstance(exc.args[0], bytes) else exc
            raise TableError(f"{where}: RE2 cannot use this pattern ({detail}); rewrite it without it") from None
        rules.append(HeaderRule(pattern, negate, action, text_, where, regex))
    return rules


def header_line(header: Header) -> str:
    value = header.raw_value.replace(b"\r\n", b"").replace(b"\n", b"").decode("utf-8", "replace").strip()
    return f"{header.name}: {value}"


def match(rules: list[HeaderRule], headers: list[Header]) -> list[HeaderMatch]:
    """Every rule that fires, in file order; a rule fires at most once per message."""
    if not rules:
        return []
    lines = [header_line(h) for h in headers]
    found: list[HeaderMatch] = []
    for rule in rules:
        hit = next((line for line in lines if rule.regex.search(line) is not None), None)
        if rule.negate and hit is None:
            found.append(HeaderMatch(rule, "(no such header)"))
        elif not rule.negate and hit is not None:
            found.append(HeaderMatch(rule, hit[:200]))
    return found
