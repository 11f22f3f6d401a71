"""Read the TOML file and turn it into a validated `Config`."""

from __future__ import annotations

import grp
import pwd
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from quorum.config import model
from quorum.config.fields import ConfigError, Problems, Table
from quorum.config.model import Config, EngineSettings, MilterSettings, PolicySettings, ReplyTexts

DEFAULT_CONFIG = Path(__file__).with_name("default.toml")

_SOCKET = re.compile(r"^(inet:\d{1,5}(@\S+)?|inet6:\d{1,5}(@\S+)?|(unix|local):/\S+)$")
_ENGINE_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
_KNOWN_TOP = {"milter", "policy", "engines", "replies"}


def load_config(path: str | Path) -> Config:
    """Load and validate; raises ConfigError listing every problem."""
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read the file: {exc.strerror or exc}"]) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{path}: not UTF-8 text ({exc.reason}); save the file as UTF-8"]) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{path}: TOML syntax error: {exc}"]) from exc
    return parse_config(data, str(path))


def parse_config(data: Mapping[str, Any], path: str | None = None) -> Config:
    problems = Problems()
    root = Table(data, "", problems)
    milter = _milter(root.table("milter"))
    policy = _policy(root.table("policy"))
    replies = parse_replies(root.table("replies"))
    engines = _engines(root.table("engines"), problems)
    from quorum.features import FEATURES  # late import: features import config helpers

    features = {f.name: f.parse(root) for f in FEATURES}
    root.reject_unknown()
    _cross_checks(milter, policy, engines, problems)
    if problems.errors:
        raise ConfigError(problems.errors)
    return Config(milter, policy, engines, features, replies, tuple(problems.warnings), path)


def _milter(t: Table) -> MilterSettings:
    d = MilterSettings()
    socket = t.str("socket", d.socket)
    if not _SOCKET.match(socket):
        t.problems.error(
            t.key("socket"),
            f'{socket!r} is not a libmilter socket; use "inet:PORT@HOST", "inet6:PORT@HOST" or "unix:/path"',
        )
    mode = t.opt_str("socket_mode")
    socket_mode = None
    if mode is not None:
        try:
            socket_mode = int(mode, 8)
        except ValueError:
            t.problems.error(t.key("socket_mode"), f'expected an octal mode such as "0660", got {mode!r}')
    settings = MilterSettings(
        socket=socket,
        name=t.str("name", d.name),
        scan_deadline=t.duration("scan_deadline", d.scan_deadline, minimum=0.1),
        max_message_size=t.size("max_message_size", d.max_message_size, minimum=1024),
        on_oversize=t.choice("on_oversize", d.on_oversize, model.OVERSIZE_ACTIONS),
        authserv_id=t.str("authserv_id", d.authserv_id),
        body_memory_limit=t.size("body_memory_limit", d.body_memory_limit),
        tmpdir=t.opt_str("tmpdir"),
        socket_mode=socket_mode,
        socket_group=t.opt_str("socket_group"),
        pid_file=t.opt_str("pid_file"),
        stop_timeout=t.duration("stop_timeout", d.stop_timeout),
        progress_interval=t.duration("progress_interval", d.progress_interval, minimum=1.0),
        workers=t.int("workers", d.workers, minimum=2, maximum=4096),
        log_level=t.choice("log_level", d.log_level, ("debug", "info", "warning", "error")),
        metrics_listen=t.opt_str("metrics_listen"),
        max_recipients=t.int("max_recipients", d.max_recipients, minimum=1, maximum=100000),
        max_headers=t.int("max_headers", d.max_headers, minimum=10),
        max_header_bytes=t.size("max_header_bytes", d.max_header_bytes, minimum=4096),
        user=t.opt_str("user"),
        log_format=t.choice("log_format", d.log_format, ("text", "json")),
    )
    if settings.metrics_listen is not None and not re.match(r"^\[?[\w.:-]*\]?:\d{1,5}$", settings.metrics_listen):
        t.problems.error(
            t.key("metrics_listen"), f'{settings.metrics_listen!r} is not "host:port"; e.g. "127.0.0.1:9901"'
        )
    if settings.tmpdir and not Path(settings.tmpdir).is_dir():
        t.problems.error(t.key("tmpdir"), f"{settings.tmpdir!r} is not a directory; create it or remove the key")
    _check_accounts(t, settings)
    t.reject_unknown()
    return settings


def _check_accounts(t: Table, settings: MilterSettings) -> None:
    """The group and user must exist here, or the worker fails after binding and restarts forever."""
    if settings.socket_group is not None:
        try:
            grp.getgrnam(settings.socket_group)
        except KeyError:
            t.problems.error(
                t.key("socket_group"),
                f"no group {settings.socket_group!r} on this machine; set the group Postfix's smtpd runs as "
                '(usually "postfix") or remove the key',
            )
    if settings.user is not None:
        try:
            pwd.getpwnam(settings.user)
        except KeyError:
            t.problems.error(
                t.key("user"),
                f"no user {settings.user!r} on this machine; create it (useradd --system --user-group "
                f"--no-create-home --shell /usr/sbin/nologin {settings.user}) or remove the key",
            )


def _policy(t: Table) -> PolicySettings:
    d = PolicySettings()
    settings = PolicySettings(
        on_virus=t.choice("on_virus", d.on_virus, model.VIRUS_ACTIONS),
        on_engine_failure=t.choice("on_engine_failure", d.on_engine_failure, model.FAILURE_ACTIONS),
        on_spam=t.choice("on_spam", d.on_spam, model.SPAM_ACTIONS),
        spam_combine=t.choice("spam_combine", d.spam_combine, model.SPAM_COMBINE),
        spam_quorum=t.int("spam_quorum", d.spam_quorum, minimum=1),
        spam_reject_score=t.opt_float("spam_reject_score", minimum=0.0),
        on_spam_engine_failure=t.choice("on_spam_engine_failure", d.on_spam_engine_failure, model.FAILURE_ACTIONS),
        cascade=t.bool("cascade", d.cascade),
        cascade_clean_below=t.float("cascade_clean_below", d.cascade_clean_below, minimum=0.0, maximum=1.0),
    )
    t.reject_unknown()
    return settings


def parse_replies(t: Table, base: ReplyTexts | None = None) -> ReplyTexts:
    """`[replies]` (or a tenant's): refusal texts, validated so a typo'd placeholder is caught."""
    d = base or ReplyTexts()
    texts: dict[str, str] = {}
    for key, allowed in model.REPLY_PLACEHOLDERS.items():
        value = t.str(key, getattr(d, key))
        for found in re.findall(r"\{([^{}]*)\}", value):
            if found not in allowed:
                names = ", ".join("{" + a + "}" for a in allowed) or "none"
                t.problems.error(t.key(key), f"unknown placeholder {{{found}}}; allowed here: {names}")
        if not value.strip() or len(value) > 300:
            t.problems.error(t.key(key), "must be 1 to 300 characters of text")
        texts[key] = value
    settings = ReplyTexts(**texts, disclose_virus_name=t.bool("disclose_virus_name", d.disclose_virus_name))
    t.reject_unknown()
    return settings


def _engines(t: Table, problems: Problems) -> tuple[EngineSettings, ...]:
    from quorum.engines import ENGINE_TYPES, adapter_class

    engines: list[EngineSettings] = []
    for name in t.data:
        et = t.table(name)
        if not _ENGINE_NAME.match(name):
            problems.error(et.path, "engine names may hold letters, digits, '-' and '_' only; rename the table")
        type_name = et.str("type", "")
        if not type_name and "type" not in et.data:
            problems.error(et.key("type"), f"missing; set type to one of {' | '.join(ENGINE_TYPES)}")
            continue
        if not type_name:
            continue
        try:
            cls = adapter_class(type_name)
        except LookupError as exc:
            problems.error(et.key("type"), str(exc))
            continue
        d = EngineSettings(name, type_name)
        settings = EngineSettings(
            name=name,
            type=type_name,
            enabled=et.bool("enabled", True),
            timeout=et.duration("timeout", d.timeout, minimum=0.05),
            max_size=et.size("max_size", cls.default_max_size, minimum=1),
            mode=et.choice("mode", d.mode, model.ENGINE_MODES),
            weight=et.float("weight", d.weight, minimum=0.0),
            threshold=et.opt_float("threshold", minimum=0.0),
            concurrency=et.int("concurrency", d.concurrency, minimum=1, maximum=1024),
            breaker_failures=et.int("breaker_failures", d.breaker_failures, minimum=1),
            breaker_cooldown=et.duration("breaker_cooldown", d.breaker_cooldown, minimum=0.1),
            options=cls.parse_options(et),
        )
        et.reject_unknown()
        engines.append(settings)
    return tuple(engines)


def _cross_checks(
    milter: MilterSettings, policy: PolicySettings, engines: tuple[EngineSettings, ...], problems: Problems
) -> None:
    from quorum.engines import adapter_class
    from quorum.verdict import Category

    for e in engines:
        if not e.enabled:
            continue
        if adapter_class(e.type).category is Category.ANTIVIRUS and milter.max_message_size > e.max_size:
            problems.warn(
                f"engines.{e.name}.max_size",
                f"{e.max_size} is below milter.max_message_size ({milter.max_message_size}); "
                "larger messages pass this engine unscanned (skipped). Raise max_size (and the engine's own "
                "limit, e.g. clamd StreamMaxLength) or lower max_message_size",
            )
    spam_voters = [
        e for e in engines if e.enabled and e.mode == "vote" and adapter_class(e.type).category is Category.ANTISPAM
    ]
    if policy.spam_combine == "quorum" and spam_voters and policy.spam_quorum > len(spam_voters):
        problems.error(
            "policy.spam_quorum",
            f"{policy.spam_quorum} exceeds the {len(spam_voters)} voting antispam engine(s); lower it",
        )
