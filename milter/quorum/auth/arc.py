"""ARC chain verification (RFC 8617) with dkimpy, bounded against hostile input.

The result is RFC 8617's chain validation status as an Authentication-Results method: `arc=none`
(no ARC header fields), `arc=pass` (every ARC-Seal and the latest ARC-Message-Signature verify, cv=
values in order) or `arc=fail` (anything else, with a reason), or `temperror` (a key lookup failed
for now, or no time was left).

Bounded work, checked before any hashing or arithmetic: dkimpy verifies the ARC-Message-Signature of
every set (one body hash each) and every ARC-Seal over a header list that grows with the set's
instance, so its cost is quadratic in the number of sets and it is not interruptible. Here the chain
must have at most `max_sets` sets (RFC 8617 allows 50; auth.arc_max_sets, default 10), numbered 1..N
with exactly one ARC-Authentication-Results, ARC-Message-Signature and ARC-Seal each and at most
MAX_ARC_HEADER_BYTES per header field; otherwise it is `fail` without any verification. Keys go
through the DKIM key fetcher (same size and exponent limits, same resolver deadline), and each key
record is fetched once per message.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

import dkim as dkimpy

from quorum.auth.dkim import _KeyFetcher, _KeyLookupFailed, _quiet, _reason
from quorum.auth.resolver import Resolver
from quorum.message import Header

ARC_HEADERS = ("arc-authentication-results", "arc-message-signature", "arc-seal")
RFC_MAX_SETS = 50  # RFC 8617 5.1.1.1: i= above 50 is a failed chain
MAX_ARC_HEADER_BYTES = 8192
_INSTANCE = re.compile(rb"(?:^|;)\s*i\s*=\s*([0-9]{1,3})\s*(?:;|$)")


@dataclass(frozen=True)
class ArcResult:
    result: str  # none | pass | fail | temperror
    sets: int = 0  # instance of the latest set
    reason: str = ""
    sealer: str = ""  # d= of the latest ARC-Seal (pass only)
    oldest_aar: str = ""  # the value of ARC-Authentication-Results i=1 (pass only)

    def __str__(self) -> str:
        return f"{self.result}:{self.sets}" if self.sets else self.result


def _instance(value: bytes) -> int | None:
    match = _INSTANCE.search(value.replace(b"\r\n", b""))
    return int(match.group(1)) if match else None


def arc_headers(headers: list[Header]) -> list[Header]:
    return [h for h in headers if h.name.lower() in ARC_HEADERS]


def structure_problem(headers: list[Header], max_sets: int) -> tuple[int, str]:
    """(latest instance, why the chain is malformed or "") from the header fields alone."""
    found = arc_headers(headers)
    sets: dict[int, set[str]] = {}
    for header in found:
        if len(header.raw_value) > MAX_ARC_HEADER_BYTES:
            return 0, f"{header.name} longer than {MAX_ARC_HEADER_BYTES} bytes"
        instance = _instance(header.raw_value)
        if instance is None or instance < 1:
            return 0, f"{header.name} without a valid i= tag"
        if instance > RFC_MAX_SETS:
            return 0, f"instance {instance} above {RFC_MAX_SETS}"
        names = sets.setdefault(instance, set())
        name = header.name.lower()
        if name in names:
            return 0, f"duplicate {header.name} for instance {instance}"
        names.add(name)
    latest = max(sets, default=0)
    if latest > max_sets:
        return latest, f"{latest} ARC sets, at most {max_sets} are verified"
    if sorted(sets) != list(range(1, latest + 1)):
        return latest, "ARC instances are not numbered 1.." + str(latest)
    for instance, names in sets.items():
        if len(names) != len(ARC_HEADERS):
            return latest, f"incomplete ARC set {instance}"
    return latest, ""


class _CachingFetcher(_KeyFetcher):
    """Each key record once per message (a chain may name one selector in every set)."""

    def __init__(self, resolver: Resolver, deadline: float) -> None:
        super().__init__(resolver, deadline)
        self.seen: dict[bytes, bytes | None] = {}

    def __call__(self, name: bytes, timeout: float = 5) -> bytes | None:
        if name not in self.seen:
            if time.monotonic() >= self.deadline:
                raise _KeyLookupFailed("no time left")
            self.seen[name] = super().__call__(name, timeout)
        return self.seen[name]


def verify_arc(raw: bytes, headers: list[Header], resolver: Resolver, deadline: float, max_sets: int) -> ArcResult:
    if not arc_headers(headers):
        return ArcResult("none")
    latest, problem = structure_problem(headers, max_sets)
    if problem:
        return ArcResult("fail", latest, problem)
    if time.monotonic() >= deadline:
        return ArcResult("temperror", latest, "not verified: no time left")
    fetch = _CachingFetcher(resolver, deadline)
    try:
        verifier = dkimpy.ARC(raw, logger=_quiet, minkey=1024)
        cv, data, reason = verifier.verify(dnsfunc=fetch)
    except _KeyLookupFailed as exc:
        return ArcResult("temperror", latest, f"key lookup failed: {exc}")
    except dkimpy.DKIMException as exc:
        return ArcResult("fail", latest, _reason(exc))
    except Exception as exc:  # a verifier bug on odd input must not take the message down
        return ArcResult("fail", latest, f"verifier error: {exc.__class__.__name__}")
    if cv != dkimpy.CV_Pass:
        text = reason if isinstance(reason, str) else str(reason)
        if fetch.problem:
            text = f"{text}: {fetch.problem}"
        return ArcResult("fail", latest, text[:120])
    newest = data[0] if data else {}
    oldest = data[-1] if data else {}
    sealer = newest.get("as-domain", b"").decode("ascii", "replace").lower()
    aar = oldest.get("aar-value", b"").decode("utf-8", "replace")
    return ArcResult("pass", latest, "", sealer, aar)


def _aligned(domain: str, author: str) -> bool:
    """Relaxed alignment, approximated without the DNS walk: the same name, or one under the other."""
    d, a = domain.strip().rstrip(".").lower(), author.strip().rstrip(".").lower()
    return bool(d and a) and (d == a or d.endswith("." + a) or a.endswith("." + d))


def vouched(aar: str, author: str) -> str:
    """Which check the oldest ARC-Authentication-Results (`i=1; id; ...`) says passed there for the
    From: domain `author`: "dmarc", "dkim" (a pass aligned with it), "spf" (likewise) or ""."""
    import authres

    text = re.sub(r"^\s*i\s*=\s*\d+\s*;", "", aar.replace("\r\n", "").replace("\n", ""))
    try:
        parsed = authres.AuthenticationResultsHeader.parse_value(text.strip())
    except Exception:  # noqa: BLE001 - an unparsable AAR vouches for nothing
        return ""
    found: dict[str, bool] = {}
    for res in parsed.results:
        method, result = str(res.method).lower(), str(res.result).lower()
        if result != "pass":
            continue
        props = {(p.type.lower(), p.name.lower()): str(p.value) for p in res.properties}
        if method == "dmarc":
            found["dmarc"] = _aligned(props.get(("header", "from"), author), author)
        elif method == "dkim":
            found["dkim"] = found.get("dkim", False) or _aligned(props.get(("header", "d"), ""), author)
        elif method == "spf":
            mailfrom = props.get(("smtp", "mailfrom"), "").rpartition("@")[2]
            found["spf"] = _aligned(mailfrom, author)
    return next((name for name in ("dmarc", "dkim", "spf") if found.get(name)), "")
