"""Access tables in Postfix's familiar `key ACTION [text]` syntax, one file per kind.

- client: an IP address or a network (`192.0.2.7`, `192.0.2.0/24`, `2001:db8::/32`; Postfix's
  octet prefixes such as `192.168` too). The most specific match wins.
- sender / recipient: `user@example.com`, `example.com` (that domain), `.example.com` (its
  subdomains), `user@` (that local part at any domain), `<>` (the null sender). Lookup order is
  Postfix's: full address, domain, parent domains, local part.

Actions: `OK`, `REJECT [text]`, `DUNNO` (stop looking, no action). `#` starts a comment line; a line
starting with whitespace continues the previous one. Any error names the file and line.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

from quorum.message import client_address

log = logging.getLogger("quorum.access")

ACTIONS = ("OK", "REJECT", "DUNNO")


class TableError(Exception):
    """A table file that cannot be used: the message names the file and line and the fix."""


@dataclass(frozen=True)
class Rule:
    action: str  # OK | REJECT | DUNNO
    text: str = ""  # optional reply text for REJECT
    source: str = ""  # "path:line", for logs


def logical_lines(text: str, path: str) -> list[tuple[int, str]]:
    """(line number, content) with comments and blanks dropped and continuation lines joined."""
    lines: list[tuple[int, str]] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if line[0] in " \t":
            if not lines:
                raise TableError(f"{path}:{number}: continuation line without a line before it; remove the indent")
            first, previous = lines[-1]
            lines[-1] = (first, previous + " " + line.strip())
        else:
            lines.append((number, line.strip()))
    return lines


def parse_action(rest: str, where: str) -> Rule:
    word, *more = rest.split(None, 1)
    text = more[0] if more else ""
    action = word.upper()
    if action not in ACTIONS:
        raise TableError(f"{where}: unknown action {word!r}; use OK, REJECT [text] or DUNNO")
    if text.strip() and action != "REJECT":
        raise TableError(f"{where}: {action} takes no text; remove {text.strip()!r}")
    return Rule(action, text.strip(), where)


def _key_and_rule(number: int, line: str, path: str) -> tuple[str, Rule]:
    where = f"{path}:{number}"
    key, *more = line.split(None, 1)
    rest = more[0] if more else ""
    if not rest.strip():
        raise TableError(f"{where}: {key!r} has no action; write `{key} OK` or `{key} REJECT`")
    return key.strip(), parse_action(rest, where)


IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class ClientTable:
    def __init__(self, entries: list[tuple[IPNetwork, Rule]]) -> None:
        # most specific first: a /32 exception inside a REJECTed /16 wins
        self.entries = sorted(entries, key=lambda e: -e[0].prefixlen)

    @classmethod
    def parse(cls, text: str, path: str) -> ClientTable:
        entries: list[tuple[IPNetwork, Rule]] = []
        for number, line in logical_lines(text, path):
            key, rule = _key_and_rule(number, line, path)
            entries.append((_network(key, f"{path}:{number}"), rule))
        return cls(entries)

    def lookup(self, client_ip: str) -> Rule | None:
        addr = client_address(client_ip)
        if addr is None:
            return None
        for network, rule in self.entries:
            if addr.version == network.version and addr in network:
                return rule
        return None

    def __len__(self) -> int:
        return len(self.entries)


def _network(key: str, where: str) -> IPNetwork:
    try:
        return ipaddress.ip_network(key, strict=True)
    except ValueError:
        pass
    parts = key.split(".")
    if 1 <= len(parts) < 4 and all(p.isdigit() and int(p) < 256 for p in parts):  # Postfix's "192.168"
        return ipaddress.ip_network(".".join(parts + ["0"] * (4 - len(parts))) + f"/{8 * len(parts)}")
    raise TableError(f"{where}: {key!r} is not an IP address or network (host bits set?); write e.g. 192.0.2.0/24")


class AddressTable:
    def __init__(self, entries: dict[str, Rule]) -> None:
        self.entries = entries

    @classmethod
    def parse(cls, text: str, path: str) -> AddressTable:
        entries: dict[str, Rule] = {}
        for number, line in logical_lines(text, path):
            key, rule = _key_and_rule(number, line, path)
            key = key.lower()
            if key != "<>" and (key.count("@") > 1 or key in ("@", ".") or " " in key):
                raise TableError(f"{path}:{number}: {key!r} is not an address, domain, .domain, user@ or <>")
            entries.setdefault(key, rule)  # the first line for a key counts, as with postmap
        return cls(entries)

    def lookup(self, address: str) -> Rule | None:
        address = address.strip().strip("<>").lower()
        if not address:
            return self.entries.get("<>")
        local, at, domain = address.rpartition("@")
        if not at:
            local, domain = "", address
        domain = domain.rstrip(".")
        for key in self._candidates(local, domain, address if at else ""):
            rule = self.entries.get(key)
            if rule is not None:
                return rule
        return None

    @staticmethod
    def _candidates(local: str, domain: str, full: str) -> list[str]:
        keys = [full] if full else []
        if domain:
            keys.append(domain)
            labels = domain.split(".")
            keys.extend("." + ".".join(labels[i:]) for i in range(1, len(labels)))
        if local:
            keys.append(local + "@")
        return keys

    def __len__(self) -> int:
        return len(self.entries)


T = TypeVar("T")


class TableFile(Generic[T]):
    """A table read from a file and re-read when the file changes (checked at most every
    `interval` seconds). A new version with errors is refused: the previous one stays in use."""

    def __init__(self, path: str, parse: Callable[[str, str], T], interval: float = 10.0) -> None:
        self.path = path
        self.parse = parse
        self.interval = interval
        self._lock = threading.Lock()
        self._stamp = self._stat()
        self.table: T = parse(read_text(path), path)
        self._checked = time.monotonic()

    def _stat(self) -> tuple[int, int, int]:
        try:
            st = os.stat(self.path)
        except OSError:
            return (0, 0, 0)
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def get(self) -> T:
        if self.interval > 0 and time.monotonic() - self._checked >= self.interval:
            self._maybe_reload()
        return self.table

    def _maybe_reload(self) -> None:
        if not self._lock.acquire(blocking=False):
            return  # another thread is at it
        try:
            self._checked = time.monotonic()
            stamp = self._stat()
            if stamp == self._stamp:
                return
            try:
                self.table = self.parse(read_text(self.path), self.path)
                log.info("access table %s reloaded", self.path)
            except TableError as exc:
                log.error("access table not reloaded, keeping the previous version: %s", exc)
            self._stamp = stamp
        finally:
            self._lock.release()


def read_text(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TableError(f"{path}: no such file; create it (it may be empty) or remove the setting") from None
    except OSError as exc:
        raise TableError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise TableError(f"{path}: not UTF-8 text ({exc.reason}); save it as UTF-8") from None
