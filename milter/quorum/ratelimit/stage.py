"""The rate-limit stage: one all-or-none reservation at DATA, given back if the message is not sent.

At DATA every recipient is known and no content has been transferred, so refusing there is
cheap for both sides. The sender domain is counted only when it cannot be forged to burn
someone else's quota: the session authenticated (SMTP AUTH) or SPF passed. The SPF result is the
one the auth stage recorded on the transaction at MAIL FROM (its SpfResult in `txn.results`, with spf_at = "mail");
when it is absent (auth feature off, SPF not evaluated yet) SPF counts as not passed, and such
mail is limited by client IP and recipient domain only.
"""

from __future__ import annotations

import logging
import math

from quorum.auth.spf import SpfResult
from quorum.message import Envelope, Message, printable
from quorum.pipeline import replies
from quorum.pipeline.stages import Action, Outcome, Reply, Stage
from quorum.pipeline.transaction import Connection, Findings, Transaction
from quorum.ratelimit.buckets import Planner
from quorum.ratelimit.limiter import Admission, Limiter, RateRefusal, Reservation
from quorum.ratelimit.metrics import REFUSED
from quorum.ratelimit.settings import RateLimitSettings

log = logging.getLogger("quorum.ratelimit")

GIVE_BACK = (Action.REJECT, Action.TEMPFAIL, Action.DISCARD)


class RateLimitStage(Stage):
    name = "ratelimit"

    def __init__(self, settings: RateLimitSettings, limiter: Limiter) -> None:
        self.settings = settings
        self.planner = Planner(settings)
        self.limiter = limiter

    def connect(self, conn: Connection) -> Reply | None:
        if not self.settings.check_at_connect:
            return None
        decision = self.limiter.check(self.planner.connection(conn.client_ip))
        return None if decision.admitted else self._refuse(conn.envelope(), decision)

    def data(self, txn: Transaction) -> Reply | None:
        env = txn.envelope
        spf = txn.results.get(SpfResult)
        charges = self.planner.message(env, sender_trusted=bool(env.auth_user) or (spf is not None and spf.passed))
        decision = self.limiter.reserve(charges)
        if not decision.admitted:
            txn.results.put(RateRefusal(decision.refused.kind if decision.refused else ""), by=self.name)
            return self._refuse(env, decision)  # the pipeline records the refusal
        if decision.reservation is not None:
            txn.results.put(decision.reservation, by=self.name)
        return None

    def wants(self, txn: Transaction) -> bool:
        reservation = txn.results.get(Reservation)
        return reservation is not None and reservation.source == "local"

    def enforces(self, txn: Transaction) -> bool:
        return False  # its check only notes that the count was local

    def examine(self, txn: Transaction, message: Message, deadline: float) -> Findings | None:
        if self.wants(txn):
            return Findings(self.name, log={"ratelimit": "local"})  # counted in-process: Redis was unavailable
        return None

    def finished(self, txn: Transaction, outcome: Outcome) -> None:
        reservation = txn.results.pop(Reservation, by=self.name)
        if reservation is not None and outcome.action in GIVE_BACK:
            self.limiter.release(reservation)

    def aborted(self, txn: Transaction) -> None:
        reservation = txn.results.pop(Reservation, by=self.name)
        if reservation is not None:
            self.limiter.release(reservation)

    def close(self) -> None:
        self.limiter.close()

    def _refuse(self, env: Envelope, decision: Admission) -> Reply:
        charge = decision.refused
        REFUSED.labels(charge.metric_kind if charge else "client_ip").inc()
        label = printable(charge.label) if charge else "this client"
        retry = max(1, math.ceil(decision.retry_after))
        log.info(
            "rate limit: refused qid=%s from=<%s> client=%s bucket=%s limit=%s retry=%ds source=%s",
            env.queue_id or "-",
            printable(env.sender),
            env.client_ip or "-",
            label,
            charge.rule.describe() if charge else "-",
            retry,
            decision.source,
        )
        return replies.rate_limited(label, retry)
