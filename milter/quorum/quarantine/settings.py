"""`[quarantine]`: which Postfix instance holds the quarantine, how long mail is kept, where audit lines go."""

from __future__ import annotations

from dataclasses import dataclass

from quorum.config.fields import Table

AUDIT_TARGETS = ("stderr", "syslog", "both")
SYSLOG_FACILITIES = ("mail", "auth", "authpriv", "daemon", "user", *(f"local{i}" for i in range(8)))


@dataclass(frozen=True)
class QuarantineSettings:
    postfix_config_dir: str = "/etc/postfix"
    retention: float | None = None  # seconds; None: `expire` needs --older-than (or a per-domain retention)
    audit_log: str = "stderr"
    syslog_address: str = "/dev/log"
    syslog_facility: str = "mail"
    command_timeout: float = 60.0


def parse_settings(root: Table) -> QuarantineSettings:
    """Always returns settings: the CLI works on /etc/postfix with no `[quarantine]` table at all."""
    t = root.table("quarantine")
    d = QuarantineSettings()
    retention = t.duration("retention", 0.0, minimum=3600.0) if "retention" in t.data else None
    settings = QuarantineSettings(
        postfix_config_dir=t.str("postfix_config_dir", d.postfix_config_dir),
        retention=retention,
        audit_log=t.choice("audit_log", d.audit_log, AUDIT_TARGETS),
        syslog_address=t.str("syslog_address", d.syslog_address),
        syslog_facility=t.choice("syslog_facility", d.syslog_facility, SYSLOG_FACILITIES),
        command_timeout=t.duration("command_timeout", d.command_timeout, minimum=1.0),
    )
    if not settings.postfix_config_dir.startswith("/"):
        t.problems.error(
            t.key("postfix_config_dir"), f"{settings.postfix_config_dir!r} is not an absolute path; e.g. /etc/postfix"
        )
    t.reject_unknown()
    return settings
