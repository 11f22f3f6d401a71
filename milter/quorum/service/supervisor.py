"""The supervising parent of `quorum run`.

libmilter's signal thread takes SIGHUP/SIGTERM/SIGINT in the process that runs it (and treats
SIGHUP as "stop"). So `quorum run` is a small parent that owns the signals and runs the milter
in a child process in its own session, talking to it over a pipe:
SIGHUP -> validate the file, then `reload` (an invalid file is refused and logged);
SIGTERM/SIGINT -> `stop`: no new connections, sessions in flight finish (bounded), exit.
A child that dies unexpectedly is restarted with backoff. Only the first start may end the
supervisor (exit 2: bad config, socket in use): a restart that meets a config broken on disk
since then keeps retrying with backoff, so one crash never takes the milter down for good.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType

from quorum.config import Config, ConfigError

log = logging.getLogger("quorum.supervisor")

EXIT_BIND = 3  # the worker could not bind its socket (e.g. held by a worker still draining): retried


class Supervisor:
    def __init__(
        self,
        config_path: str | None,
        stop_timeout: float,
        pid_file: str | None,
        load_config: Callable[[str], Config],
        worker: Sequence[str],
    ) -> None:
        """`load_config` validates the file on SIGHUP; `worker` is the worker's command line
        (`python -m quorum.worker`), to which the config path is appended."""
        self.config_path = config_path
        self.load_config = load_config
        self.worker = tuple(worker)
        self.stop_timeout = stop_timeout
        self.pid_file = pid_file
        self.child: subprocess.Popen[bytes] | None = None
        self._reload = False
        self._stop = False
        self._valid_at = 0.0  # monotonic time a SIGHUP last found the config valid

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if signum == signal.SIGHUP:
            self._reload = True
        else:
            self._stop = True

    def _spawn(self) -> subprocess.Popen[bytes]:
        argv = list(self.worker)
        if self.config_path:
            argv.append(self.config_path)
        return subprocess.Popen(argv, stdin=subprocess.PIPE, start_new_session=True)

    def _send(self, command: str) -> None:
        if self.child and self.child.stdin:
            try:
                self.child.stdin.write(command.encode() + b"\n")
                self.child.stdin.flush()
            except (BrokenPipeError, ValueError):
                pass

    def _do_reload(self) -> None:
        self._reload = False
        if not self.config_path:
            log.warning("SIGHUP: running on the embedded default config; nothing to reload")
            return
        if self._config_valid("reload refused, keeping the running config"):
            log.info("SIGHUP: reloading %s", self.config_path)
            self._send("reload")

    def _config_valid(self, refusal: str) -> bool:
        """Validate the file on SIGHUP; remember when it was last found valid."""
        if self.config_path:
            try:
                config = self.load_config(self.config_path)
            except ConfigError as exc:
                log.error("%s: %s", refusal, "; ".join(exc.problems))
                return False
            except Exception as exc:  # noqa: BLE001 - a bad file on SIGHUP must never end the supervisor
                log.error("%s: %s: %s", refusal, type(exc).__name__, exc)
                return False
            self.stop_timeout = config.milter.stop_timeout  # the worker drains with the new value
        self._valid_at = time.monotonic()
        return True

    def run(self) -> int:
        for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        if self.pid_file:
            try:
                write_pid_file(self.pid_file, os.getpid())
            except OSError as exc:
                log.error("cannot write milter.pid_file %s: %s; fix the path or its directory", self.pid_file, exc)
                return 2
        backoff = 1.0
        first_start = True
        self._first = time.monotonic()
        try:
            self.child = self._spawn()
            started = time.monotonic()
            while True:
                if self._stop:
                    return self._stop_child()
                if self._reload:
                    self._do_reload()
                code = self.child.poll()
                if code is not None:
                    if code == EXIT_BIND and first_start and time.monotonic() - self._first < self.stop_timeout + 10:
                        # The socket is still held, e.g. by a worker of a killed `quorum run` finishing its
                        # sessions: wait for it rather than give up.
                        log.warning("milter socket busy; retrying for up to %.0fs", self.stop_timeout + 10)
                        if not self._wait_before_restart(1.0):
                            return 0
                        self.child = self._spawn()
                        started = time.monotonic()
                        continue
                    refused = code in (2, EXIT_BIND) and time.monotonic() - started < 5  # config or socket problem
                    if refused and first_start:
                        log.error("milter failed to start (exit %d); fix the problem above and start again", code)
                        return code
                    first_start = False
                    # A worker that served a while and then died (a crash) is replaced at once: every
                    # second without it is mail answered 4xx. Only a crash loop backs off.
                    delay = 0.0 if not refused and time.monotonic() - started >= 10 else backoff
                    if refused and self._valid_at > started:
                        delay = 0.0  # a SIGHUP found the file fixed while this start was failing
                    if refused:
                        log.error(
                            "milter could not restart (exit %d: the config on disk or the socket, see above); "
                            "retrying in %.0fs, or at once on SIGHUP once the config is fixed",
                            code,
                            delay,
                        )
                    else:
                        log.error("milter process exited with %d; restarting in %.0fs", code, delay)
                    if not self._wait_before_restart(delay):
                        return 0
                    backoff = min(backoff * 2, 30.0) if time.monotonic() - started < 60 else 1.0
                    self.child = self._spawn()
                    started = time.monotonic()
                time.sleep(0.1)
        finally:
            if self.pid_file:
                remove_pid_file(self.pid_file, os.getpid())

    def _wait_before_restart(self, seconds: float) -> bool:
        """Sleep out the backoff; False if told to stop meanwhile. A SIGHUP with a valid config
        ends the wait early (the operator fixed the file the worker could not start with)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self._stop:
                log.info("stopping while the milter is down")
                return False
            if self._reload:
                self._reload = False
                if self._config_valid("config still invalid"):
                    log.info("SIGHUP: config is valid; restarting the milter now")
                    return True
            time.sleep(0.1)
        return True

    def _stop_child(self) -> int:
        assert self.child is not None
        self._send("stop")
        try:
            return self.child.wait(self.stop_timeout + 10) or 0
        except subprocess.TimeoutExpired:
            log.warning("milter did not stop in time; killing it")
            self.child.kill()
            self.child.wait(5)
            return 1


def write_pid_file(path: str, pid: int) -> None:
    """Write `pid` to `path` without following a symlink planted there: the pid goes into a new file
    beside it (O_EXCL | O_NOFOLLOW, 0644) that is then renamed over `path`, so whatever `path` was
    (a symlink to /etc/passwd, a stale file) is replaced, never written through."""
    target = Path(path)
    tmp = target.with_name(f".{target.name}.{pid}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        os.unlink(tmp)  # a leftover of a crashed start with the same pid
    except FileNotFoundError:
        pass
    fd = os.open(tmp, flags, 0o644)
    try:
        os.write(fd, f"{pid}\n".encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.replace(tmp, target)
    except OSError:
        os.unlink(tmp)
        raise


def remove_pid_file(path: str, pid: int) -> None:
    """Remove the pid file if it still names this process (not one a later `quorum run` wrote)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return
    try:
        held = os.read(fd, 64).strip()
    finally:
        os.close(fd)
    if held == str(pid).encode():
        Path(path).unlink(missing_ok=True)
