"""The background batcher: records queue in memory and one thread writes them with pipelined XADDs.

`submit` never blocks and never raises: a full queue drops the record (counted). The writer
thread takes up to `batch` records, sends them in one pipeline (XADD MAXLEN ~ per record, and an
EXPIRE per hourly key), and on any Redis failure drops that batch (counted), closes the client and
leaves Redis alone for `backoff` seconds, dropping (and counting) what arrives meanwhile. Mail never
waits on any of it.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from quorum.records import streams
from quorum.records.metrics import DROPPED, WRITTEN
from quorum.records.settings import RecordsSettings
from quorum.redisconn import RedisHealth

log = logging.getLogger("quorum.records")
_STOP = object()


class RecordWriter:
    def __init__(
        self,
        settings: RecordsSettings,
        client_factory: Callable[[], Any],
        start: bool = True,
        warn_interval: float = 60.0,
    ) -> None:
        self.settings = settings
        self._factory = client_factory
        self._queue: queue.Queue[Any] = queue.Queue(settings.queue_size)
        self._client: Any = None
        self.health = RedisHealth(
            "records",
            log,
            backoff=settings.backoff,
            warn_interval=warn_interval,
            down="session records: Redis unavailable ({reason}); dropping records for {backoff:.1f}s, "
            "mail is not affected",
            up="session records: Redis reachable again; records are written again",
        )
        self.written = 0
        self.dropped = 0
        self._count_lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="quorum-records", daemon=True)
        if start:
            self._thread.start()

    # -- milter threads ---------------------------------------------------------------------------
    def submit(self, record: dict[str, Any]) -> bool:
        """Queue one record (serialised later, by the writer thread); False if it was dropped."""
        if self._closed:  # a session that outlived its pipeline (reload): nothing will write it
            self._drop(1, "closed")
            return False
        try:
            self._queue.put_nowait(record)
            return True
        except queue.Full:
            self._drop(1, "queue_full")
            return False

    def close(self, timeout: float = 2.0) -> None:
        """Write what is queued (for at most `timeout` seconds), then stop the thread."""
        self._closed = True
        if not self._thread.is_alive():
            self._close_client()
            return
        try:
            self._queue.put(_STOP, timeout=timeout)
        except queue.Full:
            pass
        self._thread.join(timeout)

    # -- writer thread ----------------------------------------------------------------------------
    def _loop(self) -> None:
        stopping = False
        while not stopping:
            batch, stopping = self._take()
            if batch:
                self.write(batch)
        self._close_client()

    def _take(self) -> tuple[list[dict[str, Any]], bool]:
        """Wait for a first record, then gather what else is there (up to `batch`, for `flush_interval`)."""
        first = self._queue.get()
        if first is _STOP:
            return [], True
        batch = [first]
        deadline = time.monotonic() + self.settings.flush_interval
        while len(batch) < self.settings.batch:
            try:
                item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if item is _STOP:
                return batch, True
            batch.append(item)
        return batch, False

    def write(self, batch: list[dict[str, Any]]) -> None:
        """One pipelined round trip for `batch`; on failure the batch is dropped and counted."""
        if not self.health.available():
            self._drop(len(batch), "redis_down")
            return
        s = self.settings
        try:
            client = self._client or self._connect()
            pipe = client.pipeline(transaction=False)
            expiring: set[str] = set()
            for record in batch:
                key = streams.key_for(s, float(record.get("ts") or time.time()))
                data = json.dumps(record, separators=(",", ":"), default=str)
                pipe.xadd(key, {streams.FIELD: data}, maxlen=s.max_len, approximate=True)
                if s.hourly and key not in expiring:
                    expiring.add(key)
                    pipe.expire(key, int(s.retention))
            pipe.execute()
        except Exception as exc:  # noqa: BLE001 - any Redis/network/cluster failure: drop, back off
            self._drop(len(batch), "redis_down")
            self._close_client()
            self.health.failed(exc)
            return
        self.health.ok()
        self.written += len(batch)
        WRITTEN.inc(len(batch))

    def _connect(self) -> Any:
        self._client = self._factory()
        return self._client

    def _drop(self, count: int, reason: str) -> None:
        with self._count_lock:
            self.dropped += count
        DROPPED.labels(reason).inc(count)

    def _close_client(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except Exception:  # noqa: BLE001
                log.debug("closing the records client failed", exc_info=True)

    @property
    def pending(self) -> int:
        return self._queue.qsize()
