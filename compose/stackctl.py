#!/usr/bin/env python3
"""Drive the Quorum compose stack from the host with podman-compose or docker compose.

Used by compose/test-stack.sh and tests/compose/test_stack.py (standard library only).

    python3 compose/stackctl.py info
    python3 compose/stackctl.py wait-healthy [--timeout 300] [SERVICE ...]
    python3 compose/stackctl.py status

Environment:
    QUORUM_COMPOSE_CMD      compose command ("podman-compose", "docker compose", "docker-compose");
                            default: podman-compose if installed, else docker compose, else docker-compose
    QUORUM_COMPOSE_PROJECT  compose project name (default quorum-test)
    QUORUM_SMTP_PORT        published Postfix port on 127.0.0.1 (default 2525)
    QUORUM_SINK_PORT        published sink HTTP port on 127.0.0.1 (default 8025)

Health is polled here rather than left to the engine: podman-compose 1.0.3 ignores
`depends_on: condition: service_healthy`, and podman without systemd never runs health checks
on its own, so for podman each check is run on demand with `podman healthcheck run`. With
Docker the daemon runs them and this reads `.State.Health.Status`.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COMPOSE_FILE = REPO / "docker-compose.yml"
SERVICES = ("redis", "clamav", "rspamd", "spamassassin", "sink", "quorum", "postfix")


def compose_cmd() -> list[str]:
    explicit = os.environ.get("QUORUM_COMPOSE_CMD")
    if explicit:
        return shlex.split(explicit)
    if shutil.which("podman-compose"):
        return ["podman-compose"]
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True)
        if probe.returncode == 0:
            return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    raise SystemExit("no compose tool: install podman-compose (compose/podman-setup.sh) or Docker")


def engine(cmd: list[str] | None = None) -> str:
    cmd = cmd or compose_cmd()
    return "podman" if "podman" in Path(cmd[0]).name else "docker"


def project() -> str:
    return os.environ.get("QUORUM_COMPOSE_PROJECT", "quorum-test")


def smtp_port() -> int:
    return int(os.environ.get("QUORUM_SMTP_PORT", "2525"))


def sink_port() -> int:
    return int(os.environ.get("QUORUM_SINK_PORT", "8025"))


def compose(
    *args: str, check: bool = True, capture: bool = False, timeout: float | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `<compose> -f docker-compose.yml -p <project> ARGS` in the repository root."""
    argv = [*compose_cmd(), "-f", str(COMPOSE_FILE), "-p", project(), *args]
    return subprocess.run(
        argv,
        cwd=REPO,
        check=check,
        text=True,
        timeout=timeout,
        stdout=subprocess.PIPE if capture else None,
        stderr=subprocess.STDOUT if capture else None,
    )


def container_id(service: str, all_states: bool = True) -> str | None:
    """The container of `service` in this project, found by the labels both tools set."""
    argv = [
        engine(),
        "ps",
        "--format",
        "{{.ID}}",
        "--filter",
        f"label=com.docker.compose.project={project()}",
        "--filter",
        f"label=com.docker.compose.service={service}",
    ]
    if all_states:
        argv.insert(2, "-a")
    out = subprocess.run(argv, capture_output=True, text=True).stdout.split()
    return out[0] if out else None


def state(service: str) -> dict:
    cid = container_id(service)
    if cid is None:
        return {}
    out = subprocess.run([engine(), "inspect", cid], capture_output=True, text=True)
    try:
        data = json.loads(out.stdout)
        return data[0].get("State", {}) if data else {}
    except ValueError:
        return {}


def healthy(service: str) -> bool:
    """Run (podman) or read (docker) the compose health check of `service`."""
    cid = container_id(service)
    if cid is None:
        return False
    if engine() == "podman":
        st = state(service)
        if not st.get("Running"):
            return False
        res = subprocess.run(["podman", "healthcheck", "run", cid], capture_output=True, text=True, timeout=60)
        return res.returncode == 0
    health = (state(service).get("Health") or {}).get("Status")
    return health == "healthy"


def wait_healthy(
    services: tuple[str, ...] | list[str] = SERVICES, timeout: float = 300.0, quiet: bool = False
) -> dict[str, float]:
    """Poll until every service is healthy; returns seconds-to-healthy per service.

    Raises TimeoutError naming the services still unhealthy (with their last log lines)."""
    start = time.monotonic()
    ready: dict[str, float] = {}
    pending = list(services)
    while pending:
        for svc in list(pending):
            try:
                ok = healthy(svc)
            except subprocess.TimeoutExpired:
                ok = False
            if ok:
                ready[svc] = time.monotonic() - start
                pending.remove(svc)
                if not quiet:
                    print(f"stackctl: {svc:<13} healthy after {ready[svc]:6.1f}s", flush=True)
        if not pending:
            break
        if time.monotonic() - start > timeout:
            tails = "\n".join(f"--- {svc} ---\n{logs(svc, 30)}" for svc in pending)
            raise TimeoutError(f"not healthy after {timeout:.0f}s: {', '.join(pending)}\n{tails}")
        time.sleep(1.0)
    return ready


def logs(service: str, tail: int = 50) -> str:
    cid = container_id(service)
    if cid is None:
        return "(no container)"
    res = subprocess.run([engine(), "logs", "--tail", str(tail), cid], capture_output=True, text=True)
    return (res.stdout + res.stderr).strip()


def exec_in(service: str, *argv: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """Run a command in the service's container (engine-level exec, works for both tools)."""
    cid = container_id(service, all_states=False)
    if cid is None:
        raise RuntimeError(f"{service} is not running")
    return subprocess.run([engine(), "exec", cid, *argv], capture_output=True, text=True, timeout=timeout)


# "[q]": the pattern must not match the shell running it.
QUORUM_PROCESSES = (
    'for p in $(pgrep -f "[q]uorum run|[q]uorum[.]service[.]server"); do echo "$p $(ps -o user=,args= -p $p)"; done'
)


def quorum_users() -> tuple[bool, str]:
    """`ps -o user=` of the supervisor and the worker in the quorum container: both must be quorum."""
    out = exec_in("quorum", "sh", "-c", QUORUM_PROCESSES).stdout.strip()
    lines = [line.split(None, 2) for line in out.splitlines()]
    ok = len(lines) >= 2 and all(len(f) == 3 and f[1] == "quorum" for f in lines)
    return ok, out or "(no quorum process)"


def stop(service: str) -> None:
    compose("stop", service, capture=True)


def start(service: str) -> None:
    compose("start", service, capture=True)


def status() -> str:
    lines = []
    for svc in SERVICES:
        st = state(svc)
        if not st:
            lines.append(f"{svc:<13} (no container)")
            continue
        run = "running" if st.get("Running") else st.get("Status", "?")
        health = (st.get("Health") or st.get("Healthcheck") or {}).get("Status", "-")
        lines.append(f"{svc:<13} {run:<10} health={health}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("wait-healthy", help="poll health checks until all services are healthy")
    w.add_argument("--timeout", type=float, default=float(os.environ.get("QUORUM_COMPOSE_HEALTH_TIMEOUT", "300")))
    w.add_argument("services", nargs="*", default=list(SERVICES))
    sub.add_parser("status", help="state and health of every service")
    sub.add_parser("info", help="the compose command, engine and project in use")
    sub.add_parser("quorum-user", help="check that Quorum runs as user quorum in its container")
    lg = sub.add_parser("logs", help="last log lines of every (or the given) service")
    lg.add_argument("--tail", type=int, default=60)
    lg.add_argument("services", nargs="*", default=list(SERVICES))
    args = ap.parse_args(argv)
    if args.cmd == "wait-healthy":
        try:
            wait_healthy(args.services, args.timeout)
        except TimeoutError as exc:
            print(f"stackctl: {exc}", file=sys.stderr)
            return 1
        return 0
    if args.cmd == "quorum-user":
        ok, out = quorum_users()
        print(out)
        return 0 if ok else 1
    if args.cmd == "status":
        print(status())
        return 0
    if args.cmd == "logs":
        for svc in args.services:
            print(f"===== {svc} (last {args.tail} lines) =====\n{logs(svc, args.tail)}")
        return 0
    print(
        f"compose={shlex.join(compose_cmd())} engine={engine()} project={project()} "
        f"smtp=127.0.0.1:{smtp_port()} sink=http://127.0.0.1:{sink_port()}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
