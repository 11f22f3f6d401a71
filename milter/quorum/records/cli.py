"""`quorum stats` (from the session records in Redis) and `quorum evaluate` (on a labelled corpus)."""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

COMMANDS = ("stats", "evaluate")
_SINCE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)?\s*$")
_UNITS = {None: 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def add_cli(subparsers: Any, with_config: Callable[[argparse.ArgumentParser], argparse.ArgumentParser]) -> None:
    stats = with_config(subparsers.add_parser("stats", help="what every engine caught and missed, from the records"))
    stats.add_argument("--since", default="1h", help="how far back: 30m, 1h, 7d (default 1h)")
    stats.add_argument("--domain", help="only records whose sender domain, a recipient domain or tenant is this")
    stats.add_argument("--top", type=int, default=10, help="rows in the top-N tables (default 10)")
    stats.add_argument("--json", action="store_true", help="machine-readable output")
    ev = with_config(subparsers.add_parser("evaluate", help="score every engine and combine mode on a labelled corpus"))
    ev.add_argument("corpus", help="directory with ham/, spam/ and virus/ (message files or mbox files)")
    ev.add_argument("--jobs", type=int, default=4, help="scans at a time (default 4)")
    ev.add_argument("--json", action="store_true", help="machine-readable output (schema in the README)")


def handles(command: str) -> bool:
    return command in COMMANDS


def run_cli(args: argparse.Namespace, config: Any) -> int:
    if args.command == "stats":
        return _stats(args, config)
    return _evaluate(args, config)


def parse_since(text: str) -> float | None:
    m = _SINCE.match(text)
    return float(m.group(1)) * _UNITS[m.group(2)] if m else None


def _stats(args: argparse.Namespace, config: Any) -> int:
    from quorum.records import stats, streams
    from quorum.records.feature import client_factory
    from quorum.records.settings import RecordsSettings

    settings = config.feature("records")
    if not isinstance(settings, RecordsSettings):
        print(f"error: session records are not enabled in {config.path or 'the config'} ([records])", file=sys.stderr)
        return 2
    window = parse_since(args.since)
    if window is None or window <= 0:
        print(f"error: --since {args.since!r}: use a duration such as 30m, 1h or 7d", file=sys.stderr)
        return 2
    now = time.time()
    since = now - window
    try:
        client = client_factory(settings)()
        try:
            records = [r for r in streams.read(client, settings, since, now) if _keep(r, args.domain, since)]
        finally:
            client.close()
    except Exception as exc:  # redis errors, timeouts, a Cluster without any reachable node
        redis = settings.redis
        print(f"error: Redis ({redis.mode}, {redis.url}): {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    result = stats.compute(records, top=max(1, args.top))
    result["since"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(since))
    result["domain"] = args.domain.lower() if args.domain else None
    print(json.dumps(result, indent=2) if args.json else stats.render(result))
    return 0


def _keep(record: dict[str, Any], domain: str | None, since: float) -> bool:
    from quorum.records.stats import matches_domain

    if float(record.get("ts") or 0) < since:
        return False
    return domain is None or matches_domain(record, domain)


def _evaluate(args: argparse.Namespace, config: Any) -> int:
    from quorum.records import evaluate
    from quorum.records.corpus import CorpusError, load

    logging.basicConfig(level=logging.ERROR, stream=sys.stderr)
    if not config.enabled_engines:
        print(f"error: no enabled engine in {config.path or 'the config'}", file=sys.stderr)
        return 2
    try:
        samples = load(Path(args.corpus))
    except (CorpusError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    judged = evaluate.judge(config, samples, max(1, args.jobs), evaluate.tty_progress())
    report = evaluate.score(config, judged)
    report["corpus"] = str(args.corpus)
    print(json.dumps(report, indent=2) if args.json else evaluate.render(report))
    return 0
