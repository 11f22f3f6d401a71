"""`./run.sh demo`: the whole stack on loopback with Quorum's embedded default config.

Starts NSD (the only resolver rspamd may use), clamd :3310, rspamd :11333, spamd :783,
redis :6379, `quorum run` as user quorum (embedded default config, milter on 127.0.0.1:9900), a dedicated
Postfix on 127.0.0.1:2525 and a sink; sends a clean, a virus and a spam message through
Postfix and prints what happened to each. `--keep` leaves it running until Ctrl-C.
"""

from __future__ import annotations

import argparse
import email.utils
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.harness.clamd import Clamd
from tests.harness.dns import DnsServer, zone_text
from tests.harness.messages import EICAR, GTUBE
from tests.harness.ports import port_open, wait_for_port
from tests.harness.postfix import PostfixInstance
from tests.harness.procs import Service
from tests.harness.redis_server import RedisServer
from tests.harness.rspamd import Rspamd
from tests.harness.sink import Sink
from tests.harness.smtp_client import send
from tests.harness.spamd import Spamd

PORTS = {"clamd": 3310, "rspamd": 11333, "spamd": 783, "redis": 6379, "quorum": 9900, "postfix": 2525}
QUORUM_USER = "quorum"
SYSTEM_UNITS = ["clamav-daemon", "rspamd", "spamd", "redis-server", "postfix"]


def message(subject: str, body: bytes) -> bytes:
    head = (
        f"From: Alice <alice@example.com>\r\nTo: Bob <bob@example.org>\r\nSubject: {subject}\r\n"
        f"Date: {email.utils.formatdate(localtime=True)}\r\n"
        f"Message-ID: {email.utils.make_msgid(domain='example.com')}\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
    )
    return head.encode() + body + b"\r\n"


def process_user(pid: int) -> str:
    return subprocess.run(["ps", "-o", "user=", "-p", str(pid)], capture_output=True, text=True).stdout.strip()


def check_quorum_user() -> None:
    """The quorum user (./run.sh creates it) must be able to run this checkout's venv."""
    probe = subprocess.run(
        [
            "setpriv",
            f"--reuid={QUORUM_USER}",
            f"--regid={QUORUM_USER}",
            "--init-groups",
            sys.executable,
            "-c",
            "import quorum.worker",
        ],
        capture_output=True,
        text=True,
    )
    if probe.returncode != 0:
        sys.exit(
            f"demo: user {QUORUM_USER!r} cannot run {sys.executable}: {probe.stderr.strip()[-300:]}\n"
            "  create it (./run.sh does: useradd --system --user-group quorum) and make the checkout readable "
            "(chmod o+rx on each directory above it)"
        )


def free_fixed_ports() -> None:
    busy = {name: port for name, port in PORTS.items() if port_open(port)}
    if not busy:
        return
    print(f"ports in use: {busy}; stopping Debian's own services that package installation started")
    subprocess.run(["systemctl", "stop", *SYSTEM_UNITS], check=False, capture_output=True)
    time.sleep(1)
    still = {name: port for name, port in PORTS.items() if port_open(port)}
    if still:
        sys.exit(f"demo: these ports are taken by something else: {still}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--keep", action="store_true", help="leave the stack running until Ctrl-C")
    args = parser.parse_args()
    check_quorum_user()
    free_fixed_ports()
    work = Path(tempfile.mkdtemp(prefix="quorum-demo-"))
    work.chmod(0o755)  # Quorum (user quorum) starts in it
    started: list[object] = []
    try:
        dns = DnsServer(work / "dns", {"example.com": zone_text("example.com", [("@", "TXT", '"v=spf1 -all"')])})
        started.append(dns.start())
        clamd = Clamd(work / "clamd")
        clamd.port = PORTS["clamd"]
        started.append(clamd.start())
        rspamd = Rspamd(work / "rspamd", dns.port)
        rspamd.port = PORTS["rspamd"]
        started.append(rspamd.start())
        spamd = Spamd(work / "spamd")
        spamd.port = PORTS["spamd"]
        started.append(spamd.start())
        redis = RedisServer(work / "redis", port=PORTS["redis"])
        started.append(redis.start())
        quorum = Service("quorum", work / "quorum")
        # As its own unprivileged user, like the systemd unit (User=quorum) and the compose image.
        as_quorum = ["setpriv", f"--reuid={QUORUM_USER}", f"--regid={QUORUM_USER}", "--init-groups"]
        argv = [*as_quorum, sys.executable, "-m", "quorum", "run"]
        quorum.spawn(argv, ready=lambda: port_open(PORTS["quorum"]), timeout=60, cwd=work)
        started.append(quorum)
        assert quorum.proc is not None
        print(f"quorum run: pid {quorum.proc.pid}, user {process_user(quorum.proc.pid)}")
        sink = Sink(work / "sink")
        sink.start()
        started.append(sink)
        postfix = PostfixInstance(work / "postfix", sink.port, milter=f"inet:127.0.0.1:{PORTS['quorum']}")
        postfix.smtp_port = PORTS["postfix"]
        postfix.start()
        started.append(postfix)
        wait_for_port(PORTS["postfix"])
        print(f"stack up in {work}: Postfix 127.0.0.1:{PORTS['postfix']} -> Quorum :9900 -> clamd, rspamd, spamd\n")
        cases = [
            ("clean", message("lunch tomorrow?", b"Hi Bob, shall we have lunch tomorrow at noon? Alice")),
            ("virus", message("invoice", EICAR)),
            ("spam", message("you won", b"Cheap offer!\r\n" + GTUBE)),
        ]
        for name, raw in cases:
            before = len(sink.messages())  # counted before sending: delivery can beat the reply
            result = send(PORTS["postfix"], "alice@example.com", ["bob@example.org"], raw)
            print(f"{name:>5}: SMTP {result.code} {result.text}")
            if result.code == 250:
                delivered = sink.wait_for(before + 1, 30)[-1]
                for header in ("X-Quorum-Verdict", "X-Quorum-Engines", "X-Spam-Flag"):
                    value = delivered.header(header)
                    if value:
                        print(f"       delivered with {header}: {value}")
        print("\nQuorum's log lines:")
        for line in (work / "quorum" / "quorum.log").read_text(errors="replace").splitlines():
            if "quorum.message" in line:
                print("  " + line)
        if args.keep:
            print("\nrunning; Ctrl-C to stop")
            while True:
                time.sleep(3600)
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        for service in reversed(started):
            try:
                service.stop()  # type: ignore[attr-defined]
            except Exception as exc:  # noqa: BLE001 - best-effort teardown
                print(f"stopping {type(service).__name__}: {exc}", file=sys.stderr)


if __name__ == "__main__":
    raise SystemExit(main())
