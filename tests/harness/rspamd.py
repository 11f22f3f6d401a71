"""rspamd on loopback, configured from engines/rspamd (Debian's stock rules + Quorum's local.d)."""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import signal
import stat
import urllib.request
from pathlib import Path

from .dns import stop_service
from .ports import free_port, wait_for_port_closed
from .procs import Service

REPO = Path(__file__).resolve().parents[2]
ENGINE_DIR = REPO / "engines" / "rspamd"
# Hyperscan cache shared by all test runs (files are content-addressed): saves ~10 s per start.
HS_CACHE_DIR = Path(os.environ.get("QUORUM_RSPAMD_HS_CACHE", REPO / ".cache" / "rspamd-hs"))
USER = GROUP = "_rspamd"


def grant_traverse(path: Path) -> None:
    """Add o+x to `path` and its ancestors so a dropped-privilege daemon can reach files below.

    pytest creates its temporary directories 0700 for root; only search permission is added.
    """
    for p in [path, *path.parents]:
        mode = p.stat().st_mode
        if not mode & stat.S_IXOTH:
            os.chmod(p, stat.S_IMODE(mode) | stat.S_IXOTH)


def chown_tree(path: Path, user: str, group: str) -> None:
    uid, gid = pwd.getpwnam(user).pw_uid, grp.getgrnam(group).gr_gid
    os.chown(path, uid, gid)
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            os.chown(os.path.join(root, name), uid, gid)


class Rspamd:
    """rspamd with a normal worker (`/checkv2`) and a controller, resolving only via 127.0.0.1:dns_port."""

    def __init__(self, workdir: Path, dns_port: int) -> None:
        self.workdir = Path(workdir)
        self.dns_port = dns_port
        self.port = free_port()
        self.controller_port = free_port()
        self.confdir = self.workdir / "conf"
        self.service = Service("rspamd", self.workdir)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def controller_url(self) -> str:
        return f"http://127.0.0.1:{self.controller_port}"

    def argv(self) -> list[str]:
        variables = {
            "LOCAL_CONFDIR": str(self.confdir),
            "DBDIR": str(self.workdir / "db"),
            "RUNDIR": str(self.workdir / "run"),
            "BIND_ADDR": "127.0.0.1",
            "NORMAL_PORT": str(self.port),
            "CONTROLLER_PORT": str(self.controller_port),
            "DNS_SERVER": f"127.0.0.1:{self.dns_port}",
        }
        argv = ["rspamd", "-f", "-c", str(self.confdir / "rspamd.conf"), "-u", USER, "-g", GROUP]
        for key, value in variables.items():
            argv += ["--var", f"{key}={value}"]
        return argv

    def _ready(self) -> bool:
        with urllib.request.urlopen(f"{self.url}/ping", timeout=1) as resp:
            return bool(resp.status == 200)

    def _write_config(self) -> None:
        """engines/rspamd copied as $LOCAL_CONFDIR, plus a test-only override: the shared Hyperscan cache."""
        shutil.rmtree(self.confdir, ignore_errors=True)
        shutil.copytree(ENGINE_DIR, self.confdir, ignore=shutil.ignore_patterns("Dockerfile", "entrypoint.sh", "*.md"))
        override = self.confdir / "override.d"
        override.mkdir(exist_ok=True)
        (override / "options.inc").write_text(f'hs_cache_dir = "{HS_CACHE_DIR}/";\n')

    def start(self) -> Rspamd:
        self._write_config()
        for sub in ("db", "run"):
            (self.workdir / sub).mkdir(parents=True, exist_ok=True)
            chown_tree(self.workdir / sub, USER, GROUP)
        HS_CACHE_DIR.mkdir(parents=True, exist_ok=True)
        chown_tree(HS_CACHE_DIR, USER, GROUP)
        grant_traverse(self.workdir)
        grant_traverse(HS_CACHE_DIR)
        self.service.spawn(self.argv(), ready=self._ready, timeout=60)
        return self

    def stop(self) -> None:
        stop_service(self.service)

    def kill(self) -> None:
        """SIGKILL the main process and its workers (no clean shutdown), then wait for the port to close."""
        if self.service.proc is not None and self.service.running:
            os.killpg(self.service.proc.pid, signal.SIGKILL)
        stop_service(self.service)
        wait_for_port_closed(self.port)

    def __enter__(self) -> Rspamd:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
