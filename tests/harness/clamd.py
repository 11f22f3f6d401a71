"""clamd on loopback with only Quorum's local signatures (engines/clamav/signatures)."""

from __future__ import annotations

import itertools
import re
import shutil
import signal
import socket
import struct
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

from .dns import stop_service
from .ports import free_port
from .procs import Service

ENGINE_DIR = Path(__file__).resolve().parents[2] / "engines" / "clamav"
_HEX = re.compile(r"^(?:[0-9a-fA-F]{2})+$")
_SUN_PATH_MAX = 107


class Clamd:
    """clamd with TCP on 127.0.0.1:port and a unix socket; `extra_ndb` maps signature name -> hex body."""

    def __init__(self, workdir: Path, extra_ndb: Mapping[str, str] | None = None) -> None:
        self.workdir = Path(workdir)
        self.extra_ndb = dict(extra_ndb or {})
        self.port = free_port()
        self.dbdir = self.workdir / "db"
        self.service = Service("clamd", self.workdir)
        self._added = itertools.count(1)
        self._sockdir: str | None = None
        sock = self.workdir / "run" / "clamd.sock"
        if len(str(sock)) > _SUN_PATH_MAX:  # deep pytest tmp_path: fall back to a short directory
            self._sockdir = tempfile.mkdtemp(prefix="qclamd-")
            sock = Path(self._sockdir) / "clamd.sock"
        self.socket_path = sock

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _write_config(self) -> Path:
        for sub in ("run", "tmp"):
            (self.workdir / sub).mkdir(parents=True, exist_ok=True)
        self.dbdir.mkdir(parents=True, exist_ok=True)
        self.socket_path.parent.mkdir(parents=True, exist_ok=True)
        for sig in (ENGINE_DIR / "signatures").iterdir():
            shutil.copy(sig, self.dbdir / sig.name)
        if self.extra_ndb:
            (self.dbdir / "quorum-extra.ndb").write_text(
                "".join(f"{name}:0:*:{hexsig}\n" for name, hexsig in self.extra_ndb.items())
            )
        values = {
            "@BIND@": "127.0.0.1",
            "@PORT@": str(self.port),
            "@SOCKET@": str(self.socket_path),
            "@DBDIR@": str(self.dbdir),
            "@RUNDIR@": str(self.workdir / "run"),
            "@TMPDIR@": str(self.workdir / "tmp"),
        }
        text = (ENGINE_DIR / "clamd.conf").read_text()
        for key, value in values.items():
            text = text.replace(key, value)
        conf = self.workdir / "clamd.conf"
        conf.write_text(text)
        return conf

    def start(self) -> Clamd:
        conf = self._write_config()
        self.service.spawn(["clamd", "-c", str(conf)], ready=lambda: self.command("PING") == "PONG", timeout=60)
        return self

    def stop(self) -> None:
        stop_service(self.service)
        if self._sockdir:
            shutil.rmtree(self._sockdir, ignore_errors=True)

    def kill(self) -> None:
        """SIGKILL clamd (fault tests); `start()` may be called again afterwards."""
        self.service.signal(signal.SIGKILL)
        stop_service(self.service)

    # --- protocol (null-terminated "z" commands) ---

    def _connect(self, timeout: float) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=timeout)

    @staticmethod
    def _read_reply(sock: socket.socket) -> str:
        data = b""
        while not data.endswith(b"\0"):
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
        return data.rstrip(b"\0").decode()

    def command(self, cmd: str, timeout: float = 5.0) -> str:
        """Send a simple command (PING, VERSION, RELOAD, STATS) and return the reply."""
        with self._connect(timeout) as sock:
            sock.sendall(b"z" + cmd.encode() + b"\0")
            return self._read_reply(sock)

    def instream(self, data: bytes, timeout: float = 30.0) -> str:
        """Raw INSTREAM reply, e.g. `stream: Eicar-Test-Signature.UNOFFICIAL FOUND` or `stream: OK`."""
        with self._connect(timeout) as sock:
            sock.sendall(b"zINSTREAM\0")
            for i in range(0, len(data), 65536):
                chunk = data[i : i + 65536]
                sock.sendall(struct.pack("!L", len(chunk)) + chunk)
            sock.sendall(struct.pack("!L", 0))
            return self._read_reply(sock)

    def scan(self, data: bytes) -> str | None:
        """Signature name found in `data` (with clamd's `.UNOFFICIAL` suffix), or None when clean."""
        reply = self.instream(data)
        if reply.endswith(" FOUND"):
            return reply.removeprefix("stream: ").removesuffix(" FOUND")
        if reply != "stream: OK":
            raise RuntimeError(f"clamd: {reply}")
        return None

    def reload(self, timeout: float = 30.0) -> None:
        """RELOAD the database and wait until clamd has activated it."""
        marker = "Activating the newly loaded database"
        before = self.service.log_path.read_text(errors="replace").count(marker)
        if self.command("RELOAD") != "RELOADING":
            raise RuntimeError("clamd did not accept RELOAD")
        deadline = time.monotonic() + timeout
        while self.service.log_path.read_text(errors="replace").count(marker) <= before:
            if time.monotonic() > deadline:
                raise TimeoutError(f"clamd reload not done after {timeout:.0f}s:\n{self.service.log_tail()}")
            time.sleep(0.05)

    def add_signature(self, name: str, hex_pattern: str) -> None:
        """Add an `.ndb` body signature `name:0:*:hex_pattern` and reload clamd (if running)."""
        path = self.dbdir / f"quorum-added-{next(self._added)}.ndb"
        path.write_text(f"{name}:0:*:{hex_pattern}\n")
        if not self.service.running:
            return
        self.reload()
        if _HEX.match(hex_pattern):  # belt and braces: the new engine must detect the plain pattern
            deadline = time.monotonic() + 10
            while not (self.scan(bytes.fromhex(hex_pattern)) or "").startswith(name):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"clamd does not detect {name} after reload")
                time.sleep(0.05)

    def __enter__(self) -> Clamd:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
