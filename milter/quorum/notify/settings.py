"""Notice configuration: `[notify]` (relay, From:, cap, queue) and `[domains."d".notify]` (who hears of what)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from email.utils import parseaddr
from pathlib import Path

from quorum.config.fields import Table, is_dir
from quorum.redisconn import RedisSettings, shared_redis

EVENTS = ("virus", "quarantine", "rule", "spam_reject")  # about one message, submitted by the stage
DIGEST = "digest"  # what is held for a recipient, sent by `quorum quarantine digest` (daily, from cron/a timer)
ALL_EVENTS = (*EVENTS, DIGEST)
AUDIENCES = ("admin", "recipient", "sender")
DEFAULT_EVENTS = ("quarantine", "virus")
_ADDRESS = re.compile(r"^[^@\s<>\"]+@[^@\s<>\"]+\.[^@\s<>\"]+$|^[^@\s<>\"]+@localhost$")


@dataclass(frozen=True)
class DomainNotify:
    """Who is told about which events for one tenant domain; the default tells nobody."""

    admin: tuple[str, ...] = ()
    recipient: bool = False
    sender: bool = False
    sender_virus: bool = False  # sender notices for viruses too (most viruses forge the sender: off)
    events: tuple[str, ...] = DEFAULT_EVENTS  # sorted, no duplicates (stable for the tenants fingerprint)

    def wants(self, event: str) -> bool:
        return event in self.events and bool(self.admin or self.recipient or self.sender)


@dataclass(frozen=True)
class NotifySettings:
    from_address: str = ""  # the From: header; the envelope sender is always <>
    relay: tuple[str, int] = ("127.0.0.1", 10026)
    daily_cap: int = 50  # notices per notified address per UTC day; 0 = unlimited
    templates: Path | None = None
    queue_size: int = 1000
    retry_backoff: float = 30.0  # first retry delay; doubles per attempt up to retry_backoff_max
    retry_backoff_max: float = 900.0
    max_attempts: int = 10
    max_age: float = 86400.0
    timeout: float = 30.0  # SMTP timeout per relay command
    render_timeout: float = 2.0  # wall time for one custom template render (in a child process)
    max_size: int = 65536  # rendered body, bytes
    key_prefix: str = "quorum:notify:"
    redis: RedisSettings | None = None  # None: the daily cap is counted per process
    redis_retry: float = 30.0  # after a Redis failure, count in process this long before trying again


def valid_address(address: str) -> bool:
    return bool(_ADDRESS.match(address)) and len(address) <= 254


def parse_settings(root: Table) -> NotifySettings | None:
    """None when `[notify]` is absent or `enabled = false`; problems are recorded on `root`."""
    if "notify" not in root.data:
        return None
    t = root.table("notify")
    if not t.bool("enabled", True):
        t.reject_unknown()
        return None
    d = NotifySettings()
    from_address = t.str("from", "")
    if not from_address:
        t.problems.error(t.key("from"), 'missing; set the From: address of notices, e.g. "postmaster@example.net"')
    elif not valid_address(parseaddr(from_address)[1]) or "\n" in from_address or "\r" in from_address:
        t.problems.error(t.key("from"), f'{from_address!r} is not an address; use e.g. "Mail Filter <pm@example.net>"')
    templates = t.opt_str("templates")
    if templates is not None and not is_dir(templates):
        t.problems.error(t.key("templates"), f"{templates!r} is not a directory; create it or remove the key")
    prefix = t.str("key_prefix", d.key_prefix)
    if "{" in prefix or "}" in prefix:
        t.problems.error(t.key("key_prefix"), "must not contain '{' or '}' (Redis Cluster hash tags); remove them")
    settings = NotifySettings(
        from_address=from_address,
        relay=_relay(t),
        daily_cap=t.int("daily_cap", d.daily_cap, minimum=0, maximum=1_000_000),
        templates=Path(templates) if templates else None,
        queue_size=t.int("queue_size", d.queue_size, minimum=1, maximum=1_000_000),
        retry_backoff=t.duration("retry_backoff", d.retry_backoff, minimum=0.01),
        retry_backoff_max=t.duration("retry_backoff_max", d.retry_backoff_max, minimum=0.01),
        max_attempts=t.int("max_attempts", d.max_attempts, minimum=1, maximum=1000),
        max_age=t.duration("max_age", d.max_age, minimum=1.0),
        timeout=t.duration("timeout", d.timeout, minimum=0.1),
        render_timeout=t.duration("render_timeout", d.render_timeout, minimum=0.1),
        max_size=t.size("max_size", d.max_size, minimum=1024),
        key_prefix=prefix,
        redis=shared_redis(root),
        redis_retry=t.duration("redis_retry", d.redis_retry, minimum=0.1),
    )
    t.reject_unknown()
    if settings.redis is None and settings.daily_cap:
        t.problems.warn(t.key("daily_cap"), "counted per process because [redis] is absent; add [redis] to share it")
    return settings


def _relay(t: Table) -> tuple[str, int]:
    value = t.str("relay", "127.0.0.1:10026")
    host, sep, port = value.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not (port.isascii() and port.isdigit()) or len(port) > 5 or not 0 < int(port) < 65536:
        example = "127.0.0.1:10026"
        t.problems.error(t.key("relay"), f'{value!r} is not "host:port"; name the notice listener, e.g. "{example}"')
        return NotifySettings().relay
    return host, int(port)


def parse_domain_notify(t: Table) -> DomainNotify:
    """`[domains."d".notify]`; every problem names the dotted key."""
    admin = []
    for address in t.str_list("admin"):
        if valid_address(address):
            admin.append(address)
        else:
            t.problems.error(t.key("admin"), f'{address!r} is not a plain address; use e.g. ["postmaster@example.com"]')
    events = t.str_list("events", list(DEFAULT_EVENTS))
    for event in events:
        if event not in ALL_EVENTS:
            t.problems.error(t.key("events"), f"unknown event {event!r}; use some of {' | '.join(ALL_EVENTS)}")
    settings = DomainNotify(
        admin=tuple(admin),
        recipient=t.bool("recipient", False),
        sender=t.bool("sender", False),
        sender_virus=t.bool("sender_virus", False),
        events=tuple(sorted({e for e in events if e in ALL_EVENTS})),
    )
    if DIGEST in settings.events and not settings.recipient:
        t.problems.error(t.key("events"), '"digest" goes to recipients; also set recipient = true, or remove it')
    if settings.sender_virus and not settings.sender:
        t.problems.error(t.key("sender_virus"), "only used with sender = true; set it or remove sender_virus")
    t.reject_unknown()
    return settings


__all__ = [
    "ALL_EVENTS",
    "AUDIENCES",
    "DIGEST",
    "EVENTS",
    "DomainNotify",
    "NotifySettings",
    "parse_domain_notify",
    "parse_settings",
    "valid_address",
]
