"""A deterministic test corpus: ham, spam (GTUBE and spammy text) and virus (EICAR attachments).

Sizes are spread over 2-200 KB; the same seed always gives byte-identical messages, so
benchmark runs are comparable. Use as a module (`build_corpus()`) or write .eml files:

    python bench/corpus.py --out /tmp/corpus --count 60
"""

from __future__ import annotations

import argparse
import base64
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
EICAR = rb"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
KINDS = ("ham", "spam", "virus")
MIN_SIZE, MAX_SIZE = 2_000, 200_000

_WORDS = (
    "meeting project report budget schedule review team update quarter design draft client invoice "
    "release server network backup policy training office travel agenda minutes summary proposal "
    "contract deadline feedback analysis estimate planning support ticket customer delivery order"
).split()
_SPAM_WORDS = (
    "FREE winner prize cash guaranteed viagra casino limited offer click here unsubscribe million "
    "dollars urgent act now credit loan approved bonus exclusive deal discount pharmacy"
).split()
_EPOCH = datetime(2024, 3, 1, 9, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Sample:
    name: str
    kind: str  # ham | spam | virus
    raw: bytes
    sender: str
    recipient: str

    @property
    def size(self) -> int:
        return len(self.raw)


def _text(rng: random.Random, words: list[str], size: int) -> str:
    """Paragraphs of ~72-column lines, about `size` bytes."""
    lines: list[str] = []
    total = 0
    line: list[str] = []
    while total < size:
        word = rng.choice(words)
        line.append(word)
        if sum(len(w) + 1 for w in line) > 72:
            text = " ".join(line)
            lines.append(text)
            total += len(text) + 2
            line = []
            if rng.random() < 0.15:
                lines.append("")
                total += 2
    return "\r\n".join(lines)


def _headers(rng: random.Random, i: int, sender: str, recipient: str, subject: str, extra: str) -> str:
    date = _EPOCH + timedelta(minutes=i * 7)
    return (
        f"Return-Path: <{sender}>\r\n"
        f"Received: from mail.example.com (mail.example.com [192.0.2.1])\r\n"
        f"\tby mx.example.org with ESMTPS id {rng.getrandbits(40):010X}; {format_datetime(date)}\r\n"
        f"From: {sender.split('@')[0].title()} <{sender}>\r\n"
        f"To: <{recipient}>\r\n"
        f"Subject: {subject}\r\n"
        f"Date: {format_datetime(date)}\r\n"
        f"Message-ID: <corpus.{i}.{rng.getrandbits(32):08x}@example.com>\r\n"
        f"MIME-Version: 1.0\r\n{extra}"
    )


def _ham(rng: random.Random, i: int, size: int) -> tuple[str, bytes]:
    sender, rcpt = "alice@example.com", "bob@example.org"
    head = _headers(
        rng,
        i,
        sender,
        rcpt,
        f"Re: {rng.choice(_WORDS)} {rng.choice(_WORDS)}",
        "Content-Type: text/plain; charset=us-ascii\r\n",
    )
    body = "Hi Bob,\r\n\r\n" + _text(rng, _WORDS, size - len(head) - 40) + "\r\n\r\nThanks,\r\nAlice\r\n"
    return sender, (head + "\r\n" + body).encode()


def _spam(rng: random.Random, i: int, size: int) -> tuple[str, bytes]:
    """GTUBE in a short first text part (rspamd checks for GTUBE only in text parts up to 8 KiB),
    then an HTML part of spammy filler up to the wanted size."""
    sender, rcpt = "promo@example.com", "bob@example.org"
    boundary = f"=_corpus_{rng.getrandbits(48):012x}"
    head = _headers(
        rng, i, sender, rcpt, "You are a WINNER", f'Content-Type: multipart/mixed; boundary="{boundary}"\r\n'
    )
    lead = f"Dear friend,\r\n\r\n{GTUBE}\r\n\r\n{_text(rng, _SPAM_WORDS, 300)}\r\n"
    filler = _text(rng, _SPAM_WORDS + _WORDS, max(0, size - len(head) - len(lead) - 300))
    body = (
        f"--{boundary}\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n{lead}"
        f"--{boundary}\r\nContent-Type: text/html; charset=us-ascii\r\n\r\n"
        f"<html><body><p>{filler}</p></body></html>\r\n--{boundary}--\r\n"
    )
    return sender, (head + "\r\n" + body).encode()


def _virus(rng: random.Random, i: int, size: int) -> tuple[str, bytes]:
    sender, rcpt = "carol@example.com", "bob@example.org"
    boundary = f"=_corpus_{rng.getrandbits(48):012x}"
    head = _headers(
        rng, i, sender, rcpt, "Invoice attached", f'Content-Type: multipart/mixed; boundary="{boundary}"\r\n'
    )
    bare = _multipart(boundary, b"")
    padding = rng.randbytes(max(0, (size - len(head) - len(bare)) * 3 // 4))
    return sender, (head + "\r\n" + _multipart(boundary, padding)).encode()


def _multipart(boundary: str, padding: bytes) -> str:
    parts = [
        ("text/plain; charset=us-ascii", None, b"Please find the invoice attached.\r\n"),
        ("application/octet-stream", "invoice.com", EICAR),
        ("application/pdf", "scan.pdf", b"%PDF-1.4\n" + padding),
    ]
    body = ""
    for ctype, filename, data in parts:
        body += f"--{boundary}\r\nContent-Type: {ctype}\r\n"
        if filename is None:
            body += "\r\n" + data.decode() + "\r\n"
            continue
        encoded = base64.encodebytes(data).decode().replace("\n", "\r\n")
        body += (
            f'Content-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename="{filename}"\r\n\r\n'
            f"{encoded}"
        )
    return body + f"--{boundary}--\r\n"


_MAKERS = {"ham": _ham, "spam": _spam, "virus": _virus}


def build_corpus(count: int = 60, seed: int = 20240301, mix: tuple[int, int, int] = (6, 3, 1)) -> list[Sample]:
    """`count` messages; `mix` is the ham:spam:virus ratio; sizes log-uniform over 2-200 KB."""
    rng = random.Random(seed)
    kinds = [kind for kind, n in zip(KINDS, mix, strict=True) for _ in range(n)]
    samples = []
    for i in range(count):
        kind = kinds[i % len(kinds)]
        size = int(MIN_SIZE * (MAX_SIZE / MIN_SIZE) ** rng.random())
        sender, raw = _MAKERS[kind](rng, i, size)
        samples.append(Sample(f"{i:04d}-{kind}", kind, raw, sender, "bob@example.org"))
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="directory for the .eml files")
    parser.add_argument("--count", type=int, default=60)
    parser.add_argument("--seed", type=int, default=20240301)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for sample in build_corpus(args.count, args.seed):
        (args.out / f"{sample.name}.eml").write_bytes(sample.raw)
    print(f"wrote {args.count} messages to {args.out}")


if __name__ == "__main__":
    main()
