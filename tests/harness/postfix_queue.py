"""Queue-file surgery for tests: make a held message look older, the way Postfix itself sees age.

`postqueue -j` and qmgr take a message's arrival time from the queue file's time record (type 'T',
"seconds microseconds"), not from the file's mtime. `age_held_message` rewrites that record in
place with an earlier time of the same length, so the file stays a valid queue file.
"""

from __future__ import annotations

import os
from pathlib import Path

REC_TYPE_TIME = ord("T")


def _records(data: bytes) -> list[tuple[int, int, int]]:
    """(type, data offset, data length) of each record up to the message content."""
    out = []
    pos = 0
    while pos < len(data):
        rtype = data[pos]
        pos += 1
        length = shift = 0
        while True:
            byte = data[pos]
            pos += 1
            length |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        out.append((rtype, pos, length))
        pos += length
        if rtype == ord("M"):  # message content starts: the envelope records are behind us
            break
    return out


def age_held_message(queue_dir: Path, queue_id: str, seconds: int) -> int:
    """Move the arrival time of held `queue_id` back by `seconds`; returns the new arrival time."""
    path = Path(queue_dir) / "hold" / queue_id
    data = path.read_bytes()
    for rtype, offset, length in _records(data):
        if rtype != REC_TYPE_TIME:
            continue
        fields = data[offset : offset + length].decode().split()
        new = str(int(fields[0]) - seconds)
        if len(new) != len(fields[0]):
            raise ValueError(f"cannot age {queue_id} by {seconds}s without changing the record length")
        stat = path.stat()
        with path.open("r+b") as f:  # same length, in place: owner, mode and inode stay Postfix's
            f.seek(offset)
            f.write(" ".join([new, *fields[1:]]).encode())
        os.utime(path, (stat.st_atime, stat.st_mtime - seconds))
        return int(new)
    raise ValueError(f"{path}: no arrival time record")
