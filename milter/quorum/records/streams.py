"""Where records live in Redis: one Stream, or one hash-tagged Stream per hour.

`quorum:records:{2024061512}` holds the records written in that UTC hour. The hash tag puts each
hour in its own Cluster slot, so the hours spread over the masters, and a reader finds every key
of a time range by computing the names (no SCAN across nodes). Each record is one field `r`: the
record as compact JSON.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

from quorum.records.settings import RecordsSettings

FIELD = "r"
HOUR = 3600


def hour_key(stream: str, ts: float) -> str:
    return f"{stream}:{{{time.strftime('%Y%m%d%H', time.gmtime(ts))}}}"


def key_for(settings: RecordsSettings, ts: float) -> str:
    return hour_key(settings.stream, ts) if settings.hourly else settings.stream


def keys_between(settings: RecordsSettings, start: float, end: float) -> list[str]:
    """Every key that may hold records written between `start` and `end` (epoch seconds)."""
    if not settings.hourly:
        return [settings.stream]
    first = int(start // HOUR) * HOUR
    return [hour_key(settings.stream, ts) for ts in range(first, int(end) + 1, HOUR)]


def read(
    client: Any, settings: RecordsSettings, since: float, until: float | None = None, page: int = 5000
) -> Iterator[dict[str, Any]]:
    """Records written since `since` (epoch seconds), oldest first per key; unreadable entries are skipped."""
    until = time.time() if until is None else until
    low = f"{int(since * 1000)}-0"
    for key in keys_between(settings, since, until):
        start = low
        while True:
            entries = client.xrange(key, min=start, max="+", count=page)
            for _entry_id, fields in entries:
                record = _decode(fields)
                if record is not None:
                    yield record
            if len(entries) < page:
                break
            last = entries[-1][0]
            last = last.decode() if isinstance(last, bytes) else str(last)
            start = "(" + last


def _decode(fields: dict[Any, Any]) -> dict[str, Any] | None:
    raw = fields.get(FIELD.encode(), fields.get(FIELD))
    if raw is None:
        return None
    try:
        record = json.loads(raw)
    except (TypeError, ValueError):
        return None
    return record if isinstance(record, dict) else None
