"""SMTP client helpers for tests: every reply is returned, never raised.

`send()` runs one complete transaction; `session()` hands out a `Session`
for tests that must interleave SMTP commands with other events. Message
bytes go out as given (8-bit included); only dot-stuffing is applied and,
with ``eol="crlf"`` (default), bare LF/CR become CRLF as SMTP requires.
"""

from __future__ import annotations

import re
import smtplib
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal

EOL = Literal["crlf", "raw"]
_BARE_EOL = re.compile(rb"\r\n|\r|\n")
_QUEUED = re.compile(r"queued as ([0-9A-Za-z]+)")


@dataclass(frozen=True)
class Reply:
    """One SMTP reply; code 0 means the connection was lost instead."""

    code: int
    text: str

    @property
    def ok(self) -> bool:
        return 200 <= self.code < 400

    @property
    def temporary(self) -> bool:
        return 400 <= self.code < 500

    @property
    def permanent(self) -> bool:
        return self.code >= 500

    def __str__(self) -> str:
        return f"{self.code} {self.text}"


LOST = Reply(0, "connection lost")


@dataclass
class SendResult:
    """Replies of one transaction; `data` is None when DATA was never sent."""

    banner: Reply
    ehlo: Reply | None = None
    xclient: Reply | None = None
    mail: Reply | None = None
    rcpts: dict[str, Reply] = field(default_factory=dict)
    data: Reply | None = None

    @property
    def final(self) -> Reply:
        """The reply that decided the transaction (DATA's, else the first failure)."""
        if self.data is not None:
            return self.data
        for reply in (self.banner, self.ehlo, self.xclient, self.mail, *self.rcpts.values()):
            if reply is not None and not reply.ok:
                return reply
        return LOST

    @property
    def code(self) -> int:
        return self.final.code

    @property
    def text(self) -> str:
        return self.final.text

    @property
    def accepted(self) -> bool:
        return self.data is not None and self.data.code == 250

    @property
    def queue_id(self) -> str | None:
        """Postfix's queue id from "250 2.0.0 Ok: queued as ID"."""
        match = _QUEUED.search(self.data.text) if self.data else None
        return match.group(1) if match else None


def xtext(value: str) -> str:
    """RFC 3461 xtext, as XCLIENT attribute values require."""
    return "".join(f"+{ord(c):02X}" if c in "+=" or not 33 <= ord(c) <= 126 else c for c in value)


def prepare_data(raw: bytes, eol: EOL = "crlf") -> bytes:
    """DATA payload: line endings per `eol`, dot-stuffed, terminated by CRLF.CRLF."""
    if eol == "crlf":
        raw = _BARE_EOL.sub(b"\r\n", raw)
    stuffed = re.sub(rb"(?m)^\.", b"..", raw)
    if not stuffed.endswith(b"\r\n"):
        stuffed += b"\r\n"
    return stuffed + b".\r\n"


def _needs_smtputf8(*addresses: str) -> bool:
    return any(not a.isascii() for a in addresses)


class Session:
    """An open SMTP connection; each method returns the server's `Reply`."""

    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = 60.0) -> None:
        self.smtp = smtplib.SMTP(timeout=timeout)
        self.smtp.command_encoding = "utf-8"  # SMTPUTF8 addresses are sent as UTF-8
        try:
            code, text = self.smtp.connect(host, port)
            self.banner = Reply(code, _text(text))
        except (smtplib.SMTPServerDisconnected, OSError):
            self.banner = LOST

    def command(self, line: str) -> Reply:
        """Send one raw command line and read the reply."""
        try:
            code, text = self.smtp.docmd(line)
        except (smtplib.SMTPServerDisconnected, OSError):
            return LOST
        return Reply(code, _text(text))

    def ehlo(self, name: str = "client.example") -> Reply:
        try:
            code, text = self.smtp.ehlo(name)
        except (smtplib.SMTPServerDisconnected, OSError):
            return LOST
        return Reply(code, _text(text))

    def xclient(self, attrs: Mapping[str, str]) -> Reply:
        """XCLIENT ADDR=... NAME=... HELO=... LOGIN=... PROTO=...; the session then restarts (EHLO again)."""
        args = " ".join(f"{k.upper()}={xtext(v)}" for k, v in attrs.items())
        reply = self.command(f"XCLIENT {args}")
        self.smtp.ehlo_resp = self.smtp.helo_resp = None
        self.smtp.esmtp_features = {}
        return reply

    def mail(self, sender: str, options: Sequence[str] = ()) -> Reply:
        return self.command(" ".join([f"MAIL FROM:<{sender}>", *options]))

    def rcpt(self, recipient: str, options: Sequence[str] = ()) -> Reply:
        return self.command(" ".join([f"RCPT TO:<{recipient}>", *options]))

    def data(self, raw: bytes, eol: EOL = "crlf") -> Reply:
        """DATA, the message, and the final reply (the 354 is checked, not returned)."""
        reply = self.command("DATA")
        if reply.code != 354:
            return reply
        return self.send_payload(prepare_data(raw, eol))

    def send_payload(self, payload: bytes) -> Reply:
        """Write bytes as they are (for tests that craft the DATA stream) and read a reply."""
        try:
            self.smtp.send(payload)
            code, text = self.smtp.getreply()
        except (smtplib.SMTPServerDisconnected, OSError):
            return LOST
        return Reply(code, _text(text))

    def rset(self) -> Reply:
        return self.command("RSET")

    def quit(self) -> Reply:
        reply = self.command("QUIT")
        self.close()
        return reply

    def close(self) -> None:
        try:
            self.smtp.close()
        except OSError:
            pass


def _text(text: bytes | str) -> str:
    return text.decode("utf-8", "replace") if isinstance(text, bytes) else text


@contextmanager
def session(port: int, host: str = "127.0.0.1", timeout: float = 60.0) -> Iterator[Session]:
    """An open `Session` (banner read, nothing else sent); QUIT/close on exit."""
    sess = Session(port, host, timeout)
    try:
        yield sess
    finally:
        if sess.smtp.sock is not None:
            sess.quit()


def send(
    port: int,
    mail_from: str,
    rcpt_tos: Sequence[str],
    raw: bytes,
    xclient: Mapping[str, str] | None = None,
    helo: str = "client.example",
    host: str = "127.0.0.1",
    timeout: float = 60.0,
    eol: EOL = "crlf",
    mail_options: Sequence[str] = (),
) -> SendResult:
    """One transaction; 4xx/5xx replies are recorded in the result, never raised.

    With `xclient`, EHLO is repeated after XCLIENT (using its HELO if given).

    BODY=8BITMIME is added for 8-bit content and SMTPUTF8 for non-ASCII
    addresses when the server offers them. DATA is sent only if at least
    one recipient was accepted.
    """
    if isinstance(rcpt_tos, str):
        rcpt_tos = [rcpt_tos]
    with session(port, host, timeout) as sess:
        result = SendResult(banner=sess.banner)
        if sess.banner.code != 220:
            return result
        result.ehlo = sess.ehlo(helo)
        if xclient:
            result.xclient = sess.xclient(xclient)
            if result.xclient.code != 220:
                return result
            helo = {k.upper(): v for k, v in xclient.items()}.get("HELO", helo)
            result.ehlo = sess.ehlo(helo)
        if not result.ehlo.ok:
            return result
        result.mail = sess.mail(mail_from, [*_mail_options(sess, raw, mail_from, rcpt_tos), *mail_options])
        if not result.mail.ok:
            return result
        for rcpt in rcpt_tos:
            result.rcpts[rcpt] = sess.rcpt(rcpt)
        if any(r.ok for r in result.rcpts.values()):
            result.data = sess.data(raw, eol)
        return result


def _mail_options(sess: Session, raw: bytes, mail_from: str, rcpt_tos: Sequence[str]) -> list[str]:
    options = []
    if not raw.isascii() and sess.smtp.has_extn("8bitmime"):
        options.append("BODY=8BITMIME")
    if _needs_smtputf8(mail_from, *rcpt_tos) and sess.smtp.has_extn("smtputf8"):
        options.append("SMTPUTF8")
    return options
