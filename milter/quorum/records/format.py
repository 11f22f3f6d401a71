"""`[milter] log_format = "json"`: the per-message log line as one JSON object (the record's fields)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from quorum.records.record import from_outcome

if TYPE_CHECKING:
    from quorum.pipeline.stages import Outcome
    from quorum.pipeline.transaction import Transaction


def json_line(txn: Transaction, outcome: Outcome, notes: list[str] | None = None) -> str:
    """One line of JSON (no newline inside: every string is escaped) for logger `quorum.message`."""
    record: dict[str, Any] = from_outcome(txn, outcome)
    if notes:
        record["reasons"] = [*record["reasons"], *notes]
    return json.dumps(record, separators=(",", ":"), default=str, ensure_ascii=True)
