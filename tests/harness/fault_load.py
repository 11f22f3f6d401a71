"""Continuous SMTP load with message-by-message accounting, for the fault matrix.

`Load` keeps N sessions busy with a clean/virus/spam mix until stopped; every message carries a
unique Message-ID naming its phase, sequence number and kind, and every transaction's reply is
recorded with its start and end time. `DeliveryIndex` maps the sink's deliveries back to those ids.
`account()` turns both into one `Row` of the fault table; `Row.problems()` lists what must never
happen (a 250 not delivered, a refused message delivered, a duplicate, a virus or a message without
verdict delivered).
"""

from __future__ import annotations

import email.utils
import itertools
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from tests.harness.messages import EICAR, GTUBE, HAM
from tests.harness.sink import Sink
from tests.harness.smtp_client import Reply, Session

DOMAIN = "faults.test"  # SPF/DKIM-less sender domain with SPF for 127.0.0.0/8 and DMARC p=reject
SENDER = f"alice@{DOMAIN}"
RECIPIENT = "bob@example.org"
VERDICT = "X-Quorum-Verdict"
_MSGID = re.compile(rb"^Message-ID:\s*<([^>@]+)@", re.IGNORECASE | re.MULTILINE)
_BODIES = {"clean": HAM, "virus": HAM + b"\r\n" + EICAR, "spam": GTUBE}


def kind_of(seq: int) -> str:
    """The mix: 5 clean, 1 virus, 1 spam out of every 7 messages."""
    return {3: "virus", 5: "spam"}.get(seq % 7, "clean")


def message(msg_id: str, kind: str) -> bytes:
    return (
        (
            f"From: Alice <{SENDER}>\r\nTo: Bob <{RECIPIENT}>\r\nSubject: fault matrix {kind}\r\n"
            f"Date: {email.utils.formatdate(localtime=True)}\r\nMessage-ID: <{msg_id}@{DOMAIN}>\r\n"
            "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nHi Bob,\r\n\r\n"
        ).encode()
        + _BODIES[kind]
        + b"\r\n\r\nCheers,\r\nAlice\r\n"
    )


@dataclass(frozen=True)
class Outcome:
    """What the client saw for one message: code 0 = no reply (connection lost or refused)."""

    msg_id: str
    kind: str
    start: float
    end: float
    code: int
    text: str


class Load:
    """`sessions` SMTP sessions sending the mix to `port` until `stop()`; `outcomes()` so far."""

    def __init__(self, port: int, phase: str, sessions: int = 10, per_session: int = 20, timeout: float = 120.0):
        self.port = port
        self.phase = phase
        self.sessions = sessions
        self.per_session = per_session
        self.timeout = timeout
        self._seq = itertools.count()
        self._lock = threading.Lock()
        self._outcomes: list[Outcome] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> Load:
        self._threads = [threading.Thread(target=self._worker, daemon=True) for _ in range(self.sessions)]
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        """Let every session finish its current message, then QUIT."""
        self._stop.set()
        for thread in self._threads:
            thread.join(self.timeout + 30)

    def outcomes(self) -> list[Outcome]:
        with self._lock:
            return list(self._outcomes)

    def completed(self) -> int:
        with self._lock:
            return len(self._outcomes)

    def _next(self) -> tuple[str, str]:
        with self._lock:
            seq = next(self._seq)
        kind = kind_of(seq)
        return f"{self.phase}.{seq}.{kind}", kind

    def _record(self, msg_id: str, kind: str, start: float, reply: Reply) -> None:
        with self._lock:
            self._outcomes.append(Outcome(msg_id, kind, start, time.monotonic(), reply.code, reply.text))

    def _open(self) -> tuple[Session | None, Reply]:
        sess = Session(self.port, timeout=self.timeout)
        if sess.banner.code != 220:
            sess.close()
            return None, sess.banner
        reply = sess.ehlo("load.faults.test")
        if not reply.ok:
            sess.close()
            return None, reply
        return sess, reply

    def _worker(self) -> None:
        sess: Session | None = None
        sent = 0
        while not self._stop.is_set():
            msg_id, kind = self._next()
            start = time.monotonic()
            if sess is None or sent >= self.per_session:
                if sess is not None:
                    sess.quit()
                sess, reply = self._open()
                sent = 0
                if sess is None:  # banner or EHLO refused: the message was refused with that code
                    self._record(msg_id, kind, start, reply)
                    time.sleep(0.05)
                    continue
            reply = _transaction(sess, message(msg_id, kind))
            self._record(msg_id, kind, start, reply)
            sent += 1
            if reply.code in (0, 421) or sess.rset().code != 250:
                sess.close()
                sess = None
        if sess is not None:
            sess.quit()


def _transaction(sess: Session, raw: bytes) -> Reply:
    for reply in (sess.mail(SENDER), sess.rcpt(RECIPIENT)):
        if not reply.ok:
            return reply
    return sess.data(raw)


@dataclass(frozen=True)
class Delivery:
    verdict: str | None  # X-Quorum-Verdict, None when absent


class DeliveryIndex:
    """The sink's deliveries by message id, refreshed incrementally (`refresh()`)."""

    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        self._seen = 0
        self.by_id: dict[str, list[Delivery]] = {}
        self.foreign = 0  # deliveries without a fault-matrix Message-ID

    def refresh(self) -> DeliveryIndex:
        messages = self.sink.messages()
        for msg in messages[self._seen :]:
            match = _MSGID.search(msg.raw.split(b"\r\n\r\n", 1)[0])
            if match is None:
                self.foreign += 1
                continue
            self.by_id.setdefault(match.group(1).decode(), []).append(Delivery(msg.header(VERDICT)))
        self._seen = len(messages)
        return self

    def get(self, msg_id: str) -> list[Delivery]:
        return self.by_id.get(msg_id, [])


def expected(outcome: Outcome, deliveries: list[Delivery]) -> bool | None:
    """Whether a message got what a healthy stack gives it; None while a 250 is not delivered yet.

    Healthy: clean mail delivered once with a verdict that names no degraded engine; EICAR and GTUBE
    refused with 5xx (the matrix runs with on_virus and on_spam = "reject").
    """
    if outcome.kind != "clean":
        return outcome.code >= 500
    if outcome.code != 250:
        return False
    if not deliveries:
        return None
    return len(deliveries) == 1 and "degraded" not in (deliveries[0].verdict or "degraded")


@dataclass
class Row:
    """One line of the fault table; the counters after `problems` are the invariants."""

    fault: str
    sent: int = 0
    delivered: int = 0
    tempfail: int = 0  # 4xx
    reject: int = 0  # 5xx
    no_reply: int = 0  # connection lost or refused before a reply: the client knows it was not accepted
    no_verdict: int = 0  # delivered without X-Quorum-Verdict
    virus_delivered: int = 0
    duplicates: int = 0
    lost: int = 0  # 250 but never delivered
    ghost: int = 0  # refused (or no reply) but delivered
    clean_5xx: int = 0  # a clean message refused permanently
    recover: float | None = None  # seconds after the fault ended until every new message got its healthy outcome
    seconds: float = 0.0
    codes: Counter[int] = field(default_factory=Counter)
    notes: list[str] = field(default_factory=list)

    def problems(self) -> list[str]:
        checks = {
            "lost (250, not delivered)": self.lost,
            "refused but delivered": self.ghost,
            "duplicates": self.duplicates,
            "viruses delivered": self.virus_delivered,
            "delivered without verdict": self.no_verdict,
            "clean mail 5xx": self.clean_5xx,
        }
        return [f"{self.fault}: {n} {what}" for what, n in checks.items() if n]

    HEAD = (
        f"{'fault':<28} {'sent':>5} {'deliv':>5} {'4xx':>4} {'5xx':>4} {'noreply':>7} {'noverd':>6} "
        f"{'virus':>5} {'dup':>3} {'lost':>4} {'ghost':>5} {'recover':>8} {'time':>6}"
    )

    def line(self) -> str:
        rec = "never" if self.recover is None else f"{self.recover:.1f}s"
        return (
            f"{self.fault:<28} {self.sent:>5} {self.delivered:>5} {self.tempfail:>4} {self.reject:>4} "
            f"{self.no_reply:>7} {self.no_verdict:>6} {self.virus_delivered:>5} {self.duplicates:>3} "
            f"{self.lost:>4} {self.ghost:>5} {rec:>8} {self.seconds:>5.0f}s"
        )


def recovery(
    outcomes: list[Outcome], index: DeliveryIndex, fault_end: float, final: bool, until: float | None = None
) -> tuple[float, int]:
    """(seconds from `fault_end` to the end of the last unhealthy transaction among mail sent after
    it, healthy messages completed since). Live (`final` False), a 250 whose delivery has not shown
    up yet is skipped; at the end it counts as unhealthy (lost)."""
    after = sorted(
        (o for o in outcomes if o.start >= fault_end and (until is None or o.end <= until)), key=lambda o: o.end
    )
    last_bad = fault_end
    good_since = 0
    for outcome in after:
        ok = expected(outcome, index.get(outcome.msg_id))
        if ok is None and not final:
            continue
        if ok:
            good_since += 1
        else:
            last_bad, good_since = outcome.end, 0
    return last_bad - fault_end, good_since


def account(
    fault: str, outcomes: list[Outcome], index: DeliveryIndex, fault_end: float, seconds: float, until: float
) -> Row:
    """The table row for one phase, from the client's replies and the sink's deliveries; recovery is
    judged on the messages completed by `until` (when the phase saw the stack healthy again)."""
    row = Row(fault, sent=len(outcomes), seconds=seconds)
    for o in outcomes:
        got = index.get(o.msg_id)
        row.codes[o.code] += 1
        row.delivered += len(got)
        row.duplicates += max(0, len(got) - 1)
        row.no_verdict += sum(d.verdict is None for d in got)
        row.virus_delivered += len(got) if o.kind == "virus" else 0
        if 400 <= o.code < 500:
            row.tempfail += 1
        elif o.code >= 500:
            row.reject += 1
            row.clean_5xx += o.kind == "clean"
        elif o.code == 0:
            row.no_reply += 1
        if o.code == 250 and not got:
            row.lost += 1
        if o.code != 250 and got:
            row.ghost += 1
    rec, good_since = recovery(outcomes, index, fault_end, final=True, until=until)
    row.recover = rec if good_since else None
    return row


def wait_until(predicate: Callable[[], bool], timeout: float, step: float = 0.25) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()
