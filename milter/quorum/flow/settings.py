"""`[flow]`, validated at load (`[redis]`: quorum.redisconn)."""

from __future__ import annotations

import ipaddress
from typing import Literal

from pydantic import Field, PrivateAttr, field_validator

from quorum.config.schema import Duration, Int, IPNetwork, Settings
from quorum.redisconn import KeyPrefix, RedisSettings

Limit = Int  # slots; 0 = unlimited
KINDS = ("auth_user", "sender", "sender_domain", "client_ip", "recipient_domain")


class Concurrency(Settings):
    """How many transactions may be in flight at once per subject (0: no limit). `sender` and
    `sender_domain` count authenticated sessions only (an unauthenticated MAIL FROM is forgeable:
    anyone could fill another domain's slots); `recipient_domain` counts inbound mail per domain."""

    auth_user: Limit = Field(0, ge=0, le=1_000_000)
    sender: Limit = Field(0, ge=0, le=1_000_000)
    sender_domain: Limit = Field(0, ge=0, le=1_000_000)
    client_ip: Limit = Field(0, ge=0, le=1_000_000)
    recipient_domain: Limit = Field(0, ge=0, le=1_000_000)


class FlowSettings(Settings):
    """`[flow]`: concurrency limits shared by every Quorum on the same Redis."""

    enabled: bool = True
    concurrency: Concurrency = Field(default_factory=Concurrency)
    # A domain's own limits (sender_domain and recipient_domain; the others per account/client).
    domains: dict[str, Concurrency] = Field(default_factory=dict)
    networks: dict[str, Concurrency] = Field(default_factory=dict)  # client_ip limits by client network
    lease: Duration = Field(300.0, ge=1.0, le=86400.0)  # a dead instance's slot is free after this
    on_redis_failure: Literal["open", "closed"] = "open"  # open: admit (counted, warned); closed: 451
    key_prefix: KeyPrefix = "quorum:flow:"
    backoff: Duration = Field(1.0, ge=0.05, le=600.0)
    warn_interval: Duration = Field(60.0, ge=1.0)
    _redis: RedisSettings | None = PrivateAttr(None)  # [redis], set by the feature

    def limit(self, kind: str, subject: str) -> int:
        """The limit for `subject` (an account, a domain, a client address) of `kind`."""
        if kind in ("sender_domain", "recipient_domain"):
            own = self.domains.get(subject)
            if own is not None and kind in own.model_fields_set:
                return int(getattr(own, kind))
        if kind == "client_ip":
            try:
                address = ipaddress.ip_address(subject)
            except ValueError:
                address = None
            for net, own in self.network_limits() if address is not None else ():
                if address in net and kind in own.model_fields_set:
                    return int(own.client_ip)
        return int(getattr(self.concurrency, kind))

    @field_validator("domains")
    @classmethod
    def _domains(cls, value: dict[str, Concurrency]) -> dict[str, Concurrency]:
        return {k.strip().rstrip(".").lower(): v for k, v in value.items()}

    @field_validator("networks")
    @classmethod
    def _networks(cls, value: dict[str, Concurrency]) -> dict[str, Concurrency]:
        for cidr in value:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                raise ValueError(f'{cidr!r} is not a network; write e.g. "10.0.0.0/8"') from None
        return value

    def network_limits(self) -> list[tuple[IPNetwork, Concurrency]]:
        nets = [(ipaddress.ip_network(cidr, strict=False), c) for cidr, c in self.networks.items()]
        return sorted(nets, key=lambda item: item[0].prefixlen, reverse=True)  # most specific first
