"""Settings of `[dns]` and `[auth]`, validated at load."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from quorum.auth.authserv import normalise_id
from quorum.config.fields import Table

SPF_AT = ("eom", "mail")
DMARC_ENFORCE = ("off", "quarantine", "reject")
DMARC_QUARANTINE_ACTIONS = ("tag", "hold")

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class DnsSettings:
    """The one resolver for SPF, DKIM, DMARC and DNSBL. No nameservers: the system's resolv.conf."""

    nameservers: tuple[str, ...] = ()
    port: int = 53
    timeout: float = 2.0
    cache_size: int = 10000


@dataclass(frozen=True)
class AuthSettings:
    enabled: bool = True
    spf: bool = True
    dkim: bool = True
    dmarc: bool = True
    spf_at: str = "eom"
    dkim_max_size: int = 5 * 1024 * 1024
    dkim_max_signatures: int = 5
    dkim_min_key_bits: int = 1024
    dmarc_enforce: str = "off"
    dmarc_quarantine_action: str = "tag"
    trusted_networks: tuple[IPNetwork, ...] = field(
        default_factory=lambda: (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))
    )
    # Authentication-Results of milters placed before Quorum (OpenDKIM, OpenDMARC): kept as they are.
    # They must differ from [milter] authserv_id: a header with our own id is removed whoever wrote it.
    trusted_upstream_authserv_ids: tuple[str, ...] = ()


def parse_networks(t: Table, name: str, default: list[str]) -> tuple[IPNetwork, ...]:
    """A list of addresses/CIDRs; host bits set are an error (a typo more often than not)."""
    networks: list[IPNetwork] = []
    items: list[str] = t.str_list(name, default)
    for item in items:
        try:
            networks.append(ipaddress.ip_network(item.strip(), strict=True))
        except ValueError as exc:
            t.problems.error(t.key(name), f'{item!r} is not an address or network ({exc}); write e.g. "192.0.2.0/24"')
    return tuple(networks)


def parse_dns(t: Table) -> DnsSettings:
    d = DnsSettings()
    nameservers: list[str] = []
    items: list[str] = t.str_list("nameservers", [])
    for item in items:
        try:
            nameservers.append(str(ipaddress.ip_address(item.strip())))
        except ValueError:
            t.problems.error(
                t.key("nameservers"), f'{item!r} is not an IP address; list resolver addresses such as "127.0.0.1"'
            )
    settings = DnsSettings(
        nameservers=tuple(nameservers),
        port=t.int("port", d.port, minimum=1, maximum=65535),
        timeout=t.duration("timeout", d.timeout, minimum=0.05),
        cache_size=t.int("cache_size", d.cache_size, minimum=0, maximum=10_000_000),
    )
    t.reject_unknown()
    return settings


def parse_upstream_ids(t: Table, own: str) -> tuple[str, ...]:
    ids: list[str] = []
    items: list[str] = t.str_list("trusted_upstream_authserv_ids", [])
    for item in items:
        value = normalise_id(item)
        if not value or value != item.strip().rstrip(".").lower():
            t.problems.error(
                t.key("trusted_upstream_authserv_ids"),
                f'{item!r} is not an authserv-id; write the upstream milter\'s own id, e.g. "dkim.mx.example"',
            )
        elif value == normalise_id(own):
            t.problems.error(
                t.key("trusted_upstream_authserv_ids"),
                f"{item!r} is also [milter] authserv_id: Quorum removes every inbound Authentication-Results "
                "with its own id, and cannot tell the upstream milter's header from a forged copy. Give the "
                "upstream milter its own id (OpenDKIM/OpenDMARC `AuthservID`) and list that id here",
            )
        else:
            ids.append(value)
    return tuple(ids)


def parse_auth(t: Table, own_authserv_id: str = "quorum") -> AuthSettings:
    d = AuthSettings()
    settings = AuthSettings(
        enabled=t.bool("enabled", d.enabled),
        spf=t.bool("spf", d.spf),
        dkim=t.bool("dkim", d.dkim),
        dmarc=t.bool("dmarc", d.dmarc),
        spf_at=t.choice("spf_at", d.spf_at, SPF_AT),
        dkim_max_size=t.size("dkim_max_size", d.dkim_max_size, minimum=1024),
        dkim_max_signatures=t.int("dkim_max_signatures", d.dkim_max_signatures, minimum=1, maximum=50),
        dkim_min_key_bits=t.int("dkim_min_key_bits", d.dkim_min_key_bits, minimum=512, maximum=16384),
        dmarc_enforce=t.choice("dmarc_enforce", d.dmarc_enforce, DMARC_ENFORCE),
        dmarc_quarantine_action=t.choice(
            "dmarc_quarantine_action", d.dmarc_quarantine_action, DMARC_QUARANTINE_ACTIONS
        ),
        trusted_networks=parse_networks(t, "trusted_networks", ["127.0.0.0/8", "::1/128"]),
        trusted_upstream_authserv_ids=parse_upstream_ids(t, own_authserv_id),
    )
    if settings.dmarc and not (settings.spf and settings.dkim):
        t.problems.warn(
            t.key("dmarc"),
            "DMARC is evaluated with SPF or DKIM switched off: mail that would pass through the missing check "
            "fails DMARC; enable both or set dmarc = false",
        )
    t.reject_unknown()
    return settings
