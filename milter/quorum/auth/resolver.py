"""The one DNS resolver behind SPF, DKIM, DMARC and DNSBL lookups (dnspython).

Configured once from `[dns]`; with `nameservers` set, no lookup goes to the system resolver.
Every query is bounded by `[dns] timeout` and by the caller's deadline (time.monotonic()).
"""

from __future__ import annotations

import threading
import time
from typing import Any

import dns.exception
import dns.name
import dns.rdatatype
import dns.resolver

from quorum.auth.settings import DnsSettings


class DnsTempError(Exception):
    """A lookup that may succeed later: timeout, SERVFAIL, refused, no server reachable."""


# Names that cannot exist in the DNS: answer "no such name" rather than an error.
_BAD_NAME = (
    dns.name.EmptyLabel,
    dns.name.LabelTooLong,
    dns.name.NameTooLong,
    dns.name.BadEscape,
    dns.exception.SyntaxError,
    UnicodeError,
    ValueError,
)


class Resolver:
    """Thread-safe: one instance is shared by every stage and worker thread."""

    def __init__(self, settings: DnsSettings) -> None:
        self.settings = settings
        if settings.nameservers:
            resolver = dns.resolver.Resolver(configure=False)
            resolver.nameservers = list(settings.nameservers)
            resolver.port = settings.port
        else:
            try:
                resolver = dns.resolver.Resolver()  # /etc/resolv.conf
            except dns.resolver.NoResolverConfiguration:
                resolver = dns.resolver.Resolver(configure=False)  # every query: DnsTempError naming the fix
        resolver.timeout = settings.timeout
        resolver.lifetime = settings.timeout
        resolver.use_edns(0, 0, 1232)
        if settings.cache_size:
            resolver.cache = dns.resolver.LRUCache(settings.cache_size)
        self._resolver = resolver
        self._lock = threading.Lock()
        self.queries = 0  # lookups asked of this resolver (cache hits included), for benchmarks and tests

    def query(self, name: str, rdtype: str, deadline: float | None = None) -> list[Any]:
        """The records of `rdtype` at `name`; [] when the name or the type does not exist.

        Raises DnsTempError when no usable answer came in time.
        """
        lifetime = self.settings.timeout
        if deadline is not None:
            lifetime = min(lifetime, deadline - time.monotonic())
            if lifetime <= 0.001:
                raise DnsTempError(f"{name}/{rdtype}: no time left")
        with self._lock:
            self.queries += 1
        try:
            answer = self._resolver.resolve(name, rdtype, lifetime=lifetime, search=False, raise_on_no_answer=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer, dns.resolver.YXDOMAIN):
            return []
        except dns.exception.Timeout:
            raise DnsTempError(f"{name}/{rdtype}: timeout") from None
        except dns.resolver.NoNameservers:
            raise DnsTempError(f"{name}/{rdtype}: no server answered (SERVFAIL or REFUSED)") from None
        except dns.resolver.NoResolverConfiguration:
            raise DnsTempError("no nameserver configured; set [dns] nameservers") from None
        except _BAD_NAME:
            return []
        except dns.exception.DNSException as exc:
            raise DnsTempError(f"{name}/{rdtype}: {exc.__class__.__name__}") from None
        except OSError as exc:
            raise DnsTempError(f"{name}/{rdtype}: {exc.strerror or exc}") from None
        return list(answer.rrset) if answer.rrset is not None else []

    def txt(self, name: str, deadline: float | None = None) -> list[bytes]:
        """TXT records at `name`, each one's character-strings joined (RFC 7208 3.3, RFC 6376 3.6.2.2)."""
        return [b"".join(r.strings) for r in self.query(name, "TXT", deadline)]

    def exists(self, name: str, deadline: float | None = None) -> bool:
        """False when `name` has no A, AAAA or MX record (DMARCbis "non-existent domain")."""
        return any(self.query(name, rdtype, deadline) for rdtype in ("A", "AAAA", "MX"))
