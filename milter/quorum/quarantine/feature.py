"""Registers `[quarantine]` with the config loader; the feature has no SMTP stage (mail is held by the policy)."""

from __future__ import annotations

from typing import Any

from quorum.config.fields import Table
from quorum.quarantine.settings import QuarantineSettings, parse_settings

TABLES: dict[str, Any] = {"quarantine": QuarantineSettings}


def parse(root: Table) -> QuarantineSettings:
    return parse_settings(root)


def build(config: Any, settings: QuarantineSettings) -> list[Any]:
    return []
