"""DNS blocklists on the client IP (`[[dnsbl]]`), queried through the shared resolver.

An answer in 127.0.0.0/8 is a listing, unless it falls in 127.255.255.0/24 (the lists' "query
refused / over quota" codes) - those, answers outside 127.0.0.0/8 (a hijacking resolver) and DNS
failures are errors: recorded, never a listing. `codes` keeps only the listed return codes.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Iterable
from concurrent.futures import Executor, Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field
from pydantic_core import PydanticCustomError

from quorum.auth.resolver import DnsTempError, Resolver
from quorum.config.problems import Problems
from quorum.config.schema import Float, Settings, validate
from quorum.message import client_address

_REFUSED = ipaddress.ip_network("127.255.255.0/24")
_LOOPBACK = _LOOPBACK_V4 = ipaddress.IPv4Network("127.0.0.0/8")


def _zone_name(value: Any) -> str:
    """A zone as written, normalised (lower case, no dots around); "" for what is not a string."""
    return value.strip().strip(".").lower() if isinstance(value, str) else ""


def _valid_zone(zone: str) -> bool:
    labels = zone.split(".")
    return len(labels) >= 2 and all(0 < len(x) < 64 and x.replace("-", "").replace("_", "").isalnum() for x in labels)


def _zone(value: str) -> str:
    zone = _zone_name(value)
    if not _valid_zone(zone):
        raise ValueError(f'{zone!r} is not a DNS zone; write e.g. zone = "zen.spamhaus.org"')
    return zone


def _code(value: Any) -> Any:
    """A return code or range, in 127.0.0.0/8."""
    if isinstance(value, ipaddress.IPv4Network):
        return value
    if not isinstance(value, str):
        raise PydanticCustomError("quorum_type", 'expected a return code such as "127.0.0.2"')
    try:
        net = ipaddress.ip_network(value.strip(), strict=True)
        if not isinstance(net, ipaddress.IPv4Network) or not net.subnet_of(_LOOPBACK_V4):
            raise ValueError("not in 127.0.0.0/8")
    except ValueError as exc:
        raise ValueError(f'{value!r}: {exc}; list return codes such as "127.0.0.2"') from None
    return net


class DnsblList(Settings):
    """One `[[dnsbl]]` table."""

    zone: Annotated[str, AfterValidator(_zone)]
    action: Literal["reject", "score"] = "score"
    weight: Float = Field(1.0, ge=0.0)
    # empty: any 127.0.0.0/8 answer (except refusals)
    codes: tuple[Annotated[ipaddress.IPv4Network, BeforeValidator(_code, json_schema_input_type=str)], ...] = ()

    def accepts(self, code: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        return not self.codes or any(code in net for net in self.codes)


@dataclass(frozen=True)
class Listing:
    zone: str
    action: str
    weight: float
    codes: tuple[str, ...]


@dataclass(frozen=True)
class DnsblCheck:
    client_ip: str
    listings: tuple[Listing, ...] = ()
    errors: tuple[str, ...] = ()  # "zone: reason"

    def record_fields(self) -> dict[str, list[str]]:
        return {"dnsbl": [f"{item.zone}:{item.action}" for item in self.listings]}

    @property
    def rejecting(self) -> Listing | None:
        return next((item for item in self.listings if item.action == "reject"), None)

    @property
    def scoring(self) -> tuple[Listing, ...]:
        return tuple(item for item in self.listings if item.action == "score")

    def log_fields(self) -> dict[str, str]:
        fields: dict[str, str] = {}
        if self.listings:
            fields["dnsbl"] = ",".join(f"{item.zone}={'/'.join(item.codes)}" for item in self.listings)
        if self.errors:
            fields["dnsbl_error"] = ",".join(self.errors)
        return fields


def query_name(client_ip: str, zone: str) -> str | None:
    """`4.3.2.1.zone` for 1.2.3.4, nibbles for IPv6 (RFC 5782); None for a non-address."""
    addr = client_address(client_ip)
    if addr is None:
        return None
    if isinstance(addr, ipaddress.IPv4Address):
        reversed_ip = ".".join(reversed(str(addr).split(".")))
    else:
        reversed_ip = ".".join(reversed(addr.exploded.replace(":", "")))
    return f"{reversed_ip}.{zone}"


def _check_one(resolver: Resolver, lst: DnsblList, client_ip: str, deadline: float) -> Listing | str | None:
    """A Listing, an error text, or None (not listed)."""
    name = query_name(client_ip, lst.zone)
    if name is None:
        return None
    try:
        records = resolver.query(name, "A", deadline)
    except DnsTempError as exc:
        return f"{lst.zone}: {str(exc).rpartition(': ')[2]}"
    codes: list[str] = []
    for rd in records:
        code = ipaddress.ip_address(rd.address)
        if code in _REFUSED:
            return f"{lst.zone}: refused ({code})"
        if code not in _LOOPBACK:
            return f"{lst.zone}: bogus answer ({code})"
        if lst.accepts(code):
            codes.append(str(code))
    return Listing(lst.zone, lst.action, lst.weight, tuple(sorted(codes))) if codes else None


class PendingCheck:
    """The lookups for one client, started early (MAIL FROM) and collected when needed (RCPT)."""

    def __init__(self, client_ip: str, lists: list[DnsblList], futures: list[Future[Listing | str | None]]) -> None:
        self.client_ip = client_ip
        self.lists = lists
        self.futures = futures
        self._result: DnsblCheck | None = None

    def result(self, timeout: float) -> DnsblCheck:
        if self._result is None:
            outcomes: list[Listing | str | None] = []
            end = time.monotonic() + timeout
            for lst, future in zip(self.lists, self.futures, strict=True):
                try:
                    outcomes.append(future.result(max(0.0, end - time.monotonic())))
                except FutureTimeout:
                    future.cancel()
                    outcomes.append(f"{lst.zone}: timeout")
                except Exception as exc:  # a lookup bug is an error, not a listing
                    outcomes.append(f"{lst.zone}: {exc.__class__.__name__}")
            self._result = DnsblCheck(
                self.client_ip,
                tuple(o for o in outcomes if isinstance(o, Listing)),
                tuple(o for o in outcomes if isinstance(o, str)),
            )
        return self._result


def start(
    resolver: Resolver, lists: list[DnsblList], client_ip: str, deadline: float, executor: Executor
) -> PendingCheck:
    """Submit one lookup per list; each is bounded by `deadline` and by [dns] timeout."""
    futures = [executor.submit(_check_one, resolver, lst, client_ip, deadline) for lst in lists]
    return PendingCheck(client_ip, lists, futures)


def check(resolver: Resolver, lists: Iterable[DnsblList], client_ip: str, deadline: float) -> DnsblCheck:
    """All lists for one client, one after the other (tests, `quorum scan`)."""
    outcomes = [_check_one(resolver, lst, client_ip, deadline) for lst in lists]
    return DnsblCheck(
        client_ip,
        tuple(o for o in outcomes if isinstance(o, Listing)),
        tuple(o for o in outcomes if isinstance(o, str)),
    )


def parse_lists(items: object, problems: Problems) -> tuple[DnsblList, ...]:
    """`[[dnsbl]]` entries: zone, action, weight, codes; a zone listed twice is an error."""
    if items is None:
        return ()
    if not isinstance(items, list):
        problems.error("dnsbl", 'expected an array of tables ([[dnsbl]] with zone = "...")')
        return ()
    lists: list[DnsblList] = []
    zones: set[str] = set()
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            problems.error(f"dnsbl[{i}]", 'expected a table with zone = "..."')
            continue
        zone = _zone_name(item.get("zone"))
        if _valid_zone(zone) and zone in zones:
            problems.error(f"dnsbl[{i}].zone", f"{zone} is listed twice; keep one [[dnsbl]] table per zone")
        zones.add(zone)
        if (entry := validate(DnsblList, item, f"dnsbl[{i}]", problems)) is not None:
            lists.append(entry)
    return tuple(lists)
