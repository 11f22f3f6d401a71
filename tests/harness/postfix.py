"""A dedicated, throw-away Postfix instance for integration tests.

Everything lives under one work directory: ``etc/`` (config_directory),
``spool/`` (queue_directory), ``maillog`` and ``postfix.log`` (master's
stdout), except data_directory: user postfix must be able to traverse to it,
which pytest's 0700 tmp dirs forbid, so it is a /tmp/quorum-postfix-data-*
directory (symlinked as ``data``) removed by stop().
smtpd listens on 127.0.0.1:<free port>; all mail is relayed to a sink at
``[127.0.0.1]:<sink_port>`` without any DNS lookup. The milter settings come
from the operator's fragment ``postfix-conf/main.cf`` with only the milter
address substituted.

The master runs as ``postfix -c etc start-fg`` under a tiny subreaper (this
module's ``reap`` entry point), so every Postfix process is a descendant of
one managed `Service`: stop() leaves no stray or zombie processes, even in
containers whose PID 1 does not reap orphans.
"""

from __future__ import annotations

import atexit
import ctypes
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path

from tests.harness.ports import free_port
from tests.harness.procs import Service

REPO_ROOT = Path(__file__).resolve().parents[2]
FRAGMENT = REPO_ROOT / "postfix-conf" / "main.cf"
FRAGMENT_MILTER = "inet:127.0.0.1:9900"
MILTER_PARAMS = ("smtpd_milters", "non_smtpd_milters")

POSTFIX = shutil.which("postfix", path="/usr/sbin:/usr/bin:/sbin") or "/usr/sbin/postfix"
POSTQUEUE = shutil.which("postqueue", path="/usr/sbin:/usr/bin") or "/usr/sbin/postqueue"
POSTSUPER = shutil.which("postsuper", path="/usr/sbin:/usr/bin") or "/usr/sbin/postsuper"
POSTCAT = shutil.which("postcat", path="/usr/sbin:/usr/bin") or "/usr/sbin/postcat"
SENDMAIL = shutil.which("sendmail", path="/usr/sbin:/usr/lib") or "/usr/sbin/sendmail"

# chroot is "n" everywhere, so no chroot jail has to be populated.
MASTER_CF = """\
# service type  private unpriv  chroot  wakeup  maxproc command + args
127.0.0.1:{port} inet n    -       n       -       -       smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


def parse_main_cf(text: str) -> dict[str, str]:
    """`name = value` pairs of a main.cf text; continuation lines are joined, comments dropped."""
    params: dict[str, str] = {}
    last: str | None = None
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if line[0].isspace():
            if last is None:
                raise ValueError(f"continuation line without a parameter: {line!r}")
            params[last] = f"{params[last]} {line.strip()}".strip()
            continue
        name, sep, value = line.partition("=")
        if not sep:
            raise ValueError(f"not a main.cf parameter line: {line!r}")
        last = name.strip()
        params[last] = value.strip()
    return params


def fragment_params(milter: str | None, fragment: Path = FRAGMENT) -> dict[str, str]:
    """The operator's fragment with its milter address replaced by `milter`.

    `milter` is a Postfix milter address (``inet:127.0.0.1:PORT``,
    ``unix:/path``) put in place of the fragment's address, a complete value
    starting with ``{`` used as is, or None for no milter at all.
    """
    params = parse_main_cf(fragment.read_text())
    value = params.get("smtpd_milters", "")
    if FRAGMENT_MILTER not in value:
        raise ValueError(f"{fragment}: smtpd_milters does not mention {FRAGMENT_MILTER}")
    if milter is None:
        params.update(dict.fromkeys(MILTER_PARAMS, ""))
    elif milter.lstrip().startswith("{"):
        params["smtpd_milters"] = milter
    else:
        params["smtpd_milters"] = value.replace(FRAGMENT_MILTER, milter)
    return params


def listening(port: int) -> bool:
    """Whether something LISTENs on 127.0.0.1:`port`, without connecting to it."""
    wanted = f"0100007F:{port:04X}"
    try:
        lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return False
    return any(f[1] == wanted and f[3] == "0A" for f in (line.split() for line in lines) if len(f) > 3)


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _wait_gone(pids: list[int], timeout: float, strict: bool) -> None:
    """Wait until none of `pids` exists; TimeoutError after `timeout` if `strict`."""
    deadline = time.monotonic() + timeout
    while any(Path(f"/proc/{pid}").exists() for pid in pids):
        if time.monotonic() > deadline:
            if strict:
                raise TimeoutError(f"processes {pids} still alive after {timeout:.0f}s")
            return
        time.sleep(0.02)


def _write_cool(path: Path, text: str) -> None:
    """Write a config file with an mtime in the past.

    Postfix re-reads a config file modified less than ~2s ago every 300 ms
    until it "cools down", which would add seconds to every start and reload.
    """
    if path.exists() and path.read_text() == text:
        return
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    past = time.time() - 10
    os.utime(tmp, (past, past))
    tmp.replace(path)  # atomic: a daemon starting right now must never see half a file


class PostfixError(RuntimeError):
    """A Postfix administrative command failed."""


class PostfixInstance:
    """A private Postfix relaying everything from 127.0.0.1:`smtp_port` to the sink."""

    def __init__(
        self,
        workdir: Path,
        sink_port: int,
        milter: str | None = None,
        main_overrides: Mapping[str, str] | None = None,
    ) -> None:
        self.workdir = workdir.resolve()
        self.sink_port = sink_port
        self.milter = milter
        self.overrides: dict[str, str] = dict(main_overrides or {})
        self.smtp_port = free_port()
        self.config_dir = self.workdir / "etc"
        self.queue_dir = self.workdir / "spool"
        # mail_owner must be able to traverse to data_directory (master.lock is
        # opened as user postfix), which pytest's 0700 tmp dirs do not allow.
        self.data_dir = Path(tempfile.gettempdir()) / f"quorum-postfix-data-{uuid.uuid4().hex[:12]}"
        self.maillog = self.workdir / "maillog"
        self._service = Service("postfix", self.workdir)
        self._checked = False

    # --- configuration -------------------------------------------------

    def base_params(self) -> dict[str, str]:
        """Harness settings: loopback only, no DNS, relay all to the sink, fast retries."""
        return {
            "compatibility_level": "3.6",
            "queue_directory": str(self.queue_dir),
            "data_directory": str(self.data_dir),
            "maillog_file": str(self.maillog),
            "maillog_file_prefixes": str(self.workdir),
            "myhostname": "mx.quorum.test",
            "mydomain": "quorum.test",
            "myorigin": "$myhostname",
            "mydestination": "",
            "local_recipient_maps": "",
            "alias_maps": "",
            "alias_database": "",
            # Every domain is a relay domain, so any client address a test presents
            # via XCLIENT may relay; the instance only listens on loopback.
            "relay_domains": "static:ALL",
            "mynetworks": "127.0.0.0/8",
            "smtpd_authorized_xclient_hosts": "127.0.0.0/8",
            "smtpd_peername_lookup": "no",
            # Do not add Message-Id/Date/From for loopback clients: deliver what was sent.
            "local_header_rewrite_clients": "",
            "smtpd_error_sleep_time": "0s",
            "smtpd_soft_error_limit": "100",
            "smtpd_hard_error_limit": "200",
            "inet_interfaces": "127.0.0.1",
            "inet_protocols": "ipv4",
            "relayhost": f"[127.0.0.1]:{self.sink_port}",
            "smtp_dns_support_level": "disabled",
            "smtp_host_lookup": "native",
            "lmtp_host_lookup": "native",
            "smtp_tls_security_level": "none",
            "smtpd_tls_security_level": "none",
            "smtputf8_enable": "yes",
            "queue_run_delay": "1s",
            "minimal_backoff_time": "1s",
            "maximal_backoff_time": "2s",
            "delay_warning_time": "0h",
            "biff": "no",
            "append_dot_mydomain": "no",
            "readme_directory": "no",
        }

    def main_params(self) -> dict[str, str]:
        """Effective main.cf: harness base, then the operator fragment, then overrides."""
        return {**self.base_params(), **fragment_params(self.milter), **self.overrides}

    def write_config(self) -> None:
        """Write main.cf and master.cf into config_directory."""
        self.config_dir.mkdir(parents=True, exist_ok=True)
        main = "".join(f"{k} = {v}\n" for k, v in self.main_params().items())
        _write_cool(self.config_dir / "main.cf", main)
        _write_cool(self.config_dir / "master.cf", MASTER_CF.format(port=self.smtp_port))

    def set_milter(self, milter: str | None) -> None:
        """Point smtpd at another milter (or none) and reload if running."""
        self.milter = milter
        self._reconfigure()

    def set_main(self, overrides: Mapping[str, str | None]) -> None:
        """Add main.cf overrides (None removes one) and reload if running."""
        for name, value in overrides.items():
            if value is None:
                self.overrides.pop(name, None)
            else:
                self.overrides[name] = value
        self._reconfigure()

    def _reconfigure(self) -> None:
        self.write_config()
        if self.running:
            self.reload()

    # --- life cycle ----------------------------------------------------

    @property
    def running(self) -> bool:
        return self._service.running

    def start(self, timeout: float = 60.0) -> None:
        if self.running:
            return
        self._kill_stale()
        self._prepare()
        argv = [sys.executable, "-m", "tests.harness.postfix", "reap", str(self._pid_file), "--"]
        argv += [POSTFIX, "-c", str(self.config_dir), "start-fg"]
        env = {"PYTHONPATH": str(REPO_ROOT), "MAIL_CONFIG": str(self.config_dir)}
        _RUNNING.add(self)
        self._service.spawn(argv, ready=self._ready, timeout=timeout, env=env, cwd=REPO_ROOT)

    def stop(self) -> None:
        """Stop master and all its children; safe to call repeatedly and after failures."""
        self._service.stop(timeout=20.0)
        self._kill_stale()
        _RUNNING.discard(self)
        deadline = time.monotonic() + 10
        while listening(self.smtp_port) and time.monotonic() < deadline:
            time.sleep(0.05)
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def restart(self) -> None:
        self.stop()
        self.start()

    def reload(self, settle: float = 3.0) -> None:
        """Reload like `postfix reload` (SIGHUP to master), then wait until it took effect.

        New daemons read main.cf when they start; the reload makes idle ones of
        the old generation exit. Confirmation is process based: the old qmgr
        must exit, then idle old smtpd/cleanup/... within `settle` seconds.
        Sessions held open keep the settings they started with. (`postfix
        reload` itself would also fork a background postsuper that outlives it.)
        """
        self.write_config()
        master = self._master_pid()
        if master is None:
            raise PostfixError(f"no running master for {self.config_dir}")
        old = _children_of(master)
        qmgr = [pid for pid in old if _comm(pid) == "qmgr"]
        os.kill(master, signal.SIGHUP)
        _wait_gone(qmgr, timeout=10.0, strict=True)
        _wait_gone(old, timeout=settle, strict=False)

    def _prepare(self) -> None:
        """Directories with the ownership Postfix insists on, config, queue tree."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.queue_dir.mkdir(mode=0o755, exist_ok=True)  # root-owned, not group/world writable
        self.data_dir.mkdir(mode=0o700, exist_ok=True)
        shutil.chown(self.data_dir, "postfix", "postfix")  # master.lock etc. belong to mail_owner
        link = self.workdir / "data"
        if not link.is_symlink():
            link.symlink_to(self.data_dir)
        self.write_config()
        if not self._checked:
            # check-fatal runs post-install create-missing: queue subdirectories
            # owned by postfix, public/ and maildrop/ group postdrop.
            self._postfix("check", timeout=120)
            self._checked = True
        (self.queue_dir / "quick-start").touch()  # skip the slow re-check on start-fg

    def _ready(self) -> bool:
        qmgr_socket = self.queue_dir / "public" / "qmgr"
        return self._master_pid() is not None and listening(self.smtp_port) and qmgr_socket.exists()

    @property
    def _pid_file(self) -> Path:
        return self.queue_dir / "pid" / "master.pid"

    def _master_pid(self) -> int | None:
        """PID of a live master of *this* instance (checked via its MAIL_CONFIG)."""
        try:
            pid = int(self._pid_file.read_text().split()[0])
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except (OSError, ValueError, IndexError):
            return None
        return pid if f"MAIL_CONFIG={self.config_dir}".encode() in environ else None

    def _kill_stale(self) -> None:
        """SIGKILL a master (and its process group) left over from a crashed run."""
        pid = self._master_pid()
        if pid is None:
            return
        for kill in (os.killpg, os.kill):
            try:
                kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 10
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.05)

    # --- commands ------------------------------------------------------

    def _run(self, argv: list[str], timeout: float = 30.0) -> str:
        env = {**os.environ, "MAIL_CONFIG": str(self.config_dir)}
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env, check=False)
        if proc.returncode != 0:
            raise PostfixError(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr.strip()}")
        return proc.stdout

    def _postfix(self, command: str, timeout: float = 30.0) -> str:
        return self._run([POSTFIX, "-c", str(self.config_dir), command], timeout)

    def queue(self) -> list[dict[str, object]]:
        """`postqueue -j` records: queue_name, queue_id, sender, recipients, ..."""
        out = self._run([POSTQUEUE, "-c", str(self.config_dir), "-j"])
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def queue_ids(self, queue_name: str | None = None) -> list[str]:
        """IDs of all queued messages, or only those in `queue_name` (hold, deferred, ...)."""
        return [str(e["queue_id"]) for e in self.queue() if queue_name in (None, e["queue_name"])]

    def hold_queue_ids(self) -> list[str]:
        return self.queue_ids("hold")

    def wait_queue_empty(self, timeout: float = 30.0, include_hold: bool = False) -> None:
        """Wait until nothing is queued (held mail counts only with `include_hold`)."""
        deadline = time.monotonic() + timeout
        while True:
            left = [e for e in self.queue() if include_hold or e["queue_name"] != "hold"]
            if not left:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(left)} messages still queued after {timeout:.0f}s: {left[:3]}")
            time.sleep(0.1)

    def flush(self) -> None:
        """`postqueue -f`: attempt delivery of all deferred mail now."""
        self._run([POSTQUEUE, "-c", str(self.config_dir), "-f"])

    def release(self, queue_id: str = "ALL") -> None:
        """`postsuper -H`: move held mail back to the deferred queue (then flush())."""
        self._run([POSTSUPER, "-c", str(self.config_dir), "-H", queue_id])

    def delete(self, queue_id: str = "ALL") -> None:
        """`postsuper -d`: delete queued mail."""
        self._run([POSTSUPER, "-c", str(self.config_dir), "-d", queue_id])

    def postcat(self, queue_id: str) -> str:
        """`postcat -q`: envelope, headers and body of a queued message."""
        return self._run([POSTCAT, "-c", str(self.config_dir), "-q", queue_id])

    def sendmail(
        self, sender: str, recipients: Sequence[str], message: bytes, timeout: float = 30.0
    ) -> subprocess.CompletedProcess[bytes]:
        """Submit `message` as a local program does: this instance's sendmail(1) -> postdrop ->
        maildrop -> pickup -> cleanup, where `non_smtpd_milters` (not smtpd_milters) apply.

        `-C` and MAIL_CONFIG both name this instance's config_directory, so the message lands in
        its maildrop (postdrop is set-gid and rejects a foreign config directory unless run by
        root, which the harness is). The result is sendmail's exit status and output; whether
        the message was then accepted is decided later, by pickup/cleanup and the milter.
        """
        argv = [SENDMAIL, "-C", str(self.config_dir), "-i", "-f", sender, "--", *recipients]
        env = {**os.environ, "MAIL_CONFIG": str(self.config_dir)}
        return subprocess.run(argv, input=message, capture_output=True, env=env, timeout=timeout, check=False)

    def log_text(self) -> str:
        try:
            return self.maillog.read_text(errors="replace")
        except OSError:
            return ""

    def wait_for_log(self, pattern: str, timeout: float = 10.0) -> re.Match[str]:
        """First match of regex `pattern` in the maillog (postlogd writes asynchronously)."""
        regex = re.compile(pattern, re.MULTILINE)
        deadline = time.monotonic() + timeout
        while True:
            match = regex.search(self.log_text())
            if match:
                return match
            if time.monotonic() > deadline:
                raise TimeoutError(f"{pattern!r} not in {self.maillog} after {timeout:.0f}s")
            time.sleep(0.05)

    def __enter__(self) -> PostfixInstance:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


_RUNNING: set[PostfixInstance] = set()


@atexit.register
def _stop_all() -> None:
    """Never leave a master behind when the test process exits without stop()."""
    for instance in list(_RUNNING):
        instance.stop()


# --- subreaper (runs as `python -m tests.harness.postfix reap PIDFILE -- CMD...`) ---

PR_SET_CHILD_SUBREAPER = 36


def _children_of(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _signal_all(pid_file: Path, sig: int) -> None:
    """Signal the master's process group and every process re-parented to us."""
    targets = _children_of(os.getpid())
    try:
        targets.append(-int(pid_file.read_text().split()[0]))
    except (OSError, ValueError, IndexError):
        pass
    for target in targets:
        try:
            os.kill(target, sig)
        except (ProcessLookupError, PermissionError):
            pass


def _reap(argv: list[str]) -> int:
    """Run CMD as our child, adopt all orphans (subreaper), forward SIGTERM, reap everything."""
    pid_file, cmd = Path(argv[0]), argv[argv.index("--") + 1 :]
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    stopping: list[float] = []

    def on_term(signum: int, _frame: object) -> None:
        if not stopping:
            stopping.append(time.monotonic() + 5.0)
            _signal_all(pid_file, signal.SIGTERM)

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    main = os.posix_spawn(cmd[0], cmd, dict(os.environ))
    status = 0
    while True:
        try:
            pid, raw = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return status
        if pid == main:
            status = os.waitstatus_to_exitcode(raw)
            if not stopping:  # master died on its own: take the rest down too
                on_term(signal.SIGTERM, None)
        elif pid == 0:
            if stopping and time.monotonic() > stopping[0]:
                _signal_all(pid_file, signal.SIGKILL)
            time.sleep(0.05)


if __name__ == "__main__" and sys.argv[1:2] == ["reap"]:
    sys.exit(_reap(sys.argv[2:]))
