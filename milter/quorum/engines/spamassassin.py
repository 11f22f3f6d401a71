"""SpamAssassin over the spamd protocol (SPAMC/1.5 `SYMBOLS` or `REPORT`), one connection per scan.

spamd answers only after it has read `Content-length` bytes; we half-close after sending so a
spamd that waits for EOF answers too. spamd closes after each reply, so there is nothing to reuse.
All I/O goes through `quorum.engines.transport` (bounded by the call's deadline, cancellable).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, field_validator

from quorum.config.model import EngineSettings, EngineTable
from quorum.config.schema import Size
from quorum.engines.base import Engine, EngineError, ScanCall, check_address, literal_address
from quorum.engines.transport import Channel, PeerClosed
from quorum.message import Message
from quorum.verdict import Category, Status, Verdict

CHUNK = 64 * 1024
MAX_REPLY = 256 * 1024
MAX_NAMES = 20
COMMANDS = ("SYMBOLS", "REPORT")

# sysexits.h codes spamd puts in its status line.
EX_CODES = {
    64: "EX_USAGE",
    65: "EX_DATAERR",
    66: "EX_NOINPUT",
    67: "EX_NOUSER",
    68: "EX_NOHOST",
    69: "EX_UNAVAILABLE",
    70: "EX_SOFTWARE",
    71: "EX_OSERR",
    72: "EX_OSFILE",
    73: "EX_CANTCREAT",
    74: "EX_IOERR",
    75: "EX_TEMPFAIL",
    76: "EX_PROTOCOL",
    77: "EX_NOPERM",
    78: "EX_CONFIG",
    79: "EX_TIMEOUT",
}

_STATUS = re.compile(rb"^SPAMD/(\d+\.\d+) +(\d+) *(.*)$")
_SPAM = re.compile(r"^\s*(true|yes|false|no)\s*;\s*(-?\d+(?:\.\d+)?)\s*/\s*(-?\d+(?:\.\d+)?)\s*$", re.IGNORECASE)
_REPORT_LINE = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s+([A-Za-z0-9_]+)\s")
_SYMBOL = re.compile(r"^[A-Za-z0-9_.-]+$")
_USER = re.compile(r"^[^\s\x00-\x1f\x7f]+$")


@dataclass(frozen=True)
class SpamdReply:
    spam: bool
    score: float
    threshold: float
    names: tuple[str, ...]


class SpamAssassin(Engine):
    type_name = "spamassassin"
    category = Category.ANTISPAM
    prior_cost = 0.3  # about 30x rspamd

    def __init__(self, settings: EngineSettings) -> None:
        super().__init__(settings)
        self.bounded_by_call = literal_address(self.options["address"])

    class Options(EngineTable):
        address: Annotated[str, AfterValidator(check_address)] = "127.0.0.1:783"
        user: str | None = None
        command: Literal["SYMBOLS", "REPORT"] = "SYMBOLS"
        max_size: Size = Field(512 * 1024, ge=1)  # spamc's own default (500 KB): SpamAssassin gets slow on big bodies

        @field_validator("user")
        @classmethod
        def _user(cls, value: str | None) -> str | None:
            if value is not None and not _USER.match(value):
                raise ValueError(f"{value!r} must be one word without spaces or control characters")
            return value

    def scan(self, message: Message, call: ScanCall) -> Verdict:
        """spamd's own verdict: its score, its required score and its spam flag (the policy applies
        any `[engines.NAME] threshold` and weights)."""
        command = self.options.get("command", "SYMBOLS")
        head = f"{command} SPAMC/1.5\r\nContent-length: {message.size}\r\n"
        if self.options.get("user"):
            head += f"User: {self.options['user']}\r\n"
        raw = self._exchange(call, (head + "\r\n").encode("ascii"), message)
        reply = parse_reply(raw, command)
        return self.verdict(
            Status.SPAM if reply.spam else Status.CLEAN,
            names=reply.names,
            score=reply.score,
            threshold=reply.threshold,
            detail=f"{reply.score:.2f}/{reply.threshold:.2f}",
        )

    def ping(self, timeout: float) -> None:
        raw = self._exchange(ScanCall(time.monotonic() + timeout), b"PING SPAMC/1.5\r\n\r\n", None)
        line = raw.split(b"\r\n", 1)[0].strip()
        m = _STATUS.match(line)
        if not m or m.group(2) != b"0" or not m.group(3).strip().upper().startswith(b"PONG"):
            raise EngineError(f"unexpected PING reply {line[:60]!r}")

    def _exchange(self, call: ScanCall, head: bytes, message: Message | None) -> bytes:
        with Channel.open(self.options["address"], call, "spamd") as conn:
            try:
                conn.send(head)
                if message is not None:
                    conn.send_all(message.chunks(CHUNK))
                conn.shutdown_write()
            except PeerClosed:
                pass  # spamd stopped reading (error reply or exit): read what it said, if anything
            return _receive(conn)


def _receive(conn: Channel) -> bytes:
    """Read until spamd closes or the announced Content-length arrived, at most MAX_REPLY bytes.

    A status-only reply (`PONG`, an error) has no blank line and ends at EOF.
    """
    data = bytearray()
    expected: int | None = None
    while True:
        if expected is None and (end := data.find(b"\r\n\r\n")) >= 0:
            length = _content_length(bytes(data[:end]))
            if length is not None:
                expected = end + 4 + length
        if expected is not None and len(data) >= expected:
            break
        chunk = conn.recv_some(CHUNK)
        if not chunk:
            break
        data += chunk
        if len(data) > MAX_REPLY:
            raise EngineError(f"spamd reply larger than {MAX_REPLY} bytes")
    if not data:
        raise EngineError("spamd closed the connection without a reply")
    return bytes(data[:expected]) if expected is not None else bytes(data)


def _content_length(head: bytes) -> int | None:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length" and value.strip().isdigit():
            return int(value.strip())
    return None


def parse_reply(raw: bytes, command: str = "SYMBOLS") -> SpamdReply:
    """Parse a spamd reply to SYMBOLS or REPORT; anything unexpected raises EngineError.

    `SPAMD/1.1 0 EX_OK\\r\\nContent-length: 27\\r\\nSpam: True ; 1000.0 / 5.0\\r\\n\\r\\nGTUBE,NO_RECEIVED`
    """
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    m = _STATUS.match(lines[0].strip())
    if not m:
        raise EngineError(f"not a spamd reply: {lines[0][:60]!r}")
    code = int(m.group(2))
    if code != 0:
        text = m.group(3).decode("ascii", "replace").strip()
        raise EngineError(f"spamd {EX_CODES.get(code, code)}: {text}"[:200])
    spam_header: str | None = None
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"spam":
            spam_header = value.decode("ascii", "replace")
    if spam_header is None:
        raise EngineError("spamd reply has no Spam header")
    sm = _SPAM.match(spam_header)
    if not sm:
        raise EngineError(f"unparsable Spam header {spam_header.strip()[:60]!r}")
    text = body.decode("utf-8", "replace")
    names = _report_names(text) if command == "REPORT" else _symbol_names(text)
    return SpamdReply(
        spam=sm.group(1).lower() in ("true", "yes"),
        score=float(sm.group(2)) + 0.0,  # spamd says -0.0 for a clean message: show 0.00
        threshold=float(sm.group(3)),
        names=names[:MAX_NAMES],
    )


def _symbol_names(text: str) -> tuple[str, ...]:
    names = [n.strip() for n in text.replace("\r", "").replace("\n", ",").split(",")]
    return tuple(n for n in names if n and _SYMBOL.match(n))


def _report_names(text: str) -> tuple[str, ...]:
    """Rule names from the report's `pts rule name description` table, highest score first."""
    rules: list[tuple[float, str]] = []
    in_table = False
    for line in text.splitlines():
        if line.startswith("----"):
            in_table = True
            continue
        if in_table and (m := _REPORT_LINE.match(line)):
            rules.append((float(m.group(1)), m.group(2)))
    rules.sort(key=lambda r: (-r[0], r[1]))
    return tuple(name for _, name in rules)
