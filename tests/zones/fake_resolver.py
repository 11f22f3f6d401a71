"""An in-memory stand-in for quorum.auth.resolver.Resolver, for unit tests (no sockets)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import dns.rdata
import dns.rdataclass
import dns.rdatatype

from quorum.auth.resolver import DnsTempError, Resolver
from quorum.auth.settings import DnsSettings


class FakeResolver(Resolver):
    """`records` are (name, type, rdata text) as in a zone file, names absolute without the dot.

    Names in `failing` raise DnsTempError (a timeout or SERVFAIL), whatever the type.
    """

    def __init__(self, records: Iterable[tuple[str, str, str]] = (), failing: Iterable[str] = ()) -> None:
        self.settings = DnsSettings(nameservers=("127.0.0.1",), port=53, timeout=1.0, cache_size=0)
        self.data: dict[tuple[str, str], list[Any]] = {}
        self.failing = {n.lower().rstrip(".") for n in failing}
        self.asked: list[tuple[str, str]] = []
        self.queries = 0
        for name, rtype, text in records:
            self.add(name, rtype, text)

    def add(self, name: str, rtype: str, text: str) -> None:
        rtype = rtype.upper()
        if rtype == "TXT" and not text.startswith('"'):
            raw = text.encode()
            text = " ".join('"' + raw[i : i + 255].decode().replace('"', '\\"') + '"' for i in range(0, len(raw), 255))
        rd = dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.from_text(rtype), text)
        self.data.setdefault((name.lower().rstrip("."), rtype), []).append(rd)

    def query(self, name: str, rdtype: str, deadline: float | None = None) -> list[Any]:
        key = (name.lower().rstrip("."), rdtype.upper())
        self.asked.append(key)
        self.queries += 1
        if key[0] in self.failing:
            raise DnsTempError(f"{name}/{rdtype}: timeout")
        return list(self.data.get(key, []))
