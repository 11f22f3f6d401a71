"""Settings of `[access]`: one table file per kind, checked at load so errors name file and line."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Annotated

from pydantic import AfterValidator, Field, field_validator

from quorum.access.header_rules import parse_rules
from quorum.access.tables import AddressTable, ClientTable, TableError, read_text
from quorum.config.fields import Table
from quorum.config.schema import Duration, Settings


def _recipient(value: str) -> str:
    item = value.strip().lower()
    if not item or item.count("@") > 1 or item.startswith("@"):
        raise ValueError(f'{item!r}: list local parts ("postmaster") or addresses ("abuse@example.com")')
    return item


class AccessSettings(Settings):
    client: str | None = None  # path of the client IP/CIDR table
    sender: str | None = None
    recipient: str | None = None
    header: str | None = None  # header regex rules
    # never refused by DNSBL or client/sender REJECT
    exempt_recipients: tuple[Annotated[str, AfterValidator(_recipient)], ...] = ("postmaster", "abuse")
    reload_interval: Duration = Field(10.0, ge=0.0)  # how often a changed file is noticed; 0: only on `quorum reload`

    @field_validator("client", "sender", "recipient", "header")
    @classmethod
    def _path(cls, value: str | None) -> str | None:
        return value or None  # "": no table

    @property
    def any_table(self) -> bool:
        return any((self.client, self.sender, self.recipient, self.header))


PARSERS: dict[str, Callable[[str, str], object]] = {
    "client": ClientTable.parse,
    "sender": AddressTable.parse,
    "recipient": AddressTable.parse,
    "header": parse_rules,
}


def parse_access(root: Table) -> AccessSettings:
    """`[access]`, each table file read and parsed now (its errors name the file and line, whether or
    not the rest of the table is valid)."""
    settings, raw = root.model("access", AccessSettings), root.data.get("access")
    for kind, parser in PARSERS.items():
        path = raw.get(kind) if isinstance(raw, Mapping) else None
        if path and isinstance(path, str):
            try:
                parser(read_text(path), path)
            except TableError as exc:
                root.problems.error(f"access.{kind}", str(exc))
            except ValueError as exc:  # a NUL in the path
                root.problems.error(
                    f"access.{kind}", f"{path!r} is not a usable path ({exc}); fix it or remove the key"
                )
    return settings


def is_exempt(recipient: str, exempt: tuple[str, ...]) -> bool:
    """`postmaster` matches postmaster@ any domain (and bare `postmaster`); full addresses match exactly."""
    address = recipient.strip().strip("<>").lower()
    local = address.rpartition("@")[0] if "@" in address else address
    return address in exempt or local in exempt
