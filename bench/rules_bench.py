"""Keyword/regex rules: the MIME parser policy choice, and what evaluating rules costs.

1. compat32 vs default (stdlib `email` policies): mutated MIME messages parsed and read with the
   accessors a walker needs; counts the messages on which each raised (why `quorum.rules.mime`
   uses compat32, and which failures it still guards).
2. `evaluate` with 20 rules (subject, headers, body, file names) per message: typical messages and
   hostile ones (many parts, deep nesting, large base64 text, HTML comment bombs): CPU and wall ms
   (wall > CPU means the machine was busy with something else).

    .venv/bin/python bench/rules_bench.py [--mutations 5000]
"""

from __future__ import annotations

import argparse
import base64
import collections
import email.policy
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "milter")]

from email.parser import BytesParser  # noqa: E402

from quorum.config.fields import Problems  # noqa: E402
from quorum.message import Message  # noqa: E402
from quorum.rules import MimeLimits, evaluate, parse_rules  # noqa: E402

SEEDS = [
    b'Subject: =?utf-8?B?4oKs?= hi\r\nContent-Type: multipart/mixed; boundary="b1"\r\n\r\n--b1\r\n'
    b'Content-Type: text/plain; charset="koi8-r"\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n=F0=D2=C9\r\n'
    b'--b1\r\nContent-Type: application/octet-stream; name="=?utf-8?q?a=E2=82=AC.exe?="\r\n'
    b"Content-Disposition: attachment; filename*0*=UTF-8''%E2%82%AC; filename*1*=.exe\r\n"
    b"Content-Transfer-Encoding: base64\r\n\r\nQUJD\r\n--b1\r\nContent-Type: message/rfc822\r\n\r\nSubject: inner\r\n"
    b"Content-Type: text/html; charset=shift_jis\r\n\r\n<b>x</b>\r\n--b1--\r\n",
    b"Content-Type: multipart/alternative; boundary=x\r\n\r\n--x\r\nContent-Type: text/html; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: base64\r\n\r\nPGI+ZnI8L2I+ZWU=\r\n--x\r\n"
    b"Content-Type: text/plain; charset*=utf-8'en'%E2%82; format=flowed\r\n\r\nhi\r\n--x--\r\n",
]
TOKENS = [
    b"\r\n", b"--", b"=?", b"?=", b"?b?", b"?q?", b"*0*=", b"*1*=", b"''", b"%", b"%E2", b";", b'"', b"=", b"\x00",
    b"\xff", b"\xe2\x82", b"boundary=", b"charset=", b"multipart/mixed", b"message/rfc822", b"base64",
    b"quoted-printable", b"name=", b"filename*=", b"(", b")", b"<", b">", b"\\", b":", b" ", b"\t", b"utf-8",
    b"undefined", b"punycode",
]  # fmt: skip


def mutate(rng: random.Random, data: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        op, pos = rng.random(), rng.randint(0, len(out))
        if op < 0.4:
            out[pos:pos] = rng.choice(TOKENS)
        elif op < 0.7 and out:
            del out[pos : pos + rng.randint(1, 8)]
        elif op < 0.85 and out:
            out[min(pos, len(out) - 1)] = rng.randrange(256)
        else:
            start = rng.randint(0, len(out))
            out[pos:pos] = out[start : start + rng.randint(1, 40)]
    return bytes(out)


def read_with_stdlib(data: bytes, policy: Any) -> None:
    msg = BytesParser(policy=policy).parsebytes(data)
    for part in msg.walk():
        part.get_content_type()
        part.get_filename()
        part.get_content_charset()
        part.get_params()
        str(part.get("subject", ""))
        part.get_payload(decode=True)
        if policy is email.policy.default and not part.is_multipart():
            try:
                part.get_content()
            except KeyError:
                pass  # no content manager for the type: documented


def compare_policies(count: int) -> None:
    rng = random.Random(1)
    raised = {"compat32": collections.Counter[str](), "default": collections.Counter[str]()}
    for _ in range(count):
        data = mutate(rng, rng.choice(SEEDS))
        for name, policy in (("compat32", email.policy.compat32), ("default", email.policy.default)):
            try:
                read_with_stdlib(data, policy)
            except Exception as exc:
                raised[name][type(exc).__name__] += 1
    print(f"stdlib email policies on {count} mutated MIME messages (parse + read every part):")
    for name, counter in raised.items():
        print(f"  {name:9s} raised on {sum(counter.values()):5d}  {dict(counter.most_common(5))}")


BODY_RULES = [
    {"name": f"body{i}", "where": "body", "pattern": f"(?i)word{i}|casino{i}", "action": "score", "score": 1}
    for i in range(12)
]
FILE_RULES = [
    {"name": f"file{i}", "where": "filename", "pattern": rf"(?i)\.(exe|scr|js|{i})$", "action": "quarantine"}
    for i in range(5)
]
RULES = parse_rules(
    [
        *BODY_RULES,
        {"name": "free", "where": "body", "pattern": r"(?i)\bfree\s+spins\b", "action": "reject"},
        {"name": "subj", "where": "subject", "pattern": "(?i)winner", "action": "tag"},
        {"name": "mailer", "where": "header:X-Mailer", "pattern": "Bulk", "action": "score", "score": 2},
        *FILE_RULES,
    ],
    "rules",
    Problems(),
)


def sample_messages() -> dict[str, bytes]:
    html = ("<html><body>" + "<p>Hello <b>friend</b>, news &amp; offers, free spins inside.</p>\n" * 300).encode()
    text = ("Plain text line with some words for the keyword rules to look at.\r\n" * 600).encode()
    att = base64.encodebytes(b"\x00" * 2_000_000)
    typical = (
        b"Subject: =?utf-8?q?Newsletter?=\r\nX-Mailer: BulkMail\r\n"
        b'Content-Type: multipart/mixed; boundary="m"\r\n\r\n--m\r\n'
        b'Content-Type: multipart/alternative; boundary="a"\r\n\r\n'
        b"--a\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        + text
        + b"\r\n--a\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + base64.encodebytes(html)
        + b'--a--\r\n--m\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename="r.pdf"\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\n" + att + b"--m--\r\n"
    )
    parts = b"".join(b"--b\r\nContent-Type: text/plain\r\n\r\np\r\n" for _ in range(50_000))
    nest = b"".join(b"Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n" % (i, i) for i in range(5000))
    big_text = base64.encodebytes(b"lorem ipsum dolor " * 1_300_000)
    return {
        "short text (1 KB)": b"Subject: hi\r\n\r\n" + b"hello world " * 80,
        "typical: text + base64 html + 2 MB pdf": typical,
        "50,000 parts (stops at 500)": b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n' + parts,
        "5,000 nested multiparts (stops at 20)": nest,
        "24 MB base64 text (1 MiB examined)": b"Content-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + big_text,
        "1 MB of '<!--' in HTML": b"Content-Type: text/html\r\n\r\n" + b"<!--" * 250_000,
        "1 MiB dense HTML": b"Content-Type: text/html\r\n\r\n" + b"<p>hello <b>fr</b>ee</p>\n" * 44_000,
    }


def time_evaluate(repeat: int) -> None:
    print(f"\nevaluate() with {len(RULES)} rules, default [mime] limits, median of {repeat}:")
    for name, raw in sample_messages().items():
        message = Message.from_bytes(raw, memory_limit=64 << 20)
        times, cpu = [], []
        for _ in range(repeat):
            start, start_cpu = time.perf_counter(), time.process_time()
            result = evaluate(RULES, message, MimeLimits(), time.monotonic() + 60)
            times.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
        message.close()
        facts = f"parts={result.parts} hits={len(result.hits)} limit={result.limit_hit} truncated={result.truncated}"
        wall, used = statistics.median(times) * 1000, statistics.median(cpu) * 1000
        print(f"  {name:40s} {len(raw) / 1e6:5.1f} MB  cpu {used:7.1f} ms  wall {wall:7.1f} ms  {facts}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mutations", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    compare_policies(args.mutations)
    time_evaluate(args.repeat)


if __name__ == "__main__":
    main()
