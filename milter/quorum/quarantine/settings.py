"""`[quarantine]`: which Postfix instance holds the quarantine, how long mail is kept, where audit lines go."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator

from quorum.config.fields import Table
from quorum.config.schema import Duration, Settings

# How long held mail is kept: `[quarantine] retention` and `[domains."d"] quarantine_retention`.
Retention = Annotated[Duration, Field(ge=3600.0)]
SyslogFacility = Literal[
    "mail", "auth", "authpriv", "daemon", "user", "local0", "local1", "local2", "local3", "local4", "local5",
    "local6", "local7",
]  # fmt: skip


class QuarantineSettings(Settings):
    """`[quarantine]` as written; the CLI and the audit log run with it."""

    postfix_config_dir: str = "/etc/postfix"
    retention: Retention | None = None  # seconds; None: `expire` needs --older-than (or a per-domain retention)
    audit_log: Literal["stderr", "syslog", "both"] = "stderr"
    syslog_address: str = "/dev/log"
    syslog_facility: SyslogFacility = "mail"
    command_timeout: Duration = Field(60.0, ge=1.0)

    @field_validator("postfix_config_dir")
    @classmethod
    def _absolute(cls, path: str) -> str:
        if not path.startswith("/"):
            raise ValueError(f"{path!r} is not an absolute path; e.g. /etc/postfix")
        return path


def parse_settings(root: Table) -> QuarantineSettings:
    """Always returns settings: the CLI works on /etc/postfix with no `[quarantine]` table at all."""
    return root.model("quarantine", QuarantineSettings)
