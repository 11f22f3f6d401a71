"""Every SMTP reply text Quorum sends, in one place.

Fixed answers are constants; the refusals a tenant may word itself (virus, spam, rule, DMARC) come
from `ReplyTexts` (global `[replies]`, per domain `[domains."d".replies]`): `{name}` in `virus` is
the virus name (empty unless `disclose_virus_name`), `{rule}` the rule name, `{domain}` the From:
domain. Texts are sanitised once,
when the milter sends them (output.py / session.py).
"""

from __future__ import annotations

from quorum.config.model import REPLY_PLACEHOLDERS as PLACEHOLDERS
from quorum.config.model import ReplyTexts
from quorum.pipeline.answer import Action, Reply

INTERNAL_ERROR = Reply.tempfail("451", "4.3.0", "internal error, please try again later")
BODY_NOT_STORED = Reply.tempfail("451", "4.3.0", "message could not be stored for scanning, please try again later")
SHUTTING_DOWN = Reply.tempfail("421", "4.3.2", "service shutting down, please try again later")
AV_UNAVAILABLE = Reply.tempfail("451", "4.7.1", "virus scanning temporarily unavailable, please try again later")
CHECKS_UNAVAILABLE = Reply.tempfail("451", "4.7.1", "message checks temporarily unavailable, please try again later")
SPAM_UNAVAILABLE = Reply.tempfail("451", "4.7.1", "spam scanning temporarily unavailable, please try again later")
TOO_BIG = Reply.reject("552", "5.3.4", "message too big for content scanning")
TOO_BIG_NOW = Reply.tempfail("452", "4.3.4", "message too big for content scanning now")
HEADERS_TOO_BIG = Reply.reject("552", "5.3.4", "message header too large (too many or too long header fields)")
MIME_TOO_COMPLEX = Reply.reject(
    "554", "5.6.0", "message structure too complex to scan (too many or too deeply nested parts)"
)
SEPARATE_TRANSACTION = Reply.tempfail("452", "4.5.3", "Recipient needs a separate transaction, try again")
TOO_MANY_RECIPIENTS = Reply.tempfail("452", "4.5.3", "Too many recipients, send the rest in another transaction")
ACCESS_DENIED = "Access denied"
CONTENT_REJECTED = "Message content rejected"
DISCARD = Reply(Action.DISCARD)


def unscannable(limits: str) -> Reply:
    """An antivirus engine stopped at one of its limits (clamd AlertExceedsMax): not scanned whole."""
    return Reply.reject("554", "5.7.1", f"message could not be scanned completely ({limits})")


def unscannable_now(limits: str) -> Reply:
    """Only a time limit was hit (clamd MaxScanTime): that depends on load, so try again later."""
    return Reply.tempfail("451", "4.7.1", f"message could not be scanned completely now ({limits}), try again later")


def dnsbl_listed(ip: str, zone: str) -> Reply:
    return Reply.reject("554", "5.7.1", f"Service unavailable; client [{ip}] blocked using {zone}")


def access_denied(text: str) -> Reply:
    return Reply.reject("554", "5.7.1", text or ACCESS_DENIED)


def content_rejected(text: str) -> Reply:
    return Reply.reject("554", "5.7.1", text or CONTENT_REJECTED)


def rate_limited(label: str, retry: int) -> Reply:
    return Reply.tempfail("451", "4.7.1", f"rate limit exceeded for {label}; retry in {retry}s")


def virus(texts: ReplyTexts, names: str) -> Reply:
    text = _fill(texts.virus, name=names if texts.disclose_virus_name else "")
    if texts.disclose_virus_name and "{name}" not in texts.virus:
        text += f" ({names})"
    return Reply.reject("554", "5.7.1", text)


def spam(texts: ReplyTexts) -> Reply:
    return Reply.reject("550", "5.7.1", texts.spam)


def rule(texts: ReplyTexts, name: str) -> Reply:
    return Reply.reject("554", "5.7.1", _fill(texts.rule, rule=name))


def dmarc(texts: ReplyTexts, domain: str) -> Reply:
    return Reply.reject("550", "5.7.1", _fill(texts.dmarc, domain=domain))


def _fill(template: str, **values: str) -> str:
    """`str.format`-like, but only the named fields and never an exception (operators' text)."""
    out = template
    for key, value in values.items():
        out = out.replace("{" + key + "}", value)
    return out


__all__ = ["PLACEHOLDERS", "ReplyTexts"]
