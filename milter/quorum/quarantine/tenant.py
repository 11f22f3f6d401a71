"""`[domains."d"] quarantine_retention = "30d"` (a tenants DomainExtension): how long held mail is kept."""

from __future__ import annotations

from pydantic import TypeAdapter

from quorum.config.fields import Table
from quorum.config.schema import STRICT, validate_value
from quorum.quarantine.settings import Retention

_RETENTION: TypeAdapter[float] = TypeAdapter(Retention, config=STRICT)  # the bounds of [quarantine] retention


def parse_domain(table: Table, key: str) -> float | None:
    value = table.raw(key)
    return None if value is None else validate_value(_RETENTION, value, table.key(key), table.problems)
