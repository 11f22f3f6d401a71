"""Domain names as tenants are keyed: lower-case A-labels, and `*.parent` patterns for subdomains.

IDNA uses the `idna` package (IDNA 2008 with the UTS #46 mapping), not Python's `encodings.idna`:
the stdlib codec implements IDNA 2003, which maps `ß` to `ss` (and final sigma to sigma), so `faß.de` would
become `fass.de`, a different registered domain under IDNA 2008 (what registries, browsers and
Postfix's SMTPUTF8 peers use). UTS #46 also case-folds non-ASCII letters, so `BÜCHER.example` and
`xn--bcher-kva.example` name the same tenant. ASCII names skip the codec (lower-casing is all
UTS #46 would do to them), which keeps the per-recipient cost to a dict lookup.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Generic, TypeVar

import idna

T = TypeVar("T")
_LABEL = re.compile(r"^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$")
WILDCARD = "*."


class DomainNameError(ValueError):
    """Not a usable domain name; the message says why."""


@lru_cache(maxsize=65536)
def normalise_domain(name: str) -> str:
    """`Bücher.Example.` -> `xn--bcher-kva.example`. Raises DomainNameError for what is no domain."""
    name = name.strip().rstrip(".")
    if not name:
        raise DomainNameError("empty domain name")
    if name.isascii():
        ascii_name = name.lower()
    else:
        try:
            ascii_name = idna.encode(name, uts46=True).decode("ascii")
        except (idna.IDNAError, UnicodeError) as exc:
            raise DomainNameError(f"not a valid internationalised domain name ({exc})") from exc
    if len(ascii_name) > 253:
        raise DomainNameError("longer than 253 characters")
    for label in ascii_name.split("."):
        if not _LABEL.match(label):
            raise DomainNameError(f"label {label!r} is not a DNS label (letters, digits, '-', at most 63)")
    return ascii_name


def normalise_pattern(name: str) -> str:
    """A tenant key: a domain, or `*.domain` for its subdomains (not the domain itself)."""
    stripped = name.strip()
    if stripped.startswith(WILDCARD):
        return WILDCARD + normalise_domain(stripped[2:])
    if "*" in stripped:
        raise DomainNameError('a wildcard is only allowed as the first label, as in "*.example.com"')
    return normalise_domain(stripped)


def recipient_domain(recipient: str) -> str | None:
    """The normalised domain of `<user@Example.COM>`, or None when it has none or it is no domain."""
    address = recipient.strip().strip("<>")
    _local, at, domain = address.rpartition("@")
    if not at:
        return None
    try:
        return normalise_domain(domain)
    except DomainNameError:
        return None


class DomainMatcher(Generic[T]):
    """Most specific match: `a.b.example.com` tries itself, then `*.b.example.com`, `*.example.com`, `*.com`.

    The apex is not matched by its own wildcard: `*.example.com` does not match `example.com`.
    """

    def __init__(self, entries: Mapping[str, T]) -> None:
        self.exact: dict[str, T] = {}
        self.wildcard: dict[str, T] = {}
        for pattern, value in entries.items():
            if pattern.startswith(WILDCARD):
                self.wildcard[pattern[2:]] = value
            else:
                self.exact[pattern] = value

    def match(self, domain: str) -> tuple[str, T] | None:
        """(pattern, value) for a normalised domain, or None."""
        value = self.exact.get(domain)
        if value is not None:
            return domain, value
        if self.wildcard:
            parent = domain
            while "." in parent:
                parent = parent.split(".", 1)[1]
                value = self.wildcard.get(parent)
                if value is not None:
                    return WILDCARD + parent, value
        return None

    def patterns(self) -> Iterable[str]:
        yield from self.exact
        yield from (WILDCARD + p for p in self.wildcard)
