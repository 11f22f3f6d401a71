"""`quorum stats`: what the session records say, computed from a list of records (see record.py)."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable
from typing import Any

from quorum.records.agreement import ANSWERED, POSITIVE, pairwise

REFUSED = frozenset({"reject", "tempfail"})


def matches_domain(record: dict[str, Any], domain: str) -> bool:
    d = domain.lower()
    return record.get("sender_domain") == d or d in (record.get("recipient_domains") or ()) or record.get("tenant") == d


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100) of `values`; None when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def compute(records: Iterable[dict[str, Any]], top: int = 10) -> dict[str, Any]:
    verdicts: Counter[str] = Counter()
    actions: Counter[str] = Counter()
    ratelimit: Counter[str] = Counter()
    engines: dict[str, dict[str, Any]] = {}
    latencies: dict[str, list[float]] = defaultdict(list)
    judgements: list[dict[str, bool]] = []
    detected_by_any = 0
    tops: dict[str, dict[str, list[int]]] = {"sender_domains": {}, "recipient_domains": {}, "clients": {}}
    total = 0
    for r in records:
        total += 1
        verdicts[str(r.get("verdict"))] += 1
        actions[str(r.get("action"))] += 1
        refused = r.get("action") in REFUSED
        limited = (r.get("ratelimit") or {}).get("refused")
        if limited:
            ratelimit[str(limited)] += 1
        _count_top(tops["sender_domains"], [r.get("sender_domain") or "<>"], refused)
        _count_top(tops["recipient_domains"], r.get("recipient_domains") or [], refused)
        _count_top(tops["clients"], [r.get("client_ip") or "-"], refused)
        judged: dict[str, bool] = {}
        for v in r.get("engines") or ():
            name, status = str(v.get("engine")), str(v.get("status"))
            e = engines.setdefault(name, _engine_row(str(v.get("category"))))
            e["statuses"][status] = e["statuses"].get(status, 0) + 1
            if status == "cancelled":
                continue  # the answer was settled without it: not a trial
            e["judged"] += 1
            if status == "error":
                e["timeouts" if v.get("error") == "timeout" else "errors"] += 1
            elif v.get("detail") == "circuit-open":
                e["circuit_open"] += 1
            if status in ANSWERED:
                judged[name] = status in POSITIVE
                latencies[name].append(float(v.get("elapsed_ms") or 0.0))
        positives = [name for name, pos in judged.items() if pos]
        if positives:
            detected_by_any += 1
        for name in positives:
            engines[name]["detections"] += 1
            if len(positives) == 1:
                engines[name]["only_by"] += 1
        if judged:
            judgements.append(judged)
    for name, e in engines.items():
        n = e["judged"]
        e["detection_share"] = _ratio(e["detections"], detected_by_any)
        e["error_rate"] = _ratio(e.pop("errors"), n)
        e["timeout_rate"] = _ratio(e.pop("timeouts"), n)
        e["circuit_open_rate"] = _ratio(e.pop("circuit_open"), n)
        e["p50_ms"] = percentile(latencies[name], 50)
        e["p99_ms"] = percentile(latencies[name], 99)
    return {
        "records": total,
        "totals": {"verdict": dict(verdicts.most_common()), "action": dict(actions.most_common())},
        "detected_by_any": detected_by_any,
        "engines": dict(sorted(engines.items())),
        "agreement": pairwise(judgements, engines),
        "top": {kind: _top(rows, top) for kind, rows in tops.items()},
        "ratelimit_refused": dict(ratelimit.most_common()),
    }


def _engine_row(category: str) -> dict[str, Any]:
    return {
        "category": category,
        "judged": 0,
        "statuses": {},
        "detections": 0,
        "only_by": 0,
        "errors": 0,
        "timeouts": 0,
        "circuit_open": 0,
    }


def _count_top(table: dict[str, list[int]], names: Iterable[Any], refused: bool) -> None:
    for name in names:
        row = table.setdefault(str(name), [0, 0])
        row[0] += 1
        row[1] += refused


def _top(table: dict[str, list[int]], n: int) -> list[dict[str, Any]]:
    ranked = sorted(table.items(), key=lambda item: (-item[1][0], item[0]))[:n]
    return [{"name": k, "messages": m, "refused": f, "refusal_rate": _ratio(f, m)} for k, (m, f) in ranked]


def _ratio(a: int, b: int) -> float | None:
    return round(a / b, 4) if b else None


def render(stats: dict[str, Any]) -> str:
    """Plain text for people."""
    lines = [f"{stats['records']} record(s){_window(stats)}"]
    for kind in ("verdict", "action"):
        counts = ", ".join(f"{k} {v}" for k, v in stats["totals"][kind].items()) or "-"
        lines.append(f"by {kind}: {counts}")
    if stats["engines"]:
        lines.append("")
        lines.append(
            f"{'engine':<16} {'judged':>7} {'detect':>7} {'share':>6} {'only':>5} {'err%':>6} {'tmo%':>6}"
            f" {'open%':>6} {'p50ms':>8} {'p99ms':>8}  statuses"
        )
        for name, e in stats["engines"].items():
            statuses = ", ".join(f"{k} {v}" for k, v in sorted(e["statuses"].items()))
            lines.append(
                f"{name:<16} {e['judged']:>7} {e['detections']:>7} {_pct(e['detection_share']):>6} {e['only_by']:>5}"
                f" {_pct(e['error_rate']):>6} {_pct(e['timeout_rate']):>6} {_pct(e['circuit_open_rate']):>6}"
                f" {_ms(e['p50_ms']):>8} {_ms(e['p99_ms']):>8}  {statuses}"
            )
    if stats["agreement"]:
        lines.append("")
        lines.append("agreement (messages both answered; positive = spam or infected):")
        for p in stats["agreement"]:
            kappa = "n/a" if p["kappa"] is None else f"{p['kappa']:.3f}"
            lines.append(
                f"  {p['a']} / {p['b']}: {p['agree']} of {p['both_judged']} agree"
                f" (both positive {p['both_positive']}, only {p['a']} {p['only_a']}, only {p['b']} {p['only_b']}),"
                f" kappa {kappa}"
            )
    for kind, rows in stats["top"].items():
        if rows:
            lines.append("")
            lines.append(f"top {kind.replace('_', ' ')} (messages, refused):")
            lines.extend(
                f"  {r['name']:<40} {r['messages']:>7} {r['refused']:>7} {_pct(r['refusal_rate']):>6}" for r in rows
            )
    if stats["ratelimit_refused"]:
        lines.append("")
        lines.append(
            "rate-limit refusals by bucket: " + ", ".join(f"{k} {v}" for k, v in stats["ratelimit_refused"].items())
        )
    return "\n".join(lines)


def _window(stats: dict[str, Any]) -> str:
    parts = []
    if stats.get("since"):
        parts.append(f" since {stats['since']}")
    if stats.get("domain"):
        parts.append(f" for {stats['domain']}")
    return "".join(parts)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"
