"""OpenDKIM (Debian's `opendkim`) as a signing milter beside Quorum, started on 127.0.0.1 with its own
config (never the system service), in the style of tests/harness/peers.py.

Debian's /etc/opendkim.conf apart from what a throw-away instance needs: signing only (`Mode s`),
one domain, selector and key file, relaxed/relaxed canonicalization (Debian ships relaxed/simple;
relaxed/relaxed is what Quorum signs with, so both do the same work), `OversignHeaders From` as Debian
has it, an inet socket on loopback, no syslog, foreground, pid file in the work directory. Mail from
127.0.0.1 is signed (`InternalHosts`), and so is an authenticated session ({auth_authen}) whatever its
address. As root OpenDKIM keeps root unless `UserID` is given: no UserID here. `RequireSafeKeys no`:
the key file sits in a temporary directory, and OpenDKIM refuses a key whose path passes through a
directory others can write ("/tmp can be read or written by other users", exit 78).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from .dns import stop_service
from .ports import free_port, port_open
from .procs import Service

OPENDKIM = shutil.which("opendkim", path="/usr/sbin:/usr/bin") or "/usr/sbin/opendkim"


def installed() -> bool:
    return Path(OPENDKIM).exists()


class OpenDkim:
    """`opendkim -f -x CONF` signing mail whose From: domain is `domain` with `key_file` under `selector`."""

    def __init__(
        self,
        workdir: Path,
        domain: str,
        selector: str,
        key_file: Path,
        internal_hosts: str = "127.0.0.1",
        extra: str = "",
        unix: bool = False,
    ) -> None:
        """`unix`: Debian's default socket (local:/run/opendkim/opendkim.sock), here a unix socket in
        a short temporary directory, instead of TCP on loopback."""
        self.workdir = Path(workdir)
        self.domain = domain
        self.selector = selector
        self.key_file = Path(key_file)
        self.internal_hosts = internal_hosts
        self.extra = extra
        self.port = free_port()
        self.unix = unix
        self.socket_path = Path("/nonexistent")
        if unix:
            self.socket_path = Path(tempfile.mkdtemp(prefix="qod-")) / "opendkim.sock"  # short: sun_path
            self.socket_path.parent.chmod(0o755)
        self.conf_path = self.workdir / "opendkim.conf"
        self.service = Service("opendkim", self.workdir)

    @property
    def address(self) -> str:
        """The address as Postfix's smtpd_milters wants it."""
        return f"unix:{self.socket_path}" if self.unix else f"inet:127.0.0.1:{self.port}"

    def config(self) -> str:
        return (
            "Mode s\n"
            f"Domain {self.domain}\n"
            f"Selector {self.selector}\n"
            f"KeyFile {self.key_file}\n"
            "Canonicalization relaxed/relaxed\n"
            "SignatureAlgorithm rsa-sha256\n"
            "OversignHeaders From\n"
            f"InternalHosts {self.internal_hosts}\n"
            f"Socket {f'local:{self.socket_path}' if self.unix else f'inet:{self.port}@127.0.0.1'}\n"
            f"PidFile {self.workdir / 'opendkim.pid'}\n"
            "Background no\n"
            "Syslog no\n"
            "LogWhy no\n"
            # Postfix's smtpd (user postfix) must be able to connect to a unix socket
            f"UMask {'000' if self.unix else '007'}\n"
            # the key lives under /tmp (mode 1777): the safe-keys check refuses any such path
            "RequireSafeKeys no\n"
            f"{self.extra}"
        )

    def check(self) -> str:
        """'' when `opendkim -n` accepts the config, else its complaint."""
        self.conf_path.write_text(self.config())
        proc = subprocess.run(
            [OPENDKIM, "-n", "-x", str(self.conf_path)], capture_output=True, text=True, timeout=30, check=False
        )
        return "" if proc.returncode == 0 else (proc.stderr or proc.stdout).strip()

    def start(self) -> OpenDkim:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.conf_path.write_text(self.config())
        ready = self.socket_path.exists if self.unix else lambda: port_open(self.port)
        self.service.spawn([OPENDKIM, "-f", "-x", str(self.conf_path)], ready=ready, timeout=30)
        return self

    def stop(self) -> None:
        stop_service(self.service)
        if self.unix:
            shutil.rmtree(self.socket_path.parent, ignore_errors=True)

    def log_text(self) -> str:
        try:
            return self.service.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def __enter__(self) -> OpenDkim:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
