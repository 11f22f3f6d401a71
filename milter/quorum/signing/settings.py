"""`[signing]` and its `[[signing.keys]]`, validated at load: every key file is read and checked
here, so `quorum check-config` (and a reload, which keeps the running config) names the entry
whose key is unreadable, not PEM, too short or of the wrong type (`signing.keys[0].key: ...`).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, PrivateAttr, WithJsonSchema, field_validator, model_validator
from pydantic_core import PydanticCustomError

from quorum.config.schema import Duration, Network, Settings, raise_at
from quorum.redisconn import KeyPrefix
from quorum.signing.keys import KeyProblem, PrivateKey, load_key

_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_DOMAIN = re.compile(rf"^{_LABEL}(?:\.{_LABEL})+$")
_SELECTOR = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*$", re.IGNORECASE)


def _key(value: Any) -> Any:
    """A path to a PEM private key, read and checked now (a loaded key, from code, as it is)."""
    if isinstance(value, PrivateKey):
        return value
    if not isinstance(value, str) or not value.strip():
        raise PydanticCustomError("quorum_type", "expected the path of a PEM private key")
    try:
        return load_key(value)
    except KeyProblem as exc:
        raise ValueError(str(exc)) from None


KeyFile = Annotated[
    PrivateKey,
    BeforeValidator(_key),
    WithJsonSchema({"type": "string", "description": "path to a PEM private key (RSA >= 1024 bits or Ed25519)"}),
]


def normalise_domain(value: str) -> str:
    """Lower case, no trailing dot, IDNA A-labels (an IDN From: domain is signed as its A-label)."""
    name = value.strip().rstrip(".").lower()
    if not name.isascii():
        import idna

        name = idna.encode(name, uts46=True).decode("ascii")
    return name


def domain_name(value: str, wildcard: bool = False) -> str:
    """`value` as a signing domain (A-labels, lower case); `"*.example.com"` too when `wildcard`."""
    star = wildcard and value.strip().startswith("*.")
    try:
        name = normalise_domain(value.strip().removeprefix("*.") if star else value)
    except Exception:  # noqa: BLE001 - idna raises several kinds
        raise ValueError(f"{value!r} is not a domain name") from None
    if not _DOMAIN.match(name):
        wild = ' or "*.example.com" for its subdomains' if wildcard else ""
        raise ValueError(f'{value!r} is not a domain name; write the From: domain ("example.com"){wild}')
    return f"*.{name}" if star else name


def selector_name(value: str) -> str:
    if not _SELECTOR.match(value) or len(value) > 63:
        raise ValueError(f'{value!r} is not a selector; use letters, digits and hyphens, e.g. "s2024" or "ed1"')
    return value.lower()


class KeyEntry(Settings):
    """One `[[signing.keys]]` entry: mail whose From: domain is `domain` gets a signature by `key`
    under `selector`. `"*.example.com"` covers every subdomain (not example.com itself) and signs
    with d=example.com (aligned with relaxed DMARC); several entries for one domain, several signatures."""

    domain: str
    selector: str
    key: KeyFile

    @field_validator("domain")
    @classmethod
    def _domain(cls, value: str) -> str:
        return domain_name(value, wildcard=True)

    @field_validator("selector")
    @classmethod
    def _selector(cls, value: str) -> str:
        return selector_name(value)

    @property
    def wildcard(self) -> bool:
        return self.domain.startswith("*.")

    @property
    def signing_domain(self) -> str:
        """The d= this entry signs with (a wildcard entry signs as its parent domain)."""
        return self.domain.removeprefix("*.")

    def record_name(self) -> str:
        return f"{self.selector}._domainkey.{self.signing_domain}"


class DomainKey(Settings):
    """One key of a tenant's `[domains."d".signing]`: the domain is the table's own."""

    selector: str
    key: KeyFile

    @field_validator("selector")
    @classmethod
    def _selector(cls, value: str) -> str:
        return selector_name(value)


class DomainSigning(Settings):
    """`[domains."d".signing]`: the domain's own keys, used instead of `[[signing.keys]]` for mail
    whose From: domain is d (a file's domain table or a Redis tenant record; the key files are
    read and checked when the record is loaded)."""

    keys: tuple[DomainKey, ...] = Field(min_length=1)


class SigningSettings(Settings):
    """`[signing]`: which mail Quorum signs (DKIM, after every other edit) and with which keys."""

    # "authenticated": SMTP AUTH sessions ({auth_authen} set) and clients in `networks`; "off":
    # nothing is signed (keys are checked, `quorum dkim check` works: a rotation's first step).
    sign: Literal["authenticated", "off"] = "authenticated"
    networks: tuple[Network, ...] = ()  # trusted submitters (an internal relay) signed without AUTH
    keys: tuple[KeyEntry, ...] = ()
    on_failure: Literal["tempfail", "accept"] = "tempfail"  # a signature that cannot be made: 451, or unsigned
    log_interval: Duration = Field(3600.0, ge=1.0)  # "no key for DOMAIN" logged once per domain per interval
    # "redis": keys also live in Redis ([redis]), hash `{key_prefix}{domain}` -> {selector: PEM},
    # written by `quorum dkim keygen --store redis`, read when a domain's mail is signed and kept
    # `refresh` seconds; the file's entries and the tenants' own keys come first.
    store: Literal["file", "redis"] = "file"
    key_prefix: KeyPrefix = "quorum:dkim:"
    refresh: Duration = Field(60.0, ge=1.0, le=86400.0)
    _redis: Any = PrivateAttr(None)  # the [redis] settings with store = "redis" (set by the feature)

    @model_validator(mode="after")
    def _consistent(self) -> SigningSettings:
        problems: list[tuple[tuple[str | int, ...], str]] = []
        if self.sign != "off" and not self.keys and self.store == "file":
            problems.append((("keys",), "no key: list at least one [[signing.keys]] entry, or set sign = off"))
        seen: dict[tuple[str, str], int] = {}
        for i, entry in enumerate(self.keys):
            first = seen.setdefault((entry.signing_domain, entry.selector), i)
            if first != i and self.keys[first].key.public != entry.key.public:
                problems.append(
                    (
                        ("keys", i, "selector"),
                        f"signing.keys[{first}] signs d={entry.signing_domain} with selector {entry.selector!r} "
                        "and another key: one selector names one DNS record, so one key; give this key its own "
                        "selector",
                    )
                )
            elif first != i and self.keys[first].domain == entry.domain:
                problems.append((("keys", i), f"the same entry as signing.keys[{first}]; remove one"))
        raise_at(problems)
        return self
