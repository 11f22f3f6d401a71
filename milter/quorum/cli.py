"""`quorum` command line: run, check-config, schema, scan, health, reload, and each feature's commands."""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import re
import signal
import socket
import stat
import sys
import time
from pathlib import Path
from typing import Any

from quorum import __version__
from quorum.assembly import build_pipeline, load_config
from quorum.config import Config, ConfigError
from quorum.config.loader import DEFAULT_CONFIG
from quorum.logs import setup_logging


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="quorum", description="Multi-engine content-filter milter for Postfix")
    parser.add_argument("--version", action="version", version=f"quorum {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("-c", "--config", help="TOML config file (default: the embedded loopback config)")
        return p

    with_config(sub.add_parser("run", help="run the milter in the foreground"))
    with_config(sub.add_parser("check-config", help="validate the config file"))
    scan = with_config(sub.add_parser("scan", help="run the pipeline offline on a message file"))
    scan.add_argument("message", help="RFC 5322 message file (.eml)")
    scan.add_argument("--sender", default="", help="envelope sender")
    scan.add_argument("--rcpt", action="append", default=[], help="envelope recipient (repeatable)")
    scan.add_argument("--client-ip", default="127.0.0.1")
    scan.add_argument("--helo", default="localhost")
    scan.add_argument("--auth-user", default="", help="act as if authenticated as this user")
    scan.add_argument("--json", action="store_true", help="machine-readable output")
    health = with_config(sub.add_parser("health", help="check the milter socket and every enabled engine"))
    health.add_argument("--timeout", type=float, default=3.0)
    with_config(sub.add_parser("reload", help="tell the running quorum (via milter.pid_file) to reload"))
    schema = sub.add_parser("schema", help="print the JSON Schema of the config file (for editors: README)")
    schema.add_argument("-o", "--output", help="write it to this file instead of standard output")
    for extension in _cli_extensions():
        extension.add_cli(sub, with_config)
    args = parser.parse_args(argv)

    if args.command == "run":
        return cmd_run(args)
    if args.command == "schema":
        return cmd_schema(args)
    config = _load(args.config)
    if config is None:
        return 2
    if args.command == "check-config":
        return cmd_check_config(config)
    if args.command == "scan":
        return cmd_scan(args, config)
    if args.command == "health":
        return cmd_health(args, config)
    if args.command == "reload":
        return cmd_reload(config)
    for extension in _cli_extensions():
        if extension.handles(args.command):
            return int(extension.run_cli(args, config))
    parser.error(f"unknown command {args.command}")
    return 2


def _cli_extensions() -> list[Any]:
    """Every feature's subcommand module (features.Feature.cli), built-in and installed."""
    from quorum.features import all_features

    modules = []
    for feature in all_features():
        try:
            module = feature.commands()
        except ImportError:
            logging.getLogger("quorum.cli").exception("the commands of feature %s cannot be loaded", feature.name)
            continue
        if module is not None:
            modules.append(module)
    return modules


def _load(path: str | None) -> Config | None:
    try:
        return load_config(path or DEFAULT_CONFIG)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"error: {problem}", file=sys.stderr)
        print(f"{len(exc.problems)} problem(s) in {path or DEFAULT_CONFIG}", file=sys.stderr)
        return None


def cmd_run(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if config is None:
        return 2
    setup_logging(config.milter.log_level)
    from quorum.service.supervisor import Supervisor
    from quorum.worker import ARGV

    path = str(Path(args.config).resolve()) if args.config else None
    return Supervisor(path, config.milter.stop_timeout, config.milter.pid_file, load_config, ARGV).run()


def cmd_schema(args: argparse.Namespace) -> int:
    from quorum.assembly import config_schema

    text = json.dumps(config_schema(), indent=2, sort_keys=True) + "\n"
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


def cmd_check_config(config: Config) -> int:
    for warning in config.warnings:
        print(f"warning: {warning}")
    engines = ", ".join(f"{e.name} ({e.type}{'' if e.enabled else ', disabled'})" for e in config.engines)
    print(f"ok: {config.path}: engines {engines or 'none'}")
    return 0


def cmd_scan(args: argparse.Namespace, config: Config) -> int:
    from quorum.message import Message
    from quorum.pipeline.stages import Reply
    from quorum.pipeline.transaction import Connection

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    try:
        raw = Path(args.message).read_bytes()
    except OSError as exc:
        print(f"error: cannot read {args.message}: {exc.strerror}", file=sys.stderr)
        return 2
    pipeline = build_pipeline(config)
    conn = Connection(args.client_ip, "", args.helo, macros={"i": "SCAN"})
    txn = pipeline.begin(conn, args.sender, dry_run=True)  # what it refuses is printed, never recorded
    if args.auth_user:
        txn.envelope.macros["{auth_authen}"] = args.auth_user
    early: Reply | None = pipeline.hook("connect", conn) or pipeline.hook("helo", conn)
    early = early or pipeline.hook("mail_from", txn)
    rcpt_replies: dict[str, str] = {}
    for rcpt in args.rcpt:
        reply = pipeline.rcpt(txn, rcpt)
        if reply is not None:
            rcpt_replies[rcpt] = str(reply)
    early = early or pipeline.hook("data", txn)
    if early is not None:
        pipeline.abort(txn)
        pipeline.close()
        return _print_early(args, early, rcpt_replies)
    message = Message.from_bytes(raw, txn.envelope, config.milter.body_memory_limit)
    effective, _ = pipeline.policy_of(txn)
    try:
        result = pipeline.check(txn, message)
        pipeline.abort(txn)  # a dry run: give back any rate-limit reservation
    finally:
        message.close()
        pipeline.close()
    d = result.decision
    breakers = {r.name: str(r.breaker.state) for r in pipeline.runners}
    out: dict[str, Any] = {
        "verdict": d.label,
        "action": str(d.action),
        "reply": str(d.reply) if d.reply else None,
        "score": d.score,
        "degraded": d.degraded,
        "left_out": d.left_out,
        "reasons": d.reasons,
        "engines": [
            {
                "engine": v.engine,
                "category": str(v.category),
                "status": str(v.status),
                "mode": next((e.mode for e in config.engines if e.name == v.engine), "vote"),
                "names": list(v.names),
                "score": v.score,
                "threshold": v.threshold,
                "detail": v.detail,
                "error": v.error,
                "elapsed_ms": round(v.elapsed * 1000, 1),
                "circuit": breakers.get(v.engine),
            }
            for v in d.verdicts
        ],
        "headers_added": [f"{n}: {v}" for n, v in result.edits.add],
        "headers_removed": [f"{n}[{i}]" for n, i in result.edits.remove],
        "quarantine_reason": d.quarantine_reason,
        "recipients_refused": rcpt_replies,
        "facts": result.scan.log,
        "policy": _policy_summary(effective),
        "elapsed_ms": round(result.elapsed * 1000, 1),
        "notes": result.notes,  # what the post-decision hook did (signed with which key, or why not)
    }
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(f"verdict: {d.label}" + (f" (score {d.score:.2f})" if d.label == "spam" and d.score is not None else ""))
        print(f"action:  {d.action}" + (f" -> {d.reply}" if d.reply else ""))
        pol = out["policy"]
        print(f"policy:  {pol['applied']} (fingerprint {pol['fingerprint']}; {pol['why']})")
        for e in out["engines"]:
            extra = f" [{e['mode']}]" if e["mode"] != "vote" else ""
            circuit = f" circuit={e['circuit']}" if e["circuit"] and e["circuit"] != "closed" else ""
            detail = e["detail"] or e["error"] or ", ".join(e["names"][:5]) or ""
            print(f"  {e['engine']:<16} {e['status']:<10} {e['elapsed_ms']:>8.1f} ms  {detail}{extra}{circuit}")
        for line in out["headers_added"]:
            print(f"  + {line}")
        for line in out["headers_removed"]:
            print(f"  - {line}")
        for r in d.reasons:
            print(f"  why: {r}")
        for k, v in result.scan.log.items():
            print(f"  {k}: {v}")
        for note in result.notes:
            print(f"  note: {note}")
        for rcpt, refused in rcpt_replies.items():
            print(f"  rcpt {rcpt}: {refused}")
    return 0


def _policy_summary(effective: Any) -> dict[str, Any]:
    """Which tenant policy applied to the transaction, and why (for `quorum scan`)."""
    domain = effective.domain
    why = (
        f"the first recipient's domain matched [domains.{domain!r}] from {', '.join(effective.sources)}"
        if domain
        else "no [domains] entry matched the first recipient: the global policy"
    )
    return {
        "applied": f"domain {domain}" if domain else "global",
        "domain": domain,
        "sources": list(effective.sources),
        "fingerprint": effective.fingerprint[:12],
        "engines": list(effective.engines) if effective.engines is not None else None,
        "bypass": effective.bypass,
        "why": why,
    }


def _print_early(args: argparse.Namespace, reply: Any, rcpt_replies: dict[str, str]) -> int:
    out = {
        "verdict": "refused-before-data",
        "action": str(reply.action),
        "reply": str(reply),
        "recipients_refused": rcpt_replies,
    }
    print(json.dumps(out, indent=2) if args.json else f"refused before DATA: {reply}")
    return 0


def cmd_health(args: argparse.Namespace, config: Config) -> int:
    from quorum.engines import build_engine

    ok = True
    spec = config.milter.socket
    kind, _, rest = spec.partition(":")
    try:
        if kind in ("unix", "local"):
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(args.timeout)
                s.connect(rest)
        else:
            port, _, host = rest.partition("@")
            host = host or "127.0.0.1"
            with socket.create_connection(
                (host if host not in ("0.0.0.0", "::") else "127.0.0.1", int(port)), args.timeout
            ):
                pass
        print(f"ok   milter {spec}")
    except OSError as exc:
        ok = False
        print(f"FAIL milter {spec}: {exc.strerror or exc}")
    for settings in config.enabled_engines:
        engine = build_engine(settings)
        start = time.monotonic()
        try:
            engine.ping(args.timeout)
            print(f"ok   engine {settings.name} ({settings.type}) {1000 * (time.monotonic() - start):.0f} ms")
        except Exception as exc:  # noqa: BLE001 - any failure is a failed probe
            ok = False
            print(f"FAIL engine {settings.name} ({settings.type}): {exc}")
        finally:
            engine.close()
    return 0 if ok else 1


def cmd_reload(config: Config) -> int:
    pid_file = config.milter.pid_file
    if not pid_file:
        print(
            "error: milter.pid_file is not set; set it (e.g. /run/quorum/quorum.pid) or send SIGHUP to the "
            "`quorum run` process yourself",
            file=sys.stderr,
        )
        return 2
    try:
        pid = running_pid(pid_file, config.path)
    except ReloadRefused as exc:
        print(f"error: {pid_file}: {exc}; nothing was signalled", file=sys.stderr)
        return 1
    try:
        os.kill(pid, signal.SIGHUP)
    except OSError as exc:
        print(f"error: cannot signal the process in {pid_file}: {exc}", file=sys.stderr)
        return 1
    print(f"sent SIGHUP to {pid}")
    return 0


class ReloadRefused(Exception):
    """The pid file does not name a live `quorum run` of this config: nothing may be signalled."""


def running_pid(pid_file: str, config_path: str | None) -> int:
    """The pid in `pid_file`, checked to be a live `quorum run` of `config_path`.

    A pid file is only a claim: it may be stale (the pid now belongs to another program), edited
    (`-1` would signal every process, `0` our own group) or a symlink planted to read another file.
    """
    try:
        fd = os.open(pid_file, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ReloadRefused("is a symbolic link, not the pid file `quorum run` writes") from exc
        raise ReloadRefused(f"cannot read it: {exc.strerror or exc}") from exc
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ReloadRefused("is not a regular file")
        raw = os.read(fd, 64)
    finally:
        os.close(fd)
    text = raw.decode("ascii", "replace").strip()
    if not re.fullmatch(r"[0-9]{1,10}", text):
        raise ReloadRefused(f"holds {text[:20]!r}, not a process id")
    pid = int(text)
    if pid == 0 or pid in (os.getpid(), os.getppid()):
        raise ReloadRefused(f"names pid {pid}, which is never a `quorum run`")
    # pid 1 is init, unless `quorum run` is a container's first process: the checks below tell.
    argv, cwd = _process_argv(pid)
    if argv is None:
        raise ReloadRefused(f"names pid {pid}, which is not running (a stale pid file?)")
    if not _is_quorum_run(argv):
        shown = " ".join(argv)[:120]
        raise ReloadRefused(f"names pid {pid}, which is not `quorum run` ({shown!r}); a stale pid file?")
    theirs = _config_of(argv, cwd)
    ours = str(Path(config_path).resolve()) if config_path else None
    if theirs != ours:
        raise ReloadRefused(
            f"names pid {pid}, a `quorum run` of {theirs or 'the embedded default config'}, not of {ours}; "
            "pass the config that process runs with -c"
        )
    return pid


def _process_argv(pid: int) -> tuple[list[str] | None, str | None]:
    """The command line of `pid` (None: no such process) and its working directory (None: unknown)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return None, None
    except OSError as exc:
        raise ReloadRefused(f"names pid {pid}, whose command line cannot be read ({exc.strerror or exc})") from exc
    if not raw:  # a zombie or a kernel thread
        return None, None
    try:
        cwd: str | None = os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        cwd = None
    return [a.decode("utf-8", "surrogateescape") for a in raw.rstrip(b"\0").split(b"\0")], cwd


def _is_quorum_run(argv: list[str]) -> bool:
    """`quorum run ...`, `python .../bin/quorum run ...` or `python -m quorum run ...`."""
    for i, arg in enumerate(argv[:3]):
        if Path(arg).name == "quorum" or (arg == "quorum" and i > 0 and argv[i - 1] == "-m"):
            return argv[i + 1 : i + 2] == ["run"]
    return False


def _config_of(argv: list[str], cwd: str | None) -> str | None:
    """The resolved `-c`/`--config` of a `quorum run` command line (None: the embedded default)."""
    rest = argv[argv.index("run") + 1 :]
    value = None
    for i, arg in enumerate(rest):
        if arg in ("-c", "--config") and i + 1 < len(rest):
            value = rest[i + 1]
        elif arg.startswith("--config="):
            value = arg.split("=", 1)[1]
        elif arg.startswith("-c") and len(arg) > 2:
            value = arg[2:]
    if value is None:
        return None
    if not os.path.isabs(value) and cwd is None:
        return f"{value} (relative to a directory that cannot be read)"
    return os.path.realpath(os.path.join(cwd or "/", value))
