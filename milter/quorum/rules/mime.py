"""A bounded MIME walk: the decoded text of text parts and the attachment file names.

Parsing uses the stdlib `email` feed parser with policy `compat32`, fed in 64 KiB chunks from
`Message.open()`. Measured by bench/rules_bench.py on 5,000 mutated messages: reading every part
raised on 690 with `default` (unknown charsets, header-parser IndexError) and on 7 with `compat32`
(RFC 2231 merge TypeError, NUL in a charset name) — both guarded here.
The parser's message factory counts parts and nesting depth, so parsing itself stops at
`max_parts` / `max_depth` instead of building a huge tree; the deadline is checked between
chunks and between parts. Payloads of parts we never read (images, archives, ...) are not kept.
"""

from __future__ import annotations

import email.message
import email.policy
import re
import time
import urllib.parse
from dataclasses import dataclass
from email.feedparser import BytesFeedParser
from typing import Any

from pydantic import Field

from quorum.config.schema import Int, Settings, Size
from quorum.message import Message
from quorum.rules.decode import clean, decode_bytes, decode_encoded_words, transfer_decode
from quorum.rules.html_text import html_to_text

_TEXT_TYPES = ("text/plain", "text/html")
_CHUNK = 65536
_MAX_NAME = 1024  # longer file names are cut for matching (a name is no place for megabytes)


class MimeLimits(Settings):
    """Bounds for anything that walks a message's MIME tree: the `[mime]` table."""

    max_parts: Int = Field(500, ge=1, le=100_000)  # parts created by the parser, the message itself included
    max_depth: Int = Field(
        20, ge=1, le=100
    )  # nesting of multipart / message/rfc822 below the top (the parser recurses)
    body_max_bytes: Size = Field(1 << 20, ge=1)  # transfer-decoded text (plain + HTML source) examined, all parts


@dataclass(frozen=True)
class MessageText:
    """What rules can see of a message's body.

    `truncated`: text beyond `body_max_bytes` (or beyond the spooled size of a truncated message)
    was not examined. `limit_hit`: part of the MIME tree was not examined because of `max_parts`,
    `max_depth`, the `deadline`, or a parser failure (`unparsable`); the pipeline decides what a
    partly examined message deserves.
    """

    texts: tuple[str, ...] = ()
    filenames: tuple[str, ...] = ()
    parts: int = 0
    truncated: bool = False
    limit_hit: str | None = None


class _Stop(Exception):
    """Raised from the message factory to stop the feed parser at a limit."""


class _LeanMessage(email.message.Message):
    """A part that keeps at most `keep` characters of its payload (none for non-text parts), and
    keeps it as received: compat32's `get_payload()` would charset-decode 8-bit text on the way."""

    keep = 0
    cut = False

    def wire(self) -> str | None:
        """The payload as parsed (8-bit bytes as surrogate escapes), capped; None for containers."""
        payload = self._payload  # type: ignore[attr-defined]
        return payload if isinstance(payload, str) else None

    def set_payload(self, payload: Any, charset: Any = None) -> None:
        if isinstance(payload, str):
            ctype = self.get_content_maintype()
            limit = self.keep if ctype in ("text", "multipart") else 0
            if len(payload) > limit:
                payload = payload[:limit]
                self.cut = True
        super().set_payload(payload, charset)


class _Factory:
    """Builds every part for the feed parser; refuses the part past `max_parts` or too deep."""

    def __init__(self, limits: MimeLimits) -> None:
        self.limits = limits
        self.parser: BytesFeedParser | None = None
        self.root: email.message.Message | None = None
        self.count = 0
        self.limit_hit: str | None = None
        keep = limits.body_max_bytes * 3 + 1024  # enough encoded text for the whole budget
        self.message_class = type("_Part", (_LeanMessage,), {"keep": keep})

    def __call__(self, policy: Any = email.policy.compat32) -> email.message.Message:
        if self.parser is not None:  # not the feed parser's probe call from its constructor
            depth = len(getattr(self.parser, "_msgstack", ()))  # the new part's ancestors
            if self.count >= self.limits.max_parts:
                self.limit_hit = "max_parts"
                raise _Stop
            if depth > self.limits.max_depth:
                self.limit_hit = "max_depth"
                raise _Stop
            self.count += 1
        msg = self.message_class(policy)
        if self.parser is not None and self.root is None:
            self.root = msg
        return msg


def parse(
    message: Message, limits: MimeLimits, deadline: float
) -> tuple[email.message.Message | None, int, str | None]:
    """(root of the parsed tree — partial if a limit stopped the parser —, parts, limit hit)."""
    factory = _Factory(limits)
    parser = BytesFeedParser(_factory=factory, policy=email.policy.compat32)
    factory.parser = parser
    limit_hit: str | None = None
    try:
        with message.open() as stream:
            while chunk := stream.read(_CHUNK):
                if time.monotonic() > deadline:
                    limit_hit = "deadline"
                    break
                parser.feed(chunk)
            else:
                parser.close()
    except _Stop:
        limit_hit = factory.limit_hit
    except Exception:  # RecursionError or a parser bug on hostile input: keep what was parsed
        limit_hit = "unparsable"
    return factory.root, factory.count, limit_hit


def extract(
    message: Message, limits: MimeLimits, deadline: float, body: bool = True, filenames: bool = True
) -> MessageText:
    """Decoded text parts (`body`) and attachment names (`filenames`) of `message`, within limits."""
    root, count, limit_hit = parse(message, limits, deadline)
    walk = _Walk(limits, deadline, body, filenames)
    if root is not None:
        walked = walk.run(root)
        limit_hit = limit_hit or walked  # what stopped the parser says more than the walk
    return MessageText(
        texts=tuple(walk.texts),
        filenames=tuple(dict.fromkeys(walk.names)),
        parts=count,
        truncated=walk.truncated or message.truncated,
        limit_hit=limit_hit,
    )


class _Walk:
    def __init__(self, limits: MimeLimits, deadline: float, body: bool, filenames: bool) -> None:
        self.limits = limits
        self.deadline = deadline
        self.want_body = body
        self.want_names = filenames
        self.budget = limits.body_max_bytes
        self.texts: list[str] = []
        self.names: list[str] = []
        self.truncated = False

    def run(self, root: email.message.Message) -> str | None:
        """Depth-first, in message order; returns the limit that stopped the walk, if any."""
        stack: list[tuple[email.message.Message, int]] = [(root, 0)]
        limit_hit: str | None = None
        while stack:
            part, depth = stack.pop()
            if time.monotonic() > self.deadline:
                return "deadline"
            try:
                if part.is_multipart():
                    children = [p for p in part.get_payload() if isinstance(p, email.message.Message)]
                    if depth >= self.limits.max_depth and children:
                        limit_hit = "max_depth"
                    else:
                        stack.extend((child, depth + 1) for child in reversed(children))
                if self.want_names:
                    self.names.extend(part_filenames(part))
                wire = part.wire() if isinstance(part, _LeanMessage) else None
                if self.want_body and wire is not None:
                    self._read_text(part, wire)
            except Exception:  # one unreadable part does not hide the others
                limit_hit = limit_hit or "unparsable"
        return limit_hit

    def _read_text(self, part: email.message.Message, payload: str) -> None:
        ctype = part.get_content_type()
        # A multipart without a usable boundary is shown as text by some clients: read it as such.
        if ctype not in _TEXT_TYPES and part.get_content_maintype() != "multipart":
            return
        if self.budget <= 0:
            self.truncated = True
            return
        raw = _as_bytes(payload)
        encoding = str(part.get("content-transfer-encoding", ""))  # str(): 8-bit values come as Header objects
        data, cut = transfer_decode(raw, encoding, self.budget)
        self.truncated = self.truncated or cut or getattr(part, "cut", False)
        self.budget -= len(data)
        text = decode_bytes(data, _charset(part))
        if ctype == "text/html":
            text = html_to_text(text, self.deadline)
        text = clean(text)
        if text:
            self.texts.append(text)


def _charset(part: email.message.Message) -> str | None:
    try:
        return part.get_content_charset()
    except Exception:  # e.g. ValueError for a NUL in an RFC 2231 charset name
        return None


def _as_bytes(payload: str) -> bytes:
    """The parser's str payload back to the bytes that were on the wire (8-bit bytes arrive as
    surrogate escapes)."""
    for codec in ("ascii", "utf-8"):
        try:
            return payload.encode(codec, "surrogateescape")
        except UnicodeEncodeError:
            continue
    return payload.encode("utf-8", "replace")


MAX_NAME_HEADERS = 16  # Content-Disposition / Content-Type fields read per part for file names
MAX_NAME_HEADER_CHARS = 65536  # of each: far past any real name (RFC 2231 continuations included)


def part_filenames(part: email.message.Message) -> list[str]:
    """File names from every Content-Disposition `filename` and Content-Type `name` parameter of a
    part (RFC 2231 encoded and continued names, and RFC 2047 encoded names, decoded)."""
    names: list[str] = []
    for header, param in (("content-disposition", "filename"), ("content-type", "name")):
        # raw_items(): get_all() would hand 8-bit values over as Header objects that lose the bytes
        values = [str(v) for k, v in part.raw_items() if k.lower() == header][:MAX_NAME_HEADERS]
        for value in values:
            # The stdlib's parameter parser is superlinear in a header's length: bounded here, so a
            # part header of megabytes of `;filename*N=` costs milliseconds, not minutes.
            value = _latin1_bytes(value[:MAX_NAME_HEADER_CHARS]).decode("latin-1").replace("\r", "").replace("\n", "")
            for raw in _param_values(value, header, param):
                name = _param_text(raw)
                if name:
                    names.append(name)
    return names


def _param_values(value: str, header: str, param: str) -> list[Any]:
    """Every `param` of one header value (clients differ on which of two instances wins)."""
    probe = email.message.Message()
    probe[header] = value
    try:
        return [raw for key, raw in probe.get_params([], header=header) if key == param and raw]
    except Exception:  # stdlib's RFC 2231 merge fails on mixed `name*=` / `name*0=` (TypeError): read it loosely
        return _loose_params(value, param)


_PARAM = re.compile(r';\s*([^\s=;]+)\s*=\s*("(?:[^"\\]|\\.)*"?|[^;]*)')


def _loose_params(value: str, param: str) -> list[Any]:
    """Each `param`, `param*`, `param*N` and `param*N*` segment on its own, and all of them joined in
    the order written: a superset of what any client may show."""
    segments: list[str] = []
    charset = None
    for m in _PARAM.finditer(value):
        key, raw = m.group(1).lower(), m.group(2).strip()
        base = key.partition("*")[0]
        if base != param:
            continue
        text = raw[1:-1] if len(raw) >= 2 and raw[0] == raw[-1] == '"' else raw.strip('"')
        if key.endswith("*"):  # RFC 2231 extended: charset'language'%XX
            if text.count("'") >= 2 and charset is None:
                charset, _lang, text = text.split("'", 2)
            text = urllib.parse.unquote(text, encoding="latin-1")
        segments.append(text)
    if not segments:
        return []
    joined = (charset, "", "".join(segments))
    return [*((charset, "", segment) for segment in segments), joined]


def _param_text(value: Any) -> str:
    """An RFC 2231 value — (charset, language, %-decoded text) — or a plain string, as text."""
    if isinstance(value, tuple) and len(value) == 3:
        charset, _language, text = value
        text = decode_bytes(_latin1_bytes(str(text)), charset or "us-ascii")
    else:
        text = str(value)  # already unquoted by get_params
        raw = _latin1_bytes(text)
        if not raw.isascii():
            text = decode_bytes(raw, None)  # raw 8-bit name: UTF-8 if it is, else windows-1252
    if "=?" in text:
        text = decode_encoded_words(text)
    return clean(text.replace("\r", "").replace("\n", "")).strip()[:_MAX_NAME]


def _latin1_bytes(text: str) -> bytes:
    """Characters 0-255 (and surrogate-escaped bytes) back to bytes."""
    try:
        return text.encode("latin-1", "surrogateescape")
    except UnicodeEncodeError:
        return _as_bytes(text)
