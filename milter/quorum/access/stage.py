"""The access and DNSBL stages: both decide per recipient at RCPT time.

Access (client, sender and recipient tables): any REJECT wins (554 5.7.1), else any OK marks the
recipient "ok" (spam verdicts and DMARC enforcement skipped; viruses are still scanned). An OK that
only the sender table gave is keyed on the envelope sender, which anybody can write: it marks the
recipient "sender_ok", which counts as "ok" only once the sender is verified - an SMTP-authenticated
session, or SPF pass for the envelope sender's domain, or a DKIM pass by that domain (or a parent or
subdomain of it). The auth stage checks that at end-of-data (see `sender_verified`); without `[auth]`
only authenticated sessions qualify. Even verified, it lifts DMARC enforcement only for a From: domain
equal to the envelope sender's domain: the partner is trusted for its own name, not for others'.
Client- and recipient-table OKs keep their meaning (the client address cannot be forged over TCP;
a recipient OK is the receiving user's own choice). Client and
sender REJECTs are applied at RCPT, not at connect or MAIL FROM, so `exempt_recipients`
(postmaster, abuse) stay reachable. One message has one end-of-message answer, so every recipient
of a transaction must share the first accepted recipient's access result: one that differs gets
452 4.5.3 and the sending MTA delivers it in a separate transaction.

DNSBL: looked up once per client address and connection, started at MAIL FROM and collected at
RCPT. A `reject` listing refuses each recipient (except the exempt ones) with 554 5.7.1 naming
the list; `score` listings become antispam votes at end-of-data with score = weight, threshold 1:
weight >= 1 is a spam vote on its own, a smaller weight a partial score for `weighted`/`max`
combining. Trusted networks, authenticated sessions and "ok" recipients skip it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

from quorum.access import dnsbl
from quorum.access.dnsbl import DnsblCheck, DnsblList, PendingCheck
from quorum.access.header_rules import HeaderRule, match, parse_rules
from quorum.access.settings import AccessSettings, is_exempt
from quorum.access.tables import AddressTable, ClientTable, TableFile
from quorum.auth.resolver import Resolver
from quorum.auth.spf import SpfResult
from quorum.auth.trust import IPNetwork, trust_of
from quorum.message import Message, printable
from quorum.pipeline import replies
from quorum.pipeline.stages import Reply, Stage
from quorum.pipeline.transaction import AccessClass, Findings, Transaction
from quorum.tenants import effective
from quorum.verdict import Category, Status, Verdict

if TYPE_CHECKING:
    from quorum.auth.dkim import DkimResult

OK = "ok"
SENDER_OK = "sender_ok"  # OK from the sender table only: honoured once the envelope sender is verified
DEFAULT = "default"
T = TypeVar("T")


def sender_domain(sender: str) -> str:
    address = sender.strip().strip("<>").lower()
    return address.rpartition("@")[2].rstrip(".") if "@" in address else ""


def _related(name: str, domain: str) -> bool:
    """`name` is `domain`, a subdomain of it, or a parent of it with at least two labels."""
    if not name or not domain:
        return False
    if name == domain or name.endswith("." + domain):
        return True
    return domain.endswith("." + name) and "." in name


def sender_verified(txn: Transaction, spf: SpfResult | None, dkim: Iterable[DkimResult] | None) -> str:
    """How the envelope sender of a "sender_ok" transaction is verified ("" when it is not):
    "authenticated", "spf" (pass for the MAIL FROM identity and domain) or "dkim" (a pass by a
    signing domain related to the sender's domain)."""
    env = txn.envelope
    if env.auth_user:
        return "authenticated"
    domain = sender_domain(env.sender)
    if not domain:
        return ""  # the null sender: nothing to verify it with
    if spf is not None and spf.result == "pass" and spf.identity == "mailfrom" and spf.domain.lower() == domain:
        return "spf"
    if any(d.result == "pass" and _related(d.domain.lower().rstrip("."), domain) for d in dkim or ()):
        return "dkim"
    return ""


class AccessStage(Stage):
    name = "access"

    def __init__(self, settings: AccessSettings) -> None:
        self.settings = settings
        every = settings.reload_interval
        self.client = TableFile(settings.client, ClientTable.parse, every) if settings.client else None
        self.sender = TableFile(settings.sender, AddressTable.parse, every) if settings.sender else None
        self.recipient = TableFile(settings.recipient, AddressTable.parse, every) if settings.recipient else None
        self.header: TableFile[list[HeaderRule]] | None = (
            TableFile(settings.header, parse_rules, every) if settings.header else None
        )

    def _classify(self, txn: Transaction, recipient: str) -> AccessClass | Reply:
        """The recipient's class, or the refusal a REJECT entry gives it."""
        env = txn.envelope
        client = self.client.get().lookup(env.client_ip) if self.client else None
        sender = self.sender.get().lookup(env.sender) if self.sender else None
        rcpt = self.recipient.get().lookup(recipient) if self.recipient else None
        exempt = is_exempt(recipient, self.settings.exempt_recipients)
        rules = [r for r in (client, sender, rcpt) if r is not None and r.action != "DUNNO"]
        for rule in rules:
            if rule.action == "REJECT" and (rule is rcpt or not exempt):
                return replies.access_denied(rule.text)
        ok = next((r for r in rules if r.action == "OK" and r is not sender), None)
        if ok is not None:
            return AccessClass(OK, ok.source)
        if sender is not None and sender.action == "OK":
            return AccessClass(OK if env.auth_user else SENDER_OK, sender.source)
        return AccessClass(DEFAULT)

    def recipient_class(self, txn: Transaction, recipient: str) -> str | None:
        """OK, sender_ok and default recipients go in separate transactions (one skips spam checks)."""
        cls = self._classify(txn, recipient)
        # The pipeline asks this just before `rcpt` for the same recipient: the lookups are kept
        # for it on the connection (one thread per connection), not done twice.
        txn.connection.cache[self.name] = (txn.id, recipient, cls)
        return cls.name if isinstance(cls, AccessClass) else None  # a REJECT: rcpt refuses it

    def rcpt(self, txn: Transaction, recipient: str) -> Reply | None:
        kept = txn.connection.cache.pop(self.name, None)
        if isinstance(kept, tuple) and kept[:2] == (txn.id, recipient):
            cls = kept[2]
        else:
            cls = self._classify(txn, recipient)
        if isinstance(cls, Reply):
            return cls
        txn.access[recipient.lower()] = cls
        return None

    def wants(self, txn: Transaction) -> bool:
        return self.header is not None or txn.access_class().name in (OK, SENDER_OK)

    def examine(self, txn: Transaction, message: Message, deadline: float) -> Findings:
        found = Findings(self.name)
        first = txn.access_class()
        if first.name == OK:
            found.skip_spam = True
            found.log["access"] = f"ok({first.source})"
        elif first.name == SENDER_OK:  # the auth stage sets skip_spam once the sender is verified
            found.log["access"] = f"sender_ok({first.source})"
        if self.header is None:
            return found
        matches = match(self.header.get(), message.headers)
        for m in matches:
            rule = m.rule
            if rule.action == "REJECT":
                found.decide(replies.content_rejected(rule.text), f"header rule {rule.source}")
            elif rule.action == "DISCARD":
                found.decide(replies.DISCARD, f"header rule {rule.source}")
            elif rule.action == "HOLD":
                found.hold = True
        if matches:
            found.log["header_rules"] = ",".join(f"{m.rule.action.lower()}({m.rule.source})" for m in matches)
            found.log["header_matched"] = printable(matches[0].header[:100])
        return found


def _ok_at_rcpt(txn: Transaction, recipient: str) -> bool:
    """An "ok" recipient, or a "sender_ok" one whose sender SPF already verified (`spf_at = "mail"`)."""
    name = txn.access_class(recipient).name
    return name == OK or (name == SENDER_OK and sender_verified(txn, txn.results.get(SpfResult), None) == "spf")


class _Inline(Executor):
    """Runs the lookup in the caller's thread (after a reload shut the stage's pool down)."""

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        future: Future[T] = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except Exception as exc:
            future.set_exception(exc)
        return future


_INLINE = _Inline()


class DnsblStage(Stage):
    name = "dnsbl"

    def __init__(
        self,
        resolver: Resolver,
        lists: tuple[DnsblList, ...],
        trusted_networks: tuple[IPNetwork, ...],
        exempt_recipients: tuple[str, ...],
        workers: int = 16,
    ) -> None:
        self.resolver = resolver
        self.lists = list(lists)
        self.trusted_networks = trusted_networks
        self.exempt_recipients = exempt_recipients
        self.executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="quorum-dnsbl")

    def _skip(self, txn: Transaction) -> bool:
        tenant = effective(txn)
        if tenant is not None and not tenant.dnsbl:
            return True  # `[domains."d"] dnsbl = false`
        return bool(trust_of(txn, self.trusted_networks)) or not txn.envelope.client_ip

    def _pending(self, txn: Transaction) -> PendingCheck:
        ip, conn = txn.envelope.client_ip, txn.connection
        pending = conn.cache.get(self.name)
        if (
            not isinstance(pending, PendingCheck) or pending.client_ip != ip
        ):  # XCLIENT may change the address mid-connection
            deadline = time.monotonic() + self.resolver.settings.timeout
            try:
                pending = dnsbl.start(self.resolver, self.lists, ip, deadline, self.executor)
            except RuntimeError:  # closed by a reload while this connection still runs: look up inline
                pending = dnsbl.start(self.resolver, self.lists, ip, deadline, _INLINE)
            conn.cache[self.name] = pending
        return pending

    def _check(self, txn: Transaction, deadline: float | None = None) -> DnsblCheck:
        wait = self.resolver.settings.timeout + 1.0
        if deadline is not None:
            wait = min(wait, max(0.0, deadline - time.monotonic()))
        return self._pending(txn).result(wait)

    def mail_from(self, txn: Transaction) -> Reply | None:
        if not self._skip(txn):
            self._pending(txn)  # start the lookups now; RCPT collects them
        return None

    def rcpt(self, txn: Transaction, recipient: str) -> Reply | None:
        if self._skip(txn) or _ok_at_rcpt(txn, recipient):
            return None
        if is_exempt(recipient, self.exempt_recipients):
            return None
        listing = self._check(txn).rejecting
        if listing is None:
            return None
        return replies.dnsbl_listed(txn.envelope.client_ip, listing.zone)

    def enforces(self, txn: Transaction) -> bool:
        return False  # at end of data a listing is a spam vote (`score`); refusals happen at RCPT

    def examine(self, txn: Transaction, message: Message, deadline: float) -> Findings | None:
        if self._skip(txn):
            return None
        result = self._check(txn, deadline)
        found = Findings(self.name)
        found.results.put(result, by=self.name)
        found.log.update(result.log_fields())
        if txn.access_class().name == OK:
            return found
        for listing in result.scoring:
            found.votes.append(
                Verdict(
                    engine=f"dnsbl:{listing.zone}",
                    category=Category.ANTISPAM,
                    status=Status.SPAM if listing.weight >= 1.0 else Status.CLEAN,  # below 1: a partial score
                    score=listing.weight,
                    threshold=1.0,
                    detail="/".join(listing.codes),
                )
            )
        return found

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
