"""Reading the TOML file and validating the tables Quorum itself owns (`[milter]`, `[policy]`,
`[replies]`). A leaf: it imports nothing but `quorum.config`; `quorum.assembly` adds the engines'
and features' tables and builds the `Config`."""

from __future__ import annotations

import grp
import pwd
import re
import tomllib
from pathlib import Path
from typing import Any

from quorum.config import model
from quorum.config.fields import ConfigError, Table, is_dir, shown
from quorum.config.model import MilterSettings, PolicySettings, ReplyTexts

DEFAULT_CONFIG = Path(__file__).with_name("default.toml")

_SOCKET = re.compile(r"(inet6?:(?P<port>\d{1,5})(@\S+)?|(unix|local):/\S+)", re.ASCII)


def read_toml(path: str | Path) -> dict[str, Any]:
    """The file's TOML document; ConfigError naming the file and the fix when it cannot be read."""
    try:
        return tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read the file: {exc.strerror or exc}"]) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{path}: not UTF-8 text ({exc.reason}); save the file as UTF-8"]) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{path}: TOML syntax error: {exc}"]) from exc
    except RecursionError as exc:
        raise ConfigError([f"{path}: TOML nested too deeply; flatten the arrays or inline tables"]) from exc
    except ValueError as exc:  # e.g. an integer of more than 4300 digits
        raise ConfigError([f"{path}: TOML value cannot be read: {exc}"]) from exc


def parse_core(root: Table) -> tuple[MilterSettings, PolicySettings, ReplyTexts]:
    """`[milter]`, `[policy]` and `[replies]`: the tables Quorum itself owns."""
    return _milter(root.table("milter")), parse_policy(root.table("policy")), parse_replies(root.table("replies"))


def _milter(t: Table) -> MilterSettings:
    d = MilterSettings()
    socket = t.str("socket", d.socket)
    m = _SOCKET.fullmatch(socket)
    if m and m.group("port") is not None and not 0 < int(m.group("port")) < 65536:
        t.problems.error(t.key("socket"), f"port {m.group('port')} is out of range; use 1 to 65535")
    elif not m:
        t.problems.error(
            t.key("socket"),
            f'{socket!r} is not a libmilter socket; use "inet:PORT@HOST", "inet6:PORT@HOST" or "unix:/path"',
        )
    socket_mode = _socket_mode(t)
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
    if settings.metrics_listen is not None and not re.fullmatch(
        r"\[?[\w.:-]*\]?:\d{1,5}", settings.metrics_listen, re.ASCII
    ):
        t.problems.error(
            t.key("metrics_listen"), f'{settings.metrics_listen!r} is not "host:port"; e.g. "127.0.0.1:9901"'
        )
    if settings.tmpdir and not is_dir(settings.tmpdir):
        t.problems.error(t.key("tmpdir"), f"{settings.tmpdir!r} is not a directory; create it or remove the key")
    _check_accounts(t, settings)
    t.reject_unknown()
    return settings


_MODE = re.compile(r"0?[0-7]{3}", re.ASCII)


def _socket_mode(t: Table) -> int | None:
    """`socket_mode`: an octal string of permission bits only ("0660"), 0 to 0777; a warning when
    anyone on the machine could connect (o+w): such a client can submit mail as Postfix does."""
    key = t.key("socket_mode")
    value = t.raw("socket_mode")
    if value is None:
        return None
    if not isinstance(value, str) or not _MODE.fullmatch(value):
        hint = " (write it as a string: a TOML number is read as decimal)" if isinstance(value, int) else ""
        t.problems.error(
            key,
            f'expected an octal permission mode from "0000" to "0777" such as "0660", got {shown(value)}{hint}',
        )
        return None
    mode = int(value, 8)
    if mode & 0o002:
        t.problems.warn(
            key,
            f"{value} lets every local user connect to the milter socket and talk to Quorum as the MTA; "
            'use "0660" with socket_group = "postfix"',
        )
    return mode


def _check_accounts(t: Table, settings: MilterSettings) -> None:
    """The group and user must exist here, or the worker fails after binding and restarts forever."""
    if settings.socket_group is not None:
        try:
            grp.getgrnam(settings.socket_group)
        except (KeyError, ValueError):  # ValueError: a NUL in the name
            t.problems.error(
                t.key("socket_group"),
                f"no group {settings.socket_group!r} on this machine; set the group Postfix's smtpd runs as "
                '(usually "postfix") or remove the key',
            )
    if settings.user is not None:
        try:
            pwd.getpwnam(settings.user)
        except (KeyError, ValueError):
            t.problems.error(
                t.key("user"),
                f"no user {settings.user!r} on this machine; create it (useradd --system --user-group "
                f"--no-create-home --shell /usr/sbin/nologin {settings.user}) or remove the key",
            )


def parse_policy(t: Table) -> PolicySettings:
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
