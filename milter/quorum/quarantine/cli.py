"""`quorum quarantine list|show|release|delete|expire|digest`: Quorum's quarantine on Postfix's hold queue.

Exit status: 0 when every requested message was handled, 1 when any failed (nothing is reported as
released or deleted unless Postfix's queue confirms it), 2 for usage or config errors.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from typing import Any

from quorum.quarantine.audit import audit_logger, invoking_user
from quorum.quarantine.held import HeldMessage
from quorum.quarantine.manage import ActionResult, Quarantine, tenant_retention
from quorum.quarantine.postfix import PostfixCommandError
from quorum.quarantine.settings import QuarantineSettings

COMMAND = "quarantine"
_AGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_AGE_UNITS = {"": 86400, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_age(text: str) -> float:
    """`30d`, `12h`, `2w`, `90m`, `45s`; a bare number means days."""
    m = _AGE.match(text)
    if not m:
        raise argparse.ArgumentTypeError(f"{text!r} is not an age; use e.g. 7d, 12h, 2w")
    return float(m.group(1)) * _AGE_UNITS[m.group(2)]


def add_cli(subparsers: Any, with_config: Callable[[argparse.ArgumentParser], argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(COMMAND, help="list, show, release, delete or expire mail Quorum held")
    actions = p.add_subparsers(dest="quarantine_action", required=True)
    ls = with_config(actions.add_parser("list", help="messages Quorum put in the hold queue"))
    ls.add_argument("--domain", help="only messages with a recipient in this domain")
    ls.add_argument("--older-than", type=parse_age, metavar="AGE", help="only messages held longer, e.g. 7d")
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    show = with_config(actions.add_parser("show", help="headers and reason of one held message"))
    show.add_argument("queue_id")
    show.add_argument("--json", action="store_true")
    for name, text in (("release", "release to delivery (postsuper -H)"), ("delete", "delete (postsuper -d)")):
        a = with_config(actions.add_parser(name, help=text))
        a.add_argument("queue_ids", nargs="*", metavar="QID")
        a.add_argument("--domain", help="every held message with a recipient in this domain")
    dg = with_config(actions.add_parser("digest", help="tell each recipient what is held for them (run daily)"))
    dg.add_argument("--domain", help="only recipients in this domain")
    dg.add_argument("--dry-run", action="store_true", help="list who would get a digest, send nothing")
    ex = with_config(actions.add_parser("expire", help="delete held mail older than the retention"))
    ex.add_argument(
        "--older-than", type=parse_age, metavar="AGE", help="e.g. 30d (default: per-domain or [quarantine] retention)"
    )


def handles(command: str) -> bool:
    return command == COMMAND


def run_cli(args: argparse.Namespace, config: Any) -> int:
    settings = config.feature(COMMAND) if config is not None else None
    if not isinstance(settings, QuarantineSettings):
        settings = QuarantineSettings()
    action = args.quarantine_action
    if action in ("release", "delete") and not args.queue_ids and not args.domain:
        print(f"error: quarantine {action}: name queue ids or --domain", file=sys.stderr)
        return 2
    if action == "expire" and args.older_than is None and settings.retention is None:
        if config is None or config.feature("tenants") is None:
            print(
                "error: quarantine expire: pass --older-than (e.g. 30d) or set [quarantine] retention",
                file=sys.stderr,
            )
            return 2
    quarantine = Quarantine(
        settings,
        audit=audit_logger(settings),
        who=invoking_user(),
        retention_for=lambda domain: tenant_retention(config, domain),
    )
    try:
        if action == "list":
            return _list(quarantine.list_held(args.domain, args.older_than), args.json)
        if action == "show":
            return _show(quarantine.show(args.queue_id), args.queue_id, args.json)
        if action == "release":
            return _report(quarantine.release(args.queue_ids, args.domain))
        if action == "delete":
            return _report(quarantine.delete(args.queue_ids, args.domain))
        if action == "digest":
            return _digest(quarantine, config, args.domain, args.dry_run)
        return _report(quarantine.expire(args.older_than))
    except PostfixCommandError as exc:
        quarantine.audit.error(f"user={quarantine.who!r} action={action} result=failed error={str(exc)!r}")
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _digest(quarantine: Quarantine, config: Any, domain: str | None, dry_run: bool) -> int:
    from quorum.notify.feature import make_notifier
    from quorum.notify.settings import NotifySettings
    from quorum.quarantine.digest import plan, send, tenant_notify

    notify = config.feature("notify") if config is not None else None
    if not isinstance(notify, NotifySettings):
        print("error: quarantine digest: digests are notices; configure [notify] (relay, from)", file=sys.stderr)
        return 2
    lookup, close = tenant_notify(config)
    try:
        digests = plan(quarantine.messages(domain), lookup)
    finally:
        close()
    for d in digests:
        ids = ", ".join(m.queue_id for m in d.messages)
        print(f"{d.recipient}: {len(d.messages)} held message(s) ({ids}){' [dry run]' if dry_run else ''}")
    if dry_run:
        print(f"{len(digests)} digest(s) would be sent")
        return 0
    _notice_log_to_stderr()
    run = send(digests, make_notifier(notify), timeout=max(30.0, 2 * notify.timeout))
    stats = run.stats
    suppressed = sum(stats.get("suppressed", {}).values())
    summary = f"sent={stats.get('sent', 0)} suppressed={suppressed} failed={stats.get('failed', 0)}"
    if stats.get("dropped"):
        summary += f" dropped={stats['dropped']}"
    quarantine.record(
        "digest",
        run.queue_ids,
        "ok" if run.ok else "failed",
        f"recipients={len(digests)} {summary}" + (f" domain={domain}" if domain else ""),
    )
    print(f"{len(digests)} digest(s): {summary}")
    return 0 if run.ok else 1


def _notice_log_to_stderr() -> None:
    """The notifier's per-notice lines (sent, suppressed by, NOT SENT) are the digest's report."""
    import logging

    logger = logging.getLogger("quorum.notify")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


def _list(messages: list[HeldMessage], as_json: bool) -> int:
    if as_json:
        print(json.dumps([m.summary() for m in messages], indent=2))
        return 0
    for m in messages:
        rcpts = ", ".join(m.recipients)
        print(f"{m.queue_id:<14} {m.date}  {m.size:>9}  <{m.sender}> -> {rcpts}")
        print(f"{'':<14} reason: {m.reason}")
    print(f"{len(messages)} message(s) held by Quorum")
    return 0


def _show(message: HeldMessage | None, queue_id: str, as_json: bool) -> int:
    if message is None:
        print(
            f"error: {queue_id} is not held by Quorum (not in the hold queue, or no X-Quorum-Quarantine header)",
            file=sys.stderr,
        )
        return 1
    if as_json:
        print(json.dumps({**message.summary(), "headers": message.headers}, indent=2))
        return 0
    print(f"queue id:   {message.queue_id}")
    print(f"held since: {message.date}")
    print(f"size:       {message.size}")
    print(f"sender:     <{message.sender}>")
    print(f"recipients: {', '.join(message.recipients)}")
    print(f"reason:     {message.reason}")
    print()
    print(message.headers, end="")
    return 0


def _report(result: ActionResult) -> int:
    verb = {"release": "released", "delete": "deleted", "expire": "expired"}[result.action]
    for qid in result.done:
        print(f"{qid}: {verb} ({result.notes.get(qid, '')})")
    for qid, why in result.failed.items():
        print(f"{qid}: NOT {verb}: {why}", file=sys.stderr)
    print(f"{len(result.done)} {verb}" + (f", {len(result.failed)} failed" if result.failed else ""))
    return 0 if result.ok else 1
