"""libmilter callbacks for one SMTP connection. They only collect; the pipeline decides.

Negotiation: no end-of-headers callback at all, no reply for header/body (Quorum never answers
there); real replies for connect/helo/mail/rcpt/data, where stages (access lists, DNSBL, rate
limits) may refuse. Values arrive as bytes (non-UTF-8 never raises) and headers keep their
leading whitespace.

A `Transaction` (pipeline/transaction.py) is created at MAIL FROM and ended exactly once: at
end-of-message after the edits were applied, or by RSET/QUIT/a refusal/a lost connection.
Whatever the failure in a no-reply callback (a full disk while spooling, a header over the
limits), the callback still returns CONTINUE and end-of-message answers for it at once: libmilter
would otherwise drop the end-of-message and leave Postfix waiting for its content timeout.
"""

from __future__ import annotations

import logging
from typing import Any

import Milter

from quorum import metrics
from quorum.message import BodySpool, Header, Message, crlf_value, text
from quorum.pipeline import replies
from quorum.pipeline.headers import sanitise_reply
from quorum.pipeline.output import Edits
from quorum.pipeline.pipeline import Pipeline, Result, refused
from quorum.pipeline.stages import Action, Reply
from quorum.pipeline.transaction import Connection, Transaction
from quorum.service.app import App

log = logging.getLogger("quorum.milter")

ACTIONS = (
    Milter.ADDHDRS
    | Milter.CHGHDRS
    | Milter.QUARANTINE
    | Milter.SETSYMLIST
    | Milter.CHGFROM
    | Milter.ADDRCPT
    | Milter.DELRCPT
    | Milter.CHGBODY
)
REQUIRED = Milter.ADDHDRS | Milter.CHGHDRS
BODY_CHUNK = 65535  # libmilter's MILTER_CHUNK_SIZE: smfi_replacebody sends at most this per call
_RETURN = {
    Action.REJECT: Milter.REJECT,
    Action.TEMPFAIL: Milter.TEMPFAIL,
    Action.DISCARD: Milter.DISCARD,
}
_CONNECT_MACROS = ("j", "{daemon_name}", "{daemon_addr}", "{client_addr}", "{client_name}", "_")
_MAIL_MACROS = ("{auth_authen}",)
_QUEUE_ID = ("i",)
_CONTROL = {i: "?" for i in (*range(32), 127)}  # a macro value never splits a log line
# The macros Quorum reads, asked for in negotiation (SMFIR_SETSYMLIST): Postfix then sends exactly
# these, and nothing at HELO, RCPT and before every header (by default a `D i` per header line).
_SYMLISTS = {
    Milter.M_CONNECT: _CONNECT_MACROS,
    Milter.M_ENVFROM: _QUEUE_ID + _MAIL_MACROS,
    Milter.M_DATA: _QUEUE_ID,
    Milter.M_EOM: _QUEUE_ID,
}


def strip_angle(addr: bytes) -> str:
    value = text(addr).strip()
    if value.startswith("<") and value.endswith(">"):
        value = value[1:-1]
    return value


class _Content:
    """Headers and body of the message in transfer, with what went wrong while collecting them."""

    def __init__(self) -> None:
        self.headers: list[Header] = []
        self.header_bytes = 0
        self.spool: BodySpool | None = None
        self.truncated = False
        self.problem: tuple[Reply, str] | None = None  # answered at end-of-message

    def close(self) -> None:
        if self.spool is not None:
            self.spool.close()
            self.spool = None


@Milter.header_leading_space
class QuorumMilter(Milter.Base):  # type: ignore[misc]
    app: App  # set by the server before libmilter starts

    def __init__(self) -> None:
        self.conn = Connection()
        self.pipeline: Pipeline = self.app.pipeline
        self.txn: Transaction | None = None
        self.content = _Content()
        self.counted = False

    # -- negotiation -------------------------------------------------------------------------
    def negotiate(self, opts: list[int]) -> Any:
        rc = super().negotiate(opts)
        opts[0] &= ACTIONS
        self._actions = opts[0]
        if opts[0] & REQUIRED != REQUIRED:
            # Without header edits no verdict can be delivered: refuse the connection, so the MTA
            # applies its default_action (tempfail) instead of getting unmarked mail.
            log.error("the MTA grants no header edits (actions 0x%x); refusing the milter connection", opts[0])
            return Milter.REJECT
        if self._actions & Milter.SETSYMLIST:
            try:  # the C call directly: pymilter 1.0.5's Base.setsymlist passes bytes, which it refuses
                for stage, names in _SYMLISTS.items():
                    self._ctx.setsymlist(stage, " ".join(names))
            except Exception:  # noqa: BLE001 - the MTA then sends its configured macros, as before
                log.debug("setsymlist failed", exc_info=True)
        return rc

    # -- envelope ------------------------------------------------------------------------------
    def connect(self, hostname: str, family: int, hostaddr: Any) -> int:
        if self.app.draining:  # stopping: this client gets a 4xx, sessions in flight finish
            return self._reply(replies.SHUTTING_DOWN)
        self.app.session_started()
        self.counted = True
        self._macros(self.conn.macros, _CONNECT_MACROS)
        if isinstance(hostaddr, tuple) and hostaddr:
            self.conn.client_ip = str(hostaddr[0])
        else:
            self.conn.client_ip = self.conn.macros.get("{client_addr}", "")
        self.conn.client_name = hostname or self.conn.macros.get("{client_name}", "")
        self.pipeline = self.app.pipeline
        return self._reply(self.pipeline.hook("connect", self.conn))

    def hello(self, hostname: str) -> int:
        self.conn.helo = hostname or ""
        return self._reply(self.pipeline.hook("helo", self.conn))

    @Milter.decode("bytes")
    def envfrom(self, mailfrom: bytes, *params: bytes) -> int:
        self._end_transaction()
        self.pipeline = self.app.pipeline  # a reload applies from the next transaction on
        txn = self.txn = self.pipeline.begin(self.conn, strip_angle(mailfrom))
        self._macros(txn.envelope.macros, _MAIL_MACROS + _QUEUE_ID)
        return self._reply(self.pipeline.hook("mail_from", txn))

    @Milter.decode("bytes")
    def envrcpt(self, rcpt: bytes, *params: bytes) -> int:
        if self.txn is None:  # RCPT without MAIL: not from Postfix; refuse rather than guess
            return self._reply(replies.INTERNAL_ERROR)
        return self._reply(self.pipeline.rcpt(self.txn, strip_angle(rcpt)))

    def data(self) -> int:
        if self.txn is None:
            return self._reply(replies.INTERNAL_ERROR)
        self._macros(self.txn.envelope.macros, _QUEUE_ID)
        return self._reply(self.pipeline.hook("data", self.txn))

    # -- content (no replies negotiated: always CONTINUE) --------------------------------------
    @Milter.noreply
    @Milter.decode("bytes")
    def header(self, name: str, value: bytes) -> int:
        c = self.content
        if c.problem is not None:
            return Milter.CONTINUE
        raw = crlf_value(value)
        c.header_bytes += len(name) + len(raw) + 3
        m = self.pipeline.config.milter
        if len(c.headers) >= m.max_headers or c.header_bytes > m.max_header_bytes:
            metrics.LIMITS_HIT.labels("headers").inc()
            c.problem = (replies.HEADERS_TOO_BIG, f"header over max_headers={m.max_headers} or max_header_bytes")
            c.headers = []  # nothing more is kept: the message is refused at end-of-message
            return Milter.CONTINUE
        c.headers.append(Header(name, raw))
        return Milter.CONTINUE

    @Milter.noreply
    def body(self, chunk: bytes) -> int:
        c = self.content
        if c.problem is not None:
            return Milter.CONTINUE
        try:
            spool = self._spool()
            if spool.size + len(chunk) > self.pipeline.config.milter.max_message_size:
                c.truncated = True
                spool.size += len(chunk)  # keep counting, stop storing
            else:
                spool.write(chunk)
        except Exception as exc:  # noqa: BLE001 - e.g. ENOSPC: answer 451 at end-of-message, at once
            log.error("cannot spool the message body (%s); it will get 451", exc)
            c.problem = (replies.BODY_NOT_STORED, f"body not stored: {type(exc).__name__}: {exc}")
            c.close()
        return Milter.CONTINUE

    def eom(self) -> int:
        txn = self.txn
        c = self.content
        if txn is None:
            self._reset_content()
            return self._reply(replies.INTERNAL_ERROR)
        self._macros(txn.envelope.macros, _QUEUE_ID)
        message = Message(txn.envelope, c.headers, c.spool or BodySpool(0), c.truncated)
        try:
            result = self._decide(txn, message)
        except Exception:  # noqa: BLE001 - never lose mail: a failure here must be a 4xx
            log.exception("end-of-message handling failed; answering 451")
            result = refused(replies.INTERNAL_ERROR, "unchecked", "internal error")
        outcome, reply = result.edits.action, result.edits.reply
        try:
            rc = self._apply(result.edits)
        except Milter.milter.error as exc:  # libmilter refused (the MTA went away, or granted no such action)
            log.warning("the MTA refused a header edit (%s); answering 451", exc)
            outcome, reply = Action.TEMPFAIL, replies.INTERNAL_ERROR
            result.notes.append("header edits failed: answered 451")
            rc = self._reply(reply)
        except Exception:  # noqa: BLE001 - a half-applied edit is dropped by Postfix with the 4xx
            log.exception("applying the header edits failed; answering 451")
            outcome, reply = Action.TEMPFAIL, replies.INTERNAL_ERROR
            result.notes.append("header edits failed: answered 451")
            rc = self._reply(reply)
        try:
            self.pipeline.finish(txn, message, result, outcome, reply)
        except Exception:  # noqa: BLE001
            log.exception("finishing the transaction failed")
        self.txn = None
        self._reset_content()
        return rc

    def _apply(self, edits: Edits) -> int:
        if edits.reply is not None:
            return self._reply(edits.reply)
        for name, index in edits.remove:
            self.chgheader(name, index, None)
        for name, index, value in edits.change:
            self.chgheader(name, index, " " + value)
        for position, (name, value) in enumerate(edits.add):
            self.addheader(name, " " + value, position)
        if edits.body is not None:
            view = memoryview(edits.body)
            for start in range(0, len(view), BODY_CHUNK):
                self.replacebody(bytes(view[start : start + BODY_CHUNK]))
        if edits.sender is not None:
            self.chgfrom(edits.sender)
        for old, new in edits.recipients:
            self.delrcpt(old)
            self.addrcpt(new)
        if edits.quarantine is not None:
            self.quarantine(edits.quarantine)
        return Milter.CONTINUE

    def _decide(self, txn: Transaction, message: Message) -> Result:
        problem = self.content.problem
        if problem is not None:
            reply, reason = problem
            return refused(reply, "unchecked", reason)
        return self.pipeline.check(txn, message, progress=self.progress)

    def abort(self) -> int:
        self._end_transaction()
        return Milter.CONTINUE

    def close(self) -> int:
        self._end_transaction()
        if self.counted:
            self.counted = False
            self.app.session_ended()
        return Milter.CONTINUE

    # -- helpers -------------------------------------------------------------------------------
    def _spool(self) -> BodySpool:
        c = self.content
        if c.spool is None:
            m = self.pipeline.config.milter
            c.spool = BodySpool(m.body_memory_limit, m.tmpdir)
        return c.spool

    def _reset_content(self) -> None:
        self.content.close()
        self.content = _Content()

    def _end_transaction(self) -> None:
        if self.txn is not None:
            self.pipeline.abort(self.txn)
            self.txn = None
        self._reset_content()

    def _macros(self, into: dict[str, str], names: tuple[str, ...]) -> None:
        for name in names:
            try:
                value = self.getsymval(name)
            except UnicodeDecodeError as exc:  # pymilter decodes macro values strictly as UTF-8
                value = text(exc.object if isinstance(exc.object, bytes) else bytes(exc.object))
            if value is not None:
                into[name] = (value if isinstance(value, str) else text(value)).translate(_CONTROL)

    def _reply(self, reply: Reply | None) -> int:
        if reply is None:
            return Milter.CONTINUE
        if reply.action in (Action.REJECT, Action.TEMPFAIL) and reply.code:
            try:
                self.setreply(reply.code, reply.xcode or None, sanitise_reply(reply.text))
            except Exception:  # noqa: BLE001 - the code still goes out without our text
                log.exception("setreply failed for %s", reply)
        return _RETURN.get(reply.action, Milter.CONTINUE)
