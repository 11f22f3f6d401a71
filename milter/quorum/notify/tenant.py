"""`[domains."d".notify]` as a per-domain key of the tenants feature (quorum.tenants.extensions).

The effective policy's `extensions["notify"]` is the `DomainNotify` of the transaction's tenant, or
None where no domain table sets it (then nobody is notified). A Redis record's table replaces the
file's as a whole. The same model checks both.
"""

from __future__ import annotations

from collections.abc import Mapping

from quorum.config.fields import Table
from quorum.notify.settings import DomainNotify


def parse_domain(table: Table, key: str) -> DomainNotify:
    value = table.raw(key)
    if not isinstance(value, Mapping):
        example = '{ admin = ["postmaster@example.com"], recipient = true }'
        table.problems.error(table.key(key), f"expected a table such as {example}, got {value!r}")
        return DomainNotify()
    return Table(value, table.key(key), table.problems).as_model(DomainNotify)
