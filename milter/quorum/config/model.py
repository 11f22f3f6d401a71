"""The validated configuration: plain frozen dataclasses, built once per (re)load."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

OVERSIZE_ACTIONS = ("accept", "tempfail", "reject")
VIRUS_ACTIONS = ("reject", "quarantine", "discard", "tag")
FAILURE_ACTIONS = ("tempfail", "accept")
SPAM_ACTIONS = ("tag", "quarantine", "reject")
SPAM_COMBINE = ("any", "all", "quorum", "weighted", "max")
ENGINE_MODES = ("vote", "shadow")


@dataclass(frozen=True)
class MilterSettings:
    socket: str = "inet:9900@127.0.0.1"
    name: str = "quorum"
    scan_deadline: float = 30.0
    max_message_size: int = 26214400
    on_oversize: str = "reject"
    authserv_id: str = "quorum"
    body_memory_limit: int = 1 << 20
    tmpdir: str | None = None
    socket_mode: int | None = None
    socket_group: str | None = None
    pid_file: str | None = None
    stop_timeout: float = 30.0
    progress_interval: float = 10.0
    workers: int = 64
    log_level: str = "info"
    metrics_listen: str | None = None  # "127.0.0.1:9901": Prometheus exporter
    max_recipients: int = 1000  # per transaction; more get 452 4.5.3
    max_headers: int = 1000  # header fields per message; more -> 552 5.3.4
    max_header_bytes: int = 1 << 20  # total header size per message; more -> 552 5.3.4
    user: str | None = None  # started as root: bind, then drop to this user (service/privileges.py)
    log_format: str = "text"  # "json": the per-message line is one JSON object (quorum.records.format)


@dataclass(frozen=True)
class PolicySettings:
    on_virus: str = "reject"
    on_engine_failure: str = "tempfail"
    on_spam: str = "tag"
    spam_combine: str = "any"
    spam_quorum: int = 1
    spam_reject_score: float | None = None
    on_spam_engine_failure: str = "accept"
    cascade: bool = False  # cheap engines first; an expensive one only when it can change the answer
    cascade_clean_below: float = 0.0  # trust cheap engines' clean verdict below this normalised score


# The placeholders each refusal text may use (see quorum.pipeline.replies).
REPLY_PLACEHOLDERS: dict[str, tuple[str, ...]] = {
    "virus": ("name",),
    "spam": (),
    "rule": ("rule",),
    "dmarc": ("domain",),
}


@dataclass(frozen=True)
class ReplyTexts:
    """Refusal texts a tenant may word itself (`[replies]`, `[domains."d".replies]`); the defaults
    name no engine. Placeholders: see quorum.pipeline.replies."""

    virus: str = "message contains a virus"
    spam: str = "message classified as spam"
    rule: str = "message refused by content policy"
    dmarc: str = "Email rejected per DMARC policy for {domain}"
    disclose_virus_name: bool = True


@dataclass(frozen=True)
class EngineSettings:
    """Keys every engine has; `options` holds the adapter's own keys, validated by the adapter."""

    name: str
    type: str
    enabled: bool = True
    timeout: float = 10.0
    max_size: int = 25 * 1024 * 1024
    mode: str = "vote"
    weight: float = 1.0
    threshold: float | None = None
    concurrency: int = 16
    breaker_failures: int = 5
    breaker_cooldown: float = 30.0
    options: Mapping[str, Any] = field(default_factory=dict)


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
