"""ClamAV over clamd's INSTREAM protocol, via the `clamd` package.

The package's socket handling is replaced by the pipeline's `ScanCall` (deadline-bound,
cancellable) and its INSTREAM loop by one with 64 KiB chunks and `sendall` (the package sends
1 KiB chunks with `send`, which can write short on a busy socket).
"""

from __future__ import annotations

import struct
from typing import Any

import clamd

from quorum.config.fields import Table
from quorum.engines.base import Engine, EngineError, ScanCall, validate_address
from quorum.message import Message
from quorum.verdict import Category, Status, Verdict

CHUNK = 64 * 1024


class _Client(clamd.ClamdNetworkSocket):  # type: ignore[misc]
    def __init__(self, address: str, call: ScanCall) -> None:
        super().__init__()
        self._address = address
        self._call = call

    def _init_socket(self) -> None:
        try:
            self.clamd_socket = self._call.connect(self._address)
        except OSError as exc:
            raise clamd.ConnectionError(f"cannot connect to {self._address}: {exc.strerror or exc}") from exc

    def scan_stream(self, message: Message) -> tuple[str, str | None]:
        self._init_socket()
        try:
            self._send_command("INSTREAM")
            try:
                for chunk in message.chunks(CHUNK):
                    self.clamd_socket.sendall(struct.pack("!L", len(chunk)) + chunk)
                self.clamd_socket.sendall(struct.pack("!L", 0))
            except BrokenPipeError:
                pass  # clamd stopped reading (size limit): its reply says why
            line = self._recv_response()
        finally:
            self._close_socket()
        if not line:
            raise EngineError("empty reply")
        if "size limit exceeded" in line:
            raise EngineError("clamd StreamMaxLength exceeded; raise it or lower this engine's max_size")
        _name, reason, status = self._parse_response(line)
        return status, reason

    def _recv_response(self) -> str:
        try:
            with self.clamd_socket.makefile("rb") as f:
                return str(f.readline(4096).decode("utf-8", "replace").strip())
        except OSError as exc:
            raise clamd.ConnectionError(f"read failed: {exc}") from exc


class ClamAV(Engine):
    type_name = "clamav"
    category = Category.ANTIVIRUS

    @classmethod
    def parse_options(cls, table: Table) -> dict[str, Any]:
        return {"address": validate_address(table, "address", "127.0.0.1:3310")}

    def scan(self, message: Message, call: ScanCall) -> Verdict:
        try:
            status, reason = _Client(self.options["address"], call).scan_stream(message)
        except clamd.ResponseError as exc:
            raise EngineError(f"clamd error: {str(exc).strip()[:200]}") from exc
        except clamd.ConnectionError as exc:
            raise EngineError(str(exc)[:200]) from exc
        if status == "FOUND":
            return self.verdict(Status.INFECTED, names=(reason or "unknown",))
        if status == "OK":
            return self.verdict(Status.CLEAN)
        raise EngineError(f"clamd: {reason or status}"[:200])

    def ping(self, timeout: float) -> None:
        import time

        call = ScanCall(time.monotonic() + timeout)
        client = _Client(self.options["address"], call)
        try:
            client._init_socket()
            client._send_command("PING")
            reply = client._recv_response()
        except (clamd.ConnectionError, OSError) as exc:
            raise EngineError(str(exc)) from exc
        finally:
            client._close_socket() if hasattr(client, "clamd_socket") else None
        if reply != "PONG":
            raise EngineError(f"unexpected PING reply {reply[:50]!r}")
