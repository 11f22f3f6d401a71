"""A misbehaving engine on 127.0.0.1 for fault-injection tests.

Modes (one per server):
  hang          accept, read forever, never answer
  reset         accept, then reset the connection (RST via SO_LINGER 0)
  garbage       read the request, answer random bytes, close
  oversize      read the request, send `prefix` then an endless stream (bounded by `oversize_limit`)
  http_garbage  read the request, answer HTTP 200 with a body that is not JSON
  http_hang     read the request, send HTTP 200 headers announcing a body that never comes
  slow          read the request, wait `delay` seconds, send `reply` (a canned answer), close
  reply         like slow with no delay: a scriptable engine for protocol tests
  drip          read the request, send `reply` one byte every `delay` seconds (default 0.1)
  reset_mid     read the request, send the first half of `reply`, then reset the connection
  keepalive     answer every request on a connection with `reply` until the client closes (HTTP
                keep-alive, clamd IDSESSION: `reply` may hold `{id}`, replaced by the request number)

"Request" means: a head ending in a blank line plus `Content-Length` bytes (HTTP and spamd frame
their requests the same way); a clamd `z` command up to its NUL (INSTREAM: up to the zero-length
chunk; `zIDSESSION` is skipped, `zEND` ends the connection); or whatever arrived until the client
half-closed.
Every thread stops within a second of `stop()`; connections, requests and request heads are counted.
"""

from __future__ import annotations

import random
import socket
import struct
import threading
import time
from typing import Any

MODES = (
    "hang",
    "reset",
    "garbage",
    "oversize",
    "http_garbage",
    "http_hang",
    "slow",
    "reply",
    "drip",
    "reset_mid",
    "keepalive",
)
POLL = 0.1


class FakeEngine:
    def __init__(
        self,
        mode: str,
        *,
        delay: float = 0.0,
        reply: bytes = b"",
        prefix: bytes = b"",
        oversize_limit: int = 64 << 20,
        seed: int = 1,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}")
        self.mode = mode
        self.delay = delay
        self.reply = reply
        self.prefix = prefix
        self.oversize_limit = oversize_limit
        self._random = random.Random(seed)
        self.connections = 0
        self.requests = 0
        self.heads: list[bytes] = []  # the last 100 request heads, for header assertions
        self.bodies: list[bytes] = []  # the last 10 request bodies (first 1 MiB each)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self._listener.settimeout(POLL)
        self.port: int = self._listener.getsockname()[1]
        self._accept_thread = threading.Thread(target=self._accept_loop, name=f"fake-{mode}", daemon=True)
        self._accept_thread.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> FakeEngine:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._accept_thread.join(5)
        self._listener.close()
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for t in list(self._threads):
            t.join(5)

    # --- server side ------------------------------------------------------------------------

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self.connections += 1
                self._conns.add(conn)
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self._threads = [x for x in self._threads if x.is_alive()] + [t]
            t.start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(POLL)
            if self.mode == "reset":
                _reset(conn)
                return
            if self.mode == "hang":
                self._drain(conn)
                return
            buffer = bytearray()
            if self.mode == "keepalive":
                number = 0
                while self._read_request(conn, buffer):
                    number += 1
                    conn.sendall(self.reply.replace(b"{id}", str(number).encode()))
                return
            if not self._read_request(conn, buffer):
                return
            getattr(self, f"_answer_{self.mode}")(conn)
        except OSError:
            pass
        finally:
            with self._lock:
                self._conns.discard(conn)
            conn.close()

    def _recv(self, conn: socket.socket) -> bytes | None:
        """One recv that gives up on stop(); None on a quiet poll, b"" at EOF."""
        try:
            return conn.recv(65536)
        except TimeoutError:
            return None

    def _drain(self, conn: socket.socket) -> None:
        while not self._stop.is_set():
            if self._recv(conn) == b"":
                # the client half-closed: keep the connection open and silent until stop()
                self._stop.wait()

    def _read_request(self, conn: socket.socket, data: bytearray) -> bool:
        """Read one request into `data` (left-over bytes stay there for the next one)."""
        deadline = time.monotonic() + 30
        while not self._stop.is_set() and time.monotonic() < deadline:
            framed = _framed_length(bytes(data))
            if framed is not None and len(data) >= framed:
                request = bytes(data[:framed])
                del data[:framed]
                if request == b"zIDSESSION\0":
                    continue
                if request == b"zEND\0":
                    return False
                self._record(request)
                return True
            chunk = self._recv(conn)
            if chunk == b"":
                break
            if chunk:
                data += chunk
        if not data:
            return False
        self._record(bytes(data))  # whatever arrived until the client half-closed
        data.clear()
        return True

    def _record(self, request: bytes) -> None:
        if request.startswith(b"z"):
            command, _, rest = request.partition(b"\0")
            head, body = command, _instream_payload(rest)
        else:
            head, _, body = request.partition(b"\r\n\r\n")
        with self._lock:
            self.requests += 1
            self.heads = [*self.heads[-99:], head]
            self.bodies = [*self.bodies[-9:], body[: 1 << 20]]

    def _sleep(self, seconds: float) -> bool:
        return not self._stop.wait(seconds)

    def _answer_garbage(self, conn: socket.socket) -> None:
        conn.sendall(self._random.randbytes(4096))

    def _answer_oversize(self, conn: socket.socket) -> None:
        conn.settimeout(2)
        conn.sendall(self.prefix)
        block = b"A" * 65536
        sent = 0
        while not self._stop.is_set() and sent < self.oversize_limit:
            conn.sendall(block)
            sent += len(block)

    def _answer_http_garbage(self, conn: socket.socket) -> None:
        body = b"{not json at all" + self._random.randbytes(64).hex().encode()
        conn.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )

    def _answer_http_hang(self, conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{")
        self._stop.wait()

    def _answer_slow(self, conn: socket.socket) -> None:
        if self._sleep(self.delay):
            conn.sendall(self.reply)

    def _answer_reply(self, conn: socket.socket) -> None:
        conn.sendall(self.reply)

    def _answer_drip(self, conn: socket.socket) -> None:
        step = self.delay or 0.1
        for i in range(len(self.reply)):
            if not self._sleep(step):
                return
            conn.sendall(self.reply[i : i + 1])

    def _answer_reset_mid(self, conn: socket.socket) -> None:
        conn.sendall(self.reply[: max(1, len(self.reply) // 2)])
        self._sleep(0.05)
        _reset(conn)


def _reset(conn: socket.socket) -> None:
    """Make the coming close() send RST instead of FIN."""
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def _framed_length(data: bytes) -> int | None:
    """Length of the first complete request in `data`, None while it is incomplete."""
    if data.startswith(b"z"):
        end = data.find(b"\0")
        if end < 0:
            return None
        if data[:end] != b"zINSTREAM":
            return end + 1
        pos = end + 1
        while len(data) >= pos + 4:
            (size,) = struct.unpack("!L", data[pos : pos + 4])
            pos += 4
            if size == 0:
                return pos
            pos += size
        return None
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return None
    return end + 4 + _content_length(data[:end])


def _instream_payload(rest: bytes) -> bytes:
    out = bytearray()
    pos = 0
    while len(rest) >= pos + 4:
        (size,) = struct.unpack("!L", rest[pos : pos + 4])
        if size == 0:
            break
        out += rest[pos + 4 : pos + 4 + size]
        pos += 4 + size
    return bytes(out)


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length" and value.strip().isdigit():
            return int(value.strip())
    return 0


def http_reply(body: bytes, status: str = "200 OK", content_type: str = "application/json") -> bytes:
    """A complete HTTP/1.1 response for mode `reply`/`slow`."""
    return (
        f"HTTP/1.1 {status}\r\nConnection: close\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
