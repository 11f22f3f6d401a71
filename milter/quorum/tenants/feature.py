"""Tenants: `[tenants]` and `[domains."d"]` parsing; the per-recipient resolver for the pipeline.

`build` returns no stage: the pipeline asks `TenantPolicies.policy_for(recipient)` at RCPT time
(the first accepted recipient fixes the transaction's policy; see quorum.tenants).
"""

from __future__ import annotations

from typing import Any

from quorum.config.fields import Table
from quorum.tenants.resolver import TenantPolicies
from quorum.tenants.schema import domain_table
from quorum.tenants.settings import TenantSettings, TenantTable, parse_settings

# `[domains]`: one table per domain (or "*.domain"), with the keys other features add (notify, ...).
TABLES: dict[str, Any] = {"tenants": TenantTable, "domains": dict[str, domain_table()]}  # type: ignore[misc]


def parse(root: Table) -> TenantSettings | None:
    return parse_settings(root)


def build(config: Any, settings: TenantSettings) -> list[Any]:
    return []


def make_policies(config: Any) -> TenantPolicies:
    """The resolver for `config` (also without any [domains]/[tenants]: then every recipient gets the global policy)."""
    return TenantPolicies(config)
