"""Random and mutated milter command sequences, as raw bytes for the MTA side of the socket.

Each sequence is what one connection sends: mostly a well-formed transaction (the skeleton Postfix
would send) bent by mutations — commands out of order, dropped or repeated, truncated and oversized
frames, bogus or missing macros, NUL and non-UTF-8 bytes, odd header names, 1 MB header values,
10^4 recipients, an abort mid-body — and cut off anywhere.

Macro packets whose strings do not pair up (an odd number of NUL-terminated strings) make
libmilter's smfi_getsymval read past the end of its macro list: a SIGSEGV Quorum cannot prevent
(see the fuzz bench). `odd_macros` is the probability of keeping such a packet; with 0 every
sequence is checked the way libmilter frames it, and parity is restored where a mutation broke it.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable
from dataclasses import dataclass

from tests.harness import milter_client as mc

MAX_FRAME = 1 << 20  # the largest frame libmilter reads (1 MB, when the MTA offers it)
P_MDS_1M = 0x20000000  # SMFIP_MDS_1M: the MTA may send frames up to 1 MB
STAGES = (mc.CONNECT, mc.HELO, mc.MAIL, mc.RCPT, mc.DATA, mc.EOH, mc.EOM, b"X", b"\0")
COMMANDS: tuple[bytes, ...] = (mc.CONNECT, mc.HELO, mc.MAIL, mc.RCPT, mc.DATA, mc.HEADER, mc.EOH, mc.BODY, mc.EOM)
COMMANDS += (mc.ABORT, mc.QUIT, mc.QUIT_NC, mc.UNKNOWN, mc.MACRO, mc.OPTNEG, b"Z", b"\0", b"\xff")
NAMES = (b"Subject", b"From", b"To", b"Received", b"DKIM-Signature", b"Authentication-Results", b"X-Quorum-Verdict")
ODD_NAMES = (b"Sub ject", b"X:Y", b"", b" ", b"Na\xefve", b"T\xc3\xabst", b"\xff\xfe", b"A\tB", b"a" * 300, b"X\r\nY")
MACRO_NAMES = (b"i", b"j", b"_", b"{auth_authen}", b"{auth_type}", b"{client_addr}", b"{client_name}", b"{mail_addr}")


@dataclass
class Sequence:
    kind: str
    frames: list[bytes]
    cut: int | None = None  # disconnect after this many bytes
    wait: bool = False  # read the answers to the end before closing

    @property
    def data(self) -> bytes:
        raw = b"".join(self.frames)
        return raw if self.cut is None else raw[: self.cut]


def junk(rng: random.Random, n: int) -> bytes:
    return bytes(rng.choice((0, 0xFF, 0x80, 0xC3, 0x0A, 0x0D, 0x3A, 0x20, rng.randrange(256))) for _ in range(n))


def text(rng: random.Random, base: bytes) -> bytes:
    roll = rng.random()
    if roll < 0.6:
        return base
    if roll < 0.75:
        return base + junk(rng, rng.randrange(1, 8))
    if roll < 0.85:
        return b""
    if roll < 0.95:
        return junk(rng, rng.randrange(1, 40))
    return base * rng.randrange(50, 2000)


def macro_pairs(rng: random.Random) -> dict[bytes, bytes]:
    names = rng.sample(MACRO_NAMES, rng.randrange(0, len(MACRO_NAMES)))
    return {text(rng, n): text(rng, b"value") for n in names}


def skeleton(rng: random.Random) -> list[bytes]:
    """One negotiated transaction as Postfix sends it (no replies awaited: the bytes go out at once)."""
    protocol = rng.choice((mc.ALL_PROTOCOL, mc.ALL_PROTOCOL | P_MDS_1M)) if rng.random() < 0.9 else rng.getrandbits(32)
    frames = [mc.optneg(6, mc.ALL_ACTIONS, protocol)]
    frames += [mc.macros(mc.CONNECT, macro_pairs(rng)), mc.connect(text(rng, b"mail.example.com"), b"192.0.2.7")]
    frames += [mc.helo(text(rng, b"mail.example.com"))]
    frames += [mc.macros(mc.MAIL, macro_pairs(rng)), mc.mail(text(rng, b"<a@example.com>"), text(rng, b"SIZE=10"))]
    for _ in range(rng.choice((1, 1, 2, 5))):
        frames += [mc.macros(mc.RCPT, macro_pairs(rng)), mc.rcpt(text(rng, b"<b@example.org>"))]
    frames += [mc.macros(mc.DATA, macro_pairs(rng)), mc.data()]
    for _ in range(rng.randrange(0, 6)):
        name = rng.choice(ODD_NAMES) if rng.random() < 0.2 else rng.choice(NAMES)
        frames.append(mc.header(name, text(rng, b" some value")))
    frames.append(mc.eoh())
    frames += mc.body_chunks(text(rng, b"Hello Bob,\r\nlunch?\r\n"))
    frames += [mc.macros(mc.EOM, macro_pairs(rng)), mc.eom()]
    if rng.random() < 0.3:  # a second transaction on the same connection
        frames += [mc.mail(b"<c@example.com>"), mc.rcpt(b"<d@example.org>"), mc.data(), mc.eoh(), mc.eom()]
    frames.append(mc.quit_())
    return frames


def random_frame(rng: random.Random) -> bytes:
    cmd = rng.choice(COMMANDS)
    if cmd == mc.MACRO:
        return mc.macros(rng.choice(STAGES), macro_pairs(rng))
    if cmd == mc.OPTNEG:
        return mc.optneg(rng.choice((0, 1, 2, 6, 7, 0xFFFFFFFF)), rng.getrandbits(32), rng.getrandbits(32))
    if cmd == mc.CONNECT:
        family = rng.choice(tuple(mc.FAMILY))
        return mc.connect(text(rng, b"host"), text(rng, b"192.0.2.1"), rng.randrange(65536), family)
    return mc.frame(cmd, junk(rng, rng.choice((0, 1, 2, 5, 20, 300))))


# -- mutations of one frame -------------------------------------------------------------------
def truncate(rng: random.Random, f: bytes) -> bytes:
    return f[: rng.randrange(0, len(f) + 1)]


def drop_terminator(rng: random.Random, f: bytes) -> bytes:
    payload = f[5:].rstrip(b"\0")
    return mc.frame(f[4:5], payload)


def insert_nul(rng: random.Random, f: bytes) -> bytes:
    payload = f[5:]
    at = rng.randrange(0, len(payload) + 1)
    return mc.frame(f[4:5], payload[:at] + b"\0" + payload[at:])


def flip_bytes(rng: random.Random, f: bytes) -> bytes:
    raw = bytearray(f)
    for _ in range(rng.randrange(1, 4)):
        if len(raw) > 5:
            raw[rng.randrange(5, len(raw))] = rng.randrange(256)
    return bytes(raw)


def wrong_length(rng: random.Random, f: bytes) -> bytes:
    length = rng.choice((0, 1, len(f) - 4 + rng.randrange(1, 100), MAX_FRAME + 1, 0xFFFFFFFF, rng.getrandbits(32)))
    return struct.pack("!I", length) + f[4:]


def change_command(rng: random.Random, f: bytes) -> bytes:
    return f[:4] + rng.choice(COMMANDS) + f[5:]


MUTATIONS: tuple[Callable[[random.Random, bytes], bytes], ...] = (
    truncate, drop_terminator, insert_nul, flip_bytes, wrong_length, change_command,
)  # fmt: skip


def mutate(rng: random.Random, frames: list[bytes]) -> list[bytes]:
    out = list(frames)
    for _ in range(rng.choice((1, 1, 2, 3, 6))):
        i = rng.randrange(len(out))
        roll = rng.random()
        if roll < 0.15:
            del out[i]
        elif roll < 0.25:
            out.insert(i, out[i])
        elif roll < 0.35:
            j = rng.randrange(len(out))
            out[i], out[j] = out[j], out[i]
        elif roll < 0.45:
            out.insert(i, random_frame(rng))
        else:
            out[i] = rng.choice(MUTATIONS)(rng, out[i])
        if not out:
            out = [random_frame(rng)]
    return out


# -- special cases ------------------------------------------------------------------------------
def _index(frames: list[bytes], *cmds: bytes) -> int:
    """Where the first frame with one of `cmds` is (the skeleton always ends with EOM and QUIT)."""
    return next(i for i, f in enumerate(frames) if f[4:5] in cmds)


def big_header(rng: random.Random) -> list[bytes]:
    frames = skeleton(rng)
    frames[0] = mc.optneg(6, mc.ALL_ACTIONS, mc.ALL_PROTOCOL | P_MDS_1M)
    at = _index(frames, mc.EOH)
    size = rng.choice((64 << 10, 256 << 10, (1 << 20) - 100, 1 << 20))
    return [*frames[:at], mc.header(b"X-Big", b" " + b"v" * size), *frames[at:]]


def many_recipients(rng: random.Random) -> list[bytes]:
    frames = skeleton(rng)
    at = _index(frames, mc.RCPT)
    rcpts = [mc.rcpt(b"<r%d@example.org>" % n) for n in range(10_000)]
    return [*frames[:at], *rcpts, *frames[at:]]


def abort_mid_body(rng: random.Random) -> list[bytes]:
    frames = skeleton(rng)
    at = _index(frames, mc.BODY, mc.EOM)
    more = mc.body_chunks(junk(rng, rng.randrange(1, 200_000)))
    return [*frames[:at], *more, mc.abort(), *frames[at:]]


def out_of_order(rng: random.Random) -> list[bytes]:
    frames = [mc.optneg()] if rng.random() < 0.8 else []
    return frames + [random_frame(rng) for _ in range(rng.randrange(1, 30))]


def odd_macro(rng: random.Random) -> list[bytes]:
    frames = skeleton(rng)
    names = [rng.choice(MACRO_NAMES) for _ in range(rng.choice((1, 3, 5)))]
    return [frames[0], mc.macros(mc.CONNECT, names), *frames[2:]]


KINDS: dict[str, tuple[float, Callable[[random.Random], list[bytes]]]] = {
    "valid": (0.05, skeleton),
    "mutated": (0.55, lambda rng: mutate(rng, skeleton(rng))),
    "out_of_order": (0.25, out_of_order),
    "big_header": (0.01, big_header),
    "many_recipients": (0.002, many_recipients),
    "abort_mid_body": (0.05, abort_mid_body),
}


# -- what libmilter will see --------------------------------------------------------------------
def odd_macro_frames(raw: bytes) -> list[int]:
    """Offsets of macro frames with an odd number of strings, framed the way libmilter reads `raw`.

    libmilter (mi_rd_cmd) reads 5 bytes, takes int32(length) - 1 as the payload size: <= 0 means
    "no payload" (the command runs without one and the next frame starts right after), too large
    ends the connection, anything else is read in full (or waited for until EOF).
    """
    found, at = [], 0
    while at + 5 <= len(raw):
        (length,) = struct.unpack("!i", raw[at : at + 4])
        size = length - 1
        if size <= 0:
            at += 5
            continue
        if size > MAX_FRAME or at + 5 + size > len(raw):
            break
        payload = raw[at + 5 : at + 5 + size]
        if raw[at + 4 : at + 5] == mc.MACRO and len(payload) > 1 and payload[1:].count(b"\0") % 2:
            found.append(at)
        at += 5 + size
    return found


def even_macros(raw: bytes) -> bytes:
    """`raw` with each odd macro frame given one more NUL (its length field adjusted)."""
    for at in reversed(odd_macro_frames(raw)):
        (length,) = struct.unpack("!I", raw[at : at + 4])
        end = at + 4 + length
        raw = raw[:at] + struct.pack("!I", length + 1) + raw[at + 4 : end] + b"\0" + raw[end:]
    return raw


def generate(rng: random.Random, odd_macros: float = 0.0) -> Sequence:
    roll, kind = rng.random() * sum(w for w, _ in KINDS.values()), "valid"
    for kind, (weight, _) in KINDS.items():  # noqa: B007 - the last kind takes the remainder
        roll -= weight
        if roll < 0:
            break
    if odd_macros and rng.random() < odd_macros:
        kind = "odd_macro"
        frames = odd_macro(rng)
    else:
        frames = KINDS[kind][1](rng)
    seq = Sequence(kind, frames)
    raw = b"".join(frames)
    if kind != "odd_macro" and odd_macro_frames(raw):
        seq.frames = [even_macros(raw)]
    if rng.random() < 0.3:
        seq.cut = rng.randrange(0, len(seq.data) + 1)  # disconnect anywhere
    seq.wait = rng.random() < 0.3
    return seq
