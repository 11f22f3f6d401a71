"""The common engine interface: connect, send, parse, return a `Verdict`."""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from typing import Any, ClassVar

from quorum.config.model import EngineSettings, EngineTable
from quorum.message import Message
from quorum.verdict import Category, Status, Verdict


class EngineError(Exception):
    """The engine could not give an answer (connection, protocol, garbage). Message is short."""


class ScanCall:
    """One scan request's budget and cancellation.

    `remaining()` is what is left of min(engine timeout, pipeline deadline). Sockets opened by
    `quorum.engines.transport` are registered here and shut down when the pipeline cancels the
    call (early exit or deadline), so a hung engine never holds a worker past the deadline.
    """

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self._cancelled = threading.Event()
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()

    def remaining(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def cancel(self) -> None:
        self._cancelled.set()
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for s in sockets:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def track(self, sock: socket.socket) -> socket.socket:
        """Register a socket so `cancel()` shuts it down (at once if the call is already cancelled)."""
        with self._lock:
            self._sockets.append(sock)
        if self.cancelled:
            self.cancel()
        return sock

    def untrack(self, sock: socket.socket) -> bool:
        """Hand a pooled socket back: False when `cancel()` got to it first (it is shut down)."""
        with self._lock:
            if sock in self._sockets:
                self._sockets.remove(sock)
                return True
        return False


def split_host_port(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"{address!r} is not host:port")
    return host.strip("[]"), int(port)


def literal_address(address: str) -> bool:
    """A unix socket path or an IP literal with a port: connecting needs no name lookup."""
    if address.startswith("/"):
        return True
    try:
        ipaddress.ip_address(split_host_port(address)[0])
    except ValueError:
        return False
    return True


def check_address(value: str) -> str:
    """An engine address: host:port or an absolute unix socket path (a pydantic field validator)."""
    if not value.startswith("/"):
        try:
            split_host_port(value)
        except ValueError:
            raise ValueError(f'{value!r} is neither "host:port" nor a unix socket path like "/run/x.sock"') from None
    return value


class Engine:
    """Subclass per engine type. Adapters implement `scan` and `ping`; the pipeline does timing,
    size limits, the circuit breaker, concurrency limits and turns exceptions into `error`."""

    type_name: ClassVar[str] = ""
    category: ClassVar[Category] = Category.ANTIVIRUS
    # What an answered scan costs until measured (seconds): the cascade orders engines by it.
    prior_cost: ClassVar[float] = 0.05
    # The adapter's own keys: a model of the whole `[engines.NAME]` table (EngineTable's keys and
    # the adapter's); they reach the adapter as `self.options`.
    Options: ClassVar[type[EngineTable]] = EngineTable
    # True when `scan` returns by the call's deadline whatever the engine does: all its I/O on the
    # shared transport under the ScanCall, to an address that needs no name lookup (getaddrinfo
    # is not bounded by the call). Only then may a scan run in the caller's thread.
    bounded_by_call: bool = False

    def __init__(self, settings: EngineSettings) -> None:
        self.settings = settings
        self.name = settings.name
        self.options = settings.options

    def scan(self, message: Message, call: ScanCall) -> Verdict:
        raise NotImplementedError

    def ping(self, timeout: float) -> None:
        """Raise EngineError unless the engine answers its health probe."""
        raise NotImplementedError

    def version(self, call: ScanCall) -> str | None:
        """The engine's signature/rules version (keys cached verdicts); None when the engine has none."""
        return None

    def close(self) -> None:
        """Release pooled connections."""

    def verdict(self, status: Status, **kw: Any) -> Verdict:
        return Verdict(self.name, self.category, status, **kw)
