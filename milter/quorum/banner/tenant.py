"""`[domains."d".banner]` as a per-domain key of the tenants feature (quorum.tenants.extensions):
the domain's `DomainBanner`, or None where no domain table sets it (then the global banners)."""

from __future__ import annotations

from collections.abc import Mapping

from quorum.banner.settings import DomainBanner
from quorum.config.fields import Table


def parse_domain(table: Table, key: str) -> DomainBanner:
    value = table.raw(key)
    if not isinstance(value, Mapping):
        example = '{ footer = { text = "Example Ltd, registered in ..." } }'
        table.problems.error(table.key(key), f"expected a table such as {example}, got {value!r}")
        return DomainBanner()
    return Table(value, table.key(key), table.problems).as_model(DomainBanner)
