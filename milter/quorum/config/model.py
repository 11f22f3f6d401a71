"""The validated configuration. The tables Quorum itself owns (`[milter]`, `[policy]`,
`[replies]`, the keys every `[engines.NAME]` has) are pydantic models (quorum.config.schema):
their fields, defaults and bounds are the one statement of what is allowed, for the file, for
tenant records in Redis and for `quorum schema`."""

from __future__ import annotations

import grp
import pwd
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import Field, field_validator

from quorum.config.problems import is_dir, shown
from quorum.config.schema import Duration, Float, Int, NonNegativeFloat, Settings, Size

OnOversize = Literal["accept", "tempfail", "reject"]
OnVirus = Literal["reject", "quarantine", "discard", "tag"]
OnFailure = Literal["tempfail", "accept"]
OnSpam = Literal["tag", "quarantine", "reject"]
SpamCombine = Literal["any", "all", "quorum", "weighted", "max"]
EngineMode = Literal["vote", "shadow"]

_SOCKET = re.compile(r"(inet6?:(?P<port>\d{1,5})(@\S+)?|(unix|local):/\S+)", re.ASCII)
_MODE = re.compile(r"0?[0-7]{3}", re.ASCII)
_LISTEN = re.compile(r"\[?[\w.:-]*\]?:\d{1,5}", re.ASCII)


class MilterSettings(Settings):
    socket: str = "inet:9900@127.0.0.1"
    name: str = "quorum"
    scan_deadline: Duration = Field(30.0, ge=0.1)
    max_message_size: Size = Field(26214400, ge=1024)
    on_oversize: OnOversize = "reject"
    authserv_id: str = "quorum"
    body_memory_limit: Size = 1 << 20
    tmpdir: str | None = None
    socket_mode: int | None = None  # written as an octal string: "0660"
    socket_group: str | None = None
    pid_file: str | None = None
    stop_timeout: Duration = 30.0
    progress_interval: Duration = Field(10.0, ge=1.0)
    workers: Int = Field(64, ge=2, le=4096)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    metrics_listen: str | None = None  # "127.0.0.1:9901": Prometheus exporter
    max_recipients: Int = Field(1000, ge=1, le=100000)  # per transaction; more get 452 4.5.3
    max_headers: Int = Field(1000, ge=10)  # header fields per message; more -> 552 5.3.4
    max_header_bytes: Size = Field(1 << 20, ge=4096)  # total header size per message; more -> 552 5.3.4
    user: str | None = None  # started as root: bind, then drop to this user (service/privileges.py)
    log_format: Literal["text", "json"] = "text"  # "json": the per-message line is one JSON object

    @field_validator("socket")
    @classmethod
    def _socket(cls, value: str) -> str:
        m = _SOCKET.fullmatch(value)
        if not m:
            raise ValueError(
                f'{value!r} is not a libmilter socket; use "inet:PORT@HOST", "inet6:PORT@HOST" or "unix:/path"'
            )
        if m.group("port") is not None and not 0 < int(m.group("port")) < 65536:
            raise ValueError(f"port {m.group('port')} is out of range; use 1 to 65535")
        return value

    @field_validator("socket_mode", mode="before")
    @classmethod
    def _socket_mode(cls, value: Any) -> Any:
        """Permission bits only ("0660"), 0 to 0777: a TOML number would be read as decimal."""
        if value is None:
            return None
        if not isinstance(value, str) or not _MODE.fullmatch(value):
            hint = " (write it as a string: a TOML number is read as decimal)" if isinstance(value, int) else ""
            raise ValueError(
                f'expected an octal permission mode from "0000" to "0777" such as "0660", got {shown(value)}{hint}'
            )
        return int(value, 8)

    @field_validator("metrics_listen")
    @classmethod
    def _listen(cls, value: str | None) -> str | None:
        if value is not None and not _LISTEN.fullmatch(value):
            raise ValueError(f'{value!r} is not "host:port"; e.g. "127.0.0.1:9901"')
        return value

    @field_validator("tmpdir")
    @classmethod
    def _tmpdir(cls, value: str | None) -> str | None:
        if value and not is_dir(value):
            raise ValueError(f"{value!r} is not a directory; create it or remove the key")
        return value

    @field_validator("socket_group")
    @classmethod
    def _group(cls, value: str | None) -> str | None:
        """The group and user must exist here, or the worker fails after binding and restarts forever."""
        if value is not None:
            try:
                grp.getgrnam(value)
            except (KeyError, ValueError):  # ValueError: a NUL in the name
                raise ValueError(
                    f"no group {value!r} on this machine; set the group Postfix's smtpd runs as "
                    '(usually "postfix") or remove the key'
                ) from None
        return value

    @field_validator("user")
    @classmethod
    def _user(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                pwd.getpwnam(value)
            except (KeyError, ValueError):
                raise ValueError(
                    f"no user {value!r} on this machine; create it (useradd --system --user-group "
                    f"--no-create-home --shell /usr/sbin/nologin {value}) or remove the key"
                ) from None
        return value

    def warnings(self) -> list[tuple[str, str]]:
        if self.socket_mode is not None and self.socket_mode & 0o002:
            return [
                (
                    "socket_mode",
                    f"{self.socket_mode:04o} lets every local user connect to the milter socket and talk to "
                    'Quorum as the MTA; use "0660" with socket_group = "postfix"',
                )
            ]
        return []


class PolicySettings(Settings):
    on_virus: OnVirus = "reject"
    on_engine_failure: OnFailure = "tempfail"
    on_spam: OnSpam = "tag"
    spam_combine: SpamCombine = "any"
    spam_quorum: Int = Field(1, ge=1)
    spam_reject_score: NonNegativeFloat | None = None
    on_spam_engine_failure: OnFailure = "accept"
    cascade: bool = False  # cheap engines first; an expensive one only when it can change the answer
    cascade_clean_below: Float = Field(0.0, ge=0.0, le=1.0)  # trust cheap engines' clean verdict below this


# The placeholders each refusal text may use (see quorum.pipeline.replies).
REPLY_PLACEHOLDERS: dict[str, tuple[str, ...]] = {
    "virus": ("name",),
    "spam": (),
    "rule": ("rule",),
    "dmarc": ("domain",),
}
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")


class ReplyTexts(Settings):
    """Refusal texts a tenant may word itself (`[replies]`, `[domains."d".replies]`); the defaults
    name no engine. Placeholders: see quorum.pipeline.replies."""

    virus: str = "message contains a virus"
    spam: str = "message classified as spam"
    rule: str = "message refused by content policy"
    dmarc: str = "Email rejected per DMARC policy for {domain}"
    disclose_virus_name: bool = True

    @field_validator("virus", "spam", "rule", "dmarc")
    @classmethod
    def _text(cls, value: str, info: Any) -> str:
        """One plain line the client is told; at most 400 characters, what sanitise_reply sends (an
        SMTP reply line is at most 512 octets with its code and enhanced code)."""
        if not value.strip():
            raise ValueError("empty; write the text the client is told, or remove the key for the default")
        if len(value) > 400:
            raise ValueError(f"{len(value)} characters; keep reply texts to 400 at most")
        if re.search(r"[\x00-\x1f\x7f]", value):
            raise ValueError("contains control characters (line breaks, tabs); write one plain line")
        allowed = REPLY_PLACEHOLDERS[info.field_name]
        for found in _PLACEHOLDER.findall(value):
            if found not in allowed:
                names = ", ".join("{" + a + "}" for a in allowed) or "none"
                raise ValueError(f"unknown placeholder {{{found}}}; allowed here: {names}")
        return value


class EngineTable(Settings):
    """The keys every `[engines.NAME]` table has. An adapter's `Options` model subclasses it with
    its own keys (and may change a default, e.g. `max_size`), so one model checks the whole table."""

    type: str
    enabled: bool = True
    timeout: Duration = Field(10.0, ge=0.05)
    max_size: Size = Field(25 * 1024 * 1024, ge=1)
    mode: EngineMode = "vote"
    weight: Float = Field(1.0, ge=0.0)
    threshold: NonNegativeFloat | None = None
    concurrency: Int = Field(16, ge=1, le=1024)
    breaker_failures: Int = Field(5, ge=1)
    breaker_cooldown: Duration = Field(30.0, ge=0.1)


class EngineSettings(EngineTable):
    """One configured engine: the common keys, its name and the adapter's own keys in `options`.
    `EngineSettings("av", "clamav", timeout=5)` for code and tests."""

    name: str
    options: Mapping[str, Any] = Field(default_factory=dict)

    def __init__(self, name: str | None = None, type: str | None = None, /, **data: Any) -> None:  # noqa: A002
        if name is not None:
            data["name"] = name
        if type is not None:
            data["type"] = type
        super().__init__(**data)


@dataclass(frozen=True)
class Config:
    milter: MilterSettings
    policy: PolicySettings
    engines: tuple[EngineSettings, ...]
    features: Mapping[str, Any] = field(default_factory=dict)
    replies: ReplyTexts = field(default_factory=ReplyTexts)
    warnings: tuple[str, ...] = ()
    path: str | None = None

    @property
    def enabled_engines(self) -> tuple[EngineSettings, ...]:
        return tuple(e for e in self.engines if e.enabled)

    def feature(self, name: str) -> Any:
        """The parsed settings of an optional feature (`auth`, `ratelimit`, ...), or None."""
        return self.features.get(name)
