"""The rules feature: global `[[rules]]` and the `[mime]` limits.

TOML cannot have both `[[rules]]` (an array of tables) and a `[rules]` table, so the settings
live in `[mime]`, which bounds every MIME walk:

    [mime]
    max_parts = 500          # parts parsed, the message itself included (1..100000)
    max_depth = 20           # nesting of multipart / message/rfc822 containers (1..100)
    body_max_bytes = "1M"    # decoded text of text/plain + text/html parts examined by body rules

Rules are evaluated by the pipeline (`quorum.rules.evaluate`) in a worker thread at end of
data, with the transaction's effective rules (global, or the recipient domain's).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from quorum.config.fields import Table
from quorum.rules.mime import MimeLimits
from quorum.rules.schema import Rule, parse_rules


@dataclass(frozen=True)
class RulesSettings:
    rules: tuple[Rule, ...] = ()
    limits: MimeLimits = field(default_factory=MimeLimits)


def parse_limits(t: Table) -> MimeLimits:
    d = MimeLimits()
    limits = MimeLimits(
        max_parts=t.int("max_parts", d.max_parts, minimum=1, maximum=100_000),
        max_depth=t.int("max_depth", d.max_depth, minimum=1, maximum=100),  # the stdlib parser recurses
        body_max_bytes=t.size("body_max_bytes", d.body_max_bytes, minimum=1),
    )
    t.reject_unknown()
    return limits


def parse(root: Table) -> RulesSettings:
    """Always settings (maybe no global rule): tenants may bring rules of their own at any time."""
    rules = parse_rules(root.raw("rules"), "rules", root.problems)
    limits = parse_limits(root.table("mime"))
    return RulesSettings(rules, limits)


def build(config: Any, settings: RulesSettings) -> list[Any]:
    from quorum.rules.stage import RulesStage

    return [RulesStage(settings, config.replies)]
