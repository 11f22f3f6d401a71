"""Authserv-ids (RFC 8601) compared as a lenient consumer reads them (a leaf: the config and the
Authentication-Results code both use it)."""

from __future__ import annotations

import email.errors
import email.header
import re
import unicodedata

_SEPARATORS = re.compile(r"[\s;()\"]+")
_IGNORABLE = re.compile(
    r"[\s\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f\u202a-\u202e"
    r"\u2060-\u206f\u3164\ufe00-\ufe0f\ufeff\uffa0\ufff0-\ufff8]+"
)


def normalise_id(text: str) -> str:
    """An authserv-id as a lenient consumer may read it: encoded-words decoded, Unicode compatibility
    forms folded (NFKC), invisible and space characters (NBSP, zero-width, bidi controls) taken as
    separators, the first word kept, case folded, a trailing root dot dropped."""
    if "=?" in text:
        try:
            text = str(email.header.make_header(email.header.decode_header(text)))
        except (UnicodeError, LookupError, ValueError, email.errors.HeaderParseError):
            pass
    text = _IGNORABLE.sub(" ", unicodedata.normalize("NFKC", text))
    words = [w for w in _SEPARATORS.split(text) if w]
    return words[0].rstrip(".").casefold() if words else ""
