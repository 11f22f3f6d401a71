"""DMARC (RFC 9989, "DMARCbis"): policy discovery and Organizational Domains by DNS Tree Walk.

No Public Suffix List: the walk queries `_dmarc.<name>` from the Author Domain upwards, at most
five queries (a name with more than five labels jumps to its last four labels), stopping at
`psd=n` (or `psd=y` above the start). The policy record is the Author Domain's, else the
Organizational Domain's, else the Public Suffix Domain's (`psd=y`). `p` applies to the Author
Domain itself, `sp` to existing subdomains, `np` to non-existent ones (no A, AAAA or MX).

Temporary DNS failures give `temperror` only when the missing answer could change the result;
otherwise the result is decided from the answers that came (real DNS has upper levels that answer
SERVFAIL or REFUSED for `_dmarc.<tld>`, and a spoofed From: of a `p=reject` domain must still fail).
A walk stops at the first unanswered name; that name and every name the walk would have asked after
it may hold any record, so the Organizational Domain is known only as a set of candidates. The
result is `temperror` when, and only when:

1. the Author Domain's own `_dmarc` query failed (it decides whether a record exists and which policy
   applies);
2. the Author Domain has no record of its own, the walk above it was cut short, and the candidates
   for its Organizational Domain do not all lead to one record that was found (the policy is unknown);
3. the relaxed alignment of an identifier that passed (or had a temporary error) differs between the
   candidates for the Author Domain's and the identifier's Organizational Domains - and no other
   identifier is aligned and passed (then the result is `pass` whatever the missing answers said);
4. the A/AAAA/MX lookup deciding `np` failed and `np` differs from the policy that applies otherwise;
5. no aligned identifier passed and an aligned one had a temporary error (SPF or DKIM temperror).

One assumption bounds the candidates: an unanswered single-label name (a TLD) is a public suffix. It
may publish `psd=y` (making the name one label below it the Organizational Domain), but it is never
the Organizational Domain itself - a TLD claiming `psd=n` would make all its registrants one
organisation, aligned with each other. Multi-label names get no such assumption: if `_dmarc.co.uk`
does not answer, `attacker.co.uk` may share `example.co.uk`'s Organizational Domain, so it is case 3.
"""

from __future__ import annotations

import email.utils
from collections.abc import Callable
from dataclasses import dataclass, replace

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
    override: str = ""  # a fail not enforced: "arc from lists.example.org" (a trusted sealer's chain)

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
    """Per-message memo of `_dmarc.<name>` answers (failures too) so several walks share queries."""

    def __init__(self, resolver: Resolver, deadline: float) -> None:
        self.resolver = resolver
        self.deadline = deadline
        self._memo: dict[str, DmarcRecord | None] = {}
        self._failed: dict[str, str] = {}

    def record(self, domain: str) -> DmarcRecord | None:
        if domain in self._failed:
            raise DnsTempError(self._failed[domain])
        if domain not in self._memo:
            try:
                answers = self.resolver.txt(f"_dmarc.{domain}", self.deadline)
            except DnsTempError as exc:
                self._failed[domain] = str(exc)
                raise
            found = [t for t in (parse_record(txt) for txt in answers) if t]
            # several DMARC records at one name: all are discarded
            self._memo[domain] = DmarcRecord(domain, found[0]) if len(found) == 1 else None
        return self._memo[domain]


def walk_names(domain: str) -> list[str]:
    """The names a Tree Walk from `domain` may ask, in order (DMARCbis 4.10: at most five)."""
    labels = domain.split(".")
    labels = labels[-(_MAX_LABELS - 1) :] if len(labels) >= _MAX_LABELS else labels[1:]
    return [domain] + [".".join(labels[i:]) for i in range(len(labels))]


@dataclass(frozen=True)
class Walk:
    """The records one Tree Walk found (longest name first) and, when it was cut short, where."""

    domain: str
    found: tuple[DmarcRecord, ...]
    unanswered: str = ""  # the name whose query failed; it and the names after it are unknown
    error: str = ""

    def own(self) -> DmarcRecord | None:
        return self.found[0] if self.found and self.found[0].domain == self.domain else None

    def org_candidates(self) -> frozenset[str]:
        """Every Organizational Domain the missing answers could lead to (one when complete)."""
        orgs = {organizational_domain(self.domain, list(self.found))}
        if self.unanswered:
            names = walk_names(self.domain)
            labels = self.domain.split(".")
            for name in names[names.index(self.unanswered) :]:
                if "." in name or name == self.domain:
                    orgs.add(name)  # psd=n there, or a record with the fewest labels
                if name != self.domain:
                    orgs.add(".".join(labels[-(len(name.split(".")) + 1) :]))  # psd=y there
        return frozenset(orgs)


def walk(domain: str, record: Callable[[str], DmarcRecord | None]) -> Walk:
    """The DNS Tree Walk (DMARCbis 4.10) from `domain`, stopping at the first unanswered name."""
    found: list[DmarcRecord] = []
    for i, name in enumerate(walk_names(domain)):
        try:
            rec = record(name)
        except DnsTempError as exc:
            return Walk(domain, tuple(found), name, str(exc))
        if rec is None:
            continue
        found.append(rec)
        if rec.psd == "n" or (rec.psd == "y" and i > 0):
            break
    return Walk(domain, tuple(found))


def tree_walk(domain: str, record: Callable[[str], DmarcRecord | None]) -> list[DmarcRecord]:
    """Valid records found walking up from `domain`, longest name first; DnsTempError if one query failed."""
    result = walk(domain, record)
    if result.unanswered:
        raise DnsTempError(result.error)
    return list(result.found)


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


def _under(name: str, org: str) -> bool:
    return name == org or name.endswith("." + org)


class _Undecided(Exception):
    """A missing DNS answer could change the result: temperror (see the module docstring)."""


@dataclass
class _Evaluation:
    lookup: _Lookup
    author_walk: Walk

    def aligned(self, identifier: str, strict: bool) -> bool | None:
        """Relaxed/strict alignment of `identifier` with the Author Domain; None when undecided."""
        identifier = identifier.lower().rstrip(".")
        author = self.author_walk.domain
        if identifier == author:
            return True
        if strict or not identifier:
            return False
        author_orgs = self.author_walk.org_candidates()
        if not any(_under(identifier, org) for org in author_orgs):
            return False  # cannot share the Organizational Domain: no lookups needed
        identifier_orgs = walk(identifier, self.lookup.record).org_candidates()
        outcomes = {_under(identifier, a) and a == i for a in author_orgs for i in identifier_orgs}
        return outcomes.pop() if len(outcomes) == 1 else None

    def policy_record(self) -> DmarcRecord | None:
        """The record whose policy applies (None: no record); raises _Undecided when unknown."""
        w = self.author_walk
        own = w.own()
        if own is not None:
            return own
        by_domain = {rec.domain: rec for rec in w.found}
        if w.unanswered:
            records = [by_domain.get(org) for org in w.org_candidates()]
            first = records[0]
            if first is None or any(rec is not first for rec in records):
                raise _Undecided(f"policy record unknown: {w.error}")
            return first
        if not w.found:
            return None
        org_rec = by_domain.get(organizational_domain(w.domain, list(w.found)))
        return org_rec or next((rec for rec in w.found if rec.psd == "y"), w.found[-1])


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
    author_walk = walk(author, lookup.record)
    if author_walk.unanswered == author:
        return DmarcResult("temperror", author, reason=f"author domain record: {author_walk.error}")
    ev = _Evaluation(lookup, author_walk)
    try:
        policy_rec = ev.policy_record()
        if policy_rec is None:
            return DmarcResult("none", author, reason="no DMARC record")
        tag, policy, reason = _choose_policy(policy_rec, author)
        if not policy:
            return DmarcResult("none", author, policy_domain=policy_rec.domain, reason=reason)
        strict_spf = policy_rec.get("aspf", "r").lower() == "s"
        strict_dkim = policy_rec.get("adkim", "r").lower() == "s"
        counted = ("pass", "temperror")  # only these can change the result: no lookups for the rest
        spf_alignment = ev.aligned(spf.domain, strict_spf) if spf is not None and spf.result in counted else False
        dkim_alignment = [(d, ev.aligned(d.domain, strict_dkim) if d.result in counted else False) for d in dkim]
        spf_aligned = spf is not None and spf.result == "pass" and spf_alignment is True
        dkim_aligned = any(d.result == "pass" and a is True for d, a in dkim_alignment)
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
        undecided = (spf is not None and spf.result == "pass" and spf_alignment is None) or any(
            d.result == "pass" and a is None for d, a in dkim_alignment
        )
        if undecided:
            raise _Undecided(f"alignment unknown: {author_walk.error or 'identifier walk cut short'}")
        temp = (spf is not None and spf.result == "temperror" and spf_alignment is not False) or any(
            d.result == "temperror" and a is not False for d, a in dkim_alignment
        )
        if temp:
            return replace(base, result="temperror", reason="aligned identifier had a temporary error")
        np = policy_rec.get("np").lower()
        if policy_rec.domain != author and _valid_policy(np):
            try:
                if not resolver.exists(author, deadline):
                    base = replace(base, policy_tag="np", policy=np)
            except DnsTempError as exc:
                if np != policy:
                    raise _Undecided(f"np existence check: {exc}") from None
        return replace(base, result="fail", reason="no aligned identifier passed")
    except _Undecided as exc:
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
