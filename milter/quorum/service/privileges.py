"""Who the milter worker runs as.

Quorum never serves mail as root. Either it is started as an unprivileged user (the systemd
unit's `User=quorum`, the compose image's `USER quorum`), or it is started as root with
`[milter] user` set: the worker then binds the socket (and the metrics listener) as root and
drops to that user (initgroups, setgid, setuid) before it accepts the first connection.
Started as root without `user`, the worker refuses to start.
"""

from __future__ import annotations

import logging
import os
import pwd

log = logging.getLogger("quorum.service")

ALLOW_ROOT_ENV = "QUORUM_ALLOW_ROOT"  # "1": the test harness only (its work dirs are root-only)


class PrivilegeError(Exception):
    """Quorum cannot take on the identity the config asks for; the message says the fix."""


def check_identity(user: str | None) -> None:
    """Raise PrivilegeError when the worker would end up serving mail as root, or cannot switch."""
    euid = os.geteuid()
    try:
        uid = pwd.getpwnam(user).pw_uid if user is not None else None
    except KeyError:
        raise PrivilegeError(f"milter.user = {user!r}: no such user on this machine") from None
    if euid == 0:
        if user is not None:
            if uid == 0:
                raise PrivilegeError(f'milter.user = {user!r} is root; set an unprivileged user such as "quorum"')
            return
        if os.environ.get(ALLOW_ROOT_ENV) == "1":
            log.warning("running as root because %s=1 (meant for the test harness only)", ALLOW_ROOT_ENV)
            return
        raise PrivilegeError(
            'refusing to run as root: set [milter] user = "quorum" (the socket is bound as root, then the '
            "worker drops to that user) or start quorum as an unprivileged user (the systemd unit's User=quorum)"
        )
    if user is not None and uid != euid:
        try:
            me = pwd.getpwuid(euid).pw_name
        except KeyError:
            me = f"uid {euid}"
        raise PrivilegeError(
            f"milter.user = {user!r} but quorum runs as {me!r}, which cannot switch users; "
            "remove milter.user or start quorum as root"
        )


def drop_privileges(user: str | None) -> None:
    """As root with `user` set: become that user for good (groups first, the uid last)."""
    if os.geteuid() != 0 or user is None:
        return
    entry = pwd.getpwnam(user)
    os.initgroups(user, entry.pw_gid)
    os.setgid(entry.pw_gid)
    os.setuid(entry.pw_uid)
    try:
        os.setuid(0)
    except PermissionError:
        pass
    else:
        raise PrivilegeError(f"could regain root after switching to {user!r}; refusing to serve")
    os.environ["HOME"] = entry.pw_dir
    log.info("dropped privileges: now user %s (uid %d, gid %d)", user, entry.pw_uid, entry.pw_gid)
