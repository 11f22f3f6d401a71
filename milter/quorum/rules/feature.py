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

from typing import Any

from quorum.config.fields import Table
from quorum.rules.mime import MimeLimits
from quorum.rules.schema import Rule, parse_rules
from quorum.rules.settings import RulesSettings
from quorum.rules.stage import RulesStage

__all__ = ["TABLES", "RulesSettings", "build", "parse"]

TABLES: dict[str, Any] = {"rules": tuple[Rule, ...], "mime": MimeLimits}


def parse(root: Table) -> RulesSettings:
    """Always settings (maybe no global rule): tenants may bring rules of their own at any time."""
    rules = parse_rules(root.data.get("rules"), "rules", root.problems)
    return RulesSettings(rules=rules, limits=root.model("mime", MimeLimits))


def build(config: Any, settings: RulesSettings) -> list[Any]:
    return [RulesStage(settings, config.replies)]
