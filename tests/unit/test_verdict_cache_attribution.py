"""The verdict cache names an infected attachment by scanning it as the exact file it is, stores
nothing when no attachment alone explains a find, and rescans known-clean-attachment mail as mail.

Regression: attachments used to be rescanned through `Message.from_bytes` (line ends rewritten, a
blank line in front), so a hash signature (ClamAV .hdb, as on clamav-testfiles' clam.exe) missed
them, they were stored clean, and the next message with that attachment passed as clean.
"""

from __future__ import annotations

import base64
import hashlib
import time
from typing import ClassVar

from quorum.config.model import EngineSettings
from quorum.engines.base import Engine, ScanCall
from quorum.message import Message
from quorum.verdict import Category, Status, Verdict
from quorum.verdictcache.cached import CachedScan
from quorum.verdictcache.store import VerdictStore

# binary, with bare LFs and CRLFs in it: any line-end rewriting changes its hash
PAYLOAD = b"MZ\x90\x00\n\x00\r\n\x01\x02\nbinary\r\r\n" * 40
PAYLOAD_MD5 = hashlib.md5(PAYLOAD).hexdigest()


class HashAV(Engine):
    """Infected when the scanned stream is exactly PAYLOAD, or a mail whose base64 part decodes to
    it (what clamd does with an .hdb signature); `context` also flags mail holding TRIGGER."""

    type_name = "hashav"
    category: ClassVar[Category] = Category.ANTIVIRUS

    def __init__(self, context: bytes | None = None) -> None:
        super().__init__(EngineSettings("av", "hashav"))
        self.scanned: list[bytes] = []
        self.context = context

    def version(self, call: ScanCall) -> str | None:
        return "HashAV 1/1"

    def scan(self, message: Message, call: ScanCall) -> Verdict:
        raw = message.raw()
        self.scanned.append(raw)
        if hashlib.md5(raw).hexdigest() == PAYLOAD_MD5 or base64.b64encode(PAYLOAD)[:60] in raw.replace(b"\r\n", b""):
            return self.verdict(Status.INFECTED, names=("Hash.Payload",))
        if self.context is not None and self.context in raw:
            return self.verdict(Status.INFECTED, names=("Context.Find",))
        return self.verdict(Status.CLEAN)


def mail(text: str, attachment: bytes, name: str = "a.exe") -> Message:
    b64 = base64.encodebytes(attachment).decode().replace("\n", "\r\n")
    return Message.from_bytes(
        (
            "Subject: offer\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
            f"--b\r\nContent-Type: text/html\r\n\r\n<p>{text}</p>\r\n"
            f'--b\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename="{name}"\r\n'
            f"Content-Transfer-Encoding: base64\r\n\r\n{b64}--b--\r\n"
        ).encode()
    )


def single(body_b64: bytes) -> Message:
    return Message.from_bytes(
        b"Subject: x\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n" + body_b64
    )


def cache() -> CachedScan:
    return CachedScan(VerdictStore(None, 60, 100, "t:"), 50)


def call() -> ScanCall:
    return ScanCall(time.monotonic() + 5)


def test_the_infected_attachment_is_scanned_byte_for_byte_and_stays_infected() -> None:
    av, c = HashAV(), cache()
    assert c.scan(av, mail("first", PAYLOAD), call()).status is Status.INFECTED
    assert PAYLOAD in av.scanned  # the attribution scan sent the file itself, nothing before it
    again = c.scan(av, mail("second", PAYLOAD, "b.exe"), call())
    assert again.status is Status.INFECTED and again.extra["cache"] == "hit" and again.names == ("Hash.Payload",)
    # the same file as a single-part mail: the same key, the same answer
    assert c.scan(av, single(base64.encodebytes(PAYLOAD)), call()).status is Status.INFECTED


def test_a_find_no_attachment_explains_stores_nothing() -> None:
    av, c = HashAV(context=b"TRIGGER"), cache()
    clean_file = b"harmless attachment bytes\n" * 20
    assert c.scan(av, mail("TRIGGER", clean_file), call()).status is Status.INFECTED
    scans = len(av.scanned)
    # the attachment alone was clean, but that must not become a cache entry: next time the whole
    # message is scanned again (here: without the trigger, so clean, and now stored as such)
    v = c.scan(av, mail("hello", clean_file), call())
    assert v.status is Status.CLEAN and "cache" not in v.extra and len(av.scanned) == scans + 1
    assert base64.b64encode(clean_file)[:40] in av.scanned[-1].replace(b"\r\n", b"")  # scanned whole


def test_known_clean_attachments_leave_the_rest_scanned_as_mail() -> None:
    av, c = HashAV(context=b"TRIGGER"), cache()
    clean_file = b"harmless attachment bytes\n" * 20
    assert c.scan(av, mail("hello", clean_file), call()).status is Status.CLEAN
    v = c.scan(av, mail("TRIGGER", clean_file), call())
    assert v.status is Status.INFECTED and v.names == ("Context.Find",)
    rest = av.scanned[-1]
    assert rest.startswith(b"Subject: offer") and b"multipart/mixed" in rest and b"text/html" in rest
    assert base64.b64encode(clean_file)[:40] not in rest.replace(b"\r\n", b"")  # the attachment body left out
