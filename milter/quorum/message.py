"""The message as Postfix handed it over: envelope, raw headers and a bounded body spool."""

from __future__ import annotations

import errno
import io
import ipaddress
import os
import re
import stat
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

_FIELD_NAME = re.compile(rb"^[!-9;-~]+[ \t]*$")  # RFC 5322 field name (printable, no colon); Postfix allows blanks


def text(raw: bytes) -> str:
    """Decode an envelope/header value that may not be UTF-8 without ever raising."""
    return raw.decode("utf-8", errors="surrogateescape")


_CONTROL_TO_QUESTION = {i: "?" for i in range(32)}


def printable(value: str) -> str:
    """A log-safe form of a value that may hold surrogate escapes or control characters."""
    if value.isascii() and value.isprintable():
        return value
    return value.encode("utf-8", "backslashreplace").decode("ascii", "backslashreplace").translate(_CONTROL_TO_QUESTION)


def client_address(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The client IP as an address (IPv4-mapped IPv6 unwrapped), or None for a non-address
    (Postfix may pass `[addr]`, `IPv6:addr` or `unknown`)."""
    try:
        addr = ipaddress.ip_address(value.strip("[]").removeprefix("IPv6:"))
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def in_networks(client_ip: str, networks: Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> bool:
    """Whether the client IP (as Postfix passes it) lies in one of `networks`."""
    addr = client_address(client_ip)
    if addr is None:
        return False
    return any(addr.version == net.version and addr in net for net in networks)


def domain_of(address: str) -> str:
    return address.rpartition("@")[2].lower().rstrip(".") if "@" in address else ""


@dataclass
class Envelope:
    """SMTP-level facts: one per transaction, built up by the milter callbacks."""

    client_ip: str = ""
    client_name: str = ""
    helo: str = ""
    sender: str = ""
    recipients: list[str] = field(default_factory=list)
    macros: dict[str, str] = field(default_factory=dict)

    @property
    def queue_id(self) -> str:
        return self.macros.get("i", "")

    @property
    def auth_user(self) -> str:
        return self.macros.get("{auth_authen}", "")

    @property
    def sender_domain(self) -> str:
        return domain_of(self.sender)


@dataclass(frozen=True)
class Header:
    """One header field exactly as received: `raw_value` keeps leading whitespace and CRLF folding."""

    name: str
    raw_value: bytes

    @property
    def value(self) -> str:
        """Unfolded value without the leading space, for matching and display."""
        return text(self.raw_value.replace(b"\r\n", b"").replace(b"\n", b"")).strip()

    def to_bytes(self) -> bytes:
        # A name is ASCII per RFC 5322, but an SMTP client can send 8-bit bytes through Postfix:
        # give them back as they came (surrogate escapes) or as UTF-8, never raise.
        return self.name.encode("utf-8", "surrogateescape") + b":" + self.raw_value + b"\r\n"


def crlf_value(value: bytes) -> bytes:
    """libmilter hands folded values with bare LF: restore the CRLF the message had on the wire."""
    return value.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


class SpoolClosed(OSError):
    """The body was released: a reader came after its transaction ended."""


class BodySpool:
    """Body bytes in memory up to `memory_limit`, then in a private temporary file without a name.

    The file is unlinked from the moment it exists (`O_TMPFILE`, or `mkstemp` and an immediate
    unlink where the file system lacks it): a worker that is killed mid-message (SIGKILL, OOM,
    power loss) leaves no mail content behind in the temp dir, and nothing else can open it.
    Readers are independent (each engine streams the body in its own thread, each reader at its
    own offset on a duplicate descriptor); `close()`, which every owner calls in a finally block,
    releases the space (once the last reader is closed too).
    """

    def __init__(self, memory_limit: int = 1 << 20, tmpdir: str | None = None) -> None:
        self.memory_limit = memory_limit
        self.tmpdir = tmpdir
        self._buffer = bytearray()
        self._file: BinaryIO | None = None
        self.size = 0
        self._lock = threading.Lock()
        self._closed = False

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self._file is None and len(self._buffer) + len(chunk) <= self.memory_limit:
            self._buffer += chunk
            return
        if self._file is None:
            self._file = os.fdopen(anonymous_file(self.tmpdir), "wb")
            self._file.write(self._buffer)
            self._buffer = bytearray()
        self._file.write(chunk)

    @property
    def on_disk(self) -> bool:
        return self._file is not None

    def reader(self) -> BinaryIO:
        """A fresh reader. After `close()` (an engine call that outlived its transaction) this
        raises `SpoolClosed`, an OSError every engine path already turns into an error verdict."""
        with self._lock:
            if self._closed:
                raise SpoolClosed("message body already released (its transaction ended)")
            if self._file is not None:
                self._file.flush()
                # its own descriptor: the data stays readable even once the spool is closed
                return io.BufferedReader(_PositionalReader(self._file.fileno()), 65536)
            return io.BytesIO(bytes(self._buffer))

    def close(self) -> None:
        with self._lock:
            self._closed = True
            file, self._file = self._file, None
            self._buffer = bytearray()
        if file is not None:
            file.close()


SPOOL_PREFIX = "quorum-body-"  # name of the short-lived fallback file (and of older releases' spool files)
_NO_TMPFILE = frozenset(
    {errno.EOPNOTSUPP, errno.ENOTSUP, errno.EISDIR, errno.EINVAL, errno.ENOSYS}
)  # the kernel or file system cannot make an unnamed file: make a named one and unlink it


def sweep_stale_spools(directory: str | None = None, older_than: float = 3600.0) -> int:
    """Remove `quorum-body-*` files of this user older than `older_than` seconds from the spool
    directory: left by releases that spooled bodies to named files, or by a kill in the instant
    between mkstemp and unlink of the fallback. Returns how many were removed; never raises."""
    where = directory or tempfile.gettempdir()
    removed = 0
    cutoff = time.time() - older_than
    try:
        entries = list(os.scandir(where))
    except OSError:
        return 0
    for entry in entries:
        if not entry.name.startswith(SPOOL_PREFIX):
            continue
        try:
            st = entry.stat(follow_symlinks=False)
            if stat.S_ISREG(st.st_mode) and st.st_uid == os.geteuid() and st.st_mtime < cutoff:
                os.unlink(entry.path)
                removed += 1
        except OSError:
            continue
    return removed


def anonymous_file(directory: str | None = None) -> int:
    """A read-write descriptor (mode 0600, close-on-exec) on a new file in `directory` (default: the
    system temp dir, i.e. $TMPDIR) that has no name in any directory.

    Linux `O_TMPFILE | O_EXCL`: the file never has a name and can never be linked into the file
    system. Elsewhere (or on a file system without it) `mkstemp` and an immediate unlink: the name
    exists for the few microseconds between the two calls only. OSError (no such directory, disk
    full, no permission) is the caller's to report.
    """
    where = directory or tempfile.gettempdir()
    flag = getattr(os, "O_TMPFILE", 0)
    if flag:
        try:
            return os.open(where, flag | os.O_EXCL | os.O_RDWR | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            if exc.errno not in _NO_TMPFILE:
                raise
    fd, name = tempfile.mkstemp(prefix=SPOOL_PREFIX, dir=where)
    try:
        os.unlink(name)
    except BaseException:
        os.close(fd)
        raise
    return fd


class _PositionalReader(io.RawIOBase):
    """Reads a file from its start through a duplicate of `fd` with `pread`: its own offset, shared
    with no other reader or the writer, and its own lifetime (closing the spool does not end it)."""

    def __init__(self, fd: int) -> None:
        self._fd = -1
        self._fd = os.dup(fd)
        self._pos = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buf: bytearray | memoryview) -> int:  # type: ignore[override]
        data = os.pread(self._fd, len(buf), self._pos)
        n = len(data)
        buf[:n] = data
        self._pos += n
        return n

    def close(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)
        super().close()


class _ChainReader(io.RawIOBase):
    """Header bytes followed by the body, as one read-only stream."""

    def __init__(self, head: bytes, body: BinaryIO) -> None:
        self._head = memoryview(head)
        self._pos = 0
        self._body = body

    def readable(self) -> bool:
        return True

    def readinto(self, buf: bytearray | memoryview) -> int:  # type: ignore[override]
        if self._pos < len(self._head):
            n = min(len(buf), len(self._head) - self._pos)
            buf[:n] = self._head[self._pos : self._pos + n]
            self._pos += n
            return n
        data = self._body.read(len(buf))
        buf[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self._body.close()
        super().close()


@dataclass
class Message:
    """Everything Quorum knows about one message at end-of-data."""

    envelope: Envelope
    headers: list[Header]
    body: BodySpool
    truncated: bool = False  # the body was not spooled past max_message_size
    _head: bytes | None = field(default=None, repr=False, compare=False)

    def header_bytes(self) -> bytes:
        """The header block as received (computed once: the headers are complete at end-of-data)."""
        if self._head is None:
            self._head = b"".join(h.to_bytes() for h in self.headers) + b"\r\n"
        return self._head

    @property
    def size(self) -> int:
        return len(self.header_bytes()) + self.body.size

    def open(self) -> BinaryIO:
        """A fresh reader over the raw message (headers as received, CRLF, then the body)."""
        return io.BufferedReader(_ChainReader(self.header_bytes(), self.body.reader()), 65536)

    def raw(self) -> bytes:
        with self.open() as f:
            return f.read()

    def chunks(self, size: int = 65536) -> Iterator[bytes]:
        with self.open() as f:
            while chunk := f.read(size):
                yield chunk

    def get_headers(self, name: str) -> list[Header]:
        lname = name.lower()
        return [h for h in self.headers if h.name.lower() == lname]

    def close(self) -> None:
        self.body.close()

    @classmethod
    def from_bytes(cls, raw: bytes, envelope: Envelope | None = None, memory_limit: int = 1 << 20) -> Message:
        """Parse a message file (LF or CRLF line ends) the way Postfix would hand it to a milter."""
        data = raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        head, sep, body = data.partition(b"\r\n\r\n")
        if not sep:
            head, body = (data, b"") if b":" in data.split(b"\r\n", 1)[0] else (b"", data)
        headers: list[Header] = []
        lines = head.split(b"\r\n") if head else []
        if lines and lines[0].startswith(b"From "):  # an mbox separator line, as in saved .eml files
            lines = lines[1:]
        for i, line in enumerate(lines):
            if line[:1] in (b" ", b"\t") and headers:
                last = headers[-1]
                headers[-1] = Header(last.name, last.raw_value + b"\r\n" + line)
                continue
            name, colon, value = line.partition(b":")
            if not colon or not _FIELD_NAME.match(name):
                # Like Postfix: the first line that is not a header field starts the body.
                body = b"\r\n".join(lines[i:]) + sep + body
                break
            headers.append(Header(text(name.rstrip(b" \t")), value))
        spool = BodySpool(memory_limit)
        spool.write(body)
        return cls(envelope or Envelope(), headers, spool)
