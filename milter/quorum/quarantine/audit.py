"""One audit line per quarantine action: who (the invoking user), what, which messages, the result."""

from __future__ import annotations

import errno
import logging
import logging.handlers
import os
import pwd
import socket
import sys
from collections.abc import Sequence

from quorum.quarantine.settings import QuarantineSettings

LOGGER = "quorum.audit"
_FORMAT = "%(asctime)s %(name)s[%(process)d] %(levelname)s %(message)s"


def invoking_user() -> str:
    """The login name behind this process: `alice (via sudo as root)` under sudo, else the uid's name."""
    uid = os.getuid()
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        name = f"uid{uid}"
    sudo_user = os.environ.get("SUDO_USER", "").strip()
    if sudo_user and uid == 0 and sudo_user != name:
        return f"{sudo_user} (via sudo as {name})"
    return name


def audit_logger(settings: QuarantineSettings) -> logging.Logger:
    """`quorum.audit`, writing to stderr and/or syslog as `[quarantine] audit_log` says.

    An unreachable syslog socket falls back to stderr with a warning: an action is never unrecorded.
    """
    logger = logging.getLogger(LOGGER)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    want_stderr = settings.audit_log in ("stderr", "both")
    if settings.audit_log in ("syslog", "both"):
        try:
            _probe_syslog(settings.syslog_address)
            facility = logging.handlers.SysLogHandler.facility_names[settings.syslog_facility]
            syslog = logging.handlers.SysLogHandler(address=settings.syslog_address, facility=facility)
            syslog.setFormatter(logging.Formatter("quorum-audit[%(process)d]: %(message)s"))
            logger.addHandler(syslog)
        except OSError as exc:
            print(
                f"warning: cannot log to syslog at {settings.syslog_address} ({exc}); audit lines go to stderr",
                file=sys.stderr,
            )
            want_stderr = True
    if want_stderr:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(_FORMAT))
        logger.addHandler(handler)
    return logger


def _probe_syslog(address: str) -> None:
    """Raise OSError if nothing listens at the syslog socket (SysLogHandler would only fail at the first line)."""
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        with socket.socket(socket.AF_UNIX, kind) as probe:
            try:
                probe.connect(address)
                return
            except OSError as exc:
                if exc.errno != errno.EPROTOTYPE:
                    raise
    raise OSError(errno.ENOTSOCK, "not a syslog socket")


def audit_line(who: str, action: str, queue_ids: Sequence[str], result: str, detail: str = "") -> str:
    ids = ",".join(queue_ids) or "-"
    return f"user={who!r} action={action} messages={ids} result={result}" + (f" {detail}" if detail else "")
