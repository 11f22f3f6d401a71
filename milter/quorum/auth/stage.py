"""The sender-authentication stage: SPF, DKIM and DMARC, the Authentication-Results header, and
DMARC enforcement.

When each check runs:
- SPF needs the client IP, HELO and MAIL FROM. With `spf_at = "eom"` (default) it runs in
  `examine`, in parallel with the content engines, so the SMTP dialogue never waits on DNS. With
  `spf_at = "mail"` it runs at MAIL FROM (the dialogue waits) and is recorded on the transaction
  (its SpfResult in `txn.results`) so that stages running at RCPT/DATA (rate limits by sender domain) can use it.
- DKIM and DMARC need the message: `examine` only. DKIM is skipped above `dkim_max_size`
  (memory stays bounded; every signature then reads `neutral`) and on a message whose body was
  not stored whole (over max_message_size with on_oversize = "accept"): a truncated message is
  never judged as if whole, so its DKIM signatures read `neutral`. DMARC follows DKIM; on a
  truncated message a DMARC failure is enforced only when the body could not change it: SPF did
  not pass aligned and no DKIM signature is aligned with the From: domain at all (a spoof padded
  past the size limit is still refused); with an aligned but unverifiable signature it is not.

Trust: SMTP-authenticated sessions get `auth=pass smtp.auth=<user>` and no SPF or DMARC (the
client address of a roaming user says nothing about the domain); trusted networks are checked
and reported but never enforced; neither is enforced for recipients a client or recipient access
rule marked OK. A sender-table OK ("sender_ok", keyed on the forgeable envelope sender) counts only
when this stage verified the sender (SPF pass for its domain or a DKIM pass by it: then spam
verdicts are skipped), and lifts DMARC enforcement only when the From: domain is the sender's own.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace

from quorum.access.stage import OK, SENDER_OK, sender_domain, sender_verified
from quorum.auth import metrics, results
from quorum.auth.arc import ArcResult, arc_headers, verify_arc, vouched
from quorum.auth.dkim import DkimResult, not_verified, signature_headers, verify_dkim
from quorum.auth.dmarc import DmarcResult, evaluate
from quorum.auth.findings import AuthFindings
from quorum.auth.resolver import Resolver
from quorum.auth.settings import AuthSettings
from quorum.auth.spf import SpfResult, check_spf
from quorum.auth.trust import trust_of
from quorum.config.model import ReplyTexts
from quorum.message import Envelope, Message, SpoolClosed
from quorum.pipeline import replies
from quorum.pipeline.stages import Stage
from quorum.pipeline.transaction import Findings, Transaction
from quorum.tenants import effective
from quorum.verdict import Category, Status, Verdict

log = logging.getLogger("quorum.auth")

_MARGIN = 0.2  # seconds kept back from the scan deadline to hand the facts over


class AuthStage(Stage):
    name = "auth"

    def __init__(
        self,
        settings: AuthSettings,
        resolver: Resolver,
        authserv_id: str,
        texts: ReplyTexts | None = None,
        trusted_sealers: tuple[str, ...] = (),
    ) -> None:
        self.settings = settings
        self.trusted_sealers = frozenset(trusted_sealers)  # [arc] trusted_sealers
        self.texts = texts or ReplyTexts()
        self.resolver = resolver
        self.authserv_id = authserv_id
        # Fixed here, not in examine: a forged A-R goes even when the checks never ran.
        self.removals = ((results.HEADER, results.claims_our_id(authserv_id)),)  # type: ignore[assignment]

    def _spf(self, envelope: Envelope, deadline: float) -> SpfResult:
        return check_spf(self.resolver, envelope.client_ip, envelope.sender, envelope.helo, deadline)

    def mail_from(self, txn: Transaction) -> None:
        env = txn.envelope
        if self.settings.spf and self.settings.spf_at == "mail" and not env.auth_user and env.client_ip:
            spf = self._spf(env, time.monotonic() + min(20.0, 4 * self.resolver.settings.timeout))
            txn.results.put(spf, by=self.name)
            txn.log["spf"] = spf.result  # known even when a verdict ends the scan before this stage's check
        return None

    def enforces(self, txn: Transaction) -> bool:
        """Only DMARC enforcement can refuse or hold: an unfinished check without it loses the
        Authentication-Results header, not a decision."""
        s = self.settings
        enforce = tenant.dmarc_enforce if (tenant := effective(txn)) is not None else s.dmarc_enforce
        env = txn.envelope
        return s.dmarc and enforce != "off" and not env.auth_user and not trust_of(txn, s.trusted_networks)

    def complete(self, txn: Transaction, findings: Findings) -> bool:
        auth = findings.results.get(AuthFindings)
        dmarc = auth.dmarc if auth is not None else None
        return dmarc is None or dmarc.result != "temperror"

    def examine(self, txn: Transaction, message: Message, deadline: float) -> Findings:
        found = Findings(self.name)
        try:
            self._examine(txn, message, found, deadline - _MARGIN)
        except Exception as exc:  # never lose the message to a checker bug
            if isinstance(exc, SpoolClosed) or not txn.open:
                # The transaction ended while this check still ran (its fan-out was over): the
                # result is dropped anyway, and the failure is that ending, not a bug.
                log.debug("sender authentication ended with its transaction (%s)", type(exc).__name__)
            else:
                log.exception("sender authentication failed")
            found.log["auth_error"] = exc.__class__.__name__
        return found

    def _examine(self, txn: Transaction, message: Message, found: Findings, deadline: float) -> None:
        s = self.settings
        env = message.envelope
        trust = trust_of(txn, s.trusted_networks)
        spf: SpfResult | None = None
        if s.spf and not env.auth_user and env.client_ip:
            spf = txn.results.get(SpfResult) or self._spf(env, deadline)
        dkim: list[DkimResult] | None = None
        if s.dkim:
            if message.truncated:
                dkim = not_verified(message.headers, "not verified: body not stored whole", s.dkim_max_signatures)
            elif not signature_headers(message.headers):
                dkim = []  # unsigned: nothing to verify, and no reason to read the whole message
            elif message.size > s.dkim_max_size:
                dkim = not_verified(message.headers, "not verified: message above dkim_max_size", s.dkim_max_signatures)
            else:
                dkim = verify_dkim(
                    message.raw(), message.headers, self.resolver, deadline, s.dkim_max_signatures, s.dkim_min_key_bits
                )
        arc: ArcResult | None = None
        if s.arc and not env.auth_user:
            if not arc_headers(message.headers):
                arc = ArcResult("none")
            elif message.truncated or message.size > s.dkim_max_size:
                arc = ArcResult("fail", 0, "not verified: message too large")
            else:
                arc = verify_arc(message.raw(), message.headers, self.resolver, deadline, s.arc_max_sets)
        dmarc: DmarcResult | None = None
        if s.dmarc and not env.auth_user:
            dmarc = evaluate(message.headers, spf, dkim or [], self.resolver, deadline)
            dmarc = self._arc_override(dmarc, arc)
        if arc is not None:
            metrics.VERIFIED.labels(arc.result).inc()
        sender_ok = ""
        if txn.access_class().name == SENDER_OK:
            sender_ok = sender_verified(txn, spf, dkim)
            found.skip_spam = bool(sender_ok)
            found.log["access"] = (
                f"ok({txn.access_class().source}, sender verified by {sender_ok})"
                if sender_ok
                else f"none({txn.access_class().source}: sender OK ignored, sender not verified)"
            )
        found.results.put(AuthFindings(spf, tuple(dkim) if dkim is not None else None, dmarc, arc), by=self.name)
        found.headers.append(
            (results.HEADER, results.header_value(self.authserv_id, spf, dkim, dmarc, env.auth_user, arc))
        )
        self._log(found, spf, dkim, dmarc, trust)
        if arc is not None and arc.result != "none":
            found.log["arc"] = str(arc)
        if (
            dmarc is not None
            and message.truncated
            and dmarc.result == "fail"
            and self._body_could_pass(message, spf, dkim or [], deadline)
        ):
            found.log["dmarc_action"] = "none(body not stored whole)"
        elif dmarc is not None:
            self._enforce(txn, found, dmarc, trust, sender_ok)

    def _arc_override(self, dmarc: DmarcResult, arc: ArcResult | None) -> DmarcResult:
        """A DMARC fail vouched for by a trusted sealer: its chain passed, its latest seal is one of
        `[arc] trusted_sealers`, and the oldest ARC-Authentication-Results says DMARC (or an aligned
        DKIM or SPF) passed there, before the list or forwarder changed the message."""
        if dmarc.result != "fail" or arc is None or arc.result != "pass" or arc.sealer not in self.trusted_sealers:
            return dmarc
        check = vouched(arc.oldest_aar, dmarc.header_from)
        if not check:
            return dmarc
        return replace(dmarc, override=f"arc from {arc.sealer}, {check}=pass at i=1")

    def _body_could_pass(
        self, message: Message, spf: SpfResult | None, dkim: list[DkimResult], deadline: float
    ) -> bool:
        """On a truncated message DMARC failed with every signature unverified: could the whole body
        have made it pass? Only through a signature aligned with the From: domain; with none (or no
        signature at all), the outcome does not depend on the body and the policy is enforced. Each
        unverified signature counts as a temporary error: an aligned one makes the result temperror."""
        unknown = [replace(d, result="temperror") if d.result == "neutral" else d for d in dkim]
        if unknown == dkim:
            return False
        return evaluate(message.headers, spf, unknown, self.resolver, deadline).result != "fail"

    def _log(
        self,
        ctx: Findings,
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

    def _enforce(self, txn: Transaction, ctx: Findings, dmarc: DmarcResult, trust: str, sender_ok: str = "") -> None:
        s = self.settings
        enforce = tenant.dmarc_enforce if (tenant := effective(txn)) is not None else s.dmarc_enforce
        if dmarc.result != "fail" or dmarc.testing or enforce == "off":
            return
        if dmarc.policy not in ("quarantine", "reject"):
            return
        if dmarc.override:
            ctx.log["dmarc_action"] = f"none(overridden by {dmarc.override})"
            metrics.OVERRIDDEN.inc()
            return
        if trust or txn.access_class().name == OK:
            ctx.log["dmarc_action"] = f"none({trust or 'access ok'})"
            return
        if sender_ok and dmarc.header_from and dmarc.header_from == sender_domain(txn.envelope.sender):
            ctx.log["dmarc_action"] = "none(access ok, verified sender)"
            return
        if dmarc.policy == "reject" and enforce == "reject":
            ctx.log["dmarc_action"] = "reject"
            texts = txn.tenant.replies if txn.tenant is not None else self.texts
            ctx.decide(replies.dmarc(texts, dmarc.header_from), f"dmarc=fail {dmarc.policy_tag}=reject")
            return
        ctx.log["dmarc_action"] = "hold" if s.dmarc_quarantine_action == "hold" else "quarantine"
        if sender_ok:  # a verified partner, but the From: domain is not its own: DMARC still counts
            ctx.skip_spam = False
            ctx.log["access"] += "; spam verdicts kept for DMARC"
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
