"""`[domains."d".signing]` as a per-domain key of the tenants feature (quorum.tenants.extensions):
the domain's `DomainSigning` (its own keys), or None where no domain table sets it."""

from __future__ import annotations

from collections.abc import Mapping

from quorum.config.fields import Table
from quorum.signing.settings import DomainSigning


def parse_domain(table: Table, key: str) -> DomainSigning | None:
    value = table.raw(key)
    if not isinstance(value, Mapping):
        example = '{ keys = [{ selector = "s2026", key = "/etc/quorum/dkim/d.s2026.pem" }] }'
        table.problems.error(table.key(key), f"expected a table such as {example}, got {value!r}")
        return None
    found = Table(value, table.key(key), table.problems).as_model(DomainSigning)
    return found if found.model_fields_set else None
