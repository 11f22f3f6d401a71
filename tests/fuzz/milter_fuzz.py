"""Drive a running `quorum run` with generated milter sequences, then check it is still healthy.

Shared by the CI slice (tests/fuzz/test_milter_fuzz.py) and the long run (bench/fuzz_milter.py).
"""

from __future__ import annotations

import random
import re
import select
import socket
import struct
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tests.fuzz.milter_sequences import Sequence, generate
from tests.harness import milter_client as mc
from tests.harness.messages import EICAR, HAM, mail
from tests.harness.quorum import QuorumProcess

QUIET = 0.05  # seconds without an answer after which a sequence that waits gives up


@dataclass
class Stats:
    sequences: int = 0
    kinds: Counter[str] = field(default_factory=Counter)
    answers: Counter[str] = field(default_factory=Counter)  # reply command bytes seen, e.g. 'c', 't', 'y'
    connect_errors: int = 0
    seconds: float = 0.0
    generator_errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, seq: Sequence, answers: bytes, connected: bool) -> None:
        with self.lock:
            self.sequences += 1
            self.kinds[seq.kind] += 1
            self.connect_errors += not connected
            for cmd in _reply_commands(answers):
                self.answers[cmd] += 1


def _reply_commands(raw: bytes) -> list[str]:
    out, at = [], 0
    while at + 5 <= len(raw):
        (length,) = struct.unpack("!I", raw[at : at + 4])
        out.append(raw[at + 4 : at + 5].decode("latin-1"))
        at += 4 + max(length, 1)
    return out


def play(spec: str, seq: Sequence, timeout: float = 5.0) -> tuple[bytes, bool]:
    """Send one sequence on a fresh connection, reading answers as they come; close when done."""
    try:
        sock = mc.open_socket(spec, timeout)
    except OSError:
        return b"", False
    got = bytearray()
    with sock:
        sock.setblocking(False)
        data = memoryview(seq.data)
        deadline = time.monotonic() + timeout
        try:
            while data and time.monotonic() < deadline:
                readable, writable, _ = select.select([sock], [sock], [], 0.5)
                if readable:
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    got += chunk
                if writable:
                    sent = sock.send(data[:65536])
                    data = data[sent:]
            if seq.wait:
                while time.monotonic() < deadline:
                    readable, _, _ = select.select([sock], [], [], QUIET)
                    if not readable:
                        break
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    got += chunk
        except OSError:
            pass  # the worker closed on us: that is an answer too
        if seq.cut is not None:  # disconnect abruptly (RST), as a dying MTA would
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
    return bytes(got), True


def fuzz(spec: str, count: int, seconds: float, seed: int = 1, threads: int = 4, odd_macros: float = 0.0) -> Stats:
    """Up to `count` sequences or `seconds`, whichever comes first, from `threads` clients."""
    stats = Stats()
    stop_at = time.monotonic() + seconds
    issued = iter(range(count))
    issue_lock = threading.Lock()

    def client(n: int) -> None:
        rng = random.Random(seed * 1000 + n)
        while time.monotonic() < stop_at:
            with issue_lock:
                if next(issued, None) is None:
                    return
            try:
                seq = generate(rng, odd_macros)
            except Exception as exc:  # a generator bug must not end the run silently
                stats.generator_errors.append(repr(exc))
                continue
            answers, connected = play(spec, seq)
            if not connected:
                time.sleep(0.05)  # the worker is restarting
            stats.add(seq, answers, connected)

    started = time.monotonic()
    workers = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    stats.seconds = time.monotonic() - started
    return stats


# -- health after the run -----------------------------------------------------------------------
def message_outcome(spec: str, raw: bytes) -> mc.Outcome:
    with mc.Connection(spec, timeout=60) as conn:
        conn.negotiate()
        return mc.send_message(conn, raw)


def verdict(outcome: mc.Outcome) -> str:
    """'accepted clean', 'rejected 550' etc. from what the milter answered at the last step."""
    final = outcome.final
    if final is None:
        return "no answer"
    if final.cmd == mc.CONTINUE:
        return "accepted " + outcome.added_headers().get("X-Quorum-Verdict", "(no verdict header)").split()[0]
    return f"refused {final.smtp_code or final.cmd.decode()}"


def clean_and_virus(spec: str) -> tuple[str, str]:
    clean = verdict(message_outcome(spec, mail("fuzz-clean", HAM)))
    return clean, verdict(message_outcome(spec, mail("fuzz-eicar", EICAR)))


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def threads_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    return 0


_EXC_LINE = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|Interrupt|Exit)\b.*)$", re.M)


@dataclass
class LogReport:
    tracebacks: int
    bare_exceptions: int
    distinct: Counter[str]
    restarts: int
    segfaults: int
    clean_warnings: Counter[str]


def read_log(text: str) -> LogReport:
    """Tracebacks (and the exception line that ends each), worker restarts, and our one-line answers."""
    distinct: Counter[str] = Counter()
    blocks = text.split("Traceback (most recent call last):")[1:]
    for block in blocks:
        m = _EXC_LINE.search(block)
        distinct[_normalise(m.group(1) if m else "?")] += 1
    bare = len(_EXC_LINE.findall(text)) - len(blocks)  # exceptions printed without a traceback (pymilter)
    warnings = Counter(_normalise(m.group(1)) for m in re.finditer(r"WARNING (milter .*)$", text, re.M))
    return LogReport(
        tracebacks=len(blocks),
        bare_exceptions=max(bare, 0),
        distinct=distinct,
        restarts=len(re.findall(r"milter process exited with", text)),
        segfaults=len(re.findall(r"milter process exited with -11", text)),
        clean_warnings=warnings,
    )


def _normalise(line: str) -> str:
    line = re.sub(r"0x[0-9a-f]+", "0x…", line)
    line = re.sub(r"position \d+(-\d+)?", "position N", line)
    return re.sub(r"byte 0x…|'\\x[0-9a-f]{2}'", "byte", line)[:160]


def wait_settled(quorum: QuorumProcess, timeout: float = 30.0) -> int:
    """Wait until the worker is answering again (after a restart); returns its pid."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = quorum.worker_pids()
        if pids and quorum._ready():
            return pids[0]
        time.sleep(0.1)
    raise TimeoutError("the milter worker did not come back")
