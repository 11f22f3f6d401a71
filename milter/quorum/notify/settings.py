"""Notice configuration: `[notify]` (relay, From:, cap, queue) and `[domains."d".notify]` (who hears of what)."""

from __future__ import annotations

import re
from email.utils import parseaddr
from pathlib import Path
from typing import Annotated, Any, Final, Literal

from pydantic import AfterValidator, BeforeValidator, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from quorum.config.fields import Table, is_dir
from quorum.config.schema import Duration, Int, Settings, Size, raise_at, validate
from quorum.redisconn import KeyPrefix, RedisSettings, shared_redis

Event = Literal["virus", "quarantine", "rule", "spam_reject", "digest"]
EVENTS = ("virus", "quarantine", "rule", "spam_reject")  # about one message, submitted by the stage
DIGEST: Final = "digest"  # what is held for a recipient, sent by `quorum quarantine digest` (daily, from cron/a timer)
ALL_EVENTS = (*EVENTS, DIGEST)
AUDIENCES = ("admin", "recipient", "sender")
DEFAULT_EVENTS: tuple[Event, ...] = ("quarantine", "virus")
_ADDRESS = re.compile(r"^[^@\s<>\"]+@[^@\s<>\"]+\.[^@\s<>\"]+$|^[^@\s<>\"]+@localhost$")
_RELAY = "127.0.0.1:10026"


def valid_address(address: str) -> bool:
    return bool(_ADDRESS.match(address)) and len(address) <= 254


def _plain(address: str) -> str:
    if not valid_address(address):
        raise ValueError(f'{address!r} is not a plain address; use e.g. ["postmaster@example.com"]')
    return address


def _host_port(value: Any) -> Any:
    """(host, port) from "host:port" or "[v6]:port"; a (host, port) tuple from code."""
    if isinstance(value, tuple):
        return value
    if not isinstance(value, str):
        raise PydanticCustomError("quorum_type", "expected a string")
    host, sep, port = value.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not (port.isascii() and port.isdigit()) or len(port) > 5 or not 0 < int(port) < 65536:
        raise ValueError(f'{value!r} is not "host:port"; name the notice listener, e.g. "{_RELAY}"')
    return host, int(port)


def _path(value: Any) -> Any:
    if value is not None and not isinstance(value, str | Path):
        raise PydanticCustomError("quorum_type", "expected a string")
    return Path(value) if value else None  # "": the built-in templates


class DomainNotify(Settings):
    """Who is told about which events for one tenant domain; the default tells nobody."""

    admin: tuple[Annotated[str, AfterValidator(_plain)], ...] = ()
    recipient: bool = False
    sender: bool = False
    sender_virus: bool = False  # sender notices for viruses too (most viruses forge the sender: off)
    # sorted, no duplicates (stable for the tenants fingerprint)
    events: Annotated[tuple[Event, ...], AfterValidator(lambda e: tuple(sorted(set(e))))] = DEFAULT_EVENTS

    @model_validator(mode="after")
    def _audience(self) -> DomainNotify:
        found = []
        if DIGEST in self.events and not self.recipient:
            found.append(("events", '"digest" goes to recipients; also set recipient = true, or remove it'))
        if self.sender_virus and not self.sender:
            found.append(("sender_virus", "only used with sender = true; set it or remove sender_virus"))
        raise_at(found)
        return self

    def wants(self, event: str) -> bool:
        return event in self.events and bool(self.admin or self.recipient or self.sender)


class NotifyTable(Settings):
    """`[notify]` as written."""

    enabled: bool = True
    from_address: str = Field("", alias="from")  # the From: header; the envelope sender is always <>
    relay: Annotated[tuple[str, int], BeforeValidator(_host_port, json_schema_input_type=str)] = Field(
        ("127.0.0.1", 10026), json_schema_extra={"default": _RELAY}
    )
    daily_cap: Int = Field(50, ge=0, le=1_000_000)  # notices per notified address per UTC day; 0 = unlimited
    templates: Annotated[Path | None, BeforeValidator(_path, json_schema_input_type=str)] = None
    queue_size: Int = Field(1000, ge=1, le=1_000_000)
    retry_backoff: Duration = Field(30.0, ge=0.01)  # first retry delay; doubles per attempt up to retry_backoff_max
    retry_backoff_max: Duration = Field(900.0, ge=0.01)
    max_attempts: Int = Field(10, ge=1, le=1000)
    max_age: Duration = Field(86400.0, ge=1.0)
    timeout: Duration = Field(30.0, ge=0.1)  # SMTP timeout per relay command
    render_timeout: Duration = Field(2.0, ge=0.1)  # wall time for one custom template render (in a child process)
    max_size: Size = Field(65536, ge=1024)  # rendered body, bytes
    key_prefix: KeyPrefix = "quorum:notify:"
    redis_retry: Duration = Field(30.0, ge=0.1)  # after a Redis failure, count in process this long before retrying

    @model_validator(mode="before")
    @classmethod
    def _from_required(cls, data: Any) -> Any:
        """`from` has no usable default: checked (below) when absent too, under its own key."""
        if isinstance(data, dict) and "from" not in data and "from_address" not in data:
            return {"from": "", **data}
        return data

    @field_validator("from_address")
    @classmethod
    def _from(cls, value: str) -> str:
        if not value:
            raise ValueError('missing; set the From: address of notices, e.g. "postmaster@example.net"')
        if not valid_address(parseaddr(value)[1]) or "\n" in value or "\r" in value:
            raise ValueError(f'{value!r} is not an address; use e.g. "Mail Filter <pm@example.net>"')
        return value


class NotifySettings(NotifyTable):
    """What the notifier runs with: `[notify]` and the `[redis]` the daily cap is counted in.
    `NotifySettings(from_address=...)` for code and tests."""

    model_config = ConfigDict(validate_by_name=True)

    redis: RedisSettings | None = None  # None: the daily cap is counted per process


def parse_settings(root: Table) -> NotifySettings | None:
    """None when `[notify]` is absent or `enabled = false`; problems are recorded on `root`."""
    if "notify" not in root.data:
        return None
    t = root.table("notify")
    if t.data.get("enabled") is False:  # a table switched off is not checked
        return None
    table = validate(NotifyTable, t.data, t.path, t.problems)
    templates = t.data.get("templates")
    if isinstance(templates, str) and not is_dir(templates):
        t.problems.error(t.key("templates"), f"{templates!r} is not a directory; create it or remove the key")
    settings = NotifySettings.model_construct(**dict(table or NotifyTable.model_construct()), redis=shared_redis(root))
    if table is not None and settings.redis is None and settings.daily_cap:
        t.problems.warn(t.key("daily_cap"), "counted per process because [redis] is absent; add [redis] to share it")
    return settings


def parse_domain_notify(t: Table) -> DomainNotify:
    """`[domains."d".notify]`; every problem names the dotted key."""
    return t.as_model(DomainNotify)


__all__ = [
    "ALL_EVENTS",
    "AUDIENCES",
    "DIGEST",
    "EVENTS",
    "DomainNotify",
    "NotifySettings",
    "NotifyTable",
    "parse_domain_notify",
    "parse_settings",
    "valid_address",
]
