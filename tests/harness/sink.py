"""An in-process SMTP sink that records every delivered message byte for byte."""

from __future__ import annotations

import asyncio
import email.message
import email.policy
import itertools
import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.parser import BytesParser
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from tests.harness.ports import free_port

_HEADER_END = re.compile(rb"\r?\n\r?\n")
_FOLD = re.compile(r"\r?\n(?=[ \t])")


def _decode(value: str) -> str:
    """A raw compat32 header value (8-bit bytes as surrogates) as UTF-8 text, unfolded."""
    text = value.encode("ascii", "surrogateescape").decode("utf-8", "replace")
    return _FOLD.sub("", text).strip()


@dataclass
class Delivered:
    """One message as the sink received it."""

    mail_from: str
    rcpt_tos: list[str]
    raw: bytes
    path: Path | None = None
    mail_options: list[str] = field(default_factory=list)
    _headers: email.message.Message | None = field(default=None, repr=False, compare=False)

    @property
    def headers(self) -> email.message.Message:
        """The header section, parsed with the byte-preserving compat32 policy."""
        if self._headers is None:
            parser = BytesParser(policy=email.policy.compat32)
            self._headers = parser.parsebytes(self.raw, headersonly=True)
        return self._headers

    @property
    def body(self) -> bytes:
        """The raw bytes after the first empty line (b"" if there is none)."""
        match = _HEADER_END.search(self.raw)
        return self.raw[match.end() :] if match else b""

    def header_all(self, name: str) -> list[str]:
        """All values of header `name`, top to bottom, decoded as UTF-8 and unfolded."""
        wanted = name.lower()
        return [_decode(v) for k, v in self.headers.raw_items() if k.lower() == wanted]

    def header(self, name: str) -> str | None:
        """The first (topmost) value of header `name`, or None."""
        values = self.header_all(name)
        return values[0] if values else None


class _SinkSMTP(SMTP):
    """aiosmtpd's server with a bulk DATA reader (a line-by-line loop is slow for 20 MB).

    `line_length_limit` also sizes the stream buffer, so chunks up to 64 MiB
    without a ".CRLF" in them are read in one go.
    """

    line_length_limit = 64 << 20

    def __init__(self, handler: Any, live: set[_SinkSMTP], **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._live = live

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._live.add(self)

    def connection_lost(self, error: Exception | None) -> None:
        self._live.discard(self)
        super().connection_lost(error)

    async def smtp_DATA(self, arg: str) -> None:
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        content = await self._read_content()
        if content is None:
            return
        self.envelope.content = self.envelope.original_content = content
        status = await self._call_handler_hook("DATA")
        self._set_post_data_state()  # type: ignore[no-untyped-call]
        await self.push(status)

    async def _read_content(self) -> bytes | None:
        """Read up to CRLF.CRLF and undo dot-stuffing; None if the client went away."""
        buf = bytearray()
        while not (buf == b".\r\n" or buf.endswith(b"\r\n.\r\n")):
            try:
                buf += await self._reader.readuntil(b".\r\n")
            except asyncio.IncompleteReadError:
                return None
            except asyncio.LimitOverrunError:  # 64 MiB without ".CRLF": give up on this client
                await self.push("552 5.3.4 Message too big for the sink")
                if self.transport is not None:
                    self.transport.close()
                return None
        del buf[-3:]
        if buf.startswith(b"."):
            del buf[0]
        return bytes(buf.replace(b"\r\n.", b"\r\n"))


class _Handler:
    """aiosmtpd handler; separate from Sink because aiosmtpd inspects every attribute of it."""

    def __init__(self, record: Callable[[Delivered], None]) -> None:
        self.record = record

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = bytes(envelope.original_content or b"")
        self.record(Delivered(envelope.mail_from or "", list(envelope.rcpt_tos), raw, None, envelope.mail_options))
        return "250 2.0.0 Ok: stored"


class _SinkController(Controller):
    """Tracks open sessions so stop() can close them before the loop goes away."""

    live: set[_SinkSMTP]

    def factory(self) -> SMTP:
        return _SinkSMTP(self.handler, self.live, **self.SMTP_kwargs)

    def close_sessions(self, timeout: float = 2.0) -> None:
        """Close client connections (Postfix caches them) and let their tasks finish."""

        def close_all() -> None:
            for smtp in list(self.live):
                if smtp.transport is not None:
                    smtp.transport.close()

        self.loop.call_soon_threadsafe(close_all)
        deadline = time.monotonic() + timeout
        while self.live and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.05)


class Sink:
    """SMTP server on 127.0.0.1 announcing 8BITMIME and SMTPUTF8; accepts everything."""

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self._messages: list[Delivered] = []
        self._cond = threading.Condition()
        self._seq = itertools.count(1)
        self._controller: _SinkController | None = None

    def start(self) -> None:
        if self._controller is not None:
            return
        controller = _SinkController(
            _Handler(self._record),
            hostname="127.0.0.1",
            port=self.port,
            server_hostname="sink.quorum.test",
            ident="quorum-sink",
            enable_SMTPUTF8=True,
            decode_data=False,
            data_size_limit=None,
            timeout=120,
            ready_timeout=10.0,
        )
        controller.live = set()
        controller.start()
        self._controller = controller

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.close_sessions()
            self._controller.stop()
            self._controller = None

    @property
    def running(self) -> bool:
        return self._controller is not None

    def _record(self, msg: Delivered) -> None:
        """Keep `msg` in memory and as NNNNNN.eml (+ .json envelope); .eml appears last."""
        path = self.workdir / f"{next(self._seq):06d}.eml"
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(msg.raw)
        envelope: dict[str, Any] = {"mail_from": msg.mail_from, "rcpt_tos": msg.rcpt_tos, "options": msg.mail_options}
        path.with_suffix(".json").write_text(json.dumps(envelope))
        tmp.rename(path)
        msg.path = path
        with self._cond:
            self._messages.append(msg)
            self._cond.notify_all()

    def messages(self) -> list[Delivered]:
        """A snapshot of everything delivered since start (or the last clear())."""
        with self._cond:
            return list(self._messages)

    def count(self) -> int:
        """How many messages are recorded (cheaper than len(messages()))."""
        with self._cond:
            return len(self._messages)

    def wait_for(self, count: int, timeout: float = 30.0) -> list[Delivered]:
        """Block until at least `count` messages arrived; TimeoutError otherwise."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self._messages) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"sink got {len(self._messages)} of {count} messages in {timeout:.0f}s")
                self._cond.wait(remaining)
            return list(self._messages)

    def clear(self) -> None:
        """Forget recorded messages (files on disk are kept)."""
        with self._cond:
            self._messages.clear()

    def __enter__(self) -> Sink:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def delivered(sink: Sink, token: str, timeout: float = 30.0) -> Delivered:
    """The delivered message whose raw bytes contain `token` (tests put it in the Message-ID)."""
    deadline = time.monotonic() + timeout
    needle = token.encode()
    while time.monotonic() < deadline:
        for msg in sink.messages():
            if needle in msg.raw:
                return msg
        time.sleep(0.05)
    raise AssertionError(f"message {token} not delivered in {timeout:.0f}s")


def engines_header(msg: Delivered) -> dict[str, str]:
    """X-Quorum-Engines as {engine: "status(detail)"}."""
    value = msg.header("X-Quorum-Engines") or ""
    return dict(item.strip().split("=", 1) for item in value.split(",") if item.strip())
