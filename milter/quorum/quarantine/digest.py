"""`quorum quarantine digest`: one notice per recipient listing what Quorum holds for them.

Meant to run daily (cron or a systemd timer). A recipient gets a digest when its domain's
`[domains."d".notify]` has `recipient = true` and "digest" in `events`. The digest is a notice
like the others ([notify] relay and From:, null envelope sender, `Auto-Submitted`, the daily cap,
template `digest.txt`) and never carries held content: queue id, date, sender, subject, reason.
A digest that cannot be sent is logged and makes the command exit 1; the next run sends it again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from quorum.notify.facts import HeldItem, NoticeFacts
from quorum.notify.settings import DIGEST, DomainNotify
from quorum.quarantine.held import HeldMessage, header_values

DIGEST_POLICY = DomainNotify(recipient=True, events=(DIGEST,))


@dataclass(frozen=True)
class Digest:
    recipient: str
    tenant: str
    messages: tuple[HeldMessage, ...]

    def facts(self) -> NoticeFacts:
        items = tuple(
            HeldItem(m.queue_id, m.date, m.sender, next(iter(header_values(m.headers, "Subject")), ""), m.reason)
            for m in self.messages
        )
        return NoticeFacts(sender="", recipients=(self.recipient,), verdict="held", tenant=self.tenant, held=items)


@dataclass
class DigestRun:
    digests: list[Digest] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)  # the notifier's counts once it is closed

    @property
    def queue_ids(self) -> list[str]:
        return list(dict.fromkeys(m.queue_id for d in self.digests for m in d.messages))

    @property
    def ok(self) -> bool:
        return not (self.stats.get("failed") or self.stats.get("dropped") or self.stats.get("pending"))


def plan(messages: Iterable[HeldMessage], notify_policy: Callable[[str], tuple[Any, str]]) -> list[Digest]:
    """One digest per recipient whose domain asks for digests; `notify_policy(recipient)` gives
    (the domain's DomainNotify or None, the tenant name)."""
    by_rcpt: dict[str, dict[str, HeldMessage]] = {}  # lower-cased recipient -> queue id -> message
    shown: dict[str, str] = {}
    for m in messages:
        for rcpt in m.recipients:
            key = rcpt.strip().lower()
            shown.setdefault(key, rcpt.strip())
            by_rcpt.setdefault(key, {})[m.queue_id] = m
    out = []
    for key, held in by_rcpt.items():
        policy, tenant = notify_policy(shown[key])
        if isinstance(policy, DomainNotify) and policy.recipient and DIGEST in policy.events:
            out.append(Digest(shown[key], tenant, tuple(held.values())))
    return out


def tenant_notify(config: Any) -> tuple[Callable[[str], tuple[Any, str]], Callable[[], None]]:
    """(recipient -> (DomainNotify | None, tenant), close) from the tenants feature of `config`."""
    from quorum.tenants import TenantPolicies

    tenants = TenantPolicies(config, listen=False)

    def lookup(recipient: str) -> tuple[Any, str]:
        policy = tenants.policy_for(recipient)
        return policy.extensions.get("notify"), policy.domain or ""

    return lookup, tenants.close


def send(digests: list[Digest], notifier: Any, timeout: float) -> DigestRun:
    """Queue every digest, then close the notifier: what is not sent within `timeout` is logged as NOT SENT."""
    run = DigestRun(digests)
    for digest in digests:
        notifier.submit(DIGEST, digest.facts(), DIGEST_POLICY)
    notifier.close(timeout)
    run.stats = notifier.stats()
    return run
