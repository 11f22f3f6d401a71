"""`[domains."d"] backscatter = "reject" | "tag" | "quarantine" | "off"` (a tenants DomainExtension)."""

from __future__ import annotations

from typing import Any

from quorum.backscatter.settings import ACTIONS


def parse_domain(table: Any, key: str) -> str | None:
    value = table.raw(key)
    if value not in ACTIONS:
        table.problems.error(table.key(key), f"must be one of {' | '.join(ACTIONS)}, got {value!r}")
        return None
    return str(value)
