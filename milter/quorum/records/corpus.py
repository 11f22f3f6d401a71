"""A labelled corpus: CORPUS/ham, CORPUS/spam, CORPUS/virus, each holding message files (one
message per file, `.eml` or any name) or mbox files (a file starting with a "From " line holding
several messages). Hidden files are skipped; subdirectories are read too.
"""

from __future__ import annotations

import mailbox
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

LABELS = ("ham", "spam", "virus")


@dataclass(frozen=True)
class Sample:
    name: str  # path relative to the corpus, "+#N" for the N-th message of an mbox
    truth: str  # ham | spam | virus
    raw: bytes


class CorpusError(Exception):
    pass


def load(root: Path) -> list[Sample]:
    if not root.is_dir():
        raise CorpusError(f"{root} is not a directory")
    found = [label for label in LABELS if (root / label).is_dir()]
    if not found:
        raise CorpusError(f"{root} has none of the directories {', '.join(f'{x}/' for x in LABELS)}")
    samples = [s for label in found for s in _read_dir(root, label)]
    if not samples:
        raise CorpusError(f"no messages under {root}/{{{','.join(found)}}}")
    return samples


def _read_dir(root: Path, label: str) -> Iterator[Sample]:
    for path in sorted((root / label).rglob("*")):
        rel = path.relative_to(root)
        if not path.is_file() or any(part.startswith(".") for part in rel.parts):
            continue
        raw = path.read_bytes()
        if raw.startswith(b"From ") and b"\nFrom " in raw:
            messages = [m.as_bytes() for m in mailbox.mbox(path, create=False)]
            if len(messages) > 1:
                for i, message in enumerate(messages, 1):
                    yield Sample(f"{rel}#{i}", label, message)
                continue
        yield Sample(str(rel), label, raw)
