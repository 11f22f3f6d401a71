"""The antivirus verdict cache with a fake engine and a fake Redis: what is stored, what is reused,
what never is (errors), and that a new signature version makes old entries unreachable."""

from __future__ import annotations

import base64
from typing import Any, ClassVar

from quorum.config.model import EngineSettings
from quorum.engines.base import Engine, ScanCall
from quorum.message import Message
from quorum.pipeline.runner import EngineRunner
from quorum.verdict import Category, Status, Verdict
from quorum.verdictcache.cached import CachedScan
from quorum.verdictcache.store import VerdictStore, entry_key

EICARISH = b"BAD-PAYLOAD"


class FakeAV(Engine):
    type_name = "fakeav"
    category: ClassVar[Category] = Category.ANTIVIRUS

    def __init__(self) -> None:
        super().__init__(EngineSettings("av", "fakeav"))
        self.scanned: list[bytes] = []
        self.sig_version = "FakeAV 1/100"
        self.fail = False

    def version(self, call: ScanCall) -> str | None:
        return self.sig_version

    def scan(self, message: Message, call: ScanCall) -> Verdict:
        raw = message.raw()
        self.scanned.append(raw)
        if self.fail:
            return self.verdict(Status.ERROR, error="boom")
        if EICARISH in raw or base64.b64encode(EICARISH)[:12] in raw:
            return self.verdict(Status.INFECTED, names=("Bad.Payload",))
        return self.verdict(Status.CLEAN)


class FakeRedis:
    def __init__(self) -> None:
        self.data: dict[str, str] = {}
        self.mgets = 0

    def mget(self, keys: list[str]) -> list[Any]:
        self.mgets += 1
        return [self.data.get(k) for k in keys]

    def pipeline(self, transaction: bool = False) -> FakeRedis:
        return self

    def set(self, key: str, value: str, ex: int) -> None:
        self.data[key] = value

    def execute(self) -> None:
        return None

    def close(self) -> None:
        return None


def call() -> ScanCall:
    import time

    return ScanCall(time.monotonic() + 5)


def single(body: bytes, subject: str = "x") -> Message:
    return Message.from_bytes(f"Subject: {subject}\r\n\r\n".encode() + body)


def multipart(text: str, attachment: bytes) -> Message:
    b64 = base64.b64encode(attachment).decode()
    return Message.from_bytes(
        (
            "Subject: offer\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
            f"--b\r\nContent-Type: text/plain\r\n\r\n{text}\r\n"
            f'--b\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename="a.bin"\r\n'
            f"Content-Transfer-Encoding: base64\r\n\r\n{b64}\r\n--b--\r\n"
        ).encode()
    )


KEY = entry_key(b"k" * 32)


def cache(redis: FakeRedis | None = None, local: int = 100) -> CachedScan:
    return CachedScan(VerdictStore((lambda: redis) if redis else None, 60, local, "t:", KEY), 50)


def test_single_part_body_is_answered_from_the_cache_whatever_the_headers() -> None:
    av, c = FakeAV(), cache()
    assert c.scan(av, single(b"hello world\r\n", "one"), call()).status is Status.CLEAN
    v = c.scan(av, single(b"hello world\r\n", "another subject"), call())
    assert v.status is Status.CLEAN and v.extra["cache"] == "hit" and len(av.scanned) == 1


def test_a_new_signature_version_makes_old_entries_unreachable() -> None:
    av, c = FakeAV(), cache()
    c.scan(av, single(b"hello\r\n"), call())
    av.sig_version = "FakeAV 1/101"
    c.scan(av, single(b"hello\r\n"), call())
    assert len(av.scanned) == 2


def test_errors_are_never_cached_so_no_tempfail_turns_into_an_accept() -> None:
    av, c = FakeAV(), cache()
    av.fail = True
    assert c.scan(av, single(b"hello\r\n"), call()).status is Status.ERROR
    av.fail = False
    v = c.scan(av, single(b"hello\r\n"), call())
    assert v.status is Status.CLEAN and "cache" not in v.extra and len(av.scanned) == 2


def test_campaign_attachment_known_clean_only_the_text_is_scanned_again() -> None:
    av, c = FakeAV(), cache()
    payload = b"\x00PDF-ish attachment bytes" * 100
    assert c.scan(av, multipart("Dear Alice", payload), call()).status is Status.CLEAN
    v = c.scan(av, multipart("Dear Bob", payload), call())
    assert v.status is Status.CLEAN and v.extra["cache"] == "attachments"
    assert b"Dear Bob" in av.scanned[-1] and payload not in av.scanned[-1]


def test_an_infected_attachment_is_named_once_and_answered_from_the_cache() -> None:
    av, c = FakeAV(), cache()
    first = c.scan(av, multipart("hi", EICARISH), call())
    assert first.status is Status.INFECTED
    scans = len(av.scanned)  # the whole message, then the attachment alone (attribution)
    again = c.scan(av, multipart("other text", EICARISH), call())
    assert again.status is Status.INFECTED and again.names == ("Bad.Payload",) and len(av.scanned) == scans


def test_one_redis_round_trip_per_message_and_none_when_the_local_lru_answers() -> None:
    redis = FakeRedis()
    av = FakeAV()
    c = cache(redis, local=0)  # no local entries: every lookup goes to Redis
    c.scan(av, multipart("a", b"attachment-1" * 10), call())
    c.scan(av, multipart("b", b"attachment-1" * 10), call())
    assert redis.mgets == 2 and len(redis.data) == 1
    shared = cache(redis, local=100)  # another instance: warm from Redis, then from its LRU
    shared.scan(av, multipart("c", b"attachment-1" * 10), call())
    shared.scan(av, multipart("d", b"attachment-1" * 10), call())
    assert redis.mgets == 3


def test_spam_engines_never_get_the_cache() -> None:
    class FakeSpam(FakeAV):
        category: ClassVar[Category] = Category.ANTISPAM

    assert EngineRunner(FakeSpam(), cache()).cache is None
    assert EngineRunner(FakeAV(), cache()).cache is not None
