"""ClamAV over clamd's own protocol: `zFILDES`/`zINSTREAM`, `zPING`, `zVERSION`, on the shared transport.

INSTREAM framing: `zINSTREAM\\0`, then chunks of at most 64 KiB each behind a 4-byte big-endian
length, then a zero length; clamd answers one NUL-terminated line: `stream: OK`,
`stream: NAME FOUND`, `... ERROR` (e.g. `INSTREAM size limit exceeded. ERROR`).

FILDES (`fdpass`, on by default, unix sockets only, as `clamdscan --fdpass`): the message is written
to an anonymous memory file (memfd) and its descriptor passed with `zFILDES\\0` (SCM_RIGHTS); clamd
scans it in place instead of copying the stream into a temporary file first (bench/clamd_fdpass.py:
clamd CPU per 5 KB message 0.73 -> 0.18 ms). Replies read `fd[N]: OK`. Messages above FDPASS_MAX
use INSTREAM (the memfd is RAM). Before the first message goes that way clamd must prove it reads
our descriptors (EICAR's test string passed as one comes back FOUND): a clamd that cannot (e.g.
Debian's AppArmor profile for clamd limits the paths it may read) must never get a chance to
answer OK for a message it did not see. A failed proof, or a FILDES exchange that ends in ERROR
(retried as INSTREAM), makes the engine stream from then on.

Limits: a clamd that stops at one of its limits (MaxRecursion, MaxScanSize, MaxFiles, MaxFileSize,
MaxScanTime...) answers `OK` for content it did not look at, unless it runs with `AlertExceedsMax yes`
(engines/clamav/clamd.conf); it then names the limit, `stream: Heuristics.Limits.Exceeded.MaxRecursion
FOUND`. Such an answer is no virus and no "clean" either: it is an INFECTED verdict (a definitive,
refusing answer, never an engine failure that would trip the breaker or pass as "unchecked")
labelled `infected(limits-exceeded)` with the limit in `extra["limit"]`; the policy refuses it like
a virus, saying the message could not be scanned completely.

With `reuse = true` scans run on a small pool of `zIDSESSION` connections (replies are prefixed by
the request id, `zEND` closes the session); any failure on a reused connection falls back to a
fresh one within the same budget. Off by default: see bench/clamd_reuse.py for the measurement.
"""

from __future__ import annotations

import base64
import logging
import os
import re
import struct
import threading
import time
from collections.abc import Callable, Iterator
from typing import Annotated, Any

from pydantic import AfterValidator

from quorum.config.model import EngineSettings, EngineTable
from quorum.engines.base import Engine, EngineError, ScanCall, check_address, literal_address
from quorum.engines.transport import Channel, ChannelPool, PeerClosed
from quorum.message import Message
from quorum.verdict import LIMITS_EXCEEDED, Category, Status, Verdict

log = logging.getLogger(__name__)

CHUNK = 64 * 1024
FDPASS_MAX = 4 * 1024 * 1024  # larger messages are streamed: a memfd of that size would be RAM
PROOF_BUDGET = 2.0  # seconds the FILDES proof may take
PROOF_ATTEMPTS = 3  # proofs without any answer before the engine streams for good (until reload)
MAX_REPLY = 4096  # one reply line; a virus name is < 200 bytes
VERSION_TTL = 30.0  # how long a `VERSION` answer is reused (signature updates are hourly at best)
SESSION_IDLE = 10.0  # pooled IDSESSION connections are dropped well before clamd's IdleTimeout (30 s)
_TERMINATOR = struct.pack("!L", 0)
# EICAR's test string (the FILDES proof), encoded so that a scanner does not report this file
_EICAR_B64 = "WDVPIVAlQEFQWzRcUFpYNTQoUF4pN0NDKTd9JEVJQ0FSLVNUQU5EQVJELUFOVElWSVJVUy1URVNULUZJTEUhJEgrSCo="
_Sender = Callable[[Channel, bytes], None]  # writes one command (and its payload) on a connection
LIMITS_PREFIX = "Heuristics.Limits.Exceeded"  # what clamd (AlertExceedsMax) names a limit it stopped at


class ClamAV(Engine):
    type_name = "clamav"
    category = Category.ANTIVIRUS
    prior_cost = 0.002

    class Options(EngineTable):
        address: Annotated[str, AfterValidator(check_address)] = "127.0.0.1:3310"
        reuse: bool = False
        fdpass: bool = True

    def __init__(self, settings: EngineSettings) -> None:
        super().__init__(settings)
        self.address: str = self.options["address"]
        self.bounded_by_call = literal_address(self.address)
        self._pool: ChannelPool | None = None
        if self.options.get("reuse"):
            self._pool = ChannelPool(max(1, settings.concurrency), SESSION_IDLE, on_close=_end_session)
        self._version: tuple[float, str] | None = None
        self._version_lock = threading.Lock()
        # descriptors only pass over a unix socket, to a clamd on this machine
        self.fdpass = (
            bool(self.options.get("fdpass", True)) and self.address.startswith("/") and hasattr(os, "memfd_create")
        )
        self._proven = False
        self._proof_failures = 0
        self._proof_lock = threading.Lock()

    # --- Engine interface ---------------------------------------------------------------------

    def scan(self, message: Message, call: ScanCall) -> Verdict:
        line = ""
        if self.fdpass and message.size <= FDPASS_MAX and self._fdpass_proven(call):
            line = self._scan_fd(message.chunks(CHUNK), call)
        if not line:
            line = self._command(call, lambda conn, cmd: _send_stream(conn, cmd, message), b"INSTREAM")
        status, name = parse_scan_reply(line)
        if status is Status.INFECTED:
            return self.verdict(Status.INFECTED, names=(name,))
        return self.verdict(Status.CLEAN)

    def verdict(self, status: Status, **kw: Any) -> Verdict:
        """A verdict of this engine; an INFECTED one that names a clamd limit (also one rebuilt from
        the verdict cache) carries detail `limits-exceeded` and the limit in `extra["limit"]`."""
        names = kw.get("names") or ()
        limit = limit_exceeded(names[0]) if status is Status.INFECTED and names else None
        if limit is not None:
            kw.setdefault("detail", LIMITS_EXCEEDED)
            kw["extra"] = {**kw.get("extra", {}), "limit": limit}
        return super().verdict(status, **kw)

    def _fdpass_proven(self, call: ScanCall) -> bool:
        """Whether clamd has shown that it reads our descriptors: once per engine, EICAR's test string
        passed as a descriptor must come back FOUND. A clamd that cannot read it (a confining profile,
        another mount namespace) must never answer "OK" for a message it did not see; until the proof
        is in, and while another scan is making it, messages are streamed. The proof has its own short
        budget, so a clamd that stalls on it costs the message in hand nothing but that."""
        if self._proven:
            return True
        if not self._proof_lock.acquire(blocking=False):
            return False
        try:
            if not self._proven and self.fdpass:
                self._prove(ScanCall(min(call.deadline, time.monotonic() + PROOF_BUDGET)))
        finally:
            self._proof_lock.release()
        return self._proven

    def _prove(self, call: ScanCall) -> None:
        try:
            line = self._scan_fd(iter((base64.b64decode(_EICAR_B64),)), call)
        except EngineError as exc:  # no answer (timeout, refused): try again on a later scan, a few times
            self._proof_failures += 1
            log.debug("%s: FILDES proof not made: %s", self.name, exc)
            if self._proof_failures >= PROOF_ATTEMPTS:
                self._fall_back(f"no answer to {PROOF_ATTEMPTS} attempts ({exc})")
            return
        if not line:
            return  # _scan_fd fell back already
        try:
            found = parse_scan_reply(line)[0] is Status.INFECTED
        except EngineError:  # e.g. UNKNOWN COMMAND: a clamd without descriptor passing
            found = False
        if found:
            self._proven = True
            log.info("%s: clamd scans passed descriptors (FILDES)", self.name)
        else:
            self._fall_back(
                f"the EICAR test string passed as a descriptor came back {line[:80]!r}: clamd cannot"
                " read it, or its database does not detect EICAR"
            )

    def _scan_fd(self, chunks: Iterator[bytes], call: ScanCall) -> str:
        """A FILDES reply, or "" when the message should be streamed instead (clamd refused the
        descriptor, no memfd here, or this message could not be copied into one)."""
        try:
            fd = os.memfd_create("quorum-scan", os.MFD_CLOEXEC)
        except OSError as exc:
            self._fall_back(f"no memfd: {exc.strerror or exc}")
            return ""
        try:
            try:
                _fill(fd, chunks)
            except OSError as exc:  # e.g. no memory for this one: stream it, keep passing the next ones
                log.debug("%s: message not copied into a memfd (%s): streamed", self.name, exc)
                return ""
            line = self._command(call, lambda conn, cmd: _send_fd(conn, cmd, fd), b"FILDES")
        finally:
            os.close(fd)
        if line.endswith("ERROR") and not call.cancelled and call.remaining() > 0:
            self._fall_back(line[:120])
            return ""
        return line

    def _fall_back(self, reason: str) -> None:
        """Stream from now on (until a reload builds the engine again): a clamd that cannot read a
        passed descriptor would otherwise cost two exchanges per scan."""
        self.fdpass = False
        log.warning(
            "%s: clamd could not scan a passed descriptor (%s); streaming messages (INSTREAM) until the next reload",
            self.name,
            reason,
        )

    def ping(self, timeout: float) -> None:
        reply = self._fresh(ScanCall(time.monotonic() + timeout), lambda conn, cmd: conn.send(cmd), b"PING")
        if reply != "PONG":
            raise EngineError(f"unexpected PING reply {reply[:50]!r}")

    def version(self, call: ScanCall) -> str:
        """clamd's `VERSION` (`ClamAV 1.0.7/27000/Mon Jan  6 09:30:00 2025`), reused for VERSION_TTL seconds.

        The engine and signature versions key cached verdicts: a new signature database changes it.
        """
        now = time.monotonic()
        cached = self._version
        if cached is not None and now - cached[0] < VERSION_TTL:
            return cached[1]
        with self._version_lock:  # one VERSION request at a time, whoever waits reuses it
            cached = self._version
            if cached is not None and time.monotonic() - cached[0] < VERSION_TTL:
                return cached[1]
            reply = self._command(call, lambda conn, cmd: conn.send(cmd), b"VERSION")
            if not reply.startswith("ClamAV ") or reply.endswith("ERROR"):
                raise EngineError(f"unexpected VERSION reply {reply[:80]!r}")
            self._version = (time.monotonic(), reply)
            return reply

    def forget_version(self) -> None:
        """Drop the cached VERSION (after a known database reload)."""
        self._version = None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()

    # --- exchanges ----------------------------------------------------------------------------

    def _command(self, call: ScanCall, send: _Sender, name: bytes) -> str:
        if self._pool is None:
            return self._fresh(call, send, name)
        conn = self._pool.acquire(call)
        if conn is not None:
            try:
                return self._in_session(conn, send, name)
            except EngineError:
                conn.close()
                if call.cancelled or call.remaining() <= 0:
                    raise
                # a session clamd closed (IdleTimeout, restart) or broke: retry on a fresh one
        conn = Channel.open(self.address, call, "clamd")
        try:
            conn.send(b"zIDSESSION\0")
        except EngineError:
            conn.close()
            raise
        conn.state["next_id"] = 1
        return self._in_session(conn, send, name)

    def _in_session(self, conn: Channel, send: _Sender, name: bytes) -> str:
        """One command on an IDSESSION connection; the connection goes back to the pool only on success."""
        assert self._pool is not None
        request_id = conn.state["next_id"]
        conn.state["next_id"] = request_id + 1
        try:
            send(conn, b"z" + name + b"\0")
        except PeerClosed:
            pass  # clamd stopped reading (size limit): its reply says why
        except EngineError:
            conn.close()
            raise
        try:
            line = _read_reply(conn)
        except EngineError:
            conn.close()
            raise
        prefix = f"{request_id}: "
        if not line.startswith(prefix):
            conn.close()
            raise EngineError(f"clamd session reply out of order: {line[:80]!r}")
        line = line[len(prefix) :]
        if line.endswith("ERROR"):
            conn.close()  # clamd may end the session after an error: never reuse it
        else:
            self._pool.release(conn)
        return line

    def _fresh(self, call: ScanCall, send: _Sender, name: bytes) -> str:
        with Channel.open(self.address, call, "clamd") as conn:
            try:
                send(conn, b"z" + name + b"\0")
            except PeerClosed:
                pass  # clamd stopped reading (size limit): its reply says why
            return _read_reply(conn)


def _send_stream(conn: Channel, command: bytes, message: Message) -> None:
    """INSTREAM: the command, length-prefixed chunks, a zero length; small writes are coalesced."""
    pending = bytearray(command)
    for chunk in message.chunks(CHUNK):
        pending += struct.pack("!L", len(chunk))
        pending += chunk
        if len(pending) >= CHUNK:
            conn.send(bytes(pending))
            pending.clear()
    pending += _TERMINATOR
    conn.send(bytes(pending))


def _send_fd(conn: Channel, command: bytes, fd: int) -> None:
    """FILDES as clamdscan sends it: the command, then one byte carrying the descriptor."""
    conn.send(command)
    conn.send_fd(b"\0", fd)


def _fill(fd: int, chunks: Iterator[bytes]) -> None:
    """Write `chunks` (the whole message) into the memfd and rewind it for clamd."""
    for chunk in chunks:
        view = memoryview(chunk)
        while view:
            view = view[os.write(fd, view) :]
    os.lseek(fd, 0, os.SEEK_SET)


def _read_reply(conn: Channel) -> str:
    raw = conn.read_until(b"\0", MAX_REPLY)[:-1]
    return raw.decode("utf-8", "replace").strip()


def _end_session(conn: Channel) -> None:
    conn.send(b"zEND\0")


def limit_exceeded(name: str) -> str | None:
    """The limit a clamd detection name reports (`Heuristics.Limits.Exceeded.MaxRecursion` ->
    `MaxRecursion`; clamd before 0.101 said only `Heuristics.Limits.Exceeded`: "unknown"), or None
    for any other name."""
    if name != LIMITS_PREFIX and not name.startswith(LIMITS_PREFIX + "."):
        return None
    limit = name[len(LIMITS_PREFIX) + 1 :].removesuffix(".UNOFFICIAL")
    return limit if limit and limit.isalnum() else "unknown"


_SUBJECT = re.compile(r"(?:stream|fd\[\d+\]): ")  # what clamd names: the stream, or the passed descriptor


def parse_scan_reply(line: str) -> tuple[Status, str]:
    """(CLEAN, "") or (INFECTED, name) for an INSTREAM/FILDES reply; EngineError for anything else."""
    subject = _SUBJECT.match(line)
    if subject:
        verdict = line[subject.end() :]
        if verdict == "OK":
            return Status.CLEAN, ""
        if verdict.endswith(" FOUND"):
            name = verdict[: -len(" FOUND")].strip()
            if name and name.isprintable():
                return Status.INFECTED, name[:200]
    if "size limit exceeded" in line:
        raise EngineError("clamd StreamMaxLength exceeded; raise it or lower this engine's max_size")
    if line.endswith("ERROR"):
        raise EngineError(f"clamd error: {line.removesuffix('ERROR').strip()[:200]}")
    if not line:
        raise EngineError("empty clamd reply")
    raise EngineError(f"unexpected clamd reply {line[:80]!r}")
