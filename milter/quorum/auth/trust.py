"""Who is exempt from enforcement: SMTP-authenticated sessions and `[auth] trusted_networks`.

Both still get virus scanning; they skip DNSBL and SPF/DMARC enforcement, so an operator's own
roaming users are never refused by their own domain's DMARC policy.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from quorum.message import Envelope, client_address

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def in_networks(client_ip: str, networks: Iterable[IPNetwork]) -> bool:
    addr = client_address(client_ip)
    if addr is None:
        return False
    return any(addr.version == net.version and addr in net for net in networks)


def trust_reason(envelope: Envelope, networks: Iterable[IPNetwork]) -> str:
    """The reason a session is trusted: "authenticated", "trusted_network", or "" (not trusted)."""
    if envelope.auth_user:
        return "authenticated"
    if envelope.client_ip and in_networks(envelope.client_ip, networks):
        return "trusted_network"
    return ""
