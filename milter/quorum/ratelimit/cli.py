"""`quorum ratelimit show|reset KEY`: an operator's view of the buckets in Redis.

KEY is `sender_domain:example.com`, `recipient_domain:example.com`, `client_ip:192.0.2.1`,
`auth_user:alice`, or a bare domain (both domain kinds), IP address or user (contains '@').
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable
from typing import Any

from quorum.ratelimit.buckets import Planner, parse_key
from quorum.ratelimit.settings import KINDS, RateLimitSettings, Rule

COMMAND = "ratelimit"


def add_cli(subparsers: Any, with_config: Callable[[argparse.ArgumentParser], argparse.ArgumentParser]) -> None:
    p = with_config(subparsers.add_parser(COMMAND, help="show or reset rate-limit buckets in Redis"))
    p.add_argument("action", choices=("show", "reset"))
    p.add_argument("key", help=f"{'|'.join(f'{k}:VALUE' for k in KINDS)}, or a bare domain, IP or user")
    p.add_argument("--json", action="store_true", help="machine-readable output (show)")


def handles(command: str) -> bool:
    return command == COMMAND


def run_cli(args: argparse.Namespace, config: Any) -> int:
    settings = config.feature("ratelimit")
    if not isinstance(settings, RateLimitSettings):
        print(f"error: rate limiting is not enabled in {config.path or 'the config'} ([ratelimit])", file=sys.stderr)
        return 2
    planner = Planner(settings)
    targets = []
    for kind, value in parse_key(args.key.strip()):
        subject = planner.subject(kind, value)
        if not subject:
            print(f"error: {args.key!r} is not a valid {kind} value", file=sys.stderr)
            return 2
        targets.append((kind, subject))
    from quorum.ratelimit.connect import connect

    try:
        backend = connect(settings.redis)
        try:
            if args.action == "reset":
                return _reset(backend, planner, targets)
            return _show(backend, planner, targets, args.json)
        finally:
            backend.close()
    except Exception as exc:  # redis errors, timeouts, a Cluster without any reachable node
        print(
            f"error: Redis ({settings.redis.mode}, {settings.redis.url}): {type(exc).__name__}: {exc}", file=sys.stderr
        )
        return 1


def usage(rule: Rule, tat: int, now: int) -> dict[str, Any]:
    """What a bucket holds: `left` single units can pass right now; it is empty after `empty_in` s."""
    interval = rule.interval_us
    debt = max(0, tat - now) if tat else 0
    left = max(0, math.floor((rule.limit * interval - debt) / interval))
    return {"used": rule.limit - left, "left": left, "empty_in": debt / 1e6}


def human_duration(seconds: float) -> str:
    """Whole seconds, rounded up: 1079.9 -> "18m", 3725 -> "1h2m5s"."""
    h, rest = divmod(math.ceil(seconds), 3600)
    m, sec = divmod(rest, 60)
    return "".join(f"{n}{unit}" for n, unit in ((h, "h"), (m, "m"), (sec, "s")) if n) or "0s"


def _show(backend: Any, planner: Planner, targets: list[tuple[str, str]], as_json: bool) -> int:
    rows: list[dict[str, Any]] = []
    buckets = [(kind, subject, rule, key) for kind, subject in targets for rule, key in planner.buckets(kind, subject)]
    now, tats = backend.peek([b[3] for b in buckets]) if buckets else (0, [])
    for kind, subject in targets:
        mine = [
            (rule, key, tat) for (k, s, rule, key), tat in zip(buckets, tats, strict=True) if (k, s) == (kind, subject)
        ]
        if not mine:
            override = planner.override(kind, subject)
            rows.append(
                {"kind": kind, "subject": subject, "limit": "exempt" if override and override.exempt else "unlimited"}
            )
        for rule, key, tat in mine:
            rows.append(
                {"kind": kind, "subject": subject, "limit": rule.describe(), "key": key, **usage(rule, tat, now)}
            )
    if as_json:
        print(json.dumps(rows, indent=2))
        return 0
    for r in rows:
        head = f"{r['kind']} {r['subject']}"
        if "key" not in r:
            print(f"{head}: {r['limit']}")
            continue
        empty = f"; empty in {human_duration(r['empty_in'])}" if r["empty_in"] else ""
        print(f"{head}: {r['used']} used of {r['limit']}, {r['left']} left{empty}  [{r['key']}]")
    return 0


def _reset(backend: Any, planner: Planner, targets: list[tuple[str, str]]) -> int:
    keys = [key for kind, subject in targets for _rule, key in planner.buckets(kind, subject)]
    removed = backend.delete(keys) if keys else 0
    names = ", ".join(f"{kind} {subject}" for kind, subject in targets)
    print(f"reset {names}: {len(keys)} bucket(s), {removed} had usage")
    return 0
