"""libmilter callbacks for one SMTP connection. They only collect; the pipeline decides.

Negotiation: no end-of-headers callback at all, no reply for header/body (Quorum never answers
there); real replies for connect/helo/mail/rcpt/data, where stages (access lists, DNSBL, rate
limits) may refuse.
Values arrive as bytes (non-UTF-8 never raises) and headers keep their leading whitespace.
"""

from __future__ import annotations

import logging
from typing import Any

import Milter

from quorum.message import BodySpool, Header, Message, crlf_value, text
from quorum.pipeline.headers import sanitise_header, sanitise_reply
from quorum.pipeline.pipeline import Pipeline
from quorum.pipeline.stages import Action, Reply, Session
from quorum.service.app import App

log = logging.getLogger("quorum.milter")

ACTIONS = Milter.ADDHDRS | Milter.CHGHDRS | Milter.QUARANTINE | Milter.SETSYMLIST
_RETURN = {
    Action.REJECT: Milter.REJECT,
    Action.TEMPFAIL: Milter.TEMPFAIL,
    Action.DISCARD: Milter.DISCARD,
}
_MAIL_MACROS = ("i", "{auth_type}", "{auth_authen}", "{auth_author}", "{mail_addr}")
_CONNECT_MACROS = ("j", "{daemon_name}", "{daemon_addr}", "{client_addr}", "{client_name}", "_")


def strip_angle(addr: bytes) -> str:
    value = text(addr).strip()
    if value.startswith("<") and value.endswith(">"):
        value = value[1:-1]
    return value


@Milter.header_leading_space
class QuorumMilter(Milter.Base):  # type: ignore[misc]
    app: App  # set by the server before libmilter starts

    def __init__(self) -> None:
        self.session = Session()
        self.pipeline: Pipeline = self.app.pipeline
        self.headers: list[Header] = []
        self.spool: BodySpool | None = None
        self.truncated = False
        self.in_transaction = False
        self.counted = False

    # -- negotiation -------------------------------------------------------------------------
    def negotiate(self, opts: list[int]) -> Any:
        rc = super().negotiate(opts)
        opts[0] &= ACTIONS
        self._actions = opts[0]
        return rc

    # -- envelope ------------------------------------------------------------------------------
    def connect(self, hostname: str, family: int, hostaddr: Any) -> int:
        if self.app.draining:  # stopping: this client gets a 4xx, sessions in flight finish
            return self._reply(Reply.tempfail("421", "4.3.2", "service shutting down, please try again later"))
        self.app.session_started()
        self.counted = True
        env = self.session.envelope
        self._macros(_CONNECT_MACROS)
        if isinstance(hostaddr, tuple) and hostaddr:
            env.client_ip = str(hostaddr[0])
        else:
            env.client_ip = env.macros.get("{client_addr}", "")
        env.client_name = hostname or env.macros.get("{client_name}", "")
        self.pipeline = self.app.pipeline
        return self._reply(self.pipeline.hook("connect", self.session))

    def hello(self, hostname: str) -> int:
        self.session.envelope.helo = hostname or ""
        return self._reply(self.pipeline.hook("helo", self.session))

    @Milter.decode("bytes")
    def envfrom(self, mailfrom: bytes, *params: bytes) -> int:
        self._end_transaction(aborted=True)
        self.pipeline = self.app.pipeline  # a reload applies from the next transaction on
        self.session.new_transaction()
        self.in_transaction = True
        env = self.session.envelope
        env.sender = strip_angle(mailfrom)
        self._macros(_CONNECT_MACROS + _MAIL_MACROS)
        return self._reply(self.pipeline.hook("mail_from", self.session))

    @Milter.decode("bytes")
    def envrcpt(self, rcpt: bytes, *params: bytes) -> int:
        recipient = strip_angle(rcpt)
        reply = self.pipeline.hook("rcpt", self.session, recipient)
        if reply is None:
            self.session.envelope.recipients.append(recipient)
        return self._reply(reply)

    def data(self) -> int:
        self._macros(("i",))
        return self._reply(self.pipeline.hook("data", self.session))

    # -- content (no replies negotiated) -------------------------------------------------------
    @Milter.noreply
    @Milter.decode("bytes")
    def header(self, name: str, value: bytes) -> int:
        self.headers.append(Header(name, crlf_value(value)))
        return Milter.CONTINUE

    @Milter.noreply
    def body(self, chunk: bytes) -> int:
        spool = self._spool()
        if spool.size + len(chunk) > self.pipeline.config.milter.max_message_size:
            self.truncated = True
            spool.size += len(chunk)  # keep counting, stop storing
        else:
            spool.write(chunk)
        return Milter.CONTINUE

    def eom(self) -> int:
        self._macros(("i",))
        message = Message(self.session.envelope, self.headers, self._spool(), self.truncated)
        try:
            result = self.pipeline.check(self.session, message, progress=self.progress)
            decision = result.decision
            if decision.action in _RETURN:
                return self._reply(decision.reply or Reply(decision.action))
            for name, index in result.remove:
                self.chgheader(name, index, None)
            for position, (name, value) in enumerate(result.add):
                self.addheader(name, " " + sanitise_header(value), position)
            if decision.action is Action.QUARANTINE:
                self.quarantine(sanitise_reply(decision.quarantine_reason or "held by Quorum", double_percent=False))
            return Milter.CONTINUE
        except Exception:  # noqa: BLE001 - never lose mail: a failure here must be a 4xx
            log.exception("end-of-message handling failed; answering 451")
            return self._reply(Reply.tempfail("451", "4.3.0", "internal error, please try again later"))
        finally:
            self.in_transaction = False
            self._reset_content()

    def abort(self) -> int:
        self._end_transaction(aborted=True)
        return Milter.CONTINUE

    def close(self) -> int:
        self._end_transaction(aborted=True)
        if self.counted:
            self.counted = False
            self.app.session_ended()
        return Milter.CONTINUE

    # -- helpers -------------------------------------------------------------------------------
    def _spool(self) -> BodySpool:
        if self.spool is None:
            m = self.pipeline.config.milter
            self.spool = BodySpool(m.body_memory_limit, m.tmpdir)
        return self.spool

    def _reset_content(self) -> None:
        if self.spool is not None:
            self.spool.close()
        self.spool = None
        self.headers = []
        self.truncated = False

    def _end_transaction(self, aborted: bool) -> None:
        if self.in_transaction and aborted:
            self.pipeline.notify("aborted", self.session)
        self.in_transaction = False
        self._reset_content()

    def _macros(self, names: tuple[str, ...]) -> None:
        macros = self.session.envelope.macros
        for name in names:
            value = self.getsymval(name)
            if value is not None:
                macros[name] = value if isinstance(value, str) else text(value)

    def _reply(self, reply: Reply | None) -> int:
        if reply is None:
            return Milter.CONTINUE
        if reply.action in (Action.REJECT, Action.TEMPFAIL) and reply.code:
            try:
                self.setreply(reply.code, reply.xcode or None, sanitise_reply(reply.text))
            except Exception:  # noqa: BLE001 - the code still goes out without our text
                log.exception("setreply failed for %s", reply)
        return _RETURN.get(reply.action, Milter.CONTINUE)
