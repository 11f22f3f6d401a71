"""The rules feature's settings: the global `[[rules]]` and the `[mime]` limits (see feature.py)."""

from __future__ import annotations

from dataclasses import dataclass, field

from quorum.config.fields import Table
from quorum.rules.mime import MimeLimits
from quorum.rules.schema import Rule


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
