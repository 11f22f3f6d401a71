"""Turning mail bytes into the text a reader sees, without ever raising.

Charsets: the declared one with replacement characters for bad bytes; an unknown or unusable
charset (and raw 8-bit header text) is read as UTF-8 when it holds UTF-8 sequences, else as
windows-1252 (which also reads iso-8859-1 and us-ascii labels, as mail clients and browsers do).
Transfer encodings: base64 (lenient: garbage skipped, missing padding repaired) and
quoted-printable (bad escapes kept).
Header values: RFC 2047 encoded-words, adjacent words joined even when a character is split
between them. Invisible characters used to split keywords (zero-width space, soft hyphen, ...)
are removed from every text.
"""

from __future__ import annotations

import binascii
import codecs
import re

# Codecs that accept any bytes but are not mail charsets; `punycode` and `idna` decoders are
# also slow on long input, `undefined` always raises.
_REFUSED_CODECS = frozenset({"punycode", "idna", "undefined", "unicode_escape", "raw_unicode_escape"})
# Labels that mean "a single-byte Western charset": windows-1252 is their superset.
_AS_WINDOWS_1252 = frozenset({"latin_1", "iso8859_1", "ascii"})
_INVISIBLE = dict.fromkeys(map(ord, "\u00ad\u200b\u200c\u200d\u2060\ufeff\u180e"), None)
_B64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_NOT_B64 = bytes(b for b in range(256) if b not in _B64_ALPHABET)


def _codec(charset: str | None) -> str | None:
    """A usable Python codec name for a MIME charset label, or None."""
    if not charset:
        return None
    label = charset.strip().strip("\"'").split("*", 1)[0].lower()  # RFC 2231 language suffix
    if not label or len(label) > 40:
        return None
    try:
        name = codecs.lookup(label).name.replace("-", "_")
    except (LookupError, ValueError, TypeError):
        return None
    if name in _REFUSED_CODECS:
        return None
    if name in _AS_WINDOWS_1252:
        return "cp1252"
    if name == "gb2312":
        return "gb18030"  # a superset, and what senders labelled gb2312 usually mean
    return name


def _fallback(data: bytes) -> str:
    """UTF-8 if any multi-byte UTF-8 sequence is in there (stray bad bytes become U+FFFD), else
    windows-1252 (legacy 8-bit text)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("utf-8", "replace")
        if any(ord(c) > 127 and c != "\ufffd" for c in text):
            return text
        return data.decode("cp1252", "replace")


def decode_bytes(data: bytes, charset: str | None) -> str:
    """Text from bytes in `charset` (a MIME label); bad bytes become U+FFFD, nothing raises."""
    codec = _codec(charset)
    if codec is None:
        return _fallback(data)
    if codec == "cp1252" and not data.isascii() and _is_utf8(data):
        return data.decode("utf-8")  # 8-bit UTF-8 under an ascii/latin-1 label: common, and unambiguous
    return _decode(data, codec)


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _decode(data: bytes, codec: str) -> str:
    try:
        return data.decode(codec, "replace")
    except Exception:  # a codec without "replace" support or other surprises: never fail the scan
        return _fallback(data)


def clean(text: str) -> str:
    """Drop invisible characters that split words for the reader's eye but not for a regex."""
    return text.translate(_INVISIBLE)


def base64_bytes(data: bytes) -> bytes:
    """Lenient base64: bytes outside the alphabet are skipped, each run ended by padding is decoded
    on its own (concatenated encodings hide nothing) and a short final group is repaired."""
    if b"=" not in data:
        return _base64_run(data.translate(None, _NOT_B64))
    return b"".join(_base64_run(run.translate(None, _NOT_B64)) for run in data.split(b"="))


def _base64_run(data: bytes) -> bytes:
    rest = len(data) % 4
    if rest == 1:
        data = data[:-1]
    elif rest:
        data += b"=" * (4 - rest)
    try:
        return binascii.a2b_base64(data)
    except (binascii.Error, ValueError):
        return b""


def qp_bytes(data: bytes, header: bool = False) -> bytes:
    """Quoted-printable (RFC 2045; `header=True` for RFC 2047 Q: `_` is a space)."""
    try:
        return binascii.a2b_qp(data, header=header)
    except (binascii.Error, ValueError):
        return data


def transfer_decode(payload: bytes, encoding: str | None, limit: int) -> tuple[bytes, bool]:
    """(at most `limit` decoded bytes, True if the part was cut), decoding only what is needed."""
    cte = (encoding or "").strip().lower().partition("(")[0]  # "base64 (comment)" is allowed
    cte = cte.split()[0] if cte.split() else ""
    if cte == "base64":
        window = payload[: limit * 2 + 1024]  # base64 (with line breaks and some noise) is < 2x the data
        decoded = base64_bytes(window)
    elif cte == "quoted-printable":
        window = payload[: limit * 3 + 1024]  # every byte could be an =XX escape
        if len(window) < len(payload):
            window = window[: window.rfind(b"\n") + 1] or window  # do not cut an escape in half
        decoded = qp_bytes(window)
    else:  # 7bit, 8bit, binary, and anything unknown: the bytes as they are
        window = payload[:limit]
        decoded = window
    cut = len(window) < len(payload) or len(decoded) > limit
    return decoded[:limit], cut


# RFC 2047 encoded-word; the encoded text may not hold "?" or blanks, so each character of the
# header is looked at a bounded number of times.
_ENCODED_WORD = re.compile(r"=\?([^?\s]{1,64})\?([bBqQ])\?([^?\s]*)\?=")


def header_text(raw: bytes | str) -> str:
    """A header value as text: raw 8-bit bytes read as UTF-8 (else windows-1252), folding removed,
    RFC 2047 encoded-words decoded."""
    if isinstance(raw, bytes):
        raw = _fallback(raw)
    value = raw.replace("\r", "").replace("\n", "")
    if "=?" in value:
        value = decode_encoded_words(value)
    return clean(value.strip())


def decode_encoded_words(value: str) -> str:
    """Decode every encoded-word (wherever it stands, as mail clients do); blanks between two
    encoded-words vanish; adjacent words in one charset are joined as bytes before decoding, so a
    multi-byte character split between words survives. Malformed words are decoded leniently."""
    out: list[str] = []
    pending: list[bytes] = []
    pending_charset = ""
    pos = 0

    def flush() -> None:
        if pending:
            out.append(decode_bytes(b"".join(pending), pending_charset))
            pending.clear()

    for m in _ENCODED_WORD.finditer(value):
        gap = value[pos : m.start()]
        if gap and (gap.strip() or not pending):
            flush()
            out.append(gap)
        charset, kind, encoded = m.group(1), m.group(2).lower(), m.group(3)
        data = encoded.encode("ascii", "replace")
        word = base64_bytes(data) if kind == "b" else qp_bytes(data, header=True)
        if pending and charset.lower() != pending_charset.lower():
            flush()
        pending_charset = charset
        pending.append(word)
        pos = m.end()
    flush()
    out.append(value[pos:])
    return "".join(out)
