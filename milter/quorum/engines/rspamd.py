"""rspamd over HTTP: `POST /checkv2` on the normal (scanner) worker, envelope in request headers.

One `httpx.Client` per engine instance (thread-safe, keep-alive pool sized by `concurrency`).
rspamd 3.4's normal worker answers `Connection: close`, so in practice each scan opens a fresh
loopback connection; the pool pays off with newer rspamd or a keep-alive proxy in front.

Deadline: every request gets `httpx.Timeout(call.remaining())` (connect, write, read and pool
wait each bounded by what is left) and the upload/download loops check the deadline and the
call's cancellation between chunks. A sync httpx request cannot be interrupted from another
thread, so `ScanCall.cancel()` takes effect at the next chunk or when the timeout expires.
"""

from __future__ import annotations

import ipaddress
import json
import math
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx

from quorum.config.fields import Table
from quorum.config.model import EngineSettings
from quorum.engines.base import Engine, EngineError, ScanCall
from quorum.message import Envelope, Message
from quorum.verdict import Category, Status, Verdict

CHUNK = 64 * 1024
MAX_REPLY = 1 << 20  # rspamd's JSON for one message is a few KiB; anything past 1 MiB is broken
MAX_NAMES = 20
SPAM_ACTIONS = frozenset({"reject", "add header", "rewrite subject"})
CLEAN_ACTIONS = frozenset({"no action"})
# Everything else (soft reject, greylist, custom actions) is recorded in `detail` and votes by score.


class Rspamd(Engine):
    type_name = "rspamd"
    category = Category.ANTISPAM

    @classmethod
    def parse_options(cls, table: Table) -> dict[str, Any]:
        url = table.str("url", "http://127.0.0.1:11333")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
            table.problems.error(
                table.key("url"),
                f'{url!r} is not an http(s) URL of rspamd\'s normal worker; use e.g. "http://127.0.0.1:11333"',
            )
        else:
            try:
                _ = parts.port
            except ValueError:
                table.problems.error(table.key("url"), f"{url!r} has an invalid port; use e.g. http://127.0.0.1:11333")
        options: dict[str, Any] = {"url": url}
        for key in ("password", "settings_id"):
            value = table.opt_str(key)
            if value is not None and (not value.isascii() or _header_value(value) is None):
                table.problems.error(table.key(key), "must be non-empty printable ASCII without line breaks")
                value = None
            options[key] = value
        return options

    def __init__(self, settings: EngineSettings) -> None:
        super().__init__(settings)
        headers = {"Accept-Encoding": "identity"}  # a compressed reply could defeat the size cap
        if self.options.get("password"):
            headers["Password"] = self.options["password"]
        if self.options.get("settings_id"):
            headers["Settings-ID"] = self.options["settings_id"]
        size = max(1, settings.concurrency)
        self._client = httpx.Client(
            base_url=self.options["url"],
            headers=headers,
            limits=httpx.Limits(max_connections=size, max_keepalive_connections=size, keepalive_expiry=30.0),
            timeout=httpx.Timeout(settings.timeout),
            trust_env=False,  # never route loopback scans through an HTTP(S)_PROXY from the environment
            follow_redirects=False,
        )

    def scan(self, message: Message, call: ScanCall) -> Verdict:
        headers = envelope_headers(message.envelope)
        headers.append((b"Content-Length", str(message.size).encode()))
        status, body = self._request("POST", "/checkv2", call, content=_upload(message, call), headers=headers)
        if status != 200:
            raise EngineError(f"rspamd HTTP {status}: {_error_text(body)}")
        return self.verdict_from(parse_reply(body))

    def verdict_from(self, reply: RspamdReply) -> Verdict:
        """Map rspamd's action to a status.

        reject / add header / rewrite subject -> spam, no action -> clean; soft reject, greylist
        and custom actions vote by score against required_score. With an engine `threshold`
        configured, the score alone decides (spam iff score >= threshold) and rspamd's action is
        only recorded.
        """
        override = self.settings.threshold
        threshold = override if override is not None else reply.required_score
        if override is not None:
            spam = reply.score >= override
        elif reply.action in SPAM_ACTIONS:
            spam = True
        elif reply.action in CLEAN_ACTIONS:
            spam = False
        else:
            spam = threshold is not None and reply.score >= threshold
        detail = f"{reply.score:.2f}/{threshold:.2f}" if threshold is not None else f"{reply.score:.2f}"
        if reply.action not in SPAM_ACTIONS and reply.action not in CLEAN_ACTIONS:
            detail += f" {reply.action}"
        extra = {"action": reply.action}
        if reply.skipped:
            extra["skipped"] = "true"
        if reply.smtp_message:
            extra["smtp_message"] = reply.smtp_message[:200]
        return self.verdict(
            Status.SPAM if spam else Status.CLEAN,
            names=reply.names,
            score=reply.score,
            threshold=threshold,
            detail=detail,
            extra=extra,
        )

    def ping(self, timeout: float) -> None:
        status, body = self._request("GET", "/ping", ScanCall(time.monotonic() + timeout))
        if status != 200 or body.strip() != b"pong":
            raise EngineError(f"unexpected /ping reply: HTTP {status} {body[:50]!r}")

    def close(self) -> None:
        self._client.close()

    def _request(
        self,
        method: str,
        path: str,
        call: ScanCall,
        content: Iterator[bytes] | None = None,
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> tuple[int, bytes]:
        remaining = call.remaining()
        if remaining <= 0 or call.cancelled:
            raise EngineError("timeout" if remaining <= 0 else "cancelled")
        try:
            with self._client.stream(
                method, path, content=content, headers=headers, timeout=httpx.Timeout(remaining)
            ) as response:
                return response.status_code, _read_capped(response, call)
        except httpx.TimeoutException as exc:
            raise EngineError("timeout") from exc
        except (httpx.HTTPError, httpx.StreamError, OSError, ValueError) as exc:
            raise EngineError(f"{type(exc).__name__}: {exc}"[:200]) from exc


def _upload(message: Message, call: ScanCall) -> Iterator[bytes]:
    for chunk in message.chunks(CHUNK):
        _check(call)
        yield chunk


def _check(call: ScanCall) -> None:
    if call.cancelled:
        raise EngineError("cancelled")
    if call.remaining() <= 0:
        raise EngineError("timeout")


def _read_capped(response: httpx.Response, call: ScanCall) -> bytes:
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise EngineError(f"unexpected Content-Encoding {encoding[:20]!r}")
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_REPLY:
        raise EngineError(f"reply too large ({declared} bytes)")
    data = bytearray()
    for chunk in response.iter_raw(CHUNK):
        data += chunk
        if len(data) > MAX_REPLY:
            raise EngineError(f"reply larger than {MAX_REPLY} bytes")
        _check(call)
    return bytes(data)


def _error_text(body: bytes) -> str:
    try:
        doc = json.loads(body)
        if isinstance(doc, dict) and isinstance(doc.get("error"), str):
            return str(doc["error"])[:150]
    except ValueError:
        pass
    return repr(body[:100])


# --- envelope -> request headers ---------------------------------------------------------------


def _header_value(value: str) -> bytes | None:
    """Header bytes h11 accepts (UTF-8, no control characters), or None to leave the header out."""
    raw = value.strip().encode("utf-8", "surrogateescape")
    if not raw or any((b < 0x20 and b != 0x09) or b == 0x7F for b in raw):
        return None
    return raw


def _address(value: str) -> bytes | None:
    """An SMTP address rspamd can parse: it flags a non-ASCII one as BROKEN_HEADERS (8 points).

    A non-ASCII domain is sent IDNA-encoded; a non-ASCII local part cannot be, so the header is
    left out and rspamd falls back to the message's own From/To.
    """
    address = value.strip().removeprefix("<").removesuffix(">")
    if address.isascii():
        return _header_value(address) if address else b"<>"
    local, at, domain = address.rpartition("@")
    if not at or not local.isascii():
        return None
    try:
        domain = domain.encode("idna").decode("ascii")
    except UnicodeError:
        return None
    return _header_value(f"{local}@{domain}")


def _ip(value: str) -> bytes | None:
    candidate = value.strip().removeprefix("[").removesuffix("]")
    if candidate.lower().startswith("ipv6:"):
        candidate = candidate[5:]
    try:
        return str(ipaddress.ip_address(candidate)).encode()
    except ValueError:
        return None


def envelope_headers(envelope: Envelope) -> list[tuple[bytes, bytes]]:
    """rspamd's protocol headers for the SMTP envelope; values it cannot take are left out."""
    pairs: list[tuple[bytes, bytes | None]] = [
        (b"IP", _ip(envelope.client_ip) if envelope.client_ip else None),
        (b"Helo", _header_value(envelope.helo) if envelope.helo else None),
        # Postfix says "unknown" when reverse DNS failed; rspamd's own milter leaves it out too.
        (
            b"Hostname",
            _header_value(envelope.client_name) if envelope.client_name not in ("", "unknown") else None,
        ),
        (b"From", _address(envelope.sender)),
        *((b"Rcpt", _address(r)) for r in envelope.recipients),
        (b"Queue-Id", _header_value(envelope.queue_id) if envelope.queue_id else None),
        (b"User", _header_value(envelope.auth_user) if envelope.auth_user else None),
    ]
    return [(k, v) for k, v in pairs if v is not None]


# --- reply parsing ---------------------------------------------------------------------------


class RspamdReply:
    """The parts of a `/checkv2` JSON reply Quorum uses."""

    def __init__(
        self,
        action: str,
        score: float,
        required_score: float | None,
        symbols: dict[str, float],
        skipped: bool = False,
        smtp_message: str = "",
    ) -> None:
        self.action = action
        self.score = score
        self.required_score = required_score
        self.symbols = symbols
        self.skipped = skipped
        self.smtp_message = smtp_message

    @property
    def names(self) -> tuple[str, ...]:
        """Symbol names, highest score first (ties by name), at most MAX_NAMES."""
        ranked = sorted(self.symbols.items(), key=lambda kv: (-kv[1], kv[0]))
        return tuple(name for name, _ in ranked[:MAX_NAMES])


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise EngineError(f"rspamd reply: {what} is not a number")
    return float(value) + 0.0  # -0.0 -> 0.0


def parse_reply(body: bytes) -> RspamdReply:
    """Parse `/checkv2` JSON; anything malformed raises EngineError."""
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise EngineError(f"rspamd reply is not JSON: {body[:60]!r}") from exc
    if not isinstance(doc, dict):
        raise EngineError("rspamd reply is not a JSON object")
    if "error" in doc and "action" not in doc:
        raise EngineError(f"rspamd error: {str(doc['error'])[:150]}")
    action = doc.get("action")
    if not isinstance(action, str) or not action:
        raise EngineError("rspamd reply has no action")
    score = _number(doc.get("score"), "score")
    required = doc.get("required_score")
    required_score = _number(required, "required_score") if required is not None else None
    symbols: dict[str, float] = {}
    raw_symbols = doc.get("symbols", {})
    if not isinstance(raw_symbols, dict):
        raise EngineError("rspamd reply: symbols is not an object")
    for key, sym in raw_symbols.items():
        if not isinstance(sym, dict):
            raise EngineError("rspamd reply: a symbol is not an object")
        name = sym.get("name", key)
        symbols[str(name)[:100]] = _number(sym.get("score", 0.0), f"score of {str(name)[:50]}")
    messages = doc.get("messages")
    smtp_message = messages.get("smtp_message", "") if isinstance(messages, dict) else ""
    return RspamdReply(
        action=action.lower(),
        score=score,
        required_score=required_score,
        symbols=symbols,
        skipped=doc.get("is_skipped") is True,
        smtp_message=smtp_message if isinstance(smtp_message, str) else "",
    )
