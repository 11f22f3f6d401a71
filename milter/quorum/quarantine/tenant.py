"""`[domains."d"] quarantine_retention = "30d"` (a tenants DomainExtension): how long held mail is kept."""

from __future__ import annotations

from typing import Any


def parse_domain(table: Any, key: str) -> float | None:
    if table.raw(key) is None:
        return None
    return float(table.duration(key, 0.0, minimum=3600.0))
