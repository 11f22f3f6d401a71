"""The rules feature's settings: the global `[[rules]]` and the `[mime]` limits (see feature.py)."""

from __future__ import annotations

from quorum.config.schema import Settings
from quorum.rules.mime import MimeLimits
from quorum.rules.schema import Rule


class RulesSettings(Settings):
    rules: tuple[Rule, ...] = ()
    limits: MimeLimits = MimeLimits()
