"""`[domains."d"] backscatter = "reject" | "tag" | "quarantine" | "off"` (a tenants DomainExtension)."""

from __future__ import annotations

from pydantic import TypeAdapter

from quorum.backscatter.settings import Action
from quorum.config.fields import Table
from quorum.config.schema import STRICT, validate_value

# The choices of `[backscatter] action`, for the file's domain tables and the Redis records alike.
_ACTION: TypeAdapter[str] = TypeAdapter(Action, config=STRICT)  # type: ignore[arg-type]  # a Literal alias


def parse_domain(table: Table, key: str) -> str | None:
    return validate_value(_ACTION, table.raw(key), table.key(key), table.problems)
