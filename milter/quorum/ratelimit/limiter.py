"""Reservations against Redis, failing open to the in-process buckets when Redis is not there.

Redis down, slow or failing over costs at most one short socket timeout: after a failure the
limiter skips Redis for `backoff` seconds, then lets one caller probe it while the others keep
counting locally. The warning is logged at most once per `warn_interval`; nothing is raised.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from quorum.ratelimit.backend import Answer, Backend
from quorum.ratelimit.buckets import Charge
from quorum.ratelimit.fallback import LocalBuckets
from quorum.redisconn import RedisHealth

log = logging.getLogger("quorum.ratelimit")


@dataclass(frozen=True)
class Reservation:
    """What a message took, and where (`redis` or `local`), so exactly that can be given back."""

    charges: tuple[Charge, ...]
    source: str

    def record_fields(self) -> dict[str, dict[str, object]]:
        return {"ratelimit": {"source": self.source, "buckets": sorted({c.kind for c in self.charges})}}


@dataclass(frozen=True)
class RateRefusal:
    """The transaction was refused at DATA by this bucket kind (for the session record)."""

    kind: str

    def record_fields(self) -> dict[str, dict[str, str]]:
        return {"ratelimit": {"refused": self.kind}}


@dataclass(frozen=True)
class Admission:
    admitted: bool
    reservation: Reservation | None = None
    refused: Charge | None = None
    retry_after: float = 0.0  # seconds until the refused bucket admits this message
    source: str = "redis"


class Limiter:
    def __init__(
        self,
        connect: Callable[[], Backend],
        fallback: LocalBuckets,
        backoff: float = 1.0,
        warn_interval: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._connect = connect
        self.fallback = fallback
        self.health = RedisHealth(
            "ratelimit",
            log,
            backoff=backoff,
            warn_interval=warn_interval,
            clock=clock,
            down="Redis unavailable ({reason}): rate limits fail open to approximate per-process counting; "
            "retrying Redis every {backoff:.1f}s",
            up="Redis reachable again: rate limits are counted in Redis again",
        )
        self._backend: Backend | None = None
        self._connect_lock = threading.Lock()

    @property
    def failures(self) -> int:
        """Redis errors seen, for tests and metrics."""
        return self.health.failures

    # -- public ------------------------------------------------------------------------------
    def reserve(self, charges: Sequence[Charge]) -> Admission:
        """Take from every bucket or from none."""
        return self._decide("reserve", tuple(charges))

    def check(self, charges: Sequence[Charge]) -> Admission:
        """Would `charges` be admitted now? Nothing is taken."""
        return self._decide("check", tuple(charges))

    def release(self, reservation: Reservation) -> None:
        """Give a reservation back (the message was refused, discarded or never sent)."""
        if reservation.source == "local":
            self.fallback.run("release", reservation.charges)
            return
        backend = self._redis()
        if backend is None:
            log.debug("Redis unavailable: %d bucket(s) not given back", len(reservation.charges))
            return
        try:
            backend.run("release", reservation.charges)
        except Exception as exc:
            self.health.failed(exc)
        else:
            self.health.ok()

    def close(self) -> None:
        with self._connect_lock:
            backend, self._backend = self._backend, None
        if backend is not None:
            try:
                backend.close()
            except Exception:
                log.debug("closing the Redis client failed", exc_info=True)

    @property
    def degraded(self) -> bool:
        return self.health.failing

    # -- internals ---------------------------------------------------------------------------
    def _decide(self, op: str, charges: tuple[Charge, ...]) -> Admission:
        if not charges:
            return Admission(True)
        answer, source = self._run(op, charges)
        if answer.admitted:
            reservation = Reservation(charges, source) if op == "reserve" else None
            return Admission(True, reservation, source=source)
        return Admission(False, None, charges[answer.refused], answer.wait_us / 1e6, source)

    def _run(self, op: str, charges: tuple[Charge, ...]) -> tuple[Answer, str]:
        backend = self._redis()
        if backend is not None:
            try:
                answer = backend.run(op, charges)
            except Exception as exc:
                self.health.failed(exc)
            else:
                self.health.ok()
                return answer, "redis"
        return self.fallback.run(op, charges), "local"

    def _redis(self) -> Backend | None:
        """The backend to try now, or None while backing off (one caller probes per period)."""
        if not self.health.available():
            return None
        if self._backend is None:
            with self._connect_lock:
                if self._backend is None:
                    try:
                        self._backend = self._connect()
                    except Exception as exc:
                        self.health.failed(exc)
                        return None
        return self._backend
