"""The banner stage (post-decision hook, content phase): picks the banners a delivered message gets
and has quorum.banner.insert put them in, so the DKIM signature and ARC seal made after it cover
them. A message whose body was not stored whole, or above `max_size`, is left as it is (logged):
replacing a body Quorum does not hold whole would lose its end."""

from __future__ import annotations

import logging

from quorum.banner import metrics
from quorum.banner.insert import Banner, insert
from quorum.banner.settings import BannerSettings, BannerText, DomainBanner
from quorum.message import in_networks
from quorum.pipeline.amend import CONTENT, Amendment, FinalMessage
from quorum.pipeline.stages import Stage
from quorum.pipeline.transaction import Transaction

log = logging.getLogger("quorum.banner")


class BannerStage(Stage):
    name = "banner"
    amend_phase = CONTENT

    def __init__(self, settings: BannerSettings) -> None:
        self.settings = settings

    def outbound(self, txn: Transaction) -> bool:
        env = txn.envelope
        return bool(env.auth_user) or bool(env.client_ip and in_networks(env.client_ip, self.settings.networks))

    def due(self, txn: Transaction) -> Banner | None:
        """The banner this transaction's message gets: a footer by the sender's domain (outbound), a
        warning by the recipients' domain (inbound)."""
        s = self.settings
        if self.outbound(txn):
            sender = txn.envelope.sender
            tenant = txn.policy_of(sender) if txn.policy_of is not None and "@" in sender else None
            text = _pick(tenant.extensions.get("banner") if tenant is not None else None, "footer", s.footer)
            return Banner("footer", text.text, text.html, top=False) if text is not None else None
        own = txn.tenant.extensions.get("banner") if txn.tenant is not None else None
        text = _pick(own, "external_warning", s.external_warning)
        return Banner("external_warning", text.text, text.html, top=True) if text is not None else None

    def amend(self, txn: Transaction, final: FinalMessage) -> Amendment | None:
        banner = self.due(txn)
        if banner is None:
            return None
        message = final.message
        if message.truncated or message.body.size > self.settings.max_size:
            metrics.SKIPPED.labels(banner.kind, "truncated" if message.truncated else "too_large").inc()
            return Amendment(note=f"{banner.kind} not added: message too large")
        with final.body() as f:
            body = f.read()
        headers = [(h.name, h.value) for h in final.headers]
        outcome = insert(headers, body, [banner], self.settings.max_part)
        if outcome.body is None or not outcome.added:
            for kind, reason in outcome.skipped:
                metrics.SKIPPED.labels(kind, reason).inc()
            why = ", ".join(f"{kind}: {reason}" for kind, reason in outcome.skipped) or "nothing to do"
            if any(reason in ("signed", "encrypted") for _, reason in outcome.skipped):
                qid = txn.envelope.queue_id or "-"
                log.info("qid=%s %s not added: the message is signed or encrypted", qid, banner.kind)
            return Amendment(note=f"not added ({why})")
        for kind in outcome.added:
            metrics.ADDED.labels(kind).inc()
        return Amendment(body=outcome.body, change=outcome.headers, note="added " + ", ".join(outcome.added))


def _pick(domain: object, field: str, default: BannerText | None) -> BannerText | None:
    if isinstance(domain, DomainBanner):
        if not domain.enabled:
            return None
        own = getattr(domain, field)
        return own if own is not None else default
    return default
