"""Run rules against a message: a pure function, meant for a worker thread.

CPU is bounded by the limits: RE2 matches in linear time, the MIME walk stops at `max_parts` /
`max_depth`, the body text at `body_max_bytes`, and everything stops at `deadline`
(`time.monotonic()` value). A rule fires at most once per message, on its first match.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from quorum.message import Message
from quorum.rules.decode import header_text
from quorum.rules.mime import MimeLimits, extract
from quorum.rules.schema import Rule

_SEVERITY = {"score": 0, "tag": 1, "quarantine": 2, "reject": 3}
_CONTEXT = 24  # characters of context either side of a match in the excerpt
_EXCERPT_MAX = 120


@dataclass(frozen=True)
class RuleHit:
    name: str
    where: str
    action: str  # "reject" | "quarantine" | "tag" | "score"
    score: float
    excerpt: str  # the match with a little context, log-safe (no control characters), <= 120 chars

    def reason(self) -> str:
        """For the decision's reasons and the log line: `rule casino (body) matched "...free spins..."`."""
        return f'rule {self.name} ({self.where}) matched "{self.excerpt}"'


@dataclass(frozen=True)
class RuleResult:
    """`truncated`: body text past `body_max_bytes` (or past a truncated spool) was not examined.
    `limit_hit`: None, or why part of the message was not examined — "max_parts", "max_depth",
    "deadline" or "unparsable" (the parser gave up on hostile input); a safe verdict is the
    pipeline's call."""

    hits: tuple[RuleHit, ...] = ()
    truncated: bool = False
    limit_hit: str | None = None
    parts: int = 0  # MIME parts parsed (0 when no body/filename rule needed the MIME walk)

    def record_fields(self) -> dict[str, Any]:
        return {"rules": dataclasses.asdict(self)}

    @property
    def action(self) -> str | None:
        """The strongest action among the hits (reject > quarantine > tag > score), or None."""
        if not self.hits:
            return None
        return max((hit.action for hit in self.hits), key=_SEVERITY.__getitem__)

    @property
    def score(self) -> float:
        """Sum of the hits' scores (any action may carry one)."""
        return sum(hit.score for hit in self.hits)


def evaluate(rules: Sequence[Rule], message: Message, limits: MimeLimits, deadline: float) -> RuleResult:
    """Every rule that matches `message`, in rule order. Never raises on any message content."""
    if not rules:
        return RuleResult()
    needs_body = any(rule.where == "body" for rule in rules)
    needs_names = any(rule.where == "filename" for rule in rules)
    text = None
    if needs_body or needs_names:
        text = extract(message, limits, deadline, body=needs_body, filenames=needs_names)
    limit_hit = text.limit_hit if text is not None else None
    hits: list[RuleHit] = []
    headers: dict[str, list[str]] = {}
    for rule in rules:
        if time.monotonic() > deadline:
            limit_hit = limit_hit or "deadline"
            break
        if rule.where == "body":
            values: Iterable[str] = text.texts if text is not None else ()
        elif rule.where == "filename":
            values = text.filenames if text is not None else ()
        else:
            name = rule.header or "subject"
            if name not in headers:
                headers[name] = [header_text(h.raw_value) for h in message.get_headers(name)]
            values = headers[name]
        hit = _first_match(rule, values)
        if hit is not None:
            hits.append(hit)
    return RuleResult(
        hits=tuple(hits),
        truncated=(text.truncated if text is not None else False),
        limit_hit=limit_hit,
        parts=text.parts if text is not None else 0,
    )


def _first_match(rule: Rule, values: Iterable[str]) -> RuleHit | None:
    for value in values:
        match = rule.regex.search(value)
        if match is not None:
            return RuleHit(rule.name, rule.where, rule.action, rule.score, excerpt(value, match.start(), match.end()))
    return None


def excerpt(value: str, start: int, end: int) -> str:
    """The matched text with some context, on one line, printable and bounded."""
    lo = max(0, start - _CONTEXT)
    hi = min(len(value), end + _CONTEXT, lo + _EXCERPT_MAX)
    snippet = "".join(c if c.isprintable() else " " for c in value[lo:hi])
    snippet = " ".join(snippet.split())
    return ("..." if lo > 0 else "") + snippet + ("..." if hi < len(value) else "")
