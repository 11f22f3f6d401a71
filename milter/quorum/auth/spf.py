"""SPF (RFC 7208) with pyspf, every lookup going through our resolver.

pyspf looks names up through its module-level `DNSLookup` hook. We replace the hook once with a
dispatcher that uses the resolver bound to the current thread by `check_spf`; pyspf's own lookup
limits (10 DNS-querying terms, 2 void lookups, 10 MX/PTR names) apply unchanged.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

import spf as pyspf

from quorum.auth.resolver import DnsTempError, Resolver

RESULTS = ("pass", "fail", "softfail", "neutral", "none", "permerror", "temperror")
_LEGACY = {"error": "temperror", "unknown": "permerror", "deny": "fail"}
_MAX_QUERY_TIME = 20.0  # RFC 7208 4.6.4: at least 20 seconds for the whole evaluation

_bound = threading.local()
_original_lookup = pyspf.DNSLookup


def _lookup(name: str, qtype: str, strict: Any = True, timeout: float = 20) -> list[tuple[tuple[str, str], Any]]:
    """pyspf's DNSLookup contract: [((name, qtype), value)], [] for no data, TempError on failure."""
    binding: tuple[Resolver, float] | None = getattr(_bound, "binding", None)
    if binding is None:  # somebody else's pyspf call in this process: leave it alone
        return _original_lookup(name, qtype, strict, timeout)  # type: ignore[no-any-return]
    resolver, deadline = binding
    try:
        records = resolver.query(name, qtype, deadline)
    except DnsTempError as exc:
        raise pyspf.TempError(f"DNS {exc}") from None
    key = (name, qtype)
    out: list[tuple[tuple[str, str], Any]] = []
    for rd in records:
        if qtype in ("A", "AAAA"):
            out.append((key, rd.address))
        elif qtype == "MX":
            out.append((key, (rd.preference, rd.exchange.to_text(omit_final_dot=True))))
        elif qtype == "PTR":
            out.append((key, rd.target.to_text(omit_final_dot=True)))
        elif qtype in ("TXT", "SPF"):
            out.append((key, rd.strings))
    return out


pyspf.DNSLookup = _lookup


@dataclass(frozen=True)
class SpfResult:
    result: str  # one of RESULTS
    identity: str  # "mailfrom" or "helo" (null sender, RFC 7208 2.4)
    domain: str  # the domain whose policy was evaluated
    sender: str  # the checked address (postmaster@helo for the null sender)
    reason: str = ""
    client_ip: str = ""

    @property
    def passed(self) -> bool:
        return self.result == "pass"

    def record_fields(self) -> dict[str, str]:
        return {"spf": self.result}  # at MAIL FROM (spf_at = "mail"): known even if the scan ended first

    @property
    def comment(self) -> str:
        """A short human note for the A-R header."""
        verbs = {
            "pass": "permitted",
            "fail": "not permitted",
            "softfail": "discouraged",
            "neutral": "neither permitted nor denied",
        }
        if self.result in verbs and self.client_ip:
            return f"{self.client_ip} {verbs[self.result]} by {self.domain}"
        if self.result == "none":
            return self.reason or "no SPF record"
        return self.reason

    def __str__(self) -> str:
        return self.result


def _valid_domain(domain: str) -> bool:
    labels = domain.rstrip(".").split(".")
    return len(labels) > 1 and all(0 < len(label) < 64 for label in labels) and not domain.startswith("[")


def check_spf(resolver: Resolver, client_ip: str, sender: str, helo: str, deadline: float) -> SpfResult:
    """Evaluate SPF for MAIL FROM, or for the HELO identity when the sender is null."""
    sender = sender.strip().strip("<>")
    helo = helo.strip().rstrip(".")
    if sender:
        identity, domain, checked = "mailfrom", sender.rpartition("@")[2].lower().rstrip("."), sender
    else:
        identity, domain, checked = "helo", helo.lower(), f"postmaster@{helo}" if helo else ""
    if not client_ip:
        return SpfResult("none", identity, domain, checked, "no client address")
    if not _valid_domain(domain):
        return SpfResult("none", identity, domain, checked, f"no valid {identity} domain", client_ip)
    remaining = min(_MAX_QUERY_TIME, deadline - time.monotonic())
    if remaining <= 0.001:
        return SpfResult("temperror", identity, domain, checked, "no time left", client_ip)
    _bound.binding = (resolver, time.monotonic() + remaining)
    try:
        query = pyspf.query(i=client_ip, s=checked, h=helo or "unknown", timeout=remaining, querytime=remaining)
        result, _code, explanation = query.check()
    except Exception as exc:  # a pyspf bug on odd input must not take the message down
        reason = f"SPF evaluation failed: {exc.__class__.__name__}"
        return SpfResult("temperror", identity, domain, checked, reason, client_ip)
    finally:
        _bound.binding = None
    result = _LEGACY.get(str(result).lower(), str(result).lower())
    if result not in RESULTS:
        result = "permerror"
    reason = str(explanation or "") if result in ("permerror", "temperror") else ""
    return SpfResult(result, identity, domain, checked, reason, client_ip)
