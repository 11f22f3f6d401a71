"""The flow stage: concurrency slots taken at MAIL FROM (the account, its domain, the client) and at
RCPT (each recipient domain), given back when the transaction ends however it ends (delivered,
refused, aborted, the connection dropped: the pipeline's `finished` or `aborted`), renewed while
it lives so a long scan keeps them; a dead instance's slots come back after `lease`.

Over a limit: 451 4.7.1 naming the limit and the subject, at MAIL FROM (or at RCPT for that
recipient only). Redis unavailable: `on_redis_failure` = "open" admits without a slot (counted:
quorum_flow_uncounted_total, one warning per interval), "closed" answers 451.
"""

from __future__ import annotations

import logging
import threading
import uuid

from quorum.flow import metrics
from quorum.flow.settings import FlowSettings
from quorum.flow.slots import Slots, Subject
from quorum.message import printable
from quorum.pipeline.stages import Outcome, Reply, Stage
from quorum.pipeline.transaction import Transaction
from quorum.redisconn import RedisHealth

log = logging.getLogger("quorum.flow")
UNAVAILABLE = Reply.tempfail("451", "4.7.1", "flow control temporarily unavailable, please try again later")


def limited(subject: Subject) -> Reply:
    what = printable(subject.value)[:100]
    kind = subject.kind.replace("_", " ")
    text = f"too many messages in flight for {kind} {what} (limit {subject.limit}), try again later"
    return Reply.tempfail("451", "4.7.1", text)


def _domain(address: str) -> str:
    return address.rpartition("@")[2].strip().strip("<>").rstrip(".").lower() if "@" in address else ""


class FlowStage(Stage):
    name = "flow"

    def __init__(self, settings: FlowSettings, slots: Slots, renew: bool = True) -> None:
        self.settings = settings
        self.slots = slots
        self.instance = uuid.uuid4().hex[:12]
        self.health = RedisHealth("flow", log, backoff=settings.backoff, warn_interval=settings.warn_interval)
        self._live: dict[str, list[str]] = {}  # transaction id -> the keys its slot is held in
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None
        if renew:
            self._renewer = threading.Thread(target=self._renew_loop, name="quorum-flow-renew", daemon=True)
            self._renewer.start()

    def slot(self, txn: Transaction) -> str:
        return f"{self.instance}:{txn.id}"

    def senders(self, txn: Transaction) -> list[Subject]:
        env, s = txn.envelope, self.settings
        found: list[tuple[str, str]] = []
        if env.auth_user:
            found.append(("auth_user", env.auth_user))
            if env.sender:
                found += [("sender", env.sender.strip("<>").lower()), ("sender_domain", _domain(env.sender))]
        if env.client_ip:
            found.append(("client_ip", env.client_ip))
        subjects = [Subject(kind, value, s.limit(kind, value)) for kind, value in found if value]
        return [x for x in subjects if x.limit > 0]

    def mail_from(self, txn: Transaction) -> Reply | None:
        if txn.dry_run:
            return None  # `quorum scan`: no slot of a real account is taken
        subjects = self.senders(txn)
        return self._take(txn, subjects) if subjects else None

    def rcpt(self, txn: Transaction, recipient: str) -> Reply | None:
        domain = _domain(recipient)
        if txn.dry_run:
            return None
        limit = self.settings.limit("recipient_domain", domain) if domain else 0
        if limit <= 0:
            return None
        subject = Subject("recipient_domain", domain, limit)
        with self._lock:
            if subject.key(self.slots.prefix) in self._live.get(txn.id, ()):
                return None  # this transaction holds the domain's slot already
        return self._take(txn, [subject])

    def _take(self, txn: Transaction, subjects: list[Subject]) -> Reply | None:
        if not self.health.available():
            return self._unavailable()
        try:
            taken = self.slots.take(self.slot(txn), subjects)
        except Exception as exc:  # noqa: BLE001 - redis-py's errors: on_redis_failure decides
            self.health.failed(exc)
            return self._unavailable()
        self.health.ok()
        if not taken.admitted and taken.refused is not None:
            metrics.REFUSED.labels(taken.refused.kind).inc()
            log.info(
                "flow: deferred qid=%s %s=%s held=%d limit=%d",
                txn.envelope.queue_id or "-",
                taken.refused.kind,
                printable(taken.refused.value)[:200],
                taken.held,
                taken.refused.limit,
            )
            txn.log["flow"] = f"deferred({taken.refused.kind})"
            return limited(taken.refused)
        with self._lock:
            keys = self._live.setdefault(txn.id, [])
            keys += [s.key(self.slots.prefix) for s in subjects]
            metrics.HELD.set(len(self._live))
        return None

    def _unavailable(self) -> Reply | None:
        if self.settings.on_redis_failure == "closed":
            return UNAVAILABLE
        metrics.UNCOUNTED.inc()
        return None

    def finished(self, txn: Transaction, outcome: Outcome) -> None:
        self._give(txn)

    def aborted(self, txn: Transaction) -> None:
        self._give(txn)

    def _give(self, txn: Transaction) -> None:
        with self._lock:
            keys = self._live.pop(txn.id, None)
            metrics.HELD.set(len(self._live))
        if not keys:
            return
        try:
            self.slots.give(self.slot(txn), keys)
        except Exception as exc:  # noqa: BLE001 - the lease frees it; counted and warned once
            self.health.failed(exc)

    def renew_all(self) -> int:
        """Extend every live slot's lease (the renewer calls it every lease/3); returns how many."""
        with self._lock:
            live = [(txn_id, list(keys)) for txn_id, keys in self._live.items()]
        done = 0
        for txn_id, keys in live:
            try:
                self.slots.renew(f"{self.instance}:{txn_id}", keys)
                done += 1
            except Exception as exc:  # noqa: BLE001
                self.health.failed(exc)
                break
        return done

    def _renew_loop(self) -> None:
        interval = self.settings.lease / 3
        while not self._stop.wait(interval):
            try:
                self.renew_all()
            except Exception:  # noqa: BLE001 - the renewer must outlive any one failure
                log.exception("flow: renewing slots failed")

    def close(self) -> None:
        self._stop.set()
        self.slots.close()
