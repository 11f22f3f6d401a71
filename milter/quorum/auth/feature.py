"""Sender authentication, DNSBL and access lists: config parsing and stage construction.

Tables: `[dns]` (the one resolver), `[auth]` (SPF/DKIM/DMARC/ARC verification), `[arc]` (ARC
sealing and trusted sealers), `[[dnsbl]]` and `[access]`. Stages, in order: access (OK/REJECT),
DNSBL, then SPF/DKIM/DMARC/ARC; with `[arc] seal`, the ARC sealing stage (post-decision hook, after
every other amendment). The authserv-id of the Authentication-Results header is `[milter] authserv_id`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from quorum.access.dnsbl import DnsblList, parse_lists
from quorum.access.settings import AccessSettings, parse_access
from quorum.auth.settings import ArcSettings, AuthSettings, DnsSettings
from quorum.config.fields import Table

if TYPE_CHECKING:
    from quorum.config import Config
    from quorum.pipeline.stages import Stage

TABLES: dict[str, Any] = {
    "dns": DnsSettings,
    "auth": AuthSettings,
    "arc": ArcSettings,
    "dnsbl": tuple[DnsblList, ...],
    "access": AccessSettings,
}


@dataclass(frozen=True)
class AuthFeatureSettings:
    dns: DnsSettings = field(default_factory=DnsSettings)
    auth: AuthSettings = field(default_factory=AuthSettings)  # trusted_networks also serve DNSBL
    auth_enabled: bool = True  # [auth] present and enabled
    dnsbl: tuple[DnsblList, ...] = ()
    access: AccessSettings = field(default_factory=AccessSettings)  # exempt_recipients also serve DNSBL
    arc: ArcSettings = field(default_factory=ArcSettings)


def parse(root: Table) -> AuthFeatureSettings | None:
    """None when none of [auth], [[dnsbl]] or [access] is configured."""
    milter = root.data.get("milter")
    own = milter.get("authserv_id") if isinstance(milter, Mapping) else None
    auth = root.model("auth", AuthSettings, {"authserv_id": own if isinstance(own, str) else "quorum"})
    settings = AuthFeatureSettings(
        dns=root.model("dns", DnsSettings),
        auth=auth,
        auth_enabled="auth" in root.data and auth.enabled,
        dnsbl=parse_lists(root.data.get("dnsbl"), root.problems),
        access=parse_access(root),
        arc=root.model("arc", ArcSettings),
    )
    if auth.dmarc and not (auth.spf and auth.dkim):
        root.problems.warn(
            "auth.dmarc",
            "DMARC is evaluated with SPF or DKIM switched off: mail that would pass through the missing check "
            "fails DMARC; enable both or set dmarc = false",
        )
    if settings.access.sender and not settings.auth_enabled:
        root.problems.warn(
            "access.sender",
            "sender-table OK entries are keyed on the forgeable envelope sender and are honoured only for a "
            "verified sender; without [auth] (SPF/DKIM) only SMTP-authenticated sessions count. Enable [auth] "
            "or key the exemption on the client address ([access] client)",
        )
    if settings.arc.seal and not (settings.auth_enabled and auth.arc):
        root.problems.error(
            "arc.seal",
            "sealing needs the ARC checks of [auth] (an [auth] table with enabled = true and arc = true): the "
            "ARC-Authentication-Results are Quorum's own results and cv= is its verdict on the incoming chain",
        )
    if settings.arc.trusted_sealers and not (settings.auth_enabled and auth.arc and auth.dmarc):
        root.problems.warn("arc.trusted_sealers", "has no effect without [auth] with arc = true and dmarc = true")
    if not (settings.auth_enabled or settings.dnsbl or settings.access.any_table):
        return None
    return settings


def build(config: Config, settings: AuthFeatureSettings) -> list[Stage]:
    from quorum.access.stage import AccessStage, DnsblStage
    from quorum.auth.resolver import Resolver
    from quorum.auth.stage import AuthStage
    from quorum.auth.trust import TrustStage

    resolver = Resolver(settings.dns)
    stages: list[Stage] = [TrustStage(settings.auth.trusted_networks)]  # first: every later stage reads it
    if settings.access.any_table:
        stages.append(AccessStage(settings.access))
    if settings.dnsbl:
        exempt = settings.access.exempt_recipients
        stages.append(DnsblStage(resolver, settings.dnsbl, settings.auth.trusted_networks, exempt))
    if settings.auth_enabled:
        trusted = settings.arc.trusted_sealers
        stages.append(AuthStage(settings.auth, resolver, config.milter.authserv_id, config.replies, trusted))
    if settings.arc.seal:
        from quorum.auth.arcseal import ArcSealStage

        stages.append(ArcSealStage(settings.arc, config.milter.authserv_id))
    return stages
