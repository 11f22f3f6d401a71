"""Insert a top banner ("external sender") and/or a footer into a message, MIME-correctly.

Approach: the body is never re-serialised. Multipart bodies are split into parts on bytes by
their boundary lines (RFC 2046), only the header blocks of the parts on the way to the text are
parsed (``email.parser.BytesHeaderParser``), and only the chosen text leaf parts are decoded
(Content-Transfer-Encoding, then charset), given the banner, and re-encoded in the *same*
charset and the *same* transfer encoding, so their headers stay valid. The new leaf bytes are
spliced into the original body by byte offsets: preamble, boundaries, epilogue, attachments and
every other part stay byte-for-byte the same. Only when the banner cannot be expressed in the
part's charset (or in 7bit) is the part switched to UTF-8 quoted-printable: its own header block
for a part inside a multipart, ``Outcome.headers`` for a single-part message.

Signed and encrypted mail (S/MIME, PGP/MIME, inline PGP) is never touched. Nothing here raises:
bad input yields ``skipped`` reasons ("signed", "encrypted", "malformed", "charset",
"too_large", "present", "no_text_part", "empty").
"""

from __future__ import annotations

import base64
import binascii
import codecs
import html
import re
from collections.abc import Sequence
from dataclasses import dataclass
from email.message import Message
from email.parser import BytesHeaderParser
from email.policy import compat32

__all__ = ["Banner", "Outcome", "insert"]

MAX_DEPTH = 10
_MAX_HEADER_BLOCK = 64 * 1024  # a part header block larger than this is malformed
_MARKER_ATTR = "data-quorum-banner"
_PGP_SIGNED = "-----BEGIN PGP SIGNED MESSAGE-----"
_PGP_MESSAGE = "-----BEGIN PGP MESSAGE-----"
_ENCRYPTED_TYPES = frozenset(
    {"multipart/encrypted", "application/pkcs7-mime", "application/x-pkcs7-mime", "application/pgp-encrypted"}
)
_NOT_MAIL_CHARSETS = frozenset({"unicode-escape", "raw-unicode-escape", "idna", "punycode", "undefined", "mbcs", "oem"})
_KNOWN_CTE = frozenset({"7bit", "8bit", "binary", "quoted-printable", "base64"})
# Linear: no nested quantifiers; the tag name must end at a blank, "/" or ">".
_BODY_OPEN = re.compile(r"<body(?=[\s/>])", re.IGNORECASE)
_BODY_CLOSE = re.compile(r"</body\s*>", re.IGNORECASE)


@dataclass(frozen=True)
class Banner:
    """One banner: ``kind`` names it in the HTML marker and in reasons."""

    kind: str  # "external_warning" or "footer"
    text: str  # plain-text version (may contain non-ASCII)
    html: str  # HTML fragment (trusted operator config, inserted as-is)
    top: bool  # True: insert at the top of the text; False: at the bottom


@dataclass(frozen=True)
class Outcome:
    """The new body (None = unchanged), the kinds added and the (kind, reason) pairs skipped."""

    body: bytes | None
    added: tuple[str, ...]
    skipped: tuple[tuple[str, str], ...]
    headers: tuple[tuple[str, str], ...] = ()  # top-level fields to replace (single part only)


class _Skip(Exception):
    """The whole message is left alone for ``reason``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class _Part:
    """A MIME entity in ``body``: fields [start, fields_end), blank line, content [body_start, end)."""

    msg: Message
    start: int
    fields_end: int
    body_start: int
    end: int
    top: bool = False  # the message itself (its header fields are not in ``body``)

    @property
    def ctype(self) -> str:
        return self.msg.get_content_type()


@dataclass
class _Edit:
    start: int
    end: int
    data: bytes


def insert(
    headers: Sequence[tuple[str, str]], body: bytes, banners: Sequence[Banner], max_part: int = 1 << 20
) -> Outcome:
    """Insert ``banners`` into the text part(s) of the message; never raises."""
    if not banners:
        return Outcome(None, (), ())
    try:
        return _insert(headers, bytes(body), banners, max_part)
    except _Skip as skip:
        return _skip_all(banners, skip.reason)
    except Exception:  # never raise into the request thread: hostile input is "malformed"
        return _skip_all(banners, "malformed")


def _skip_all(banners: Sequence[Banner], reason: str) -> Outcome:
    return Outcome(None, (), tuple((b.kind, reason) for b in banners))


# --- structure ---------------------------------------------------------------------------------


def _top_message(headers: Sequence[tuple[str, str]]) -> Message:
    msg = Message(policy=compat32)
    seen: set[str] = set()
    for name, value in headers:
        key = name.strip().lower()
        if key in ("content-type", "content-transfer-encoding", "content-disposition", "mime-version"):
            if key in seen and key != "mime-version":
                raise _Skip("malformed")  # two Content-Types: readers disagree which one counts
            seen.add(key)
            msg[name.strip()] = value
    return msg


def _parse_headers(block: bytes) -> Message:
    msg = BytesHeaderParser(policy=compat32).parsebytes(block)
    for key in ("content-type", "content-transfer-encoding"):
        if len(msg.get_all(key) or ()) > 1:
            raise _Skip("malformed")
    return msg


def _make_part(body: bytes, start: int, end: int) -> _Part:
    """Split the entity at [start, end) into its header block and its content."""
    if body.startswith(b"\r\n", start, end):
        return _Part(Message(policy=compat32), start, start, start + 2, end)
    if body.startswith(b"\n", start, end):
        return _Part(Message(policy=compat32), start, start, start + 1, end)
    limit = min(end, start + _MAX_HEADER_BLOCK)
    crlf, lf = body.find(b"\n\r\n", start, limit), body.find(b"\n\n", start, limit)
    hits = [(p, n) for p, n in ((crlf, 3), (lf, 2)) if p >= 0]
    if not hits:
        if end > limit:
            raise _Skip("malformed")
        return _Part(_parse_headers(body[start:end]), start, end, end, end)  # all header, no content
    pos, size = min(hits)
    return _Part(_parse_headers(body[start : pos + 1]), start, pos + 1, pos + size, end)


def _boundary(part: _Part) -> bytes:
    value = part.msg.get_boundary()
    if not value:
        raise _Skip("malformed")
    raw = value.encode("utf-8", "surrogateescape")
    if len(raw) > 200 or b"\n" in raw or b"\r" in raw:
        raise _Skip("malformed")
    return raw


def _split(body: bytes, part: _Part) -> list[_Part]:
    """The body parts of a multipart entity, found by its boundary lines on bytes."""
    dash = b"--" + _boundary(part)
    start, end = part.body_start, part.end
    children: list[_Part] = []
    content_start = -1  # where the current body part begins (after its delimiter line)
    pos = start
    while True:
        hit = body.find(dash, pos, end)
        if hit < 0:
            raise _Skip("malformed")  # no close delimiter
        pos = hit + 1
        if hit != start and body[hit - 1 : hit] != b"\n":
            continue  # not at the start of a line
        after = hit + len(dash)
        close = body.startswith(b"--", after, end)
        if close:
            after += 2
        while after < end and body[after : after + 1] in (b" ", b"\t"):
            after += 1
        if after < end and not body.startswith(b"\n", after, end) and not body.startswith(b"\r\n", after, end):
            continue  # "--boundary" followed by more text: not a delimiter
        if content_start >= 0:
            eol = 2 if body[hit - 2 : hit] == b"\r\n" else 1
            stop = max(content_start, hit - eol)
            children.append(_make_part(body, content_start, stop))
        if close:
            if not children:
                raise _Skip("malformed")
            return children
        if after >= end:
            raise _Skip("malformed")
        content_start = after + (2 if body.startswith(b"\r\n", after, end) else 1)
        pos = content_start


def _is_attachment(part: _Part) -> bool:
    disposition = (part.msg.get("content-disposition") or "").split(";", 1)[0].strip().lower()
    if disposition == "attachment":
        return True
    return part.msg.get_param("filename", header="content-disposition") is not None or (
        part.msg.get_param("name") is not None
    )


def _guard(part: _Part) -> None:
    """Refuse signed and encrypted entities."""
    ctype = part.ctype
    if ctype == "multipart/signed":
        raise _Skip("signed")
    if ctype in _ENCRYPTED_TYPES:
        smime = str(part.msg.get_param("smime-type") or "").lower()
        raise _Skip("signed" if smime == "signed-data" else "encrypted")


def _targets(body: bytes, part: _Part, depth: int) -> list[_Part]:
    """The text leaves to receive the banner, per rule: alternative -> both, otherwise the first."""
    if depth > MAX_DEPTH:
        raise _Skip("malformed")
    _guard(part)
    ctype = part.ctype
    if ctype in ("text/plain", "text/html"):
        return [] if _is_attachment(part) else [part]
    if not ctype.startswith("multipart/"):
        return []
    children = _split(body, part)
    if ctype != "multipart/alternative":
        return _targets(body, children[0], depth + 1)
    found: dict[str, _Part] = {}
    for child in children:
        _guard(child)
        sub = child.ctype
        if sub in ("text/plain", "text/html"):
            if not _is_attachment(child):
                found.setdefault(sub, child)
        elif sub in ("multipart/related", "multipart/alternative", "multipart/mixed"):
            for leaf in _targets(body, child, depth + 1):
                found.setdefault(leaf.ctype, leaf)
    return sorted(found.values(), key=lambda p: p.start)


# --- one leaf ----------------------------------------------------------------------------------


@dataclass
class _Leaf:
    part: _Part
    cte: str
    charset: str
    text: str = ""
    eol: str = "\r\n"  # line end of the encoded bytes (the part's own style)
    ends_with_eol: bool = True
    error: str = ""


def _known_charset(name: str) -> bool:
    """A text codec Python has, other than its internal ones (escapes, IDNA)."""
    try:
        "".encode(name)
        b"".decode(name)
        return codecs.lookup(name).name not in _NOT_MAIL_CHARSETS
    except (LookupError, ValueError):
        return False


def _decode(body: bytes, part: _Part, max_part: int) -> _Leaf:
    cte = str(part.msg.get("content-transfer-encoding") or "7bit").strip().lower()
    charset = part.msg.get_content_charset("us-ascii") or "us-ascii"
    leaf = _Leaf(part, cte, charset)
    newline = body.find(b"\n", part.body_start, part.end)
    if newline < 0:  # a one-line part: the style of the line before it
        newline = body.rfind(b"\n", 0, part.body_start)
    if newline >= 0 and body[newline - 1 : newline] != b"\r":
        leaf.eol = "\n"
    leaf.ends_with_eol = part.end > part.body_start and body[part.end - 1 : part.end] == b"\n"
    if cte not in _KNOWN_CTE:
        leaf.error = "malformed"
        return leaf
    if not _known_charset(charset):
        leaf.error = "charset"
        return leaf
    if part.end - part.body_start > 2 * max_part + 4096:  # before copying or decoding anything
        leaf.error = "too_large"
        return leaf
    raw = body[part.body_start : part.end]
    data: bytes
    if cte == "base64":
        try:
            data = base64.b64decode(raw.translate(None, b" \t\r\n"), validate=True)
        except (binascii.Error, ValueError):
            leaf.error = "malformed"
            return leaf
    elif cte == "quoted-printable":
        data = binascii.a2b_qp(raw)
    else:
        data = raw
    if len(data) > max_part:
        leaf.error = "too_large"
        return leaf
    try:
        leaf.text = data.decode(charset, "surrogateescape")
    except UnicodeError:  # stateful codecs (ISO-2022-*) refuse some 7-bit sequences
        leaf.error = "charset"
    return leaf


def _collapse(value: str) -> str:
    return " ".join(value.split())


def _strip_tags(value: str) -> str:
    """Text of an HTML fragment, linearly (a regex like <[^>]*> is quadratic on '<<<<')."""
    out: list[str] = []
    pos = 0
    while True:
        lt = value.find("<", pos)
        if lt < 0:
            out.append(value[pos:])
            break
        out.append(value[pos:lt])
        gt = value.find(">", lt)
        if gt < 0:
            break
        out.append(" ")
        pos = gt + 1
    return html.unescape("".join(out))


def _unquote(value: str) -> str:
    return "\n".join(line.lstrip("> \t") for line in value.splitlines())


def _present(leaf: _Leaf, banner: Banner, is_html: bool, haystack: str) -> bool:
    if is_html and f'{_MARKER_ATTR}="{html.escape(banner.kind, quote=True)}"' in leaf.text:
        return True
    needles = [_collapse(banner.text)]
    if is_html:
        needles.append(_collapse(_strip_tags(banner.html)))
    return any(n and n in haystack for n in needles)


def _lines(value: str, eol: str, flowed: bool) -> str:
    lines = value.replace("\r\n", "\n").replace("\r", "\n").strip("\n").split("\n")
    if flowed:  # RFC 3676: no trailing blanks (soft breaks), space-stuff where needed
        lines = [(" " + ln if ln.startswith((" ", ">", "From ")) else ln).rstrip(" ") for ln in lines]
    return eol.join(lines)


def _place_plain(text: str, banner: Banner, flowed: bool, default_eol: str) -> str:
    first = text.find("\n")
    eol = default_eol if first < 0 else ("\r\n" if text[first - 1 : first] == "\r" else "\n")
    piece = _lines(banner.text, eol, flowed)
    if banner.top:
        return piece + eol + eol + text
    if text and not text.endswith("\n"):
        text += eol
    return text + eol + piece + eol


def _place_html(text: str, banner: Banner) -> str:
    kind = html.escape(banner.kind, quote=True)
    piece = f'<div {_MARKER_ATTR}="{kind}">{banner.html}</div>'
    if banner.top:
        opened = _BODY_OPEN.search(text)
        if opened:
            gt = text.find(">", opened.end())
            if gt >= 0:
                return text[: gt + 1] + piece + text[gt + 1 :]
        return piece + text
    last = None
    for found in _BODY_CLOSE.finditer(text):
        last = found
    if last is not None:
        return text[: last.start()] + piece + text[last.start() :]
    return text + piece


def _needs_utf8(pieces: Sequence[str], leaf: _Leaf) -> bool:
    for piece in pieces:
        try:
            encoded = piece.encode(leaf.charset)
        except (UnicodeError, LookupError):
            return True
        if leaf.cte == "7bit" and not encoded.isascii():
            return True
    return False


def _encode(text: str, charset: str, cte: str, eol: str, ends_with_eol: bool) -> bytes:
    data = text.encode(charset, "surrogateescape")
    if cte == "base64":
        out = base64.encodebytes(data)  # 76-character lines
        if eol != "\n":
            out = out.replace(b"\n", eol.encode())
        if not ends_with_eol:
            out = out.rstrip(b"\r\n")
        return out
    if cte == "quoted-printable":
        normal = data.replace(b"\r\n", b"\n").replace(b"\n", eol.encode())
        return binascii.b2a_qp(normal, istext=True)
    return data


def _replace_field(block: bytes, name: bytes, line: bytes, eol: bytes) -> bytes:
    """Replace the header field ``name`` (with its folded lines) in a raw block, or append it."""
    lines = block.splitlines(keepends=True)
    out: list[bytes] = []
    replaced = skipping = False
    for ln in lines:
        if skipping and ln[:1] in (b" ", b"\t"):
            continue
        skipping = False
        head = ln.split(b":", 1)[0].strip().lower()
        if b":" in ln and head == name:
            skipping = True
            if not replaced:
                out.append(line + eol)
                replaced = True
            continue
        out.append(ln)
    if not replaced:
        if out and not out[-1].endswith(b"\n"):
            out[-1] += eol
        out.append(line + eol)
    return b"".join(out)


def _utf8_content_type(msg: Message) -> str:
    tmp = Message(policy=compat32)
    tmp["Content-Type"] = msg.get("content-type") or "text/plain"
    tmp.set_param("charset", "utf-8")
    return str(tmp.get("content-type"))


def _apply(
    body: bytes, leaf: _Leaf, banners: Sequence[Banner], added: set[str], reasons: dict[str, str]
) -> tuple[_Edit | None, list[tuple[str, str]]]:
    """Give ``leaf`` the banners not present yet: the edit (or None) and top-level header changes."""
    is_html = leaf.part.ctype == "text/html"
    flowed = str(leaf.part.msg.get_param("format") or "").lower() == "flowed"
    haystack = _collapse(_strip_tags(leaf.text) if is_html else _unquote(leaf.text))
    todo: list[Banner] = []
    for banner in banners:
        if _present(leaf, banner, is_html, haystack):
            reasons.setdefault(banner.kind, "present")
        elif not (banner.html if is_html else banner.text).strip():
            reasons.setdefault(banner.kind, "empty")
        else:
            todo.append(banner)
    if not todo:
        return None, []
    text = leaf.text
    # the first top banner ends up topmost; footers in order below the text
    for banner in [b for b in reversed(todo) if b.top] + [b for b in todo if not b.top]:
        text = _place_html(text, banner) if is_html else _place_plain(text, banner, flowed, leaf.eol)
    part = leaf.part
    top_headers: list[tuple[str, str]] = []
    if not _needs_utf8([b.html if is_html else b.text for b in todo], leaf):
        edit = _Edit(part.body_start, part.end, _encode(text, leaf.charset, leaf.cte, leaf.eol, leaf.ends_with_eol))
    else:
        data = _encode(text, "utf-8", "quoted-printable", leaf.eol, leaf.ends_with_eol)
        ctype = _utf8_content_type(part.msg)
        if part.top:
            top_headers = [("Content-Type", ctype), ("Content-Transfer-Encoding", "quoted-printable")]
            if part.msg.get("mime-version") is None:
                top_headers.append(("MIME-Version", "1.0"))
            edit = _Edit(part.body_start, part.end, data)
        else:
            eol = leaf.eol.encode()
            fields = body[part.start : part.fields_end]
            sep = body[part.fields_end : part.body_start] or eol
            line = b"Content-Type: " + ctype.encode("utf-8", "surrogateescape")
            fields = _replace_field(fields, b"content-type", line, eol)
            cte = b"Content-Transfer-Encoding: quoted-printable"
            fields = _replace_field(fields, b"content-transfer-encoding", cte, eol)
            edit = _Edit(part.start, part.end, fields + sep + data)
    added.update(b.kind for b in todo)
    return edit, top_headers


def _insert(headers: Sequence[tuple[str, str]], body: bytes, banners: Sequence[Banner], max_part: int) -> Outcome:
    top = _Part(_top_message(headers), 0, 0, 0, len(body), top=True)
    targets = _targets(body, top, 0)
    if not targets:
        return _skip_all(banners, "no_text_part")
    leaves = [_decode(body, part, max_part) for part in targets]
    for leaf in leaves:
        if leaf.error:
            continue
        if _PGP_SIGNED in leaf.text:
            raise _Skip("signed")
        if _PGP_MESSAGE in leaf.text:
            raise _Skip("encrypted")
    added: set[str] = set()
    reasons: dict[str, str] = {}
    edits: list[_Edit] = []
    top_headers: list[tuple[str, str]] = []
    for leaf in leaves:
        if leaf.error:
            for banner in banners:
                reasons.setdefault(banner.kind, leaf.error)
            continue
        try:
            edit, changed = _apply(body, leaf, banners, added, reasons)
        except UnicodeError:
            for banner in banners:
                reasons.setdefault(banner.kind, "charset")
            continue
        if edit is not None:
            edits.append(edit)
            top_headers.extend(changed)
    kinds = tuple(dict.fromkeys(b.kind for b in banners if b.kind in added))
    skipped = tuple(
        (kind, reasons.get(kind, "no_text_part"))
        for kind in dict.fromkeys(b.kind for b in banners)
        if kind not in added
    )
    if not edits:
        return Outcome(None, kinds, skipped)
    chunks: list[bytes] = []
    pos = 0
    for edit in sorted(edits, key=lambda e: e.start):
        chunks.append(body[pos : edit.start])
        chunks.append(edit.data)
        pos = edit.end
    chunks.append(body[pos:])
    return Outcome(b"".join(chunks), kinds, skipped, tuple(top_headers))
