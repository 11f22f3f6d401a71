"""Who is exempt from enforcement: SMTP-authenticated sessions and `[auth] trusted_networks`.

Both still get virus scanning; they skip DNSBL and SPF/DMARC enforcement, so an operator's own
roaming users are never refused by their own domain's DMARC policy.

Computed once per transaction, at MAIL FROM, by `TrustStage` (the auth feature's first stage):
its `SenderTrust` result in `txn.results` is what every stage reads (`trust_of`).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from quorum.message import Envelope, in_networks
from quorum.pipeline.stages import Reply, Stage
from quorum.pipeline.transaction import Transaction

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def trust_reason(envelope: Envelope, networks: Iterable[IPNetwork]) -> str:
    """The reason a session is trusted: "authenticated", "trusted_network", or "" (not trusted)."""
    if envelope.auth_user:
        return "authenticated"
    if envelope.client_ip and in_networks(envelope.client_ip, networks):
        return "trusted_network"
    return ""


@dataclass(frozen=True)
class SenderTrust:
    reason: str  # "authenticated", "trusted_network" or ""

    def record_fields(self) -> dict[str, str]:
        return {"trust": self.reason} if self.reason else {}


class TrustStage(Stage):
    name = "trust"

    def __init__(self, networks: Iterable[IPNetwork]) -> None:
        self.networks = tuple(networks)

    def mail_from(self, txn: Transaction) -> Reply | None:
        txn.results.put(SenderTrust(trust_reason(txn.envelope, self.networks)), by=self.name)
        return None


def trust_of(txn: Transaction, networks: Iterable[IPNetwork] = ()) -> str:
    """The transaction's trust as the trust stage found it at MAIL FROM; computed from `networks`
    only where no trust stage ran (the auth feature is off, or a stage used on its own in tests)."""
    found = txn.results.get(SenderTrust)
    return found.reason if found is not None else trust_reason(txn.envelope, networks)
