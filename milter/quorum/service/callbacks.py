"""The callback table handed to pymilter, hardened against a peer that breaks the milter protocol.

libmilter runs a callback for any command its state machine lets through, CONNECT seen or not:
HELO or MAIL before CONNECT (or after QUIT_NC), or RCPT/DATA/BODY after an unknown command, find
no private context (or, after OPTNEG, one without client facts). Those get a clean 451 (CONTINUE
where the step has no reply), never an AttributeError and never a verdict. An exception inside
a callback is logged once and answered 451; in a content step (header/body, negotiated without
replies) libmilter would drop that 451 together with the end of message, so the transaction is
aborted there and end of message answers 451.

pymilter decodes some arguments itself with strict UTF-8 (connect and HELO hostnames, header
names, unknown commands, macro values): when that fails the Python callback never runs and
pymilter answers with its exception policy (TEMPFAIL). `report_untrapped` makes that report one
log line instead of a bare exception on stderr.
"""

from __future__ import annotations

import logging
import sys
import weakref
from collections.abc import Callable
from types import TracebackType
from typing import Any

import Milter

from quorum.service.pool import NUDGER

log = logging.getLogger("quorum.milter")

_OUT_OF_SEQUENCE = ("451", "4.5.0", "milter command out of sequence, please try again later")
_FAILED = ("451", "4.3.0", "internal error, please try again later")
# Steps negotiated without a reply: what to answer there, by the session's protocol bits.
_NO_REPLY_BIT = {"header": Milter.P_NR_HDR, "body": Milter.P_NR_BODY, "eoh": Milter.P_NR_EOH}
# Sessions whose CONNECT reached Quorum: any other step before it (after OPTNEG a session object
# exists, but without client facts) is out of sequence.
_connected: weakref.WeakSet[Any] = weakref.WeakSet()
# Sessions whose header/body callback failed in this transaction: end of message answers 451.
_content_failed: weakref.WeakSet[Any] = weakref.WeakSet()


def _answer_without_reply(step: str, session: Any) -> int:
    protocol = getattr(session, "_protocol", 0) if session is not None else 0
    return int(Milter.NOREPLY if protocol & _NO_REPLY_BIT.get(step, 0) else Milter.CONTINUE)


def _tempfail(ctx: Any, reply: tuple[str, str, str]) -> int:
    try:
        ctx.setreply(*reply)
    except Exception:  # noqa: BLE001 - the 451 goes out without our text
        pass
    return int(Milter.TEMPFAIL)


def guarded(step: str, call: Callable[..., int]) -> Callable[..., int]:
    """A libmilter callback for `step` that runs `call(session, *args)` only with a session."""
    content = step in _NO_REPLY_BIT
    replies = not content and step != "abort"

    def callback(ctx: Any, *args: Any) -> int:
        session = ctx.getpriv()
        if session is None or session not in _connected:
            log.warning("milter %s before CONNECT: %s", step, "451" if replies else "ignored")
            return _tempfail(ctx, _OUT_OF_SEQUENCE) if replies else int(Milter.CONTINUE)
        if step in ("mail", "abort"):
            _content_failed.discard(session)
        elif session in _content_failed and content:
            return _answer_without_reply(step, session)
        elif session in _content_failed and step == "eom":
            _content_failed.discard(session)  # the message cannot be judged
            session.abort()
            return _tempfail(ctx, _FAILED)
        try:
            return call(session, *args)
        except Exception:  # noqa: BLE001 - never lose mail: a failure is a 4xx, not a dropped step
            log.exception("milter %s callback failed; answering 451", step)
            if content:
                _content_failed.add(session)
                return _answer_without_reply(step, session)
            return int(Milter.CONTINUE) if step == "abort" else _tempfail(ctx, _FAILED)

    return callback


def _connect(ctx: Any, hostname: str, family: int, hostaddr: Any) -> int:
    try:
        answer = int(Milter.connect_callback(ctx, hostname, family, hostaddr))
        _connected.add(ctx.getpriv())
        return answer
    except Exception:  # noqa: BLE001
        log.exception("milter connect callback failed; answering 451")
        return _tempfail(ctx, _FAILED)


def _close(ctx: Any) -> int:
    try:
        return int(Milter.close_callback(ctx))
    except Exception:  # noqa: BLE001 - the connection is gone either way
        log.exception("milter close callback failed")
        return int(Milter.CONTINUE)


def report_untrapped(
    kind: type[BaseException], value: BaseException, tb: TracebackType | None, fallback: Any = None
) -> None:
    """sys.excepthook: pymilter reports here when it could not even build a callback's arguments."""
    if tb is None and isinstance(value, UnicodeDecodeError):
        log.warning("milter command with a non-UTF-8 argument (%s); pymilter answered 451", value.reason)
        return
    (fallback or sys.__excepthook__)(kind, value, tb)


def install(milter: Any) -> None:
    """Register every callback with libmilter (through pymilter's C module `milter`), each counted
    while it runs (`pool.NUDGER`: a long one must not hold up another session)."""
    w = NUDGER.watched
    milter.set_connect_callback(w(_connect))
    milter.set_helo_callback(w(guarded("helo", lambda s, host: s.hello(host))))
    milter.set_envfrom_callback(w(guarded("mail", lambda s, *b: s.envfrom_bytes(*b))))
    milter.set_envrcpt_callback(w(guarded("rcpt", lambda s, *b: s.envrcpt_bytes(*b))))
    milter.set_header_callback(w(guarded("header", lambda s, f, v: s.header_bytes(f, v))))
    milter.set_eoh_callback(w(guarded("eoh", lambda s: s.eoh())))
    milter.set_body_callback(w(guarded("body", lambda s, chunk: s.body(chunk))))
    milter.set_eom_callback(w(guarded("eom", lambda s: s.eom())))
    milter.set_abort_callback(w(guarded("abort", lambda s: s.abort())))
    milter.set_close_callback(w(_close))
    milter.set_exception_policy(Milter.TEMPFAIL)
    previous = sys.excepthook
    sys.excepthook = lambda kind, value, tb: report_untrapped(kind, value, tb, previous)


# For milter.register(data=...), which only register() accepts.
data = NUDGER.watched(guarded("data", lambda s: s.data()))
