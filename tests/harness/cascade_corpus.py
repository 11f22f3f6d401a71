"""Full fan-out against the cost-aware cascade (and cascade + verdict cache), message by message.

Shared by tests/integration/test_cascade_corpus.py and bench/cascade_compare.py. Each mode is its
own `Pipeline` built from a config that differs only in `[policy] cascade` and `[verdict_cache]`;
every message goes through `Pipeline.check` with the same envelope, and the scans each engine
really received are counted by wrapping the engine's `scan` (a cascade skip or an early exit never
reaches the engine; a verdict-cache hit never reaches clamd).

The labelled corpus is the one `quorum evaluate`'s integration test builds from material no test
wrote (tests/integration/test_evaluate_corpus.py `build_corpus`/`messages`).
"""

from __future__ import annotations

import base64
import hashlib
import os
import statistics
import tempfile
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from tests.harness.clamd import Clamd
from tests.harness.quorum import engine_table

from quorum.assembly import build_pipeline, load_config
from quorum.config import Config
from quorum.engines.base import ScanCall
from quorum.message import Envelope, Message
from quorum.pipeline.pipeline import Pipeline, expensive
from quorum.pipeline.transaction import Connection, Transaction
from quorum.verdict import Verdict

TESTFILES = Path("/usr/share/clamav-testfiles")
MODES = ("full", "cascade", "cascade+cache")
CLIENT_IP, CLIENT_NAME, SENDER, RECIPIENT = "192.0.2.1", "mail.example.com", "alice@example.com", "bob@example.org"
# Per combine mode, the spam engines' keys. `any`: every engine weight 1; the cascade skips
# SpamAssassin when rspamd already says spam (it cannot unsay it), never when rspamd says clean
# (SpamAssassin alone could make it spam). `weighted` with equal weights leaves nothing to skip: the
# mean of rspamd's normalised score n and SpamAssassin's s, both clamped to [-2, 2], is >= 1 for every
# s only at n >= 4. Hence rspamd weight 3, SpamAssassin 1, and rspamd judged at its own `add header`
# score 6 (not its reject score 15): the mean (3n + s) / 4 is spam for every s once n >= 2 (rspamd
# score >= 12) and clean for every s while n < 2/3 (score < 4); SpamAssassin is asked only between.
SPAM_ENGINES: dict[str, dict[str, dict[str, object]]] = {
    "any": {"rspamd": {}, "spamassassin": {}},
    "weighted": {"rspamd": {"weight": 3.0, "threshold": 6.0}, "spamassassin": {"weight": 1.0}},
}


def clamd_for_testfiles(workdir: Path) -> Clamd:
    """clamd (not started) with the local signatures plus an MD5 signature of the ClamAV test
    program, as the evaluate test's `av` fixture has it."""
    server = Clamd(workdir)
    server.dbdir.mkdir(parents=True, exist_ok=True)
    exe = (TESTFILES / "clam.exe").read_bytes()
    (server.dbdir / "quorum-testfiles.hdb").write_text(f"{hashlib.md5(exe).hexdigest()}:{len(exe)}:Clam.TestFile\n")
    return server


def config_text(
    mode: str, combine: str, clamd: str, rspamd: str, spamd: str, redis_url: str | None = None, extra_policy: str = ""
) -> str:
    """The TOML of one mode: only `[policy] cascade` and `[verdict_cache]` differ between modes."""
    spam = SPAM_ENGINES.get(combine, {"rspamd": {}, "spamassassin": {}})
    cascade = "true" if mode != "full" else "false"
    text = (
        '[milter]\nsocket = "inet:1@127.0.0.1"\n\n'
        f'[policy]\non_virus = "reject"\non_engine_failure = "tempfail"\non_spam = "tag"\n'
        f'spam_combine = "{combine}"\ncascade = {cascade}\n{extra_policy}\n'
        + engine_table("clamav", "clamav", address=clamd, timeout="30s")
        + engine_table("rspamd", "rspamd", url=rspamd, timeout="30s", **spam["rspamd"])
        + engine_table("spamassassin", "spamassassin", address=spamd, timeout="60s", **spam["spamassassin"])
    )
    if mode == "cascade+cache":
        text += '\n[verdict_cache]\nttl = "1h"\n'
        if redis_url is not None:  # a shared cache's entries are signed: without a key Redis is not used
            text += f'\n[redis]\nurl = "{redis_url}"\nhmac_key_file = "{_hmac_key_file()}"\n'
    return text


def _hmac_key_file() -> Path:
    """One key file for every mode of a run (they share the cache, like gateways of one fleet)."""
    path = Path(tempfile.gettempdir()) / f"quorum-cascade-hmac-{os.getpid()}.key"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(base64.b64encode(os.urandom(32)).decode() + "\n")
    return path


def load_text(text: str, workdir: Path) -> Config:
    path = workdir / f"quorum-{hashlib.sha256(text.encode()).hexdigest()[:12]}.toml"
    path.write_text(text)
    return load_config(path)


@dataclass(frozen=True)
class Decided:
    action: str
    label: str
    reply: str

    def __str__(self) -> str:
        return f"{self.action}/{self.label}" + (f" '{self.reply}'" if self.reply else "")


@dataclass
class Outcome:
    decided: Decided
    verdicts: dict[str, Verdict]
    scans: dict[str, int]  # engine -> scans it really received for this message

    @property
    def sa_asked(self) -> bool:
        return self.scans.get("spamassassin", 0) > 0

    @property
    def cache(self) -> str:
        v = self.verdicts.get("clamav")
        return str(v.extra.get("cache", "miss")) if v is not None and v.extra else "miss"


@dataclass
class Row:
    name: str
    truth: str
    outcomes: dict[str, Outcome] = field(default_factory=dict)

    def same(self, mode: str, reference: str = "full") -> bool:
        return self.outcomes[mode].decided == self.outcomes[reference].decided


class Counted:
    """Counts the scans an engine really receives (cache hits and cascade skips never arrive)."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.counts: dict[str, int] = {r.name: 0 for r in pipeline.runners}
        self.bytes: dict[str, int] = dict.fromkeys(self.counts, 0)
        self._lock = threading.Lock()
        for runner in pipeline.runners:
            engine = runner.engine
            real = engine.scan

            def counting(message: Message, call: ScanCall, _real: Any = real, _name: str = runner.name) -> Verdict:
                with self._lock:
                    self.counts[_name] += 1
                    self.bytes[_name] += message.size
                return _real(message, call)  # type: ignore[no-any-return]

            engine.scan = counting  # type: ignore[method-assign]

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self.counts)


class Mode:
    """One pipeline (one config) with its scan counters."""

    def __init__(self, name: str, config: Config) -> None:
        self.name = name
        self.pipeline = build_pipeline(config)
        self.counted = Counted(self.pipeline)

    def check(self, raw: bytes) -> Outcome:
        env = Envelope(CLIENT_IP, CLIENT_NAME, CLIENT_NAME, SENDER, [RECIPIENT])
        txn = Transaction(Connection(env.client_ip, env.client_name, env.helo), env)
        message = Message.from_bytes(raw, env)
        before = self.counted.snapshot()
        try:
            result = self.pipeline.check(txn, message)
            self.pipeline.finish(txn, message, result, result.edits.action, result.edits.reply)
        finally:
            message.close()
        after = self.counted.snapshot()
        d = result.decision
        decided = Decided(str(d.action), d.label, str(d.reply) if d.reply is not None else "")
        return Outcome(decided, {v.engine: v for v in d.verdicts}, {k: after[k] - before.get(k, 0) for k in after})

    def set_costs(self, costs: dict[str, float]) -> None:
        for runner in self.pipeline.runners:
            if runner.name in costs:
                runner.cost = costs[runner.name]

    def deferred(self) -> list[str]:
        """The engines this mode's cascade asks only when they can change the answer."""
        return [r.name for r in expensive(self.pipeline.runners)]

    def close(self) -> None:
        self.pipeline.close()


@contextmanager
def modes(texts: dict[str, str], workdir: Path) -> Iterator[dict[str, Mode]]:
    built: dict[str, Mode] = {}
    try:
        for name, text in texts.items():
            built[name] = Mode(name, load_text(text, workdir))
        yield built
    finally:
        for mode in built.values():
            mode.close()


def warmup_messages(n: int = 6) -> list[bytes]:
    """Plain, distinct small messages: enough answered scans for a median cost per engine."""
    return [
        (
            f"From: colleague{i}@example.com\r\nTo: {RECIPIENT}\r\nSubject: notes {i}\r\n"
            f"Message-ID: <warmup{i}@example.com>\r\n\r\nHello Bob,\r\n\r\nthe notes of meeting {i} are below.\r\n"
            + "We agreed on the schedule and the budget for the next quarter.\r\n"
            * (i + 1)
        ).encode()
        for i in range(n)
    ]


def measured_costs(outcomes: Iterable[Outcome]) -> dict[str, float]:
    """Median seconds per answered scan of each engine (what the runners' EWMA converges to)."""
    times: dict[str, list[float]] = {}
    for outcome in outcomes:
        for name, v in outcome.verdicts.items():
            if v.status.answered and outcome.scans.get(name):
                times.setdefault(name, []).append(v.elapsed)
    return {name: statistics.median(values) for name, values in times.items() if values}


def compare(
    samples: list[tuple[str, str, bytes]], built: dict[str, Mode], warmup: Iterable[bytes] = ()
) -> tuple[list[Row], dict[str, float]]:
    """Warm-up on `full` to measure the engines' costs, hand them to every mode, then every sample
    through every mode in turn (same message, one mode after the other)."""
    full = built["full"]
    costs = measured_costs(full.check(raw) for raw in warmup)
    for mode in built.values():
        mode.set_costs(costs)
    rows = []
    for name, truth, raw in samples:
        row = Row(name, truth)
        for mode_name, mode in built.items():
            row.outcomes[mode_name] = mode.check(raw)
        rows.append(row)
    return rows, costs


def table(rows: list[Row], mode_names: list[str]) -> str:
    """file, label, the full fan-out's decision (action/label, reply) and each cascade mode's (its
    action/label and whether it is identical to full, reply included), whether SpamAssassin was
    asked, the clamav cache result of the last mode, and the spam engines' own verdicts under full."""
    cascades = [m for m in mode_names if m != "full"]
    header = ["file", "label", "full", *cascades, *(f"SA asked ({m})" for m in cascades), "clamav cache"]
    header += ["rspamd (full)", "SA (full)"]
    lines = [header]
    for row in rows:
        full = row.outcomes["full"]
        lines.append(
            [
                row.name,
                row.truth,
                str(full.decided),
                *(
                    f"{row.outcomes[m].decided.action}/{row.outcomes[m].decided.label} "
                    + ("(same)" if row.same(m) else f"DIFFERS: {row.outcomes[m].decided}")
                    for m in cascades
                ),
                *("yes" if row.outcomes[m].sa_asked else "no" for m in cascades),
                row.outcomes[cascades[-1]].cache if cascades else "-",
                *(full.verdicts[e].label() if e in full.verdicts else "-" for e in ("rspamd", "spamassassin")),
            ]
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip() for line in lines)


def totals(rows: list[Row], mode_names: list[str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for m in mode_names:
        scans: dict[str, int] = {}
        for row in rows:
            for engine, n in row.outcomes[m].scans.items():
                scans[engine] = scans.get(engine, 0) + n
        out[m] = {
            "identical_to_full": sum(1 for r in rows if r.same(m)),
            "messages": len(rows),
            "scans": scans,
            "sa_asked_by_label": {
                label: sum(1 for r in rows if r.truth == label and r.outcomes[m].sa_asked)
                for label in ("ham", "spam", "virus")
            },
            "cache_hits": sum(1 for r in rows if r.outcomes[m].cache in ("hit", "attachments")),
        }
    return out


# -- a campaign: the same attachment, near-identical bodies ------------------------------------------
def campaign(count: int, attachment: bytes, filename: str, seed: str = "outbreak") -> list[bytes]:
    """`count` messages as an outbreak sends them: one attachment, bodies differing in a name and a
    number, distinct Message-IDs and subjects."""
    out = []
    for i in range(count):
        m = EmailMessage()
        m["From"] = f"billing{i % 7}@invoices.example.net"
        m["To"] = RECIPIENT
        m["Subject"] = f"Invoice {4711 + i} overdue"
        m["Message-ID"] = f"<{hashlib.md5(f'{seed}{i}'.encode()).hexdigest()}@invoices.example.net>"
        m.set_content(
            f"Dear customer {i},\n\nplease find attached invoice {4711 + i}; payment is overdue.\n"
            "Open the attached document to see the amount.\n\nRegards,\nAccounts\n"
        )
        m.add_attachment(attachment, maintype="application", subtype="octet-stream", filename=filename)
        out.append(bytes(m))
    return out
