"""Antivirus scanning through the verdict cache.

Only answered verdicts (clean, infected) are stored, never an error or a skip, so a cache entry can
never turn a tempfail into an accept. Keys carry the engine's signature version (clamd `VERSION`):
a new database makes every old entry unreachable. An engine without a version is never cached.

- single-part: one key (the decoded body); a hit answers without a scan.
- multipart: a key per decoded attachment. A cached infected attachment answers at once; when every
  attachment is cached clean the message is scanned with those attachments emptied (its structure
  and other parts as received); otherwise the whole message is scanned once, and its verdict stored
  for the attachments (clean), or — on a find — each unknown attachment is scanned on its own, as
  the exact file it is, so the infected one is named. Those verdicts are stored only when one of
  them is the find: when no attachment alone is infected, the find lies in the rest of the message
  or in the combination, and nothing is stored (a clean entry would hide it next time).

Spam verdicts are never cached: they depend on the envelope, headers, client and DNS, so two
messages with the same attachments are not the same question for rspamd or SpamAssassin.
"""

from __future__ import annotations

import hashlib

from quorum.engines.base import Engine, ScanCall
from quorum.message import BodySpool, Envelope, Message
from quorum.verdict import LIMITS_EXCEEDED, Status, Verdict
from quorum.verdictcache.content import content_of
from quorum.verdictcache.store import VerdictStore

CLEAN = "clean"


def encode(v: Verdict) -> str | None:
    if v.status is Status.CLEAN:
        return CLEAN
    if v.status is Status.INFECTED and v.detail == LIMITS_EXCEEDED:
        return None  # depends on clamd's limits and load (MaxScanTime): ask again next time
    if v.status is Status.INFECTED:
        return "infected:" + (v.names[0] if v.names else "unknown")
    return None


def decode(engine: Engine, value: str) -> Verdict:
    if value.startswith("infected:"):
        return engine.verdict(Status.INFECTED, names=(value.removeprefix("infected:"),), extra={"cache": "hit"})
    return engine.verdict(Status.CLEAN, extra={"cache": "hit"})


class CachedScan:
    def __init__(self, store: VerdictStore, max_parts: int, max_size: int = 10 * 1024 * 1024) -> None:
        self.store = store
        self.max_parts = max_parts
        self.max_size = max_size

    def scan(self, engine: Engine, message: Message, call: ScanCall) -> Verdict:
        if message.size > self.max_size or message.truncated:
            return engine.scan(message, call)  # splitting it would hold it in memory: scan it whole
        version = engine.version(call)
        content = content_of(message, self.max_parts) if version else None
        if version is None or content is None:
            return engine.scan(message, call)
        prefix = f"{engine.type_name}:{hashlib.sha256(version.encode()).hexdigest()[:16]}:"
        if content.single is not None:
            key = prefix + content.single
            hit = self.store.get_many([key]).get(key)
            if hit is not None:
                return decode(engine, hit)
            verdict = engine.scan(message, call)
            self._store({key: verdict})
            return verdict
        if not content.attachments:
            return engine.scan(message, call)
        keys = [prefix + k for k, _ in content.attachments]
        hits = self.store.get_many(keys)
        for key in keys:
            if hits.get(key, CLEAN) != CLEAN:
                return decode(engine, hits[key])
        if all(k in hits for k in keys):  # every attachment known clean: scan what else there is
            rest = Message.from_bytes(content.rest, message.envelope)
            try:
                verdict = engine.scan(rest, call)
            finally:
                rest.close()
            return verdict.with_(extra={**verdict.extra, "cache": "attachments"})
        verdict = engine.scan(message, call)
        if verdict.status is Status.CLEAN:
            self._store(dict.fromkeys(keys, verdict))
        elif verdict.status is Status.INFECTED:
            self._attribute(
                engine, message, call, [(p, d) for p, (_, d) in zip(keys, content.attachments, strict=True)]
            )
        return verdict

    def _attribute(self, engine: Engine, message: Message, call: ScanCall, parts: list[tuple[str, bytes]]) -> None:
        found: dict[str, Verdict] = {}
        for key, data in parts:
            if call.remaining() <= 0:
                return
            part = exact(data, message.envelope)
            try:
                found[key] = engine.scan(part, call)
            except Exception:  # noqa: BLE001 - attribution is best effort: the message verdict stands
                return
            finally:
                part.close()
        if any(v.status is Status.INFECTED for v in found.values()):
            self._store(found)

    def _store(self, verdicts: dict[str, Verdict]) -> None:
        entries = {k: e for k, v in verdicts.items() if (e := encode(v)) is not None}
        self.store.put_many(entries)


class _Exact(Message):
    """A message that is exactly its body on the wire: no header block, not even the blank line."""

    def header_bytes(self) -> bytes:
        return b""


def exact(data: bytes, envelope: Envelope) -> Message:
    """A decoded attachment as the file it is (byte for byte: no line-end conversion, nothing
    before it), so an engine sees what it sees when it unpacks the attachment from the mail."""
    spool = BodySpool()
    spool.write(data)
    return _Exact(envelope, [], spool)
