"""The Authentication-Results header (RFC 8601), built with `authres`, and the test that finds
inbound copies forged with our authserv-id (those are removed; other ADMDs' headers are kept)."""

from __future__ import annotations

import re

import authres
import authres.arc
import authres.core
import authres.dmarc

from quorum.auth.arc import ArcResult
from quorum.auth.authserv import normalise_id
from quorum.auth.dkim import DkimResult
from quorum.auth.dmarc import DmarcResult
from quorum.auth.spf import SpfResult

HEADER = "Authentication-Results"
_FOLD = "\n\t"  # libmilter folding: LF + whitespace; the MTA writes CRLF


def _comment(text: str) -> str:
    """A safe RFC 5322 comment body: printable ASCII, no parentheses or backslashes."""
    cleaned = re.sub(r"[^\x20-\x7e]", "?", text).replace("(", "[").replace(")", "]").replace("\\", "/")
    return cleaned[:120]


def _spf(spf: SpfResult) -> authres.core.AuthenticationResult:
    res = authres.SPFAuthenticationResult(result=spf.result, result_comment=_comment(spf.comment) or None)
    if spf.identity == "helo":
        res.smtp_helo = spf.domain
    else:
        res.smtp_mailfrom = spf.sender
    return res


def _prop(kind: str, name: str, value: str) -> authres.core.AuthenticationResultProperty:
    return authres.core.AuthenticationResultProperty(kind, name, value)


def _dkim(d: DkimResult) -> authres.core.AuthenticationResult:
    res = authres.DKIMAuthenticationResult(result=d.result, result_comment=_comment(d.reason) or None)
    for name, value in (("d", d.domain), ("s", d.selector), ("a", d.algorithm), ("b", d.b)):
        if value:
            res.properties.append(_prop("header", name, value))
    return res


def _dmarc(d: DmarcResult) -> authres.core.AuthenticationResult:
    notes = []
    if d.policy:
        applied = "none" if d.testing else d.policy
        notes.append(f"{d.policy_tag}={d.policy} dis={applied if d.result == 'fail' else 'none'}")
        if d.testing:
            notes.append("t=y")
    if d.reason and d.result != "pass":
        notes.append(d.reason)
    if d.override:
        notes.append(f"overridden by {d.override}")
    res = authres.dmarc.DMARCAuthenticationResult(result=d.result, result_comment=_comment("; ".join(notes)) or None)
    if d.header_from:
        res.header_from = d.header_from
    if d.policy:
        res.properties.append(_prop("polrec", "p", d.published_p))
        res.properties.append(_prop("polrec", "domain", d.policy_domain))
    return res


def _arc(a: ArcResult) -> authres.core.AuthenticationResult:
    return authres.arc.ARCAuthenticationResult(result=a.result, result_comment=_comment(a.reason) or None)


def header_value(
    authserv_id: str,
    spf: SpfResult | None,
    dkim: list[DkimResult] | None,
    dmarc: DmarcResult | None,
    auth_user: str = "",
    arc: ArcResult | None = None,
) -> str:
    """The value (folded, one method per line) of our Authentication-Results header.

    `dkim` None means not evaluated; [] means evaluated and the message is unsigned (dkim=none).
    """
    results: list[object] = []
    if auth_user:
        results.append(authres.SMTPAUTHAuthenticationResult(result="pass", smtp_auth=_comment(auth_user)))
    if spf is not None:
        results.append(_spf(spf))
    if dkim is not None:
        results.extend(_dkim(d) for d in dkim)
        if not dkim:
            results.append(authres.DKIMAuthenticationResult(result="none"))
    if dmarc is not None:
        results.append(_dmarc(dmarc))
    if arc is not None:
        results.append(_arc(arc))
    if not results:
        return f"{authserv_id}; none"
    return ";".join([authserv_id, *(f"{_FOLD}{r}" for r in results)])


_TOKEN = re.compile(rb'"((?:[^"\\]|\\.)*)"?|([^\s;()"]+)', re.S)
_QUOTED_PAIR = re.compile(r"\\(.)", re.S)


def _skip_cfws(value: bytes, pos: int) -> int:
    """Past whitespace and (possibly nested, escaped) comments."""
    depth = 0
    while pos < len(value):
        c = value[pos]
        if c == 0x5C and depth:  # backslash escape inside a comment
            pos += 2
            continue
        if c == 0x28:  # (
            depth += 1
        elif c == 0x29 and depth:  # )
            depth -= 1
        elif not depth and c not in b" \t\r\n":
            return pos
        pos += 1
    return pos


def claimed_authserv_id(raw_value: bytes) -> str:
    """The authserv-id an inbound A-R header claims ("" when none), read leniently so that a
    malformed header cannot slip past the removal: RFC 8601's `value` is a token or an RFC 5322
    quoted-string (quoted-pairs unescaped; an unterminated one runs to the end), after CFWS."""
    token = _TOKEN.match(raw_value, _skip_cfws(raw_value, 0))
    if not token:
        return ""
    raw = token.group(1) if token.group(1) is not None else token.group(2)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")  # a bare 0xA0 is NBSP to a Latin-1 reader
    if token.group(1) is not None:
        text = _QUOTED_PAIR.sub(r"\1", text.replace("\r\n", ""))
    return normalise_id(text)


def claims_our_id(authserv_id: str) -> object:
    """The removal predicate for `Stage.removals`: does this inbound header claim our id?"""
    ours = normalise_id(authserv_id)

    def predicate(raw_value: bytes) -> bool:
        return claimed_authserv_id(raw_value) == ours

    return predicate
