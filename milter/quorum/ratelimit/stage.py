"""The rate-limit stage: one all-or-none reservation at DATA, given back if the message is not sent.

At DATA every recipient is known and no content has been transferred, so refusing there is
cheap for both sides. The sender domain is counted only when it cannot be forged to burn
someone else's quota: the session authenticated (SMTP AUTH) or SPF passed. The SPF result is
read from what the auth stage stored earlier (`session.state["auth"]["spf"]`, or the same in
`session.conn_state`); when it is absent (auth feature off, SPF not evaluated yet) SPF counts
as not passed, and such mail is limited by client IP and recipient domain only.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from quorum.message import Message, printable
from quorum.pipeline.stages import Action, Outcome, Reply, ScanContext, Session, Stage
from quorum.ratelimit.buckets import Planner
from quorum.ratelimit.limiter import Decision, Limiter, Reservation
from quorum.ratelimit.settings import RateLimitSettings

log = logging.getLogger("quorum.ratelimit")

GIVE_BACK = (Action.REJECT, Action.TEMPFAIL, Action.DISCARD)


def spf_passed(session: Session) -> bool:
    """SPF result as stored by the auth stage: "pass", {"result": "pass"} or an object with `.result`."""
    for scope in (session.state, session.conn_state):
        auth = scope.get("auth")
        spf: Any = auth.get("spf") if isinstance(auth, dict) else getattr(auth, "spf", None)
        if isinstance(spf, dict):
            spf = spf.get("result")
        elif spf is not None and not isinstance(spf, str):
            spf = getattr(spf, "result", None)
        if isinstance(spf, str) and spf.strip().lower() == "pass":
            return True
    return False


class RateLimitStage(Stage):
    name = "ratelimit"

    def __init__(self, settings: RateLimitSettings, limiter: Limiter) -> None:
        self.settings = settings
        self.planner = Planner(settings)
        self.limiter = limiter

    def connect(self, session: Session) -> Reply | None:
        if not self.settings.check_at_connect:
            return None
        decision = self.limiter.check(self.planner.connection(session.envelope.client_ip))
        return None if decision.admitted else self._refuse(session, decision)

    def data(self, session: Session) -> Reply | None:
        env = session.envelope
        charges = self.planner.message(env, sender_trusted=bool(env.auth_user) or spf_passed(session))
        decision = self.limiter.reserve(charges)
        if not decision.admitted:
            return self._refuse(session, decision)
        if decision.reservation is not None:
            session.state[self.name] = decision.reservation
        return None

    def examine(self, session: Session, message: Message, ctx: ScanContext, deadline: float) -> None:
        reservation = session.state.get(self.name)
        if isinstance(reservation, Reservation) and reservation.source == "local":
            ctx.log["ratelimit"] = "local"  # counted in-process: Redis was unavailable

    def finished(self, session: Session, outcome: Outcome) -> None:
        reservation = session.state.pop(self.name, None)
        if isinstance(reservation, Reservation) and outcome.action in GIVE_BACK:
            self.limiter.release(reservation)

    def aborted(self, session: Session) -> None:
        reservation = session.state.pop(self.name, None)
        if isinstance(reservation, Reservation):
            self.limiter.release(reservation)

    def close(self) -> None:
        self.limiter.close()

    def _refuse(self, session: Session, decision: Decision) -> Reply:
        charge = decision.refused
        label = printable(charge.label) if charge else "this client"
        retry = max(1, math.ceil(decision.retry_after))
        env = session.envelope
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
        return Reply.tempfail("451", "4.7.1", f"rate limit exceeded for {label}; retry in {retry}s")
