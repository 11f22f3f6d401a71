"""Process-wide state of a running milter: the current pipeline (swapped on reload) and the count
of SMTP sessions in flight (for a graceful stop).

The service knows no feature: a `Composer` (the composition root, `quorum.assembly`, handed over
by the command line) loads a config file and builds a pipeline from it."""

from __future__ import annotations

import logging
import threading
import weakref
from pathlib import Path
from typing import Protocol

from quorum import metrics
from quorum.config import Config, ConfigError
from quorum.pipeline.pipeline import Pipeline, close_parts

log = logging.getLogger("quorum.service")


class Composer(Protocol):
    def load_config(self, path: str | Path) -> Config: ...

    def build_pipeline(self, config: Config) -> Pipeline: ...


class App:
    def __init__(self, config: Config, composer: Composer) -> None:
        self.config = config
        self.composer = composer
        self.pipeline = composer.build_pipeline(config)
        self._lock = threading.Lock()
        self._active = 0
        self._idle = threading.Condition(self._lock)
        self.draining = False  # set by drain(): new SMTP sessions are refused with a 4xx

    def session_started(self) -> None:
        with self._lock:
            self._active += 1
        metrics.SESSIONS.inc()

    def session_ended(self) -> None:
        with self._lock:
            self._active -= 1
            if self._active <= 0:
                self._idle.notify_all()
        metrics.SESSIONS.dec()

    @property
    def active_sessions(self) -> int:
        with self._lock:
            return self._active

    def wait_idle(self, timeout: float) -> bool:
        with self._lock:
            return self._idle.wait_for(lambda: self._active <= 0, timeout)

    def drain(self, timeout: float) -> bool:
        """Refuse new sessions from now on and wait up to `timeout` for those in flight to end.

        The caller stops libmilter only afterwards: with Debian's libmilter (workers pool),
        smfi_stop() also stops reading the connections that are still open.
        """
        self.draining = True
        return self.wait_idle(timeout)

    def reload(self, path: str | None = None) -> bool:
        """Build a new pipeline from the file; keep the old one if the new config is invalid.

        Sessions in flight keep the pipeline they started with; new sessions get the new one.
        """
        path = path or self.config.path
        if path is None:
            log.warning("reload: no config file to re-read (running on the embedded default)")
            return False
        try:
            config = self.composer.load_config(path)
            pipeline = self.composer.build_pipeline(config)
        except ConfigError as exc:
            log.error("reload refused, keeping the running config: %s", "; ".join(exc.problems))
            return False
        except Exception as exc:  # noqa: BLE001
            log.error("reload refused, keeping the running config: %s", exc)
            return False
        if config.milter.socket != self.config.milter.socket:
            log.warning("reload: milter.socket changed; it takes effect only on restart")
        old, self.pipeline, self.config = self.pipeline, pipeline, config
        for w in config.warnings:
            log.warning("config: %s", w)
        log.info("reloaded %s: engines %s", path, ", ".join(r.name for r in pipeline.runners) or "none")
        # A transaction that began before the reload keeps using the old pipeline however long
        # the client takes: close its engines and stages when the last session lets go of it.
        weakref.finalize(old, close_parts, old.parts, old.stage_pool)
        return True

    def close(self) -> None:
        self.pipeline.close()
