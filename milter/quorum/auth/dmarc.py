"""DMARC (RFC 9989, "DMARCbis"): policy discovery and Organizational Domains by DNS Tree Walk.

No Public Suffix List: the walk queries `_dmarc.<name>` from the Author Domain upwards, at most
five queries (a name with more than five labels jumps to its last four labels), stopping at
`psd=n` (or `psd=y` above the start). The policy record is the Author Domain's, else the
Organizational Domain's, else the Public Suffix Domain's (`psd=y`). `p` applies to the Author
Domain itself, `sp` to existing subdomains, `np` to non-existent ones (no A, AAAA or MX).
"""

from __future__ import annotations

import email.utils
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from quorum.auth.dkim import DkimResult
from quorum.auth.resolver import DnsTempError, Resolver
from quorum.auth.spf import SpfResult
from quorum.message import Header

POLICIES = ("none", "quarantine", "reject")
_MAX_LABELS = 5  # DMARCbis 4.10: a longer name jumps to its last four labels


@dataclass(frozen=True)
class DmarcRecord:
    domain: str  # where it was found
    tags: dict[str, str]

    def get(self, tag: str, default: str = "") -> str:
        return self.tags.get(tag, default)

    @property
    def psd(self) -> str:
        return self.get("psd", "u").lower()


@dataclass(frozen=True)
class DmarcResult:
    result: str  # pass | fail | none | temperror | permerror
    header_from: str = ""
    policy: str = ""  # the policy that applies: none | quarantine | reject ("" when no record)
    policy_tag: str = ""  # which tag said so: p | sp | np
    policy_domain: str = ""  # where the record was found
    published_p: str = ""  # the record's p= (A-R polrec.p)
    testing: bool = False  # t=y: report, do not apply
    spf_aligned: bool = False
    dkim_aligned: bool = False
    reason: str = ""

    def __str__(self) -> str:
        return f"{self.result}({self.policy_tag}={self.policy})" if self.policy else self.result


def parse_record(text: bytes) -> dict[str, str] | None:
    """Tags of a DMARC record, or None when it is not one (`v=DMARC1` must come first)."""
    try:
        decoded = text.decode("ascii")
    except UnicodeDecodeError:
        return None
    tags: dict[str, str] = {}
    for i, part in enumerate(decoded.split(";")):
        name, sep, value = part.partition("=")
        name, value = name.strip().lower(), value.strip()
        if i == 0:
            if not sep or name != "v" or value != "DMARC1":
                return None
        elif not sep:
            continue  # empty element (trailing ";") or junk: ignored
        tags.setdefault(name, value)
    return tags


def author_domain(headers: list[Header]) -> tuple[str, str]:
    """(RFC5322.From domain as an A-label, problem); problem is "" when usable."""
    froms = [h for h in headers if h.name.lower() == "from"]
    if not froms:
        return "", "no From header"
    if len(froms) > 1:
        return "", "several From headers"
    addresses = email.utils.getaddresses([froms[0].value])
    domains = {addr.rpartition("@")[2].strip().rstrip(".").lower() for _, addr in addresses if "@" in addr}
    if not domains or "" in domains:
        return "", "no domain in From"
    if len(domains) > 1:
        return "", "From names several domains"
    domain = domains.pop()
    try:
        domain = domain.encode("idna").decode("ascii") if not domain.isascii() else domain
    except UnicodeError:
        return "", "From domain is not a valid name"
    labels = domain.split(".")
    if not all(0 < len(label) < 64 for label in labels) or len(domain) > 253:
        return "", "From domain is not a valid name"
    return domain, ""


class _Lookup:
    """Per-message memo of `_dmarc.<name>` answers so several walks share queries."""

    def __init__(self, resolver: Resolver, deadline: float) -> None:
        self.resolver = resolver
        self.deadline = deadline
        self._memo: dict[str, DmarcRecord | None] = {}

    def record(self, domain: str) -> DmarcRecord | None:
        if domain not in self._memo:
            found = [
                t for t in (parse_record(txt) for txt in self.resolver.txt(f"_dmarc.{domain}", self.deadline)) if t
            ]
            # several DMARC records at one name: all are discarded
            self._memo[domain] = DmarcRecord(domain, found[0]) if len(found) == 1 else None
        return self._memo[domain]


def tree_walk(domain: str, record: Callable[[str], DmarcRecord | None]) -> list[DmarcRecord]:
    """Valid records found walking up from `domain`, longest name first (DMARCbis 4.10)."""
    found: list[DmarcRecord] = []
    first = record(domain)
    if first is not None:
        found.append(first)
        if first.psd == "n":
            return found
    labels = domain.split(".")
    labels = labels[-(_MAX_LABELS - 1) :] if len(labels) >= _MAX_LABELS else labels[1:]
    while labels:
        rec = record(".".join(labels))
        if rec is not None:
            found.append(rec)
            if rec.psd in ("n", "y"):
                break
        labels = labels[1:]
    return found


def organizational_domain(domain: str, found: list[DmarcRecord]) -> str:
    """DMARCbis 4.10.2 on the records of one walk (longest name first)."""
    for rec in found:
        if rec.psd == "n":
            return rec.domain
        if rec.psd == "y" and rec.domain != domain:
            labels = domain.split(".")
            return ".".join(labels[-(len(rec.domain.split(".")) + 1) :])
    candidates = [rec for rec in found if rec.psd != "y"]
    if candidates:
        return min(candidates, key=lambda r: len(r.domain.split("."))).domain
    return domain


@dataclass
class _Evaluation:
    lookup: _Lookup
    orgs: dict[str, str] = field(default_factory=dict)

    def org(self, domain: str) -> str:
        if domain not in self.orgs:
            self.orgs[domain] = organizational_domain(domain, tree_walk(domain, self.lookup.record))
        return self.orgs[domain]

    def aligned(self, identifier: str, author: str, author_org: str, strict: bool) -> bool:
        identifier = identifier.lower().rstrip(".")
        if identifier == author:
            return True
        if strict or not identifier:
            return False
        if identifier != author_org and not identifier.endswith("." + author_org):
            return False  # cannot share the Organizational Domain: no lookups needed
        return self.org(identifier) == author_org


def _valid_policy(value: str) -> bool:
    return value.lower() in POLICIES


def evaluate(
    headers: list[Header],
    spf: SpfResult | None,
    dkim: list[DkimResult],
    resolver: Resolver,
    deadline: float,
) -> DmarcResult:
    """The DMARC result for one message. `spf` None means SPF was not evaluated."""
    author, problem = author_domain(headers)
    if problem:
        return DmarcResult("permerror", reason=problem)
    lookup = _Lookup(resolver, deadline)
    ev = _Evaluation(lookup)
    try:
        found = tree_walk(author, lookup.record)
        if not found:
            return DmarcResult("none", author, reason="no DMARC record")
        author_org = organizational_domain(author, found)
        ev.orgs[author] = author_org
        by_domain = {rec.domain: rec for rec in found}
        policy_rec = by_domain.get(author) or by_domain.get(author_org)
        if policy_rec is None:
            policy_rec = next((rec for rec in found if rec.psd == "y"), found[-1])
        tag, policy, reason = _choose_policy(policy_rec, author)
        if not policy:
            return DmarcResult("none", author, policy_domain=policy_rec.domain, reason=reason)
        strict_spf = policy_rec.get("aspf", "r").lower() == "s"
        strict_dkim = policy_rec.get("adkim", "r").lower() == "s"
        spf_aligned = (
            spf is not None and spf.result == "pass" and ev.aligned(spf.domain, author, author_org, strict_spf)
        )
        dkim_aligned = any(d.result == "pass" and ev.aligned(d.domain, author, author_org, strict_dkim) for d in dkim)
        base = DmarcResult(
            "pass",
            author,
            policy,
            tag,
            policy_rec.domain,
            published_p=_published_p(policy_rec),
            testing=policy_rec.get("t", "n").lower() == "y",
            spf_aligned=spf_aligned,
            dkim_aligned=dkim_aligned,
        )
        if spf_aligned or dkim_aligned:
            return base
        temp = (
            spf is not None and spf.result == "temperror" and ev.aligned(spf.domain, author, author_org, strict_spf)
        ) or any(d.result == "temperror" and ev.aligned(d.domain, author, author_org, strict_dkim) for d in dkim)
        if temp:
            return replace(base, result="temperror", reason="aligned identifier had a temporary error")
        np = policy_rec.get("np").lower()
        if policy_rec.domain != author and _valid_policy(np) and not resolver.exists(author, deadline):
            base = replace(base, policy_tag="np", policy=np)
        return replace(base, result="fail", reason="no aligned identifier passed")
    except DnsTempError as exc:
        return DmarcResult("temperror", author, reason=str(exc))


def _published_p(rec: DmarcRecord) -> str:
    p = rec.get("p", "none").lower()
    return p if _valid_policy(p) else "none"


def _choose_policy(rec: DmarcRecord, author: str) -> tuple[str, str, str]:
    """(tag, policy, reason): `p` for the Author Domain's own record, `sp` for subdomains (`np` is
    decided later, only when needed, as it costs lookups). Invalid values count as `none` when the
    record asks for reports (rua), else the record is not used."""
    has_rua = bool(rec.get("rua").strip())
    p = rec.get("p", "none")  # no p= at all: treated as p=none
    if not _valid_policy(p):
        return ("p", "none", "") if has_rua else ("", "", f"invalid p= in {rec.domain} record")
    if rec.domain == author:
        return "p", p.lower(), ""
    sp = rec.get("sp")
    if sp and not _valid_policy(sp):
        return ("sp", "none", "") if has_rua else ("", "", f"invalid sp= in {rec.domain} record")
    if rec.get("np") and not _valid_policy(rec.get("np")) and not has_rua:
        return "", "", f"invalid np= in {rec.domain} record"
    return ("sp", sp.lower(), "") if sp else ("p", p.lower(), "")
