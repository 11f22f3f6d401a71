"""Settings of `[dns]`, `[auth]` and `[arc]`, validated at load (the ARC key is read and checked here,
with the signing feature's key reader)."""

from __future__ import annotations

import ipaddress
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, ValidationInfo, field_validator, model_validator

from quorum.auth.authserv import normalise_id
from quorum.config.schema import Duration, Int, Network, Settings, Size, raise_at
from quorum.signing.settings import KeyFile, domain_name, selector_name


def _nameserver(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError:
        raise ValueError(f'{value!r} is not an IP address; list resolver addresses such as "127.0.0.1"') from None


def _upstream_id(item: str, info: ValidationInfo) -> str:
    """An upstream milter's authserv-id; never Quorum's own (`authserv_id` in the validation context)."""
    value = normalise_id(item)
    if not value or value != item.strip().rstrip(".").lower():
        raise ValueError(f'{item!r} is not an authserv-id; write the upstream milter\'s own id, e.g. "dkim.mx.example"')
    if value == normalise_id((info.context or {}).get("authserv_id", "quorum")):
        raise ValueError(
            f"{item!r} is also [milter] authserv_id: Quorum removes every inbound Authentication-Results "
            "with its own id, and cannot tell the upstream milter's header from a forged copy. Give the "
            "upstream milter its own id (OpenDKIM/OpenDMARC `AuthservID`) and list that id here"
        )
    return value


Nameserver = Annotated[str, AfterValidator(_nameserver)]
UpstreamId = Annotated[str, AfterValidator(_upstream_id)]


class DnsSettings(Settings):
    """The one resolver for SPF, DKIM, DMARC and DNSBL. No nameservers: the system's resolv.conf."""

    nameservers: tuple[Nameserver, ...] = ()
    port: Int = Field(53, ge=1, le=65535)
    timeout: Duration = Field(2.0, ge=0.05)
    cache_size: Int = Field(10000, ge=0, le=10_000_000)


class AuthSettings(Settings):
    enabled: bool = True
    spf: bool = True
    dkim: bool = True
    dmarc: bool = True
    # ARC chains (RFC 8617) verified and reported as arc=; chains above arc_max_sets sets are arc=fail unverified.
    arc: bool = True
    arc_max_sets: Int = Field(10, ge=1, le=50)
    spf_at: Literal["eom", "mail"] = "eom"
    dkim_max_size: Size = Field(5 * 1024 * 1024, ge=1024)
    dkim_max_signatures: Int = Field(5, ge=1, le=50)
    dkim_min_key_bits: Int = Field(1024, ge=512, le=16384)
    dmarc_enforce: Literal["off", "quarantine", "reject"] = "off"
    dmarc_quarantine_action: Literal["tag", "hold"] = "tag"
    trusted_networks: tuple[Network, ...] = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))
    # Authentication-Results of milters placed before Quorum (OpenDKIM, OpenDMARC): kept as they are.
    # They must differ from [milter] authserv_id (the validation context's `authserv_id`): a header
    # with our own id is removed whoever wrote it.
    trusted_upstream_authserv_ids: tuple[UpstreamId, ...] = ()


def _sealer(value: str) -> str:
    return domain_name(value)


class ArcSettings(Settings):
    """`[arc]` (RFC 8617): sealing the mail Quorum passes on, and the sealers whose chains it trusts.

    `seal`: mail from outside (not SMTP-authenticated) that Quorum delivers gets an ARC set, i=
    the incoming chain's + 1, over its own Authentication-Results, signed by `key` (RSA: RFC 8617
    allows only rsa-sha256) under `selector._domainkey.domain`. `trusted_sealers`: when DMARC fails
    but a valid chain's latest seal is by one of these domains and its oldest
    ARC-Authentication-Results says DMARC (or an aligned DKIM or SPF) passed there, DMARC is not
    enforced (a mailing list or forwarder that broke the signature)."""

    seal: bool = False
    domain: str = ""
    selector: str = ""
    key: KeyFile | None = None
    trusted_sealers: tuple[Annotated[str, AfterValidator(_sealer)], ...] = ()

    @field_validator("domain")
    @classmethod
    def _domain(cls, value: str) -> str:
        return domain_name(value) if value else value

    @field_validator("selector")
    @classmethod
    def _selector(cls, value: str) -> str:
        return selector_name(value) if value else value

    @model_validator(mode="after")
    def _complete(self) -> ArcSettings:
        problems: list[tuple[tuple[str | int, ...], str]] = []
        if self.seal:
            for name in ("domain", "selector", "key"):
                if not getattr(self, name):
                    problems.append(((name,), f"seal = true needs {name} (the ARC-Seal's d=, s= and its key)"))
        if self.key is not None and self.key.type != "rsa":
            problems.append(
                (("key",), f"{self.key.path!r} is an {self.key.type} key; ARC seals with RSA only (RFC 8617)")
            )
        raise_at(problems)
        return self
