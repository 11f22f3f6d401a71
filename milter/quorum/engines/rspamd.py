"""rspamd over HTTP/1.1: `POST /checkv2` on the normal (scanner) worker, envelope in request headers.

HTTP framing is h11's (sans-I/O); the bytes go through `quorum.engines.transport`, so the whole
exchange — connect, upload, response head and body — is bounded by the call's deadline and
`ScanCall.cancel()` interrupts it at once (a server dripping its headers cannot stretch a scan).

Keep-alive follows the server: a connection whose response did not say `Connection: close` goes
back to a small pool and the next scan reuses it (a failure on a reused connection is retried on a
fresh one). rspamd 3.4's normal worker answers every request with `Connection: close` (checked
against the real server: a second request on the socket gets EOF), so with it each scan opens a
fresh loopback connection; the pool pays off with a keep-alive proxy or a server that keeps it.
"""

from __future__ import annotations

import ipaddress
import json
import math
import time
from typing import Any
from urllib.parse import urlsplit

import h11
from pydantic import field_validator

from quorum.config.model import EngineSettings, EngineTable
from quorum.engines.base import Engine, EngineError, ScanCall, literal_address
from quorum.engines.transport import Channel, ChannelPool, PeerClosed
from quorum.message import Envelope, Message
from quorum.verdict import Category, Status, Verdict

CHUNK = 64 * 1024
MAX_REPLY = 1 << 20  # rspamd's JSON for one message is a few KiB; anything past 1 MiB is broken
MAX_HEAD = 64 * 1024  # response status line + headers
MAX_NAMES = 20
KEEPALIVE_IDLE = 30.0
# rspamd's own actions (https://rspamd.com/doc/faq.html#what-are-rspamd-actions):
SPAM_ACTIONS = frozenset({"reject", "add header", "rewrite subject", "discard", "quarantine"})
CLEAN_ACTIONS = frozenset({"no action"})
# Temporary actions: greylisting / rate limits also use them, so they are not a spam verdict by
# themselves: they vote by score against required_score (clean without one).
SCORE_ACTIONS = frozenset({"soft reject", "greylist"})
# Any other name is a custom action (rspamd's `actions { NAME { score = ...; } }`) Quorum cannot
# know the meaning of: it votes by score against required_score and shows as `custom:NAME`;
# without required_score it is no vote at all (skipped, `rspamd-unknown-action`).


class Rspamd(Engine):
    type_name = "rspamd"
    category = Category.ANTISPAM
    prior_cost = 0.01

    class Options(EngineTable):
        url: str = "http://127.0.0.1:11333"
        password: str | None = None
        settings_id: str | None = None

        @field_validator("url")
        @classmethod
        def _url(cls, url: str) -> str:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
                raise ValueError(
                    f'{url!r} is not an http(s) URL of rspamd\'s normal worker; use e.g. "http://127.0.0.1:11333"'
                )
            try:
                _ = parts.port
            except ValueError:
                raise ValueError(f"{url!r} has an invalid port; use e.g. http://127.0.0.1:11333") from None
            return url

        @field_validator("password", "settings_id")
        @classmethod
        def _header(cls, value: str | None) -> str | None:
            if value is not None and (not value.isascii() or _header_value(value) is None):
                raise ValueError("must be non-empty printable ASCII without line breaks")
            return value

    def __init__(self, settings: EngineSettings) -> None:
        super().__init__(settings)
        parts = urlsplit(self.options["url"])
        host = parts.hostname or "127.0.0.1"
        port = parts.port or (443 if parts.scheme == "https" else 80)
        self.address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self.bounded_by_call = literal_address(self.address)
        self._tls_host = host if parts.scheme == "https" else None
        self._prefix = parts.path.rstrip("/")
        self._headers: list[tuple[bytes, bytes]] = [
            (b"Host", (parts.netloc.rpartition("@")[2] or host).encode("idna")),
            (b"Accept-Encoding", b"identity"),  # a compressed reply could defeat the size cap
        ]
        if self.options.get("password"):
            self._headers.append((b"Password", self.options["password"].encode()))
        if self.options.get("settings_id"):
            self._headers.append((b"Settings-ID", self.options["settings_id"].encode()))
        self._pool = ChannelPool(max(1, settings.concurrency), KEEPALIVE_IDLE)

    def scan(self, message: Message, call: ScanCall) -> Verdict:
        headers = envelope_headers(message.envelope)
        headers.append((b"Content-Length", str(message.size).encode()))
        status, body = self._request("POST", "/checkv2", call, headers, message)
        if status != 200:
            raise EngineError(f"rspamd HTTP {status}: {_error_text(body)}")
        return self.verdict_from(parse_reply(body))

    def verdict_from(self, reply: RspamdReply) -> Verdict:
        """rspamd's own verdict: its action, its score and its required score.

        Thresholds are the policy's business (`[engines.NAME] threshold`, weights): nothing here
        overrides what rspamd said. See SPAM_ACTIONS / SCORE_ACTIONS above for the mapping.
        `is_skipped` with a clean action means rspamd did not check the message (settings, a
        skipping prefilter): no vote (`skipped(rspamd-skipped)`), never clean. With a spam
        action (GTUBE: a prefilter decided, the rest was skipped) it is that spam verdict.
        """
        required = reply.required_score
        action = reply.action
        extra = {"action": action}
        if reply.skipped:
            extra["skipped"] = "true"
        if reply.smtp_message:
            extra["smtp_message"] = reply.smtp_message[:200]
        scored = f"{reply.score:.2f}/{required:.2f}" if required is not None else f"{reply.score:.2f}"
        known = action in SPAM_ACTIONS or action in CLEAN_ACTIONS or action in SCORE_ACTIONS
        shown = action if known else f"custom:{action[:40]}"
        common: dict[str, Any] = {"names": reply.names, "score": reply.score, "threshold": required, "extra": extra}
        if reply.skipped and action not in SPAM_ACTIONS:
            return self.verdict(Status.SKIPPED, detail="rspamd-skipped", **common)
        if action in SPAM_ACTIONS:
            spam = True
        elif action in CLEAN_ACTIONS:
            spam = False
        elif required is not None:
            spam = reply.score >= required
        elif action in SCORE_ACTIONS:
            spam = False
        else:
            return self.verdict(Status.SKIPPED, detail="rspamd-unknown-action", **common)
        detail = scored if action in SPAM_ACTIONS or action in CLEAN_ACTIONS else f"{scored} {shown}"
        return self.verdict(Status.SPAM if spam else Status.CLEAN, detail=detail, **common)

    def ping(self, timeout: float) -> None:
        status, body = self._request("GET", "/ping", ScanCall(time.monotonic() + timeout), [], None)
        if status != 200 or body.strip() != b"pong":
            raise EngineError(f"unexpected /ping reply: HTTP {status} {body[:50]!r}")

    def close(self) -> None:
        self._pool.close()

    def _request(
        self, method: str, path: str, call: ScanCall, headers: list[tuple[bytes, bytes]], message: Message | None
    ) -> tuple[int, bytes]:
        conn = self._pool.acquire(call)
        if conn is not None:
            try:
                return self._exchange(conn, method, path, headers, message)
            except EngineError:
                if conn.state.get("received") or call.cancelled or call.remaining() <= 0:
                    raise
                # not one byte back on a reused connection: the server closed it while idle, retry fresh
        conn = Channel.open(self.address, call, "rspamd", tls_hostname=self._tls_host)
        return self._exchange(conn, method, path, headers, message)

    def _exchange(
        self, conn: Channel, method: str, path: str, headers: list[tuple[bytes, bytes]], message: Message | None
    ) -> tuple[int, bytes]:
        """One request/response; the connection is pooled afterwards if both sides allow keep-alive."""
        http = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEAD)
        conn.state["received"] = False
        keep = False
        try:
            try:
                target = (self._prefix + path).encode("ascii")
                conn.send(http.send(h11.Request(method=method, target=target, headers=self._headers + headers)))
                if message is not None:
                    for chunk in message.chunks(CHUNK):
                        conn.send(http.send(h11.Data(data=chunk)))
                conn.send(http.send(h11.EndOfMessage()))
            except PeerClosed:
                pass  # the server answered early (error) and stopped reading: read its reply
            status, body = _read_response(http, conn)
            keep = http.our_state is h11.DONE and http.their_state is h11.DONE
            if keep:
                http.start_next_cycle()
            return status, body
        except (h11.LocalProtocolError, UnicodeError, ValueError) as exc:
            raise EngineError(f"rspamd request: {exc}"[:200]) from exc
        finally:
            if keep:
                self._pool.release(conn)
            else:
                conn.close()


def _read_response(http: h11.Connection, conn: Channel) -> tuple[int, bytes]:
    """(status, body) of one response, the head capped at MAX_HEAD and the body at MAX_REPLY."""
    status = 0
    body = bytearray()
    while True:
        try:
            event = http.next_event()
        except h11.RemoteProtocolError as exc:
            raise EngineError(f"rspamd reply: bad HTTP ({str(exc)[:100]})") from exc
        if event is h11.NEED_DATA:
            data = conn.recv_some(CHUNK)
            if data:
                conn.state["received"] = True
            elif not conn.state["received"]:
                raise EngineError("rspamd closed the connection without a reply")
            http.receive_data(data)
        elif isinstance(event, h11.InformationalResponse):
            continue
        elif isinstance(event, h11.Response):
            status = event.status_code
            _check_head(event.headers)
        elif isinstance(event, h11.Data):
            body += event.data
            if len(body) > MAX_REPLY:
                raise EngineError(f"rspamd reply larger than {MAX_REPLY} bytes")
        elif isinstance(event, h11.EndOfMessage):
            return status, bytes(body)
        else:  # ConnectionClosed (or PAUSED) before the end of the response
            raise EngineError("rspamd closed the connection in the middle of a reply")


def _check_head(headers: Any) -> None:
    for name, value in headers:
        if name == b"content-encoding" and value.strip().lower() not in (b"", b"identity"):
            raise EngineError(f"unexpected Content-Encoding {value[:20].decode('ascii', 'replace')!r}")
        if name == b"content-length" and value.isdigit() and int(value) > MAX_REPLY:
            raise EngineError(f"rspamd reply too large ({int(value)} bytes)")


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
