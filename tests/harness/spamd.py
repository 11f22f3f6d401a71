"""spamd on loopback with Debian's rules and Quorum's engines/spamassassin/local.cf."""

from __future__ import annotations

import os
import shutil
import signal
import socket
from collections.abc import Mapping
from pathlib import Path

from .dns import stop_service
from .ports import free_port, wait_for_port_closed
from .procs import Service
from .rspamd import chown_tree, grant_traverse

ENGINE_DIR = Path(__file__).resolve().parents[2] / "engines" / "spamassassin"
SYSTEM_SITE = Path("/etc/spamassassin")
USER = GROUP = "debian-spamd"


class Spamd:
    """spamd (local tests only, no user configs) on 127.0.0.1:port; children run as debian-spamd."""

    def __init__(self, workdir: Path, children: int = 2) -> None:
        self.workdir = Path(workdir)
        self.children = children
        self.port = free_port()
        self.service = Service("spamd", self.workdir)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _site_dir(self) -> Path:
        """Debian's *.pre (plugin loading) next to Quorum's local.cf, as --siteconfigpath."""
        site = self.workdir / "site"
        shutil.rmtree(site, ignore_errors=True)
        site.mkdir(parents=True)
        for pre in SYSTEM_SITE.glob("*.pre"):
            (site / pre.name).symlink_to(pre)
        shutil.copy(ENGINE_DIR / "local.cf", site / "local.cf")
        return site

    def argv(self) -> list[str]:
        home = self.workdir / "home"
        return [
            "spamd",
            f"--listen=127.0.0.1:{self.port}",
            "--allowed-ips=127.0.0.1",
            "--local",
            "--nouser-config",
            f"--siteconfigpath={self.workdir / 'site'}",
            f"--pidfile={self.workdir / 'spamd.pid'}",
            f"--max-children={self.children}",
            "--min-children=1",
            f"--username={USER}",
            f"--groupname={GROUP}",
            f"--helper-home-dir={home}",
            "--syslog=stderr",
        ]

    def _ready(self) -> bool:
        return self.request("PING").startswith(b"SPAMD/1.5 0 PONG")

    def start(self) -> Spamd:
        self._site_dir()
        home = self.workdir / "home"
        home.mkdir(parents=True, exist_ok=True)
        chown_tree(home, USER, GROUP)
        grant_traverse(self.workdir)  # spamd reads its config after switching to debian-spamd
        self.service.spawn(self.argv(), ready=self._ready, timeout=120)
        return self

    def stop(self) -> None:
        stop_service(self.service)

    def kill(self) -> None:
        """SIGKILL the parent and its children (fault tests)."""
        if self.service.proc is not None and self.service.running:
            os.killpg(self.service.proc.pid, signal.SIGKILL)
        stop_service(self.service)
        wait_for_port_closed(self.port)

    def request(
        self,
        command: str,
        message: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float = 30.0,
    ) -> bytes:
        """One SPAMC/1.5 request (PING, CHECK, SYMBOLS, REPORT, ...); returns the raw response."""
        head = f"{command} SPAMC/1.5\r\n"
        if message is not None:
            head += f"Content-length: {len(message)}\r\n"
        for key, value in (headers or {}).items():
            head += f"{key}: {value}\r\n"
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as sock:
            sock.sendall(head.encode() + b"\r\n" + (message or b""))
            sock.shutdown(socket.SHUT_WR)
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks)

    def __enter__(self) -> Spamd:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
