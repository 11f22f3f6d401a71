"""The sender-authentication stage: SPF, DKIM and DMARC, the Authentication-Results header, and
DMARC enforcement.

When each check runs:
- SPF needs the client IP, HELO and MAIL FROM. With `spf_at = "eom"` (default) it runs in
  `examine`, in parallel with the content engines, so the SMTP dialogue never waits on DNS. With
  `spf_at = "mail"` it runs at MAIL FROM (the dialogue waits) so that stages running at RCPT/DATA
  (rate limits by sender domain) can use it. Either way the result string is stored at
  `session.state["auth"]["spf"]` (and the full result at `["spf_result"]`).
- DKIM and DMARC need the message: `examine` only. DKIM is skipped above `dkim_max_size`
  (memory stays bounded; every signature then reads `neutral`). DMARC follows DKIM.

Trust: SMTP-authenticated sessions get `auth=pass smtp.auth=<user>` and no SPF or DMARC (the
client address of a roaming user says nothing about the domain); trusted networks are checked
and reported but never enforced; neither is enforced for recipients an access rule marked OK.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from quorum.access.stage import OK, recipient_class
from quorum.auth import results
from quorum.auth.dkim import DkimResult, not_verified, verify_dkim
from quorum.auth.dmarc import DmarcResult, evaluate
from quorum.auth.resolver import Resolver
from quorum.auth.settings import AuthSettings
from quorum.auth.spf import SpfResult, check_spf
from quorum.auth.trust import trust_reason
from quorum.message import Envelope, Message
from quorum.pipeline.stages import Reply, ScanContext, Session, Stage
from quorum.verdict import Category, Status, Verdict

log = logging.getLogger("quorum.auth")

_MARGIN = 0.2  # seconds kept back from the scan deadline to hand the facts over


class AuthStage(Stage):
    name = "auth"

    def __init__(self, settings: AuthSettings, resolver: Resolver, authserv_id: str) -> None:
        self.settings = settings
        self.resolver = resolver
        self.authserv_id = authserv_id
        self._forged = results.claims_our_id(authserv_id)

    def _state(self, session: Session) -> dict[str, Any]:
        return session.state.setdefault(self.name, {})

    def _spf(self, envelope: Envelope, deadline: float) -> SpfResult:
        return check_spf(self.resolver, envelope.client_ip, envelope.sender, envelope.helo, deadline)

    def mail_from(self, session: Session) -> Reply | None:
        env = session.envelope
        if self.settings.spf and self.settings.spf_at == "mail" and not env.auth_user and env.client_ip:
            spf = self._spf(env, time.monotonic() + min(20.0, 4 * self.resolver.settings.timeout))
            self._state(session).update(spf=spf.result, spf_result=spf)
        return None

    def examine(self, session: Session, message: Message, ctx: ScanContext, deadline: float) -> None:
        ctx.remove.append((results.HEADER, self._forged))
        try:
            self._examine(session, message, ctx, deadline - _MARGIN)
        except Exception as exc:  # never lose the message to a checker bug
            log.exception("sender authentication failed")
            ctx.log["auth_error"] = exc.__class__.__name__

    def _examine(self, session: Session, message: Message, ctx: ScanContext, deadline: float) -> None:
        s = self.settings
        env = message.envelope
        state = self._state(session)
        trust = trust_reason(env, s.trusted_networks)
        spf: SpfResult | None = None
        if s.spf and not env.auth_user and env.client_ip:
            spf = state.get("spf_result") or self._spf(env, deadline)
            state.update(spf=spf.result, spf_result=spf)
        dkim: list[DkimResult] | None = None
        if s.dkim:
            if message.size > s.dkim_max_size:
                dkim = not_verified(message.headers, "not verified: message above dkim_max_size", s.dkim_max_signatures)
            else:
                dkim = verify_dkim(
                    message.raw(), message.headers, self.resolver, deadline, s.dkim_max_signatures, s.dkim_min_key_bits
                )
        dmarc: DmarcResult | None = None
        if s.dmarc and not env.auth_user:
            dmarc = evaluate(message.headers, spf, dkim or [], self.resolver, deadline)
        state.update(dkim=dkim, dmarc=dmarc)
        ctx.headers.append((results.HEADER, results.header_value(self.authserv_id, spf, dkim, dmarc, env.auth_user)))
        self._log(ctx, spf, dkim, dmarc, trust)
        if dmarc is not None:
            self._enforce(session, ctx, dmarc, trust)

    def _log(
        self,
        ctx: ScanContext,
        spf: SpfResult | None,
        dkim: list[DkimResult] | None,
        dmarc: DmarcResult | None,
        trust: str,
    ) -> None:
        if spf is not None:
            ctx.log["spf"] = spf.result
        if dkim is not None:
            ctx.log["dkim"] = ",".join(str(d) for d in dkim) if dkim else "none"
        if dmarc is not None:
            ctx.log["dmarc"] = str(dmarc)
        if trust:
            ctx.log["trust"] = trust

    def _enforce(self, session: Session, ctx: ScanContext, dmarc: DmarcResult, trust: str) -> None:
        s = self.settings
        if dmarc.result != "fail" or dmarc.testing or s.dmarc_enforce == "off":
            return
        if dmarc.policy not in ("quarantine", "reject"):
            return
        if trust or recipient_class(session) == OK:
            ctx.log["dmarc_action"] = f"none({trust or 'access ok'})"
            return
        if dmarc.policy == "reject" and s.dmarc_enforce == "reject":
            ctx.log["dmarc_action"] = "reject"
            ctx.decide(
                Reply.reject("550", "5.7.1", f"Email rejected per DMARC policy for {dmarc.header_from}"),
                f"dmarc=fail {dmarc.policy_tag}=reject",
            )
            return
        ctx.log["dmarc_action"] = "hold" if s.dmarc_quarantine_action == "hold" else "quarantine"
        ctx.spam_flag = True
        ctx.hold = ctx.hold or s.dmarc_quarantine_action == "hold"
        ctx.votes.append(
            Verdict(
                engine="dmarc",
                category=Category.ANTISPAM,
                status=Status.SPAM,
                score=1.0,
                threshold=1.0,
                detail=f"{dmarc.policy_tag}={dmarc.policy}",
            )
        )
