"""The MTA side of the milter protocol (version 6), written from the protocol, not from libmilter.

An independent codec for tests and fuzzing: it talks to Quorum's socket as Postfix would, and it can
also send what no MTA sends (raw packets, truncated frames, odd macro lists, non-UTF-8 bytes), so
every string is `bytes`. The PyPI `miltertest` package was considered and not used: it is GPL-3.0
(Quorum is Apache-2.0), encodes and decodes `str` strictly as UTF-8, and refuses to encode the
malformed packets a fuzzer needs (odd macro lists, arbitrary frames).

Frame: uint32 length (command byte + payload, network order), command byte, payload.
"""

from __future__ import annotations

import select
import socket
import struct
import time
from dataclasses import dataclass, field

VERSION = 6

# Commands (MTA -> milter)
ABORT, BODY, CONNECT, MACRO, EOM = b"A", b"B", b"C", b"D", b"E"
HELO, QUIT_NC, HEADER, MAIL, EOH = b"H", b"K", b"L", b"M", b"N"
OPTNEG, QUIT, RCPT, DATA, UNKNOWN = b"O", b"Q", b"R", b"T", b"U"

# Replies (milter -> MTA)
ADDRCPT, DELRCPT, ADDRCPT_PAR, SHUTDOWN = b"+", b"-", b"2", b"4"
ACCEPT, REPLBODY, CONTINUE, DISCARD, CHGFROM = b"a", b"b", b"c", b"d", b"e"
CONN_FAIL, ADDHEADER, INSHEADER, SETSYMLIST, CHGHEADER = b"f", b"h", b"i", b"l", b"m"
PROGRESS, QUARANTINE, REJECT, SKIP, TEMPFAIL, REPLYCODE = b"p", b"q", b"r", b"s", b"t", b"y"

# Final answers to a step; everything else at end of message is a modification.
DISPOSITIONS = frozenset({ACCEPT, CONTINUE, DISCARD, REJECT, TEMPFAIL, REPLYCODE, SKIP, SHUTDOWN, CONN_FAIL})

# Protocol flags (SMFIP_*)
P_NOCONNECT, P_NOHELO, P_NOMAIL, P_NORCPT = 0x1, 0x2, 0x4, 0x8
P_NOBODY, P_NOHDRS, P_NOEOH, P_NR_HDR = 0x10, 0x20, 0x40, 0x80
P_NOUNKNOWN, P_NODATA, P_SKIP, P_RCPT_REJ = 0x100, 0x200, 0x400, 0x800
P_NR_CONN, P_NR_HELO, P_NR_MAIL, P_NR_RCPT = 0x1000, 0x2000, 0x4000, 0x8000
P_NR_DATA, P_NR_UNKN, P_NR_EOH, P_NR_BODY = 0x10000, 0x20000, 0x40000, 0x80000
P_HDR_LEADSPC = 0x100000
ALL_PROTOCOL = 0x1FFFFF
ALL_ACTIONS = 0x1FF  # ADDHDRS CHGBODY ADDRCPT DELRCPT CHGHDRS QUARANTINE CHGFROM ADDRCPT_PAR SETSYMLIST

# The "no reply" bit of each command that has one.
NO_REPLY_BIT = {
    CONNECT: P_NR_CONN, HELO: P_NR_HELO, MAIL: P_NR_MAIL, RCPT: P_NR_RCPT, DATA: P_NR_DATA,
    UNKNOWN: P_NR_UNKN, HEADER: P_NR_HDR, EOH: P_NR_EOH, BODY: P_NR_BODY,
}  # fmt: skip
NEVER_REPLIED = frozenset({MACRO, ABORT, QUIT, QUIT_NC})

FAMILY = {"unknown": b"U", "unix": b"L", "inet": b"4", "inet6": b"6"}
CHUNK = 65535


class MilterProtocolError(Exception):
    """The milter sent something that is not a milter frame, or closed the connection."""


# -- encoding ---------------------------------------------------------------------------------
def frame(cmd: bytes, payload: bytes = b"") -> bytes:
    return struct.pack("!I", len(payload) + 1) + cmd + payload


def cstr(value: bytes) -> bytes:
    return value + b"\0"


def optneg(version: int = VERSION, actions: int = ALL_ACTIONS, protocol: int = ALL_PROTOCOL) -> bytes:
    return frame(OPTNEG, struct.pack("!III", version, actions, protocol))


def macros(stage: bytes, pairs: dict[bytes, bytes] | list[bytes]) -> bytes:
    """Macros for `stage` (a command byte). A list is sent as given: an odd one is a malformed packet."""
    items = [x for kv in pairs.items() for x in kv] if isinstance(pairs, dict) else pairs
    return frame(MACRO, stage + b"".join(cstr(x) for x in items))


def connect(hostname: bytes, address: bytes = b"127.0.0.1", port: int = 25, family: str = "inet") -> bytes:
    fam = FAMILY[family]
    if fam == FAMILY["unknown"]:
        return frame(CONNECT, cstr(hostname) + fam)
    return frame(CONNECT, cstr(hostname) + fam + struct.pack("!H", port) + cstr(address))


def helo(name: bytes) -> bytes:
    return frame(HELO, cstr(name))


def mail(sender: bytes, *params: bytes) -> bytes:
    return frame(MAIL, b"".join(cstr(x) for x in (sender, *params)))


def rcpt(recipient: bytes, *params: bytes) -> bytes:
    return frame(RCPT, b"".join(cstr(x) for x in (recipient, *params)))


def header(name: bytes, value: bytes) -> bytes:
    return frame(HEADER, cstr(name) + cstr(value))


def body_chunks(body: bytes) -> list[bytes]:
    return [frame(BODY, body[i : i + CHUNK]) for i in range(0, len(body), CHUNK)]


def data() -> bytes:
    return frame(DATA)


def eoh() -> bytes:
    return frame(EOH)


def eom() -> bytes:
    return frame(EOM)


def abort() -> bytes:
    return frame(ABORT)


def quit_() -> bytes:
    return frame(QUIT)


# -- decoding ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Reply:
    """One frame from the milter, with its payload split the way its command defines."""

    cmd: bytes
    payload: bytes

    @property
    def strings(self) -> list[bytes]:
        return self.payload.split(b"\0")[:-1] if self.payload.endswith(b"\0") else self.payload.split(b"\0")

    @property
    def smtp_code(self) -> str:
        """'451' for TEMPFAIL, the code of a REPLYCODE text, '' for CONTINUE/ACCEPT."""
        if self.cmd == REPLYCODE:
            return self.payload[:3].decode("ascii", "replace")
        return {TEMPFAIL: "451", REJECT: "550", DISCARD: "250"}.get(self.cmd, "")

    @property
    def text(self) -> str:
        return self.payload.rstrip(b"\0").decode("utf-8", "replace")

    def header_edit(self) -> tuple[int, bytes, bytes]:
        """(index, name, value) of ADDHEADER (index -1), INSHEADER or CHGHEADER."""
        if self.cmd == ADDHEADER:
            name, value = self.strings[:2]
            return -1, name, value
        (index,) = struct.unpack("!I", self.payload[:4])
        name, value = Reply(self.cmd, self.payload[4:]).strings[:2]
        return index, name, value

    def negotiated(self) -> tuple[int, int, int]:
        """(version, actions, protocol) of an OPTNEG answer (a symbol list may follow)."""
        return struct.unpack("!III", self.payload[:12])


class Connection:
    """One milter connection: frames out, replies in, each bounded by `timeout` seconds."""

    def __init__(self, spec: str, timeout: float = 30.0) -> None:
        self.timeout = timeout
        self.sock = open_socket(spec, timeout)
        self._buf = bytearray()
        self.protocol = 0  # protocol flags the milter asked for (no-reply bits, skipped steps)
        self.actions = 0

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, raw: bytes) -> None:
        self.sock.sendall(raw)

    def read(self, timeout: float | None = None) -> Reply:
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            if len(self._buf) >= 4:
                (length,) = struct.unpack("!I", self._buf[:4])
                if length == 0:
                    raise MilterProtocolError("zero-length frame")
                if len(self._buf) >= 4 + length:
                    cmd, payload = bytes(self._buf[4:5]), bytes(self._buf[5 : 4 + length])
                    del self._buf[: 4 + length]
                    return Reply(cmd, payload)
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no reply from the milter")
            self.sock.settimeout(left)
            chunk = self.sock.recv(65536)
            if not chunk:
                raise MilterProtocolError("milter closed the connection")
            self._buf += chunk

    def read_final(self) -> tuple[Reply, list[Reply]]:
        """Skip PROGRESS; return (the disposition, the modifications that came before it)."""
        edits: list[Reply] = []
        while True:
            reply = self.read()
            if reply.cmd == PROGRESS:
                continue
            if reply.cmd in DISPOSITIONS:
                return reply, edits
            edits.append(reply)

    def expects_reply(self, cmd: bytes) -> bool:
        if cmd in NEVER_REPLIED:
            return False
        bit = NO_REPLY_BIT.get(cmd)
        return not (bit and self.protocol & bit)

    def negotiate(self, actions: int = ALL_ACTIONS, protocol: int = ALL_PROTOCOL) -> Reply:
        self.send(optneg(VERSION, actions, protocol))
        reply = self.read()
        if reply.cmd != OPTNEG:
            raise MilterProtocolError(f"OPTNEG answered with {reply.cmd!r}")
        _, self.actions, self.protocol = reply.negotiated()
        return reply

    def step(self, raw: bytes) -> Reply | None:
        """Send one well-formed command frame; wait for its answer if the negotiation says one comes."""
        self.send(raw)
        return self.read_final()[0] if self.expects_reply(raw[4:5]) else None


def open_socket(spec: str, timeout: float) -> socket.socket:
    """`inet:PORT@HOST`, `inet6:PORT@HOST` or `unix:/path` (libmilter's spelling)."""
    kind, _, rest = spec.partition(":")
    if kind in ("unix", "local"):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        sock.connect(rest)
        return sock
    port, _, host = rest.partition("@")
    sock = socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


# -- a whole SMTP transaction as Postfix sends it ----------------------------------------------
@dataclass
class Outcome:
    """What the milter answered: each step's disposition, and the end-of-message edits."""

    steps: dict[str, Reply | None] = field(default_factory=dict)
    edits: list[Reply] = field(default_factory=list)

    @property
    def final(self) -> Reply | None:
        """The last answer given (end of message, or the step that refused)."""
        answered = [r for r in self.steps.values() if r is not None]
        return answered[-1] if answered else None

    def added_headers(self) -> dict[str, str]:
        out = {}
        for r in self.edits:
            if r.cmd in (ADDHEADER, INSHEADER):
                _, name, value = r.header_edit()
                out[name.decode("utf-8", "replace")] = value.decode("utf-8", "replace").strip()
        return out


def send_message(
    conn: Connection,
    raw_message: bytes,
    sender: bytes = b"<sender@example.com>",
    recipients: tuple[bytes, ...] = (b"<rcpt@example.org>",),
    client: tuple[bytes, bytes] = (b"mail.example.com", b"192.0.2.1"),
    helo_name: bytes = b"mail.example.com",
    queue_id: bytes = b"4ABCDEF0123",
    connect_macros: dict[bytes, bytes] | list[bytes] | None = None,
) -> Outcome:
    """One full transaction on a negotiated connection, with the macros Postfix sends by default."""
    out = Outcome()
    hostname, address = client

    def step(name: str, raw: bytes) -> bool:
        reply = conn.step(raw)
        out.steps[name] = reply
        return reply is None or reply.cmd == CONTINUE

    if connect_macros is None:
        connect_macros = {b"j": b"mx.test.example", b"{daemon_name}": b"smtpd", b"{client_addr}": address}
    conn.send(macros(CONNECT, connect_macros))
    if not step("connect", connect(hostname, address)) or not step("helo", helo(helo_name)):
        return out
    conn.send(macros(MAIL, {b"i": queue_id, b"{mail_addr}": sender.strip(b"<>")}))
    if not step("mail", mail(sender)):
        return out
    for r in recipients:
        conn.send(macros(RCPT, {b"{rcpt_addr}": r.strip(b"<>")}))
        if not step("rcpt", rcpt(r)):
            return out
    conn.send(macros(DATA, {b"i": queue_id}))
    if not step("data", data()):
        return out
    head, _, body = raw_message.replace(b"\r\n", b"\n").partition(b"\n\n")
    keep_space = bool(conn.protocol & P_HDR_LEADSPC)
    for name, value in _split_headers(head):
        step("header", header(name, value if keep_space else value.removeprefix(b" ")))
    step("eoh", eoh())
    for chunk in body_chunks(body.replace(b"\n", b"\r\n")):
        step("body", chunk)
    conn.send(macros(EOM, {b"i": queue_id}))
    conn.send(eom())
    out.steps["eom"], out.edits = conn.read_final()
    return out


def _split_headers(head: bytes) -> list[tuple[bytes, bytes]]:
    fields: list[tuple[bytes, bytes]] = []
    for line in head.split(b"\n"):
        if line[:1] in (b" ", b"\t") and fields:
            name, value = fields[-1]
            fields[-1] = (name, value + b"\n" + line)
        elif line:
            name, _, value = line.partition(b":")
            fields.append((name, value))
    return fields


def drain_until_closed(sock: socket.socket, timeout: float) -> bytes:
    """Read what the milter still sends until it closes or goes quiet for `timeout` seconds."""
    got = bytearray()
    sock.setblocking(False)
    while True:
        ready, _, _ = select.select([sock], [], [], timeout)
        if not ready:
            return bytes(got)
        try:
            chunk = sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            continue
        except OSError:
            return bytes(got)
        if not chunk:
            return bytes(got)
        got += chunk
