"""The notice queue: `submit()` on the SMTP path only enqueues; one thread expands, guards, caps,
renders and sends, retrying failures with exponential backoff. Nothing is dropped without an error log.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from quorum.notify import metrics
from quorum.notify.cap import DailyCap
from quorum.notify.facts import NoticeFacts
from quorum.notify.guards import guard
from quorum.notify.message import build_notice
from quorum.notify.settings import ALL_EVENTS, DomainNotify, NotifySettings, valid_address
from quorum.notify.templates import Renderer
from quorum.notify.transport import SendError, SmtpRelay
from quorum.notify.variables import variables

log = logging.getLogger("quorum.notify")

Send = Callable[[str, bytes, bool], None]  # (to, message bytes, needs SMTPUTF8); raises SendError


@dataclass
class Notice:
    """One rendered notice to one address, with its delivery state."""

    event: str
    audience: str
    to: str
    queue_id: str
    data: bytes
    message_id: str
    smtputf8: bool
    created: float
    attempts: int = 0
    last_error: str = ""

    def describe(self) -> str:
        return (
            f"event={self.event} audience={self.audience} to=<{self.to}> queue_id={self.queue_id or '-'} "
            f"message_id={self.message_id}"
        )


@dataclass
class NoticeCounts:
    """This notifier's counts (the Prometheus counters add up all notifiers of the process)."""

    sent: int = 0
    failed: int = 0
    retried: int = 0
    dropped: int = 0
    template_errors: int = 0
    suppressed: Counter[str] = field(default_factory=Counter)


@dataclass(frozen=True)
class _Request:
    event: str
    facts: NoticeFacts
    policy: DomainNotify


def audiences(facts: NoticeFacts, policy: DomainNotify) -> list[tuple[str, str, tuple[str, ...]]]:
    """(audience, address, recipients shown) per notice; one notice per address, admin first.

    A recipient sees only itself; admins and the sender see all recipients of the transaction.
    """
    out: list[tuple[str, str, tuple[str, ...]]] = []
    seen: set[str] = set()

    def add(audience: str, to: str, shown: tuple[str, ...]) -> None:
        key = to.strip().lower()
        if audience == "sender" or key not in seen:  # the sender notice is guarded even for a seen address
            seen.add(key)
            out.append((audience, to.strip(), shown))

    for admin in policy.admin:
        add("admin", admin, facts.recipients)
    if policy.recipient:
        for rcpt in facts.recipients:
            add("recipient", rcpt, (rcpt,))
    if policy.sender:
        add("sender", facts.sender, facts.recipients)
    return out


class Notifier:
    """Start with `start()` (or start=True), feed with `submit()`, stop with `close(timeout)`."""

    def __init__(
        self,
        settings: NotifySettings,
        *,
        cap: DailyCap | None = None,
        renderer: Renderer | None = None,
        send: Send | None = None,
        clock: Callable[[], float] = time.monotonic,
        start: bool = True,
    ) -> None:
        self.settings = settings
        self.cap = cap if cap is not None else DailyCap(settings.daily_cap)
        self.renderer = renderer or Renderer(settings.templates, settings.max_size, settings.render_timeout)
        self.send = send or SmtpRelay(*settings.relay, timeout=settings.timeout)
        self.clock = clock
        self.counts = NoticeCounts()
        self._queue: queue.Queue[_Request | None] = queue.Queue(maxsize=settings.queue_size)  # None wakes the thread
        self._retries: list[tuple[float, int, Notice]] = []  # heap of (due, seq, notice)
        self._seq = itertools.count()
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._flush_deadline = 0.0
        self._thread = threading.Thread(target=self._run, name="quorum-notify", daemon=True)
        if start:
            self.start()

    # --- SMTP path ----------------------------------------------------------

    def submit(self, event: str, facts: NoticeFacts, policy: DomainNotify) -> bool:
        """Queue the notices `policy` asks for; never blocks, never raises. False if nothing was queued."""
        try:
            if event not in ALL_EVENTS:
                log.error("notify: unknown event %r for queue id %s; nothing sent", event, facts.queue_id)
                return False
            if not policy.wants(event):
                return False
            if self._closing.is_set():
                self._drop(event, facts, "the notifier is shutting down")
                return False
            self._queue.put_nowait(_Request(event, facts, policy))
            metrics.PENDING.inc()
            return True
        except queue.Full:
            self._drop(event, facts, f"the queue is full ({self.settings.queue_size})")
            return False
        except Exception:  # a notice must never break mail flow
            log.exception("notify: cannot queue the %s notice for queue id %s", event, facts.queue_id)
            return False

    def _drop(self, event: str, facts: NoticeFacts, why: str) -> None:
        with self._lock:
            self.counts.dropped += 1
        metrics.NOTICES.labels(event, "dropped").inc()
        log.error(
            "notify: %s notice for queue id %s dropped: %s (recipients %s)",
            event,
            facts.queue_id or "-",
            why,
            ", ".join(facts.recipients),
        )

    # --- sender thread ------------------------------------------------------

    def start(self) -> None:
        if not self._thread.is_alive():
            self._thread.start()

    def _run(self) -> None:
        while True:
            closing = self._closing.is_set()
            try:
                request = self._queue.get(timeout=0 if closing else self._wait())
            except queue.Empty:
                request = None
            try:
                if request is not None:
                    metrics.PENDING.dec()
                    self._expand(request)
                self._retry_due(force=closing)
            except Exception:  # the thread must outlive any one notice
                log.exception("notify: unexpected error in the notice thread")
            if closing and self._queue.empty() and not self._retries:
                return
            if closing and self.clock() > self._flush_deadline:
                return

    def _wait(self) -> float:
        with self._lock:
            due = self._retries[0][0] - self.clock() if self._retries else 0.5
        return min(max(due, 0.01), 0.5)

    def _expand(self, request: _Request) -> None:
        event, facts, policy = request.event, request.facts, request.policy
        for audience, to, shown in audiences(facts, policy):
            name = guard(event, audience, facts, sender_virus=policy.sender_virus)
            if name is None and not valid_address(to):
                name = "invalid_address"
            if name is None and not self.cap.allow(to):
                name = "daily_cap"
            if name is not None:
                self._suppressed(name, event, audience, to, facts)
                continue
            notice = self._render(event, audience, to, shown, facts)
            self._attempt(notice)

    def _suppressed(self, name: str, event: str, audience: str, to: str, facts: NoticeFacts) -> None:
        with self._lock:
            self.counts.suppressed[name] += 1
        metrics.SUPPRESSED.labels(name).inc()
        log.info(
            "notify: %s notice to %s <%s> for queue id %s suppressed by %s",
            event,
            audience,
            to,
            facts.queue_id or "-",
            name,
        )

    def _render(self, event: str, audience: str, to: str, shown: tuple[str, ...], facts: NoticeFacts) -> Notice:
        errors = self.renderer.errors
        rendered = self.renderer.render(event, audience, facts.tenant, variables(event, audience, to, shown, facts))
        if self.renderer.errors != errors:
            with self._lock:
                self.counts.template_errors += 1
            metrics.TEMPLATE_ERRORS.inc()
        from_address = self.settings.from_address
        data, message_id, smtputf8 = build_notice(from_address, to, rendered.subject, rendered.body, event)
        return Notice(event, audience, to, facts.queue_id, data, message_id, smtputf8, self.clock())

    def _attempt(self, notice: Notice) -> None:
        notice.attempts += 1
        try:
            self.send(notice.to, notice.data, notice.smtputf8)
        except SendError as exc:
            notice.last_error = str(exc)
            self._failed(notice, exc.permanent)
            return
        except Exception as exc:  # a broken transport is a failed attempt, not a dead thread
            notice.last_error = f"{type(exc).__name__}: {exc}"
            self._failed(notice, False)
            return
        with self._lock:
            self.counts.sent += 1
        metrics.NOTICES.labels(notice.event, "sent").inc()
        log.info("notify: sent %s (attempt %d)", notice.describe(), notice.attempts)

    def _failed(self, notice: Notice, permanent: bool) -> None:
        s = self.settings
        delay = min(s.retry_backoff * 2 ** (notice.attempts - 1), s.retry_backoff_max)
        age = self.clock() - notice.created
        if permanent or notice.attempts >= s.max_attempts or age + delay > s.max_age:
            why = "refused" if permanent else f"gave up after {notice.attempts} attempts"
            self._give_up(notice, why)
            return
        with self._lock:
            heapq.heappush(self._retries, (self.clock() + delay, next(self._seq), notice))
            self.counts.retried += 1
        metrics.RETRIES.inc()
        metrics.PENDING.inc()
        log.warning(
            "notify: %s not sent (%s); retry %d in %.1fs", notice.describe(), notice.last_error, notice.attempts, delay
        )

    def _give_up(self, notice: Notice, why: str) -> None:
        with self._lock:
            self.counts.failed += 1
        metrics.NOTICES.labels(notice.event, "failed").inc()
        log.error("notify: NOT SENT %s: %s: %s", notice.describe(), why, notice.last_error)

    def _retry_due(self, force: bool = False) -> None:
        while True:
            with self._lock:
                if not self._retries or (not force and self._retries[0][0] > self.clock()):
                    return
                notice = heapq.heappop(self._retries)[2]
            metrics.PENDING.dec()
            if force:
                self._attempt_last(notice)
            else:
                self._attempt(notice)
            if force and self.clock() > self._flush_deadline:
                return

    def _attempt_last(self, notice: Notice) -> None:
        """At shutdown: one more try, then an error log (the process is going away with it)."""
        notice.attempts += 1
        try:
            self.send(notice.to, notice.data, notice.smtputf8)
        except Exception as exc:
            notice.last_error = str(exc)
            self._give_up(notice, "shutting down")
            return
        with self._lock:
            self.counts.sent += 1
        metrics.NOTICES.labels(notice.event, "sent").inc()
        log.info("notify: sent %s (attempt %d, at shutdown)", notice.describe(), notice.attempts)

    # --- shutdown -----------------------------------------------------------

    def close(self, timeout: float = 10.0) -> None:
        """Send what is queued (pending retries get one last try) within `timeout`; log what is left."""
        self._flush_deadline = self.clock() + timeout
        self._closing.set()
        try:
            self._queue.put_nowait(None)
        except queue.Full:  # the thread is busy anyway
            pass
        if self._thread.is_alive():
            self._thread.join(timeout + 1.0)
        while True:
            try:
                request = self._queue.get_nowait()
            except queue.Empty:
                break
            if request is None:
                continue
            metrics.PENDING.dec()
            self._drop(request.event, request.facts, "not sent before shutdown")
        with self._lock:
            retries, self._retries = self._retries, []
        for _, _, notice in retries:
            metrics.PENDING.dec()
            self._give_up(notice, "shutting down")
        self.cap.close()

    def stats(self) -> dict[str, object]:
        with self._lock:
            c = self.counts
            return {
                "sent": c.sent,
                "failed": c.failed,
                "retried": c.retried,
                "dropped": c.dropped,
                "template_errors": c.template_errors,
                "suppressed": dict(c.suppressed),
                "pending": self._queue.qsize() + len(self._retries),
            }
