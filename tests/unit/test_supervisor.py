"""The supervisor of `quorum run` with scripted children (real processes, no milter): which exits
end it and which are restarted; plus the load-time checks of the accounts it runs with."""

from __future__ import annotations

import logging
import os
import pwd
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from quorum.assembly import load_config, parse_config
from quorum.config import ConfigError
from quorum.service import privileges
from quorum.service.privileges import PrivilegeError, check_identity
from quorum.service.supervisor import Supervisor
from quorum.worker import ARGV

SERVE = "import sys\nfor line in sys.stdin:\n    if line.strip() == 'stop':\n        break\n"
BAD_CONFIG = "raise SystemExit(2)"  # what the worker does when the file on disk is invalid


class Scripted(Supervisor):
    """Each spawn runs the next script instead of the milter worker."""

    def __init__(self, scripts: list[str], config_path: str | None = None) -> None:
        super().__init__(config_path, stop_timeout=5, pid_file=None, load_config=load_config, worker=ARGV)
        self.scripts = scripts
        self.spawned: list[tuple[float, subprocess.Popen[bytes]]] = []

    def _spawn(self) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen([sys.executable, "-c", self.scripts.pop(0)], stdin=subprocess.PIPE)
        self.spawned.append((time.monotonic(), proc))
        return proc


def wait_until(predicate: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@pytest.fixture(autouse=True)
def restore_signals() -> Iterator[None]:
    saved = {s: signal.getsignal(s) for s in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT)}
    yield
    for s, handler in saved.items():
        signal.signal(s, handler)


def run_with(sup: Scripted, driver: Callable[[], None]) -> int:
    """sup.run() in this (main) thread, `driver` in another; the driver ends by asking for a stop."""
    failure: list[BaseException] = []

    def drive() -> None:
        try:
            driver()
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            failure.append(exc)
        finally:
            sup._stop = True

    thread = threading.Thread(target=drive, daemon=True)
    thread.start()
    code = sup.run()
    thread.join(10)
    if failure:
        raise failure[0]
    return code


def test_a_config_error_on_the_first_start_ends_the_supervisor() -> None:
    sup = Scripted([BAD_CONFIG])
    start = time.monotonic()
    assert sup.run() == 2
    assert time.monotonic() - start < 5


def test_a_crash_with_a_bad_config_on_disk_keeps_retrying(caplog: pytest.LogCaptureFixture) -> None:
    """Defect 6: the restart after a crash met the broken file, exited 2 within 5 s, and the old
    supervisor took that for a failed first start: the milter stayed down for good."""
    caplog.set_level(logging.INFO, "quorum.supervisor")
    sup = Scripted([SERVE, BAD_CONFIG, SERVE])

    def driver() -> None:
        wait_until(lambda: len(sup.spawned) == 1)
        time.sleep(0.3)
        sup.spawned[0][1].kill()  # the worker crashes while the file on disk is broken
        wait_until(lambda: len(sup.spawned) == 3)  # ...and the file is fixed: the third start serves
        time.sleep(0.3)
        assert sup.spawned[2][1].poll() is None

    assert run_with(sup, driver) == 0
    assert "milter could not restart (exit 2" in caplog.text


def test_sighup_with_a_fixed_config_restarts_at_once(tmp_path: Path) -> None:
    config = tmp_path / "quorum.toml"
    config.write_text('[milter]\nsocket = "inet:9900@127.0.0.1"\n')
    load_config(config)  # warm: the first load imports every feature module, slow on a busy machine
    sup = Scripted([SERVE, BAD_CONFIG, SERVE], str(config))
    hup_at: list[float] = []

    def driver() -> None:
        wait_until(lambda: len(sup.spawned) == 1)
        sup.spawned[0][1].kill()
        wait_until(lambda: len(sup.spawned) == 2 and sup.spawned[1][1].poll() is not None)
        time.sleep(0.4)  # the supervisor is in its 2 s backoff now
        hup_at.append(time.monotonic())
        os.kill(os.getpid(), signal.SIGHUP)
        wait_until(lambda: len(sup.spawned) == 3)

    assert run_with(sup, driver) == 0
    assert sup.spawned[2][0] - hup_at[0] < 1.0


def test_sighup_while_a_failing_restart_is_still_starting(tmp_path: Path) -> None:
    """The fixed file and its SIGHUP may come while the doomed worker is still loading the old one."""
    config = tmp_path / "quorum.toml"
    config.write_text('[milter]\nsocket = "inet:9900@127.0.0.1"\n')
    load_config(config)
    sup = Scripted([SERVE, "import time\ntime.sleep(0.6)\nraise SystemExit(2)", SERVE], str(config))
    hup_at: list[float] = []

    def driver() -> None:
        wait_until(lambda: len(sup.spawned) == 1)
        sup.spawned[0][1].kill()
        wait_until(lambda: len(sup.spawned) == 2)
        hup_at.append(time.monotonic())
        os.kill(os.getpid(), signal.SIGHUP)
        wait_until(lambda: len(sup.spawned) == 3)

    assert run_with(sup, driver) == 0
    assert sup.spawned[2][0] - hup_at[0] < 1.5  # not after the 2 s backoff


def test_stop_while_waiting_to_restart_is_prompt() -> None:
    sup = Scripted([SERVE, BAD_CONFIG, SERVE])
    stopped: list[float] = []

    def driver() -> None:
        wait_until(lambda: len(sup.spawned) == 1)
        sup.spawned[0][1].kill()
        wait_until(lambda: len(sup.spawned) == 2 and sup.spawned[1][1].poll() is not None)
        time.sleep(0.3)
        stopped.append(time.monotonic())

    assert run_with(sup, driver) == 0
    assert time.monotonic() - stopped[0] < 1.0
    assert len(sup.spawned) == 2


# -- accounts, checked at load and at start ---------------------------------------------------


def test_unknown_socket_group_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as err:
        parse_config({"milter": {"socket": "unix:/run/quorum/q.sock", "socket_group": "no-such-group-q"}})
    [problem] = err.value.problems
    assert problem.startswith("milter.socket_group: no group 'no-such-group-q'") and "postfix" in problem


def test_unknown_user_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as err:
        parse_config({"milter": {"user": "no-such-user-q"}})
    [problem] = err.value.problems
    assert problem.startswith("milter.user: no user 'no-such-user-q'") and "useradd" in problem


def test_existing_accounts_load() -> None:
    config = parse_config({"milter": {"socket_group": "root", "user": "root"}})
    assert (config.milter.socket_group, config.milter.user) == ("root", "root")


@pytest.fixture
def as_uid(monkeypatch: pytest.MonkeyPatch) -> Callable[[int], None]:
    monkeypatch.delenv(privileges.ALLOW_ROOT_ENV, raising=False)
    return lambda uid: monkeypatch.setattr(privileges.os, "geteuid", lambda: uid)


def test_root_without_a_user_refuses(as_uid: Callable[[int], None]) -> None:
    as_uid(0)
    with pytest.raises(PrivilegeError, match=r'refusing to run as root: set \[milter\] user = "quorum"'):
        check_identity(None)


def test_root_with_the_test_harness_switch(as_uid: Callable[[int], None], monkeypatch: pytest.MonkeyPatch) -> None:
    as_uid(0)
    monkeypatch.setenv(privileges.ALLOW_ROOT_ENV, "1")
    check_identity(None)


def test_root_as_the_configured_user_refuses(as_uid: Callable[[int], None]) -> None:
    as_uid(0)
    with pytest.raises(PrivilegeError, match="is root"):
        check_identity("root")


def test_unprivileged_start(as_uid: Callable[[int], None]) -> None:
    nobody = pwd.getpwnam("nobody").pw_uid
    as_uid(nobody)
    check_identity(None)  # systemd's User=, the compose image's USER
    check_identity("nobody")
    with pytest.raises(PrivilegeError, match="cannot switch users"):
        check_identity("root")


# -- a reload with a bad file keeps the running config (issue 17, item 10) --------------------


@pytest.mark.parametrize("engine_type", [":clamav", ".x:Y", "", "a..b:C"])
def test_sighup_with_a_malformed_engine_type_keeps_the_supervisor(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, engine_type: str
) -> None:
    """`type = ":clamav"` made load_config raise ValueError (and ".x:Y" TypeError) out of the SIGHUP
    handler's validation: the supervisor died and every message was tempfailed until a restart."""
    caplog.set_level(logging.INFO, "quorum.supervisor")
    config = tmp_path / "quorum.toml"
    config.write_text('[milter]\nsocket = "inet:9900@127.0.0.1"\n')
    load_config(config)
    sup = Scripted([SERVE], str(config))

    def driver() -> None:
        wait_until(lambda: len(sup.spawned) == 1)
        config.write_text(f'[engines.x]\ntype = "{engine_type}"\n')
        os.kill(os.getpid(), signal.SIGHUP)
        wait_until(lambda: "reload refused" in caplog.text)
        time.sleep(0.3)
        assert sup.spawned[0][1].poll() is None  # the worker serves on with the old config

    assert run_with(sup, driver) == 0
    assert "reload refused, keeping the running config: engines.x.type" in caplog.text
    assert len(sup.spawned) == 1


def test_sighup_survives_any_exception_of_the_loader(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:

    config = tmp_path / "quorum.toml"
    config.write_text("")
    sup = Scripted([SERVE], str(config))

    def broken(path: object) -> None:
        raise RuntimeError("a validator bug")

    monkeypatch.setattr(sup, "load_config", broken)

    def driver() -> None:
        wait_until(lambda: len(sup.spawned) == 1)
        os.kill(os.getpid(), signal.SIGHUP)
        wait_until(lambda: "reload refused" in caplog.text)
        assert sup.spawned[0][1].poll() is None

    assert run_with(sup, driver) == 0
    assert "RuntimeError: a validator bug" in caplog.text


# -- the pid file is written without following symlinks (issue 17, item 9) ---------------------


def test_pid_file_symlink_is_replaced_not_followed(tmp_path: Path) -> None:
    from quorum.service.supervisor import remove_pid_file, write_pid_file

    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    pid_file = tmp_path / "quorum.pid"
    pid_file.symlink_to(victim)
    write_pid_file(str(pid_file), 4242)
    assert victim.read_text() == "precious\n"
    assert not pid_file.is_symlink() and pid_file.read_text() == "4242\n"
    assert oct(pid_file.stat().st_mode & 0o777) == oct(0o644)
    assert {p.name for p in tmp_path.iterdir()} == {"victim", "quorum.pid"}  # no temp file left

    remove_pid_file(str(pid_file), 999)  # names another process: left alone
    assert pid_file.exists()
    remove_pid_file(str(pid_file), 4242)
    assert not pid_file.exists() and victim.read_text() == "precious\n"


def test_pid_file_dangling_symlink_and_stale_temp(tmp_path: Path) -> None:
    from quorum.service.supervisor import write_pid_file

    pid_file = tmp_path / "quorum.pid"
    target = tmp_path / "created-through-the-link"
    pid_file.symlink_to(target)
    (tmp_path / ".quorum.pid.77.tmp").symlink_to(tmp_path / "also-not-this")
    write_pid_file(str(pid_file), 77)
    assert not target.exists() and not (tmp_path / "also-not-this").exists()
    assert pid_file.read_text() == "77\n"
    assert {p.name for p in tmp_path.iterdir()} == {"quorum.pid"}


def test_supervisor_run_does_not_write_through_a_pid_file_symlink(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    pid_file = tmp_path / "quorum.pid"
    pid_file.symlink_to(victim)
    sup = Scripted([SERVE])
    sup.pid_file = str(pid_file)

    def driver() -> None:
        wait_until(lambda: len(sup.spawned) == 1)
        assert pid_file.read_text() == f"{os.getpid()}\n" and not pid_file.is_symlink()

    assert run_with(sup, driver) == 0
    assert victim.read_text() == "precious\n"
    assert not pid_file.exists()  # removed at exit (it named this process)


def test_an_unwritable_pid_file_is_a_start_error(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    sup = Scripted([SERVE])
    sup.pid_file = str(tmp_path / "no-such-dir" / "quorum.pid")
    assert sup.run() == 2
    assert "cannot write milter.pid_file" in caplog.text
    assert sup.spawned == []
