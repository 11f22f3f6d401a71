"""The milters Quorum is measured against, from Debian's packages, started on 127.0.0.1 with their own
config (never the system services): clamav-milter (-> clamd), spamass-milter (-> spamc -> spamd) and
rspamd's proxy worker in milter mode (-> rspamd's normal workers, the same scanners Quorum asks).

Each runs as Debian ships it apart from the addresses: no tuning Quorum does not get either.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from .dns import stop_service
from .ports import free_port, port_open
from .procs import Service
from .rspamd import Rspamd

CLAMAV_MILTER = shutil.which("clamav-milter", path="/usr/sbin:/usr/bin") or "/usr/sbin/clamav-milter"
SPAMASS_MILTER = shutil.which("spamass-milter", path="/usr/sbin:/usr/bin") or "/usr/sbin/spamass-milter"


def installed() -> list[str]:
    """The peer programs missing on this machine (run.sh installs them with its APT_PACKAGES)."""
    return [p for p in (CLAMAV_MILTER, SPAMASS_MILTER) if not Path(p).exists()]


def milter_entry(address: str, timeout: str = "300s") -> str:
    """One smtpd_milters item with Quorum's own failure mode (tempfail), so every row is judged alike."""
    timeouts = f"connect_timeout=10s, command_timeout=30s, content_timeout={timeout}"
    return f"{{ {address}, default_action=tempfail, {timeouts} }}"


class ClamavMilter:
    """clamav-milter with Debian's default actions (accept clean, defer on failure), rejecting viruses."""

    def __init__(self, workdir: Path, clamd_address: str, unix: bool = False) -> None:
        """`clamd_address`: host:port or clamd's unix socket path; `unix`: Debian's default milter
        socket (a unix socket) instead of TCP on loopback."""
        self.workdir = Path(workdir)
        self.clamd_address = clamd_address
        self.port = free_port()
        self.unix = unix
        self.socket_path = Path("/nonexistent")
        if unix:
            self.socket_path = Path(tempfile.mkdtemp(prefix="qcm-")) / "clamav-milter.ctl"  # short: sun_path
            self.socket_path.parent.chmod(0o755)
        self.service = Service("clamav-milter", self.workdir)

    @property
    def address(self) -> str:
        return f"unix:{self.socket_path}" if self.unix else f"inet:127.0.0.1:{self.port}"

    def config(self) -> str:
        tmp = self.workdir / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        milter = f"{self.socket_path}\nMilterSocketMode 666" if self.unix else f"inet:{self.port}@127.0.0.1"
        clamd = f"unix:{self.clamd_address}" if self.clamd_address.startswith("/") else f"tcp:{self.clamd_address}"
        return (
            f"MilterSocket {milter}\n"
            f"ClamdSocket {clamd}\n"
            "Foreground yes\n"
            f"PidFile {self.workdir / 'clamav-milter.pid'}\n"
            "ReadTimeout 120\n"
            "OnClean Accept\n"
            "OnInfected Reject\n"
            "OnFail Defer\n"
            "AddHeader Replace\n"
            "LogSyslog false\n"
            "LogInfected Basic\n"
            "LogClean Off\n"
            "MaxFileSize 25M\n"
            "SupportMultipleRecipients false\n"
            f"TemporaryDirectory {tmp}\n"
            f"LogFile {self.workdir / 'clamav-milter-own.log'}\n"
        )

    def start(self) -> ClamavMilter:
        conf = self.workdir / "clamav-milter.conf"
        conf.write_text(self.config())
        ready = self.socket_path.exists if self.unix else lambda: port_open(self.port)
        self.service.spawn([CLAMAV_MILTER, "-c", str(conf)], ready=ready, timeout=30)
        return self

    def stop(self) -> None:
        stop_service(self.service)
        if self.unix:
            shutil.rmtree(self.socket_path.parent, ignore_errors=True)

    def __enter__(self) -> ClamavMilter:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class SpamassMilter:
    """spamass-milter (one spamc run per message, as packaged) talking to spamd on `spamd_port`."""

    def __init__(self, workdir: Path, spamd_port: int) -> None:
        self.workdir = Path(workdir)
        self.spamd_port = spamd_port
        self.port = free_port()
        self.service = Service("spamass-milter", self.workdir)

    @property
    def address(self) -> str:
        return f"inet:127.0.0.1:{self.port}"

    def argv(self) -> list[str]:
        # Debian's /etc/default/spamass-milter adds `-i 127.0.0.1` (skip local clients): not here,
        # every benchmark client is local.
        return [
            SPAMASS_MILTER,
            "-p",
            f"inet:{self.port}@127.0.0.1",
            "-P",
            str(self.workdir / "spamass-milter.pid"),
            "--",
            "-d",
            "127.0.0.1",
            "-p",
            str(self.spamd_port),
        ]

    def start(self) -> SpamassMilter:
        self.service.spawn(self.argv(), ready=lambda: port_open(self.port), timeout=30)
        return self

    def stop(self) -> None:
        stop_service(self.service)

    def __enter__(self) -> SpamassMilter:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class RspamdWithProxy(Rspamd):
    """The harness rspamd plus Debian's proxy worker in milter mode on `milter_port`, forwarding
    to this rspamd's normal workers (Quorum's rspamd engine asks the same workers over HTTP)."""

    def __init__(self, workdir: Path, dns_port: int) -> None:
        super().__init__(workdir, dns_port)
        self.milter_port = free_port()

    @property
    def milter_address(self) -> str:
        return f"inet:127.0.0.1:{self.milter_port}"

    def _write_config(self) -> None:
        super()._write_config()
        conf = self.confdir / "rspamd.conf"
        conf.write_text(
            conf.read_text()
            + "\n# bench: rspamd's own milter (Debian's worker-proxy.inc values, upstream = the normal worker)\n"
            'worker "rspamd_proxy" {\n'
            f'    bind_socket = "127.0.0.1:{self.milter_port}";\n'
            "    milter = yes;\n"
            "    timeout = 120s;\n"
            '    upstream "local" {\n'
            "        default = yes;\n"
            f'        hosts = "127.0.0.1:{self.port}";\n'
            "    }\n"
            "    count = 1;\n"
            "    max_retries = 5;\n"
            "    discard_on_reject = false;\n"
            "    quarantine_on_reject = false;\n"
            '    spam_header = "X-Spam";\n'
            '    reject_message = "Spam message rejected";\n'
            "}\n"
        )

    def _ready(self) -> bool:
        return super()._ready() and port_open(self.milter_port)
