"""The headers Quorum writes, and the inbound ones it strips so senders cannot forge them."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from quorum.pipeline.answer import Action
from quorum.verdict import Verdict

if TYPE_CHECKING:
    from quorum.pipeline.policy import Decision
    from quorum.pipeline.transaction import Scan

_DETAIL_UNSAFE = re.compile(r"[,;()\x00-\x1f\x7f]+")
_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9_.:-]+")

OWN_HEADER_PREFIX = "x-quorum-"
FORGEABLE = ("x-spam-flag", "x-spam-status")
FOLD_WIDTH = 200


def is_ours(name: str) -> bool:
    lname = name.lower()
    return lname.startswith(OWN_HEADER_PREFIX) or lname in FORGEABLE


def engine_item(v: Verdict) -> str:
    """`name=status(detail)` with the detail stripped of `,;()` and control characters."""
    name = _NAME_UNSAFE.sub("-", v.engine)
    label = v.label()
    status, _, detail = label.partition("(")
    detail = _DETAIL_UNSAFE.sub(" ", detail[:-1]).strip() if detail else ""
    detail = " ".join(detail.split())[:80]
    return f"{name}={status}({detail})" if detail else f"{name}={status}"


def fold_items(items: list[str], width: int = FOLD_WIDTH) -> str:
    """`a, b, c` on one line while it fits in `width`, else folded after a comma (LF+TAB), so a
    long engine list is never cut by the per-line cap of `sanitise_header`."""
    lines: list[str] = []
    for item in items:
        if lines and len(lines[-1]) + 2 + len(item) <= width:
            lines[-1] += ", " + item
        else:
            if lines:
                lines[-1] += ","
            lines.append(item)
    return "\n\t".join(lines)


def verdict_value(d: Decision) -> str:
    value = d.label
    if d.label == "spam":
        value += f"; score={d.score or 0.0:.2f}"
    if d.degraded:
        value += "; degraded=" + ",".join(_NAME_UNSAFE.sub("-", n) for n in d.degraded)
    return value


def headers_to_add(d: Decision, scan: Scan) -> list[tuple[str, str]]:
    if d.action not in (Action.ACCEPT, Action.TAG, Action.QUARANTINE):
        return []
    out = list(scan.headers)
    out.append(("X-Quorum-Verdict", verdict_value(d)))
    if d.verdicts:
        out.append(("X-Quorum-Engines", fold_items([engine_item(v) for v in d.verdicts])))
    if d.label == "spam":
        out.append(("X-Spam-Flag", "YES"))
    if d.action is Action.QUARANTINE and d.quarantine_reason:
        out.append(("X-Quorum-Quarantine", sanitise_reply(d.quarantine_reason, double_percent=False)))
    return out


def sanitise_header(value: str) -> str:
    """A value for addheader: folds kept as LF+TAB (Postfix writes CRLF), each line sanitised."""
    parts = [sanitise_reply(p, double_percent=False) for p in re.split(r"\r?\n[ \t]+", value) if p.strip()]
    return "\n\t".join(parts)


def sanitise_reply(text: str, double_percent: bool = True) -> str:
    """One line of printable text; `%` doubled because libmilter treats it as a format."""
    flat = " ".join(re.sub(r"[\x00-\x1f\x7f]", " ", text).split())
    flat = flat.encode("ascii", "replace").decode("ascii")[:400]
    return flat.replace("%", "%%") if double_percent else flat
