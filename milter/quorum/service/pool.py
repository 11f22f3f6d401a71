"""Keep libmilter's pool of workers from leaving a session unserved behind a long callback.

Debian's libmilter is built with `_FFR_WORKERS_POOL`: a few worker threads (MIN_WORKERS, 2) serve
every connection, one command at a time, and a controller thread hands them the sessions that
have a command to read. Its hand-over can lose a wake-up (libmilter/worker.c): the controller
marks a ready session READY_TO_RUN and signals the condition variable when `tm_nb_idle > 0`, and
a worker lowers `tm_nb_idle` only once it runs again. Two sessions ready at the same moment with
one idle worker are both marked, the second signal wakes nobody, and since the count said a
worker was idle no new one is started. The woken worker takes one of them; the other is no longer
polled (it is not WAITING) and is served only when some worker finishes its command. When that
command is an end-of-message held by a slow engine (up to `scan_deadline`), or a lookup at
RCPT, the other session's next command waits as long: Postfix gives up after
`milter_command_timeout` (30 s) and answers 451, though nothing in Quorum was busy with it.

A session must never wait for another one's callback. libmilter cannot be told to start a worker,
but it starts one for a new connection when none is idle (mi_start_session), and that worker then
serves every stranded session in turn before it goes idle. So while some callback has run for
longer than `AFTER` seconds, `Nudger` connects to Quorum's own socket, and again every `EVERY`
seconds while one still runs: the connection is closed at once, libmilter sees EOF before any
command (no session starts: the close callback finds none), and whatever it stranded is served
within about a second. A milter whose callbacks all return in milliseconds never connects to
itself.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

log = logging.getLogger("quorum.service")

AFTER = 0.5  # a callback running this long may be holding up a stranded session
EVERY = 1.0  # then one connection per this many seconds, as long as one still runs

F = TypeVar("F", bound=Callable[..., Any])


class Nudger:
    """Callbacks in flight (each with its start time), and a thread that pokes libmilter's listener
    while one of them has been running for more than `after` seconds."""

    def __init__(self, after: float = AFTER, every: float = EVERY) -> None:
        self.after = after
        self.every = every
        self.pokes = 0
        self._cond = threading.Condition(threading.Lock())
        self._running: dict[int, float] = {}  # token -> start; insertion order is start order
        self._tokens = itertools.count()
        self._poke: Callable[[], None] | None = None
        self._thread: threading.Thread | None = None
        self._stopped = False

    def enter(self) -> int:
        token = next(self._tokens)
        with self._cond:
            self._running[token] = time.monotonic()
            if len(self._running) == 1 and self._poke is not None:
                self._cond.notify()
        return token

    def leave(self, token: int) -> None:
        with self._cond:
            self._running.pop(token, None)

    def watched(self, callback: F) -> F:
        """`callback` counted as in flight while it runs."""

        def run(*args: Any) -> Any:
            token = self.enter()
            try:
                return callback(*args)
            finally:
                self.leave(token)

        return run  # type: ignore[return-value]

    def start(self, poke: Callable[[], None]) -> None:
        """Poke with `poke` (a connection to the milter's socket) from now on."""
        with self._cond:
            self._poke, self._stopped = poke, False
        self._thread = threading.Thread(target=self._loop, name="quorum-pool-nudge", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._poke = None
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def due(self, now: float, last_poke: float) -> float:
        """Seconds until the next poke (0: now), or -1 when no callback is in flight."""
        if not self._running:
            return -1.0
        oldest = next(iter(self._running.values()))
        return max(0.0, oldest + self.after - now, last_poke + self.every - now)

    def _loop(self) -> None:
        last_poke = float("-inf")
        while True:
            with self._cond:
                while True:
                    if self._stopped or self._poke is None:
                        return
                    wait = self.due(time.monotonic(), last_poke)
                    if wait == 0.0:
                        break
                    self._cond.wait(None if wait < 0 else wait)
                poke = self._poke
            last_poke = time.monotonic()
            self.pokes += 1
            try:
                poke()
            except Exception:  # noqa: BLE001 - a failed poke is retried on the next round
                log.debug("poking the milter socket failed", exc_info=True)


NUDGER = Nudger()  # the worker's: its callbacks are registered once per process (callbacks.install)
