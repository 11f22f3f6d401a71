"""Which buckets a message touches, and their Redis keys.

Key schema: `{prefix}{kind}:{unit}{window}:{{subject}}`, e.g. `quorum:rl:sd:m1h:{example.com}`.
The subject is the Redis Cluster hash tag, so a domain's buckets (sender and recipient, every
unit and window) share one slot while different domains spread over the cluster.

With `recipient_domain_share`, an unauthenticated client (or sender) also takes from its own
share of each recipient domain's bucket: `{prefix}rs:{unit}{window}:{{domain}}:ip:{client}`
(`:from:{sender}`), limit = share x the domain's limit, same window. It carries the domain's
hash tag, so it lives in the domain's slot and the reservation stays one script call per slot.
A client over its share is refused (451) while the domain's bucket keeps room for the others.
"""

from __future__ import annotations

import ipaddress
import math
from collections import Counter
from dataclasses import dataclass
from urllib.parse import quote

from quorum.message import Envelope, domain_of
from quorum.ratelimit.settings import KINDS, Override, RateLimitSettings, Rule, format_duration

KIND_CODES = {"sender_domain": "sd", "recipient_domain": "rd", "client_ip": "ip", "auth_user": "au"}
SHARE_CODE = "rs"  # one client's (or sender's) share of a recipient_domain bucket
_SHARE_BY_CODES = {"client_ip": "ip", "sender": "from"}
_SAFE = "@.-_+:/[]"


@dataclass(frozen=True)
class Charge:
    """What one message takes from one bucket: `cost` units (at most the bucket's limit)."""

    kind: str
    subject: str
    rule: Rule
    key: str
    cost: int
    share_of: str = ""  # "client_ip 192.0.2.7": this charge is that client's share of kind/subject

    @property
    def label(self) -> str:
        base = f"{self.kind} {self.subject}"
        return f"{base}, share of {self.share_of}" if self.share_of else base

    @property
    def metric_kind(self) -> str:
        return f"{self.kind}_share" if self.share_of else self.kind

    @property
    def interval(self) -> int:
        return self.rule.interval_us

    @property
    def limit(self) -> int:
        return self.rule.limit


def _address(value: str) -> str:
    value = value.strip()
    return value[1:-1] if value.startswith("<") and value.endswith(">") else value


class Planner:
    """Turns an envelope into the charges of its buckets, applying defaults, overrides and exemptions."""

    def __init__(self, settings: RateLimitSettings) -> None:
        self.settings = settings

    # -- subjects ----------------------------------------------------------------------------
    def subject(self, kind: str, value: str) -> str:
        """The normalised bucket subject, or "" when there is none (unparsable IP, empty domain)."""
        value = value.strip()
        if kind == "client_ip":
            return self._ip_subject(value)
        if kind == "auth_user":
            return value.lower()
        return value.lower().rstrip(".")

    def _ip_subject(self, value: str) -> str:
        ip = _parse_ip(value)
        if ip is None:
            return ""
        if isinstance(ip, ipaddress.IPv6Address) and self.settings.ipv6_prefix < 128:
            # One IPv6 client usually holds a whole /64: counting single addresses is trivially evaded.
            return str(ipaddress.IPv6Network((ip, self.settings.ipv6_prefix), strict=False))
        return str(ip)

    def override(self, kind: str, subject: str) -> Override | None:
        if kind == "client_ip":
            ip = _parse_ip(subject.partition("/")[0])
            if ip is None:
                return None
            for net, override in self.settings.networks.items():
                if ip.version == net.version and ip in net:
                    return override
            return None
        domain = subject.rpartition("@")[2] if kind == "auth_user" else subject
        return self.settings.domains.get(domain) if domain else None

    def rules(self, kind: str, subject: str) -> tuple[Rule, ...]:
        return self.settings.rules(kind, self.override(kind, subject))

    def key(self, kind: str, rule: Rule, subject: str) -> str:
        tag = _quoted(subject)
        return f"{self.settings.key_prefix}{KIND_CODES[kind]}:{rule.unit[0]}{format_duration(rule.per)}:{{{tag}}}"

    def buckets(self, kind: str, subject: str) -> list[tuple[Rule, str]]:
        """(rule, key) of every bucket of an already normalised subject (for the operator CLI)."""
        return [(rule, self.key(kind, rule, subject)) for rule in self.rules(kind, subject)]

    # -- charges -----------------------------------------------------------------------------
    def _charges(self, kind: str, subject: str, messages: int, recipients: int) -> list[Charge]:
        out: list[Charge] = []
        if not subject:
            return out
        for rule in self.rules(kind, subject):
            cost = messages if rule.unit == "messages" else recipients
            if cost > 0:
                # A message larger than the whole bucket passes only when the bucket is empty, and fills it.
                out.append(Charge(kind, subject, rule, self.key(kind, rule, subject), min(cost, rule.limit)))
        return out

    def message(self, envelope: Envelope, sender_trusted: bool) -> list[Charge]:
        """Charges for one message at DATA. `sender_trusted`: SMTP AUTH or SPF pass (else the
        sender domain may be forged and is not counted)."""
        recipients = [_address(r) for r in envelope.recipients]
        n = len(recipients)
        charges: list[Charge] = []
        if sender_trusted:
            charges += self._charges("sender_domain", self.subject("sender_domain", envelope.sender_domain), 1, n)
        per_domain = Counter(domain_of(r) for r in recipients)
        sharer = self.sharer(envelope)
        for domain in sorted(d for d in per_domain if d):
            subject = self.subject("recipient_domain", domain)
            domain_charges = self._charges("recipient_domain", subject, 1, per_domain[domain])
            charges += domain_charges
            if sharer is not None:
                charges += self._shares(domain_charges, *sharer)
        charges += self._charges("client_ip", self.subject("client_ip", envelope.client_ip), 1, n)
        charges += self._charges("auth_user", self.subject("auth_user", envelope.auth_user), 1, n)
        return charges

    # -- one client's share of a recipient domain ------------------------------------------------
    def sharer(self, envelope: Envelope) -> tuple[str, str] | None:
        """(by, value) whose share of each recipient domain this message takes, or None: the
        session authenticated (counted per auth_user instead) or its client network is exempt."""
        if envelope.auth_user:
            return None
        ip = self.subject("client_ip", envelope.client_ip)
        if ip and (o := self.override("client_ip", ip)) is not None and o.exempt:
            return None
        if self.settings.recipient_domain_share_by == "sender":
            return "sender", _address(envelope.sender).lower() or "<>"
        return "client_ip", ip or "unknown"

    def _shares(self, domain_charges: list[Charge], by: str, value: str) -> list[Charge]:
        if not domain_charges:
            return []
        first = domain_charges[0]  # all of one recipient domain
        share = self.settings.share(self.override(first.kind, first.subject))
        if share >= 1.0:
            return []
        out: list[Charge] = []
        for c in domain_charges:
            limit = max(1, math.floor(c.rule.limit * share + 1e-9))
            rule = Rule(c.rule.unit, limit, c.rule.per)
            key = f"{self.share_key(rule, c.subject)}:{_SHARE_BY_CODES[by]}:{_quoted(value)}"
            out.append(Charge(c.kind, c.subject, rule, key, min(c.cost, limit), share_of=f"{by} {value}"))
        return out

    def share_key(self, rule: Rule, domain: str) -> str:
        """The common prefix of every share key of `domain` for `rule` (the domain's hash tag)."""
        return f"{self.settings.key_prefix}{SHARE_CODE}:{rule.unit[0]}{format_duration(rule.per)}:{{{_quoted(domain)}}}"

    def connection(self, client_ip: str) -> list[Charge]:
        """Charges of one single-recipient message from this client: checked (not reserved) at connect."""
        return self._charges("client_ip", self.subject("client_ip", client_ip), 1, 1)


def _quoted(value: str) -> str:
    return quote(value.encode("utf-8", "surrogateescape"), safe=_SAFE)


def _parse_ip(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    value = value.strip().strip("[]")
    if value[:5].lower() == "ipv6:":
        value = value[5:]
    try:
        ip = ipaddress.ip_address(value)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def parse_key(text: str) -> list[tuple[str, str]]:
    """An operator's KEY: `kind:subject`, or a bare IP, user (has '@') or domain (both domain kinds)."""
    kind, sep, rest = text.partition(":")
    if sep and kind in KINDS:
        return [(kind, rest)]
    if _parse_ip(text) is not None:
        return [("client_ip", text)]
    if "@" in text:
        return [("auth_user", text)]
    return [("sender_domain", text), ("recipient_domain", text)]
