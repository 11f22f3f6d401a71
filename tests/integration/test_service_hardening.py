"""The service as an operator installs it: the systemd unit passes `systemd-analyze verify`;
Quorum never serves mail as root (refuses without `[milter] user`, or binds as root and drops to
that user, still reachable by Postfix over its unix socket); a worker that crashes while a broken
config sits on disk is retried until the file is fixed instead of ending `quorum run`."""

from __future__ import annotations

import grp
import os
import pwd
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from tests.harness.clamd import Clamd
from tests.harness.messages import EICAR, HAM, mail
from tests.harness.ports import free_port
from tests.harness.postfix import PostfixInstance
from tests.harness.procs import Service
from tests.harness.quorum import QUORUM, QuorumProcess, engine_table
from tests.harness.sink import Sink, delivered
from tests.harness.smtp_client import send

from quorum.config.model import MilterSettings

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "packaging" / "quorum.service"
USER = "quorum"


def ps_user(pid: int) -> str:
    return subprocess.run(["ps", "-o", "user=", "-p", str(pid)], capture_output=True, text=True).stdout.strip()


def wait_until(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A work dir the quorum user can read (pytest's are root-only): it re-reads the config on reload."""
    try:
        pwd.getpwnam(USER)
    except KeyError:
        pytest.fail("no user quorum: ./run.sh creates it (useradd --system --user-group quorum)")
    path = Path(tempfile.mkdtemp(prefix="quorum-svc-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


# -- the systemd unit --------------------------------------------------------------------------


def unit_settings() -> dict[str, str]:
    return dict(
        line.split("=", 1) for line in UNIT.read_text().splitlines() if "=" in line and not line.startswith("#")
    )


def test_unit_file_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    # verify insists that ExecStart exists: point it at this venv's `quorum` in a rendered copy.
    venv_quorum = Path(sys.executable).parent / "quorum"
    assert venv_quorum.exists()
    rendered = tmp_path / "quorum.service"
    rendered.write_text(UNIT.read_text().replace("/opt/quorum/bin/quorum", str(venv_quorum)))
    result = subprocess.run(["systemd-analyze", "verify", str(rendered)], capture_output=True, text=True, timeout=60)
    # verify exits 0 on unknown keys or bad values too; it only prints them.
    assert result.returncode == 0 and not result.stderr.strip() and not result.stdout.strip(), result


def test_unit_file_settings() -> None:
    s = unit_settings()
    assert s["ExecStart"] == "/opt/quorum/bin/quorum run -c /etc/quorum/quorum.toml"
    assert s["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert (s["KillMode"], s["User"], s["Group"]) == ("mixed", USER, USER)
    assert (s["NoNewPrivileges"], s["ProtectSystem"], s["PrivateTmp"]) == ("yes", "strict", "yes")
    assert s["RuntimeDirectory"] == "quorum"
    assert "/var/spool/postfix/quorum" in s["ReadWritePaths"]
    assert s["Restart"] == "on-failure"
    # The supervisor waits stop_timeout + 10 s for the worker, then kills it and waits 5 s more.
    assert int(s["TimeoutStopSec"].rstrip("s")) >= MilterSettings().stop_timeout + 15


# -- who Quorum runs as ------------------------------------------------------------------------


def test_root_without_a_user_refuses_to_start(shared_dir: Path) -> None:
    config = shared_dir / "quorum.toml"
    config.write_text(f'[milter]\nsocket = "inet:{free_port()}@127.0.0.1"\n')
    env = {k: v for k, v in os.environ.items() if k != "QUORUM_ALLOW_ROOT"}
    result = subprocess.run(
        [*QUORUM, "run", "-c", str(config)], capture_output=True, text=True, timeout=30, env=env, cwd=shared_dir
    )
    assert result.returncode == 2, result
    assert 'refusing to run as root: set [milter] user = "quorum"' in result.stderr, result.stderr


def test_started_as_the_service_user_like_systemd_and_compose(shared_dir: Path) -> None:
    """User=quorum (systemd), USER quorum (compose image), the demo: no root at any point. The
    socket goes where postfix-conf/master.cf puts it: a setgid dir quorum:postfix 2750."""
    sockdir = shared_dir / "quorum"
    sockdir.mkdir()
    os.chown(sockdir, pwd.getpwnam(USER).pw_uid, _gid("postfix"))
    sockdir.chmod(0o2750)
    sock = sockdir / "quorum.sock"
    config = shared_dir / "quorum.toml"
    config.write_text(f'[milter]\nsocket = "unix:{sock}"\nsocket_mode = "0660"\nsocket_group = "postfix"\n')
    service = Service("quorum-as-user", shared_dir)
    argv = ["setpriv", f"--reuid={USER}", f"--regid={USER}", "--init-groups", *QUORUM, "run", "-c", str(config)]
    env = {"PYTHONUNBUFFERED": "1", "QUORUM_ALLOW_ROOT": "0"}
    service.spawn(argv, ready=lambda: as_postfix_connects(sock), timeout=30, env=env, cwd=shared_dir)
    try:
        assert service.proc is not None
        supervisor = service.proc.pid
        workers = children(supervisor)
        assert ps_user(supervisor) == USER and [ps_user(w) for w in workers] == [USER]
        st = sock.stat()
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (pwd.getpwnam(USER).pw_uid, _gid("postfix"), 0o660)
    finally:
        service.stop(timeout=20)


def as_postfix_connects(sock: Path) -> bool:
    """Can Postfix's smtpd (user postfix) connect to the socket?"""
    probe = f"import socket; s = socket.socket(socket.AF_UNIX); s.settimeout(1); s.connect({str(sock)!r})"
    argv = ["setpriv", "--reuid=postfix", "--regid=postfix", "--init-groups", sys.executable, "-c", probe]
    return subprocess.run(argv, capture_output=True, timeout=10).returncode == 0


def children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def test_root_binds_then_drops_to_the_configured_user(tmp_path_factory: pytest.TempPathFactory, clamd: Clamd) -> None:
    work = Path(tempfile.mkdtemp(prefix="quorum-drop-"))
    work.chmod(0o755)
    sink = Sink(tmp_path_factory.mktemp("sink"))
    sink.start()
    body = engine_table("clamav", "clamav", address=clamd.address)
    quorum = QuorumProcess(work / "quorum", body, unix=True, milter_extra=f'user = "{USER}"')
    quorum.workdir.chmod(0o755)
    postfix = PostfixInstance(tmp_path_factory.mktemp("postfix"), sink.port, milter=quorum.postfix_address)
    try:
        quorum.start()
        postfix.start()
        assert quorum.pid is not None
        [worker] = quorum.worker_pids()
        assert ps_user(quorum.pid) == "root"  # the supervisor: signals and restarts only, no mail
        assert ps_user(worker) == USER
        assert "dropped privileges: now user quorum" in quorum.log_text()

        # Postfix's smtpd (user postfix) reaches the socket: owner quorum, group postfix, 0660.
        st = quorum.socket_path.stat()
        assert (pwd.getpwuid(st.st_uid).pw_name, st.st_gid, stat.S_IMODE(st.st_mode)) == (
            USER,
            _gid("postfix"),
            0o660,
        )

        def through_postfix(body: bytes) -> tuple[str, int]:
            token = uuid.uuid4().hex
            return token, send(postfix.smtp_port, "alice@example.com", ["bob@example.org"], mail(token, body)).code

        token, code = through_postfix(HAM)
        assert code == 250 and delivered(sink, token).header("X-Quorum-Verdict")
        assert through_postfix(EICAR)[1] == 554

        # The worker, now unprivileged, re-reads the config on SIGHUP (it must be readable by quorum).
        quorum.reload(quorum.body + '\n[policy]\non_virus = "tag"\n')
        assert re.search(r"reloaded \S+: engines clamav", quorum.log_text()), quorum.log_text()[-2000:]

        # A restarted worker binds as root and drops again.
        os.kill(worker, signal.SIGKILL)
        wait_until(lambda: len(quorum.worker_pids()) == 1 and quorum.worker_pids() != [worker] and quorum._ready())
        [again] = quorum.worker_pids()
        assert ps_user(again) == USER
        token, code = through_postfix(HAM)
        assert code == 250 and delivered(sink, token)

        # Stopping stays quick: the worker, as quorum, can still poke its own socket (see server.py).
        start = time.monotonic()
        quorum.service.stop(timeout=20)
        assert time.monotonic() - start < 4
    finally:
        postfix.stop()
        quorum.stop()
        sink.stop()
        shutil.rmtree(work, ignore_errors=True)


def _gid(group: str) -> int:
    return grp.getgrnam(group).gr_gid


# -- defect 6: a restart that meets a broken config ---------------------------------------------


def test_crash_with_a_broken_config_on_disk_is_retried_until_fixed(shared_dir: Path) -> None:
    quorum = QuorumProcess(shared_dir / "quorum", "")
    with quorum:
        [worker] = quorum.worker_pids()
        good = quorum.config_path.read_text()
        quorum.config_path.write_text(good + '\n[policy]\non_virus = "explode"\n')
        os.kill(worker, signal.SIGKILL)
        quorum.wait_for_log(r"milter could not restart \(exit 2", timeout=10)
        time.sleep(6)  # well past the 5 s window of a failed first start
        assert quorum.service.running, quorum.log_text()[-2000:]
        assert not quorum._ready()
        quorum.config_path.write_text(good)
        quorum.service.signal(signal.SIGHUP)
        wait_until(quorum._ready, timeout=15)  # how soon: tests/unit/test_supervisor.py
        assert len(quorum.worker_pids()) == 1 and "SIGHUP" in quorum.log_text()


def test_a_killed_supervisor_takes_its_worker_along_and_a_new_one_binds(tmp_path: Path) -> None:
    """A SIGKILLed `quorum run` must not leave an orphan worker holding the socket (and serving with
    a pipeline nobody supervises): the worker dies with it, and the next `quorum run` binds at once."""
    from tests.harness import milter_client as mc

    first = QuorumProcess(tmp_path / "first", "").start()
    (worker,) = first.worker_pids()
    assert first.pid is not None
    held = mc.Connection(first.socket)  # a session in flight: a draining orphan would wait for it
    held.send(mc.optneg())
    held.read()
    held.send(mc.connect(b"client.example"))
    held.read()
    os.kill(first.pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while Path(f"/proc/{worker}").exists() and time.monotonic() < deadline:
        try:
            os.waitpid(worker, os.WNOHANG)
        except ChildProcessError:
            pass
        time.sleep(0.05)
    stat = Path(f"/proc/{worker}/stat").read_text().split() if Path(f"/proc/{worker}").exists() else ["", "", "X"]
    assert stat[2] in ("X", "Z"), "the worker outlived its supervisor"
    second = QuorumProcess(tmp_path / "second", "")
    second.port = first.port
    second.write_config("")
    try:
        second.start(timeout=15)
        assert second.worker_pids()
    finally:
        held.close()
        second.stop()
        first.stop()
