"""The supervising parent of `quorum run`.

libmilter's signal thread takes SIGHUP/SIGTERM/SIGINT in the process that runs it (and treats
SIGHUP as "stop"). So `quorum run` is a small parent that owns the signals and runs the milter
in a child process in its own session, talking to it over a pipe:
SIGHUP -> validate the file, then `reload` (an invalid file is refused and logged);
SIGTERM/SIGINT -> `stop`: no new connections, sessions in flight finish (bounded), exit.
A child that dies unexpectedly is restarted with backoff.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

from quorum.config import ConfigError, load_config

log = logging.getLogger("quorum.supervisor")


class Supervisor:
    def __init__(self, config_path: str | None, stop_timeout: float, pid_file: str | None) -> None:
        self.config_path = config_path
        self.stop_timeout = stop_timeout
        self.pid_file = pid_file
        self.child: subprocess.Popen[bytes] | None = None
        self._reload = False
        self._stop = False

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if signum == signal.SIGHUP:
            self._reload = True
        else:
            self._stop = True

    def _spawn(self) -> subprocess.Popen[bytes]:
        argv = [sys.executable, "-m", "quorum.service.server"]
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
        try:
            config = load_config(self.config_path)
        except ConfigError as exc:
            log.error("reload refused, keeping the running config: %s", "; ".join(exc.problems))
            return
        self.stop_timeout = config.milter.stop_timeout  # the worker drains with the new value
        log.info("SIGHUP: reloading %s", self.config_path)
        self._send("reload")

    def run(self) -> int:
        for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        if self.pid_file:
            Path(self.pid_file).write_text(f"{os.getpid()}\n")
        backoff = 1.0
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
                    if code == 2 and time.monotonic() - started < 5:
                        log.error("milter failed to start (exit %d)", code)
                        return code
                    log.error("milter process exited with %d; restarting in %.0fs", code, backoff)
                    time.sleep(backoff)
                    backoff = min(backoff * 2, 30.0) if time.monotonic() - started < 60 else 1.0
                    self.child = self._spawn()
                    started = time.monotonic()
                time.sleep(0.1)
        finally:
            if self.pid_file:
                Path(self.pid_file).unlink(missing_ok=True)

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
