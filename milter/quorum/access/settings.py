"""Settings of `[access]`: one table file per kind, checked at load so errors name file and line."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from quorum.access.header_rules import parse_rules
from quorum.access.tables import AddressTable, ClientTable, TableError, read_text
from quorum.config.fields import Table


@dataclass(frozen=True)
class AccessSettings:
    client: str | None = None  # path of the client IP/CIDR table
    sender: str | None = None
    recipient: str | None = None
    header: str | None = None  # header regex rules
    exempt_recipients: tuple[str, ...] = ("postmaster", "abuse")  # never refused by DNSBL or client/sender REJECT
    reload_interval: float = 10.0  # how often a changed file is noticed; 0: only on `quorum reload`

    @property
    def any_table(self) -> bool:
        return any((self.client, self.sender, self.recipient, self.header))


PARSERS: dict[str, Callable[[str, str], object]] = {
    "client": ClientTable.parse,
    "sender": AddressTable.parse,
    "recipient": AddressTable.parse,
    "header": parse_rules,
}


def parse_access(t: Table) -> AccessSettings:
    d = AccessSettings()
    paths: dict[str, str | None] = {}
    for kind, parser in PARSERS.items():
        path = t.opt_str(kind)
        if path:
            try:
                parser(read_text(path), path)
            except TableError as exc:
                t.problems.error(t.key(kind), str(exc))
            except ValueError as exc:  # a NUL in the path
                t.problems.error(t.key(kind), f"{path!r} is not a usable path ({exc}); fix it or remove the key")
        paths[kind] = path or None
    exempt: list[str] = []
    items: list[str] = t.str_list("exempt_recipients", list(d.exempt_recipients))
    for item in items:
        item = item.strip().lower()
        if not item or item.count("@") > 1 or item.startswith("@"):
            t.problems.error(
                t.key("exempt_recipients"),
                f'{item!r}: list local parts ("postmaster") or addresses ("abuse@example.com")',
            )
        exempt.append(item)
    settings = AccessSettings(
        client=paths["client"],
        sender=paths["sender"],
        recipient=paths["recipient"],
        header=paths["header"],
        exempt_recipients=tuple(exempt),
        reload_interval=t.duration("reload_interval", d.reload_interval),
    )
    t.reject_unknown()
    return settings


def is_exempt(recipient: str, exempt: tuple[str, ...]) -> bool:
    """`postmaster` matches postmaster@ any domain (and bare `postmaster`); full addresses match exactly."""
    address = recipient.strip().strip("<>").lower()
    local = address.rpartition("@")[0] if "@" in address else address
    return address in exempt or local in exempt
