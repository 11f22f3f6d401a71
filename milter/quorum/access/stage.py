"""The access and DNSBL stages: both decide per recipient at RCPT time.

Access (client, sender and recipient tables): any REJECT wins (554 5.7.1), else any OK marks the
recipient "ok" (spam verdicts and DMARC enforcement skipped; viruses are still scanned). Client and
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
from collections.abc import Callable
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import Any, TypeVar

from quorum.access import dnsbl
from quorum.access.dnsbl import DnsblCheck, DnsblList, PendingCheck
from quorum.access.header_rules import HeaderRule, match, parse_rules
from quorum.access.settings import AccessSettings, is_exempt
from quorum.access.tables import AddressTable, ClientTable, TableFile
from quorum.auth.resolver import Resolver
from quorum.auth.trust import IPNetwork, trust_reason
from quorum.message import Message, printable
from quorum.pipeline.stages import Action, Reply, ScanContext, Session, Stage
from quorum.verdict import Category, Status, Verdict

OK = "ok"
DEFAULT = "default"
T = TypeVar("T")


def recipient_class(session: Session, recipient: str | None = None) -> str:
    """The access result ("ok" or "default") of `recipient`, by default of the transaction."""
    if recipient is None:
        if not session.envelope.recipients:
            return DEFAULT
        recipient = session.envelope.recipients[0]
    classes: dict[str, tuple[str, str]] = session.state.get("access", {}).get("classes", {})
    return classes.get(recipient.lower(), (DEFAULT, ""))[0]


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

    def rcpt(self, session: Session, recipient: str) -> Reply | None:
        env = session.envelope
        client = self.client.get().lookup(env.client_ip) if self.client else None
        sender = self.sender.get().lookup(env.sender) if self.sender else None
        rcpt = self.recipient.get().lookup(recipient) if self.recipient else None
        exempt = is_exempt(recipient, self.settings.exempt_recipients)
        rules = [r for r in (client, sender, rcpt) if r is not None and r.action != "DUNNO"]
        for rule in rules:
            if rule.action == "REJECT" and (rule is rcpt or not exempt):
                return Reply.reject("554", "5.7.1", rule.text or "Access denied")
        ok = next((r for r in rules if r.action == "OK"), None)
        cls = OK if ok else DEFAULT
        state = session.state.setdefault("access", {"classes": {}})
        accepted = env.recipients
        if accepted:
            first = recipient_class(session, accepted[0])
            if first != cls:
                return Reply.tempfail("452", "4.5.3", "Recipient needs a separate transaction, try again")
        state["classes"][recipient.lower()] = (cls, ok.source if ok else "")
        return None

    def examine(self, session: Session, message: Message, ctx: ScanContext, deadline: float) -> None:
        if recipient_class(session) == OK:
            ctx.skip_spam = True
            first = session.envelope.recipients[0].lower()
            ctx.log["access"] = f"ok({session.state['access']['classes'][first][1]})"
        if self.header is None:
            return
        matches = match(self.header.get(), message.headers)
        for m in matches:
            rule = m.rule
            if rule.action == "REJECT":
                ctx.decide(
                    Reply.reject("554", "5.7.1", rule.text or "Message content rejected"), f"header rule {rule.source}"
                )
            elif rule.action == "DISCARD":
                ctx.decide(Reply(Action.DISCARD), f"header rule {rule.source}")
            elif rule.action == "HOLD":
                ctx.hold = True
        if matches:
            ctx.log["header_rules"] = ",".join(f"{m.rule.action.lower()}({m.rule.source})" for m in matches)
            ctx.log["header_matched"] = printable(matches[0].header[:100])


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

    def _skip(self, session: Session) -> bool:
        return bool(trust_reason(session.envelope, self.trusted_networks)) or not session.envelope.client_ip

    def _pending(self, session: Session) -> PendingCheck:
        ip = session.envelope.client_ip
        pending: PendingCheck | None = session.conn_state.get("dnsbl")
        if pending is None or pending.client_ip != ip:  # XCLIENT may change the address mid-connection
            deadline = time.monotonic() + self.resolver.settings.timeout
            try:
                pending = dnsbl.start(self.resolver, self.lists, ip, deadline, self.executor)
            except RuntimeError:  # closed by a reload while this connection still runs: look up inline
                pending = dnsbl.start(self.resolver, self.lists, ip, deadline, _INLINE)
            session.conn_state["dnsbl"] = pending
        return pending

    def _check(self, session: Session, deadline: float | None = None) -> DnsblCheck:
        wait = self.resolver.settings.timeout + 1.0
        if deadline is not None:
            wait = min(wait, max(0.0, deadline - time.monotonic()))
        return self._pending(session).result(wait)

    def mail_from(self, session: Session) -> Reply | None:
        if not self._skip(session):
            self._pending(session)  # start the lookups now; RCPT collects them
        return None

    def rcpt(self, session: Session, recipient: str) -> Reply | None:
        if self._skip(session) or recipient_class(session, recipient) == OK:
            return None
        if is_exempt(recipient, self.exempt_recipients):
            return None
        listing = self._check(session).rejecting
        if listing is None:
            return None
        ip = session.envelope.client_ip
        return Reply.reject("554", "5.7.1", f"Service unavailable; client [{ip}] blocked using {listing.zone}")

    def examine(self, session: Session, message: Message, ctx: ScanContext, deadline: float) -> None:
        if self._skip(session):
            return
        result = self._check(session, deadline)
        ctx.log.update(result.log_fields())
        if recipient_class(session) == OK:
            return
        for listing in result.scoring:
            ctx.votes.append(
                Verdict(
                    engine=f"dnsbl:{listing.zone}",
                    category=Category.ANTISPAM,
                    status=Status.SPAM if listing.weight >= 1.0 else Status.CLEAN,  # below 1: a partial score
                    score=listing.weight,
                    threshold=1.0,
                    detail="/".join(listing.codes),
                )
            )

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
