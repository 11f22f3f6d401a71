"""Engine I/O: the one place adapters open, write and read sockets.

A `Channel` is a stream socket (TCP `host:port`, `[v6]:port`, or a unix socket path) whose
every operation is bounded by what is left of the `ScanCall` budget: each blocking call gets
`call.remaining()` as its timeout, so the whole exchange — not each read — ends at the call's
deadline (a server dripping one byte per 100 ms still fails at the deadline). The socket is
registered with the call, so `call.cancel()` shuts it down and a blocked operation returns at
once. Every failure is an `EngineError` with a short reason (`timeout`, `cancelled`, `connection
reset`, `reply larger than N bytes`, ...); nothing else escapes.

`ChannelPool` keeps idle connections for protocols that can reuse them (clamd IDSESSION,
HTTP keep-alive); a pooled connection is rebound to the next call's budget before use.
"""

from __future__ import annotations

import array
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from quorum.engines.base import EngineError, ScanCall, split_host_port

CHUNK = 64 * 1024


class PeerClosed(EngineError):
    """The peer stopped reading (broken pipe / reset while sending); it may still have sent a reply."""


class Channel:
    """One socket under a `ScanCall` budget. `peer` names the engine in error messages."""

    def __init__(self, sock: socket.socket, address: str, call: ScanCall, peer: str) -> None:
        self.sock = sock
        self.address = address
        self.peer = peer
        self._call = call
        self._buffer = bytearray()
        self.created = time.monotonic()
        self.idle_since = self.created
        self.uses = 0
        self.closed = False
        self.state: dict[str, Any] = {}  # protocol state of a pooled connection (e.g. clamd's next request id)

    # --- lifecycle ----------------------------------------------------------------------------

    @classmethod
    def open(cls, address: str, call: ScanCall, peer: str = "engine", tls_hostname: str | None = None) -> Channel:
        """Connect to `address` within the call's budget; EngineError("cannot connect to ...") on failure.

        With `tls_hostname` the connection is TLS, the certificate checked against the system CAs.
        """
        _check(call)
        try:
            sock = _connect(address, call)
            if tls_hostname is not None:
                sock = _start_tls(sock, tls_hostname, call)
        except EngineError:
            raise
        except (OSError, ValueError, UnicodeError) as exc:
            raise EngineError(f"cannot connect to {address}: {_reason(exc, call)}") from exc
        return cls(sock, address, call, peer)

    def rebind(self, call: ScanCall) -> None:
        """Put a pooled connection under a new call's budget and cancellation."""
        self._call = call
        call.track(self.sock)

    def detach(self) -> bool:
        """Leave the current call (to go back to a pool); False if the call cancelled it meanwhile."""
        self.idle_since = time.monotonic()
        return not self.closed and self._call.untrack(self.sock) and not self._buffer

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._call.untrack(self.sock)
            try:
                self.sock.close()
            except OSError:
                pass

    def __enter__(self) -> Channel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- writing ------------------------------------------------------------------------------

    def send(self, data: bytes) -> None:
        """Write all of `data`; PeerClosed if the peer stopped reading, EngineError otherwise."""
        self._arm()
        try:
            self.sock.sendall(data)
        except OSError as exc:
            raise self._send_error(exc) from exc

    def send_fd(self, data: bytes, fd: int) -> None:
        """Write `data` (a few bytes) with the open file `fd` attached (SCM_RIGHTS, unix sockets only)."""
        self._arm()
        try:
            sent = self.sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))])
        except OSError as exc:
            raise self._send_error(exc) from exc
        if sent < len(data):
            self.send(data[sent:])  # the descriptor went with the first byte

    def send_all(self, chunks: Iterable[bytes]) -> None:
        for chunk in chunks:
            self.send(chunk)

    def shutdown_write(self) -> None:
        """Half-close: tell the peer the request is complete (it may wait for EOF)."""
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # already reset: the read that follows says what happened

    # --- reading ------------------------------------------------------------------------------

    def recv_some(self, limit: int = CHUNK) -> bytes:
        """What is buffered, or one read of at most `limit` bytes; b"" at EOF."""
        if self._buffer:
            data = bytes(self._buffer[:limit])
            del self._buffer[:limit]
            return data
        return self._recv(limit)

    def read_until(self, delimiter: bytes, max_size: int) -> bytes:
        """Bytes up to and including `delimiter` (the rest stays buffered); at most `max_size` bytes."""
        start = 0
        while True:
            end = self._buffer.find(delimiter, start)
            if end >= 0:
                end += len(delimiter)
                if end > max_size:
                    break
                data = bytes(self._buffer[:end])
                del self._buffer[:end]
                return data
            if len(self._buffer) > max_size:
                break
            start = max(0, len(self._buffer) - len(delimiter) + 1)
            chunk = self._recv(CHUNK)
            if not chunk:
                raise EngineError(self._eof_reason(bool(self._buffer)))
            self._buffer += chunk
        raise EngineError(f"{self.peer} reply larger than {max_size} bytes")

    def read_exactly(self, size: int) -> bytes:
        while len(self._buffer) < size:
            chunk = self._recv(CHUNK)
            if not chunk:
                raise EngineError(self._eof_reason(True))
            self._buffer += chunk
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    def read_to_eof(self, max_size: int) -> bytes:
        """Everything until the peer closes, at most `max_size` bytes (EngineError beyond)."""
        data = bytearray(self._buffer)
        self._buffer.clear()
        while len(data) <= max_size:
            chunk = self._recv(CHUNK)
            if not chunk:
                if self._call.cancelled:
                    raise EngineError("cancelled")  # cancel() shut the socket down: recv saw EOF
                return bytes(data)
            data += chunk
        raise EngineError(f"{self.peer} reply larger than {max_size} bytes")

    # --- internals ----------------------------------------------------------------------------

    def _recv(self, limit: int) -> bytes:
        self._arm()
        try:
            chunk = self.sock.recv(limit)
        except ConnectionResetError as exc:
            if self._call.cancelled:
                raise EngineError("cancelled") from exc
            raise EngineError(f"{self.peer} reset the connection") from exc
        except OSError as exc:
            raise self._error(exc) from exc
        if not chunk and self._call.cancelled:
            raise EngineError("cancelled")
        return chunk

    def _arm(self) -> None:
        if self.closed:
            raise EngineError(f"{self.peer} connection already closed")
        self.sock.settimeout(_check(self._call))

    def _send_error(self, exc: OSError) -> EngineError:
        if isinstance(exc, (BrokenPipeError, ConnectionResetError)):
            if self._call.cancelled:
                return EngineError("cancelled")
            return PeerClosed(f"{self.peer} closed the connection while we were sending")
        return self._error(exc)

    def _error(self, exc: OSError) -> EngineError:
        return EngineError(f"{self.peer} I/O: {_reason(exc, self._call)}")

    def _eof_reason(self, partial: bool) -> str:
        if partial:
            return f"{self.peer} closed the connection in the middle of a reply"
        return f"{self.peer} closed the connection without a reply"


class ChannelPool:
    """Idle connections to one address, reused LIFO; those idle longer than `idle_timeout` are closed.

    `on_close` runs (best effort) before a pooled connection is closed, e.g. to send clamd `zEND`.
    """

    def __init__(self, size: int, idle_timeout: float, on_close: Callable[[Channel], None] | None = None) -> None:
        self.size = size
        self.idle_timeout = idle_timeout
        self._on_close = on_close
        self._idle: list[Channel] = []
        self._lock = threading.Lock()
        self.reused = 0
        self.opened = 0

    def acquire(self, call: ScanCall) -> Channel | None:
        """An idle connection bound to `call`, or None (the caller opens a fresh one)."""
        now = time.monotonic()
        expired: list[Channel] = []
        conn: Channel | None = None
        with self._lock:
            while self._idle:
                candidate = self._idle.pop()
                if now - candidate.idle_since < self.idle_timeout:
                    conn = candidate
                    break
                expired.append(candidate)
            if conn is not None:
                self.reused += 1
        for old in expired:
            self._retire(old)
        if conn is not None:
            conn.rebind(call)
        return conn

    def release(self, conn: Channel) -> None:
        """Give a healthy connection back (it is closed instead if the pool is full or it was cancelled)."""
        conn.uses += 1
        if not conn.detach():
            conn.close()
            return
        with self._lock:
            if len(self._idle) < self.size:
                self._idle.append(conn)
                return
        self._retire(conn)

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            self._retire(conn)

    def _retire(self, conn: Channel) -> None:
        if self._on_close is not None:
            conn.rebind(ScanCall(time.monotonic() + 0.2))
            try:
                self._on_close(conn)
            except EngineError:
                pass
        conn.close()


def _check(call: ScanCall) -> float:
    """The call's remaining budget; EngineError once it is cancelled or spent."""
    if call.cancelled:
        raise EngineError("cancelled")
    remaining = call.remaining()
    if remaining <= 0:
        raise EngineError("timeout")
    return remaining


def _connect(address: str, call: ScanCall) -> socket.socket:
    if address.startswith("/"):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        _connect_one(sock, address, call)
        return sock
    host, port = split_host_port(address)
    error: OSError | None = None
    for family, kind, proto, _, sockaddr in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
        sock = socket.socket(family, kind, proto)
        try:
            _connect_one(sock, sockaddr, call)
        except OSError as exc:
            error = exc
            continue
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock
    raise error or OSError(f"no address for {host}")


def _start_tls(sock: socket.socket, hostname: str, call: ScanCall) -> socket.socket:
    call.untrack(sock)
    try:
        tls = _tls_context().wrap_socket(sock, server_hostname=hostname, do_handshake_on_connect=False)
    except BaseException:
        sock.close()
        raise
    try:
        tls.settimeout(_check(call))
        call.track(tls)
        tls.do_handshake()
    except BaseException:
        call.untrack(tls)
        tls.close()
        raise
    return tls


_TLS: ssl.SSLContext | None = None


def _tls_context() -> ssl.SSLContext:
    global _TLS
    if _TLS is None:
        _TLS = ssl.create_default_context()
    return _TLS


def _connect_one(sock: socket.socket, target: Any, call: ScanCall) -> None:
    try:
        sock.settimeout(_check(call))
        call.track(sock)
        sock.connect(target)
    except BaseException:
        call.untrack(sock)
        sock.close()
        raise


def _reason(exc: BaseException, call: ScanCall) -> str:
    if call.cancelled:
        return "cancelled"
    if isinstance(exc, TimeoutError) or call.remaining() <= 0:
        return "timeout"
    if isinstance(exc, OSError):
        return str(exc.strerror or exc)[:120]
    return str(exc)[:120]
