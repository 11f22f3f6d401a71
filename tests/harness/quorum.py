"""Quorum itself, started as an operator would: `quorum run -c FILE` (supervisor + worker)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path

from .ports import free_port, port_open
from .procs import Service

QUORUM = [sys.executable, "-m", "quorum"]


def engine_table(name: str, type_: str, **options: object) -> str:
    lines = [f"[engines.{name}]", f'type = "{type_}"']
    for key, value in options.items():
        lines.append(f"{key} = {_toml(value)}")
    return "\n".join(lines) + "\n"


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


class QuorumProcess:
    """`quorum run` on a free loopback port (or a unix socket) with a generated config.

    `body` is the TOML after the [milter] table (policy, engines, features).
    """

    def __init__(self, workdir: Path, body: str, unix: bool = False, milter_extra: str = "") -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.unix = unix
        self.port = free_port()
        # Postfix's smtpd (user postfix) must reach the socket: pytest's temp dirs are 0700.
        self._sockdir = tempfile.mkdtemp(prefix="quorum-sock-") if unix else None
        if self._sockdir:
            os.chmod(self._sockdir, 0o755)
        self.socket_path = Path(self._sockdir or self.workdir) / "quorum.sock"
        self.pid_file = self.workdir / "quorum.pid"
        self.config_path = self.workdir / "quorum.toml"
        self.milter_extra = milter_extra
        self.body = body
        self.service = Service("quorum", self.workdir)
        self.write_config(body)

    @property
    def socket(self) -> str:
        return f"unix:{self.socket_path}" if self.unix else f"inet:{self.port}@127.0.0.1"

    @property
    def postfix_address(self) -> str:
        """The address as Postfix's smtpd_milters wants it."""
        return f"unix:{self.socket_path}" if self.unix else f"inet:127.0.0.1:{self.port}"

    def write_config(self, body: str | None = None) -> None:
        if body is not None:
            self.body = body
        milter = (
            "[milter]\n"
            f'socket = "{self.socket}"\n'
            f'pid_file = "{self.pid_file}"\n'
            'authserv_id = "mx.test.example"\n'
            "stop_timeout = 10\n"
            + ('socket_group = "postfix"\n' if self.unix and "socket_group" not in self.milter_extra else "")
            + f"{self.milter_extra}\n"
        )
        self.config_path.write_text(milter + self.body)

    def _ready(self) -> bool:
        if self.unix:
            try:
                with socket.socket(socket.AF_UNIX) as s:
                    s.settimeout(0.5)
                    s.connect(str(self.socket_path))
                return True
            except OSError:
                return False
        return port_open(self.port)

    def start(self, timeout: float = 30.0) -> QuorumProcess:
        # The suite runs as root in root-only pytest work dirs, so the harness lets Quorum keep root
        # (quorum.service.privileges); tests/integration/test_service_hardening.py checks the real
        # drop to `[milter] user` and the refusal without it.
        env = {"PYTHONUNBUFFERED": "1", "QUORUM_ALLOW_ROOT": "1"}
        self.service.spawn([*QUORUM, "run", "-c", str(self.config_path)], ready=self._ready, timeout=timeout, env=env)
        return self

    def stop(self) -> None:
        self.service.stop(timeout=20)
        if self._sockdir:
            shutil.rmtree(self._sockdir, ignore_errors=True)

    def reload(self, body: str | None = None, wait: bool = True) -> None:
        """Rewrite the config (optional) and send SIGHUP like an operator's `kill -HUP`."""
        if body is not None:
            self.write_config(body)
        marker = self.log_text().count("reload")
        self.service.signal(signal.SIGHUP)
        if wait:
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and self.log_text().count("reload") <= marker:
                time.sleep(0.05)
            time.sleep(0.1)

    def log_text(self) -> str:
        try:
            return self.service.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def message_lines(self) -> list[str]:
        return [line for line in self.log_text().splitlines() if "quorum.message" in line]

    def wait_for_log(self, pattern: str, timeout: float = 10.0) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        rx = re.compile(pattern)
        while time.monotonic() < deadline:
            m = rx.search(self.log_text())
            if m:
                return m
            time.sleep(0.05)
        raise TimeoutError(f"{pattern!r} not in quorum's log:\n{self.log_text()[-3000:]}")

    @property
    def pid(self) -> int | None:
        return self.service.proc.pid if self.service.proc else None

    def worker_pids(self) -> list[int]:
        pid = self.pid
        if pid is None:
            return []
        out = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    stat = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                if int(stat[1]) == pid:
                    out.append(int(entry))
        return out

    def __enter__(self) -> QuorumProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
