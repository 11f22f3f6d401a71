"""Hypothesis strategies for MIME fuzzing: random part trees rendered to bytes, then mutated.

Trees mix every content type the rules walker treats differently (text/plain, text/html,
multipart/*, message/rfc822, attachments), good and bad charsets, transfer encodings, RFC 2231
and RFC 2047 file names, and broken pieces (wrong/missing boundaries, bad base64/QP, NUL and
8-bit bytes in headers). Mutations then insert MIME-significant tokens, delete, overwrite and
duplicate byte ranges.
"""

from __future__ import annotations

import base64
import quopri
from typing import Any

from hypothesis import strategies as st

CHARSETS = [
    "utf-8", "iso-8859-1", "windows-1252", "koi8-r", "shift_jis", "gb2312", "utf-7", "us-ascii",
    "x-unknown", "undefined", "punycode", "idna", "rot13", "", "utf-8\x00", '"utf-8', "utf-8*en",
]  # fmt: skip
ENCODINGS = ["7bit", "8bit", "binary", "base64", "quoted-printable", "x-uuencode", "bogus", ""]
LEAF_TYPES = ["text/plain", "text/html", "application/octet-stream", "image/png", "text/calendar", "multipart/mixed"]
TOKENS = [
    b"\r\n", b"\n", b"--", b"=?", b"?=", b"?b?", b"?q?", b"*0*=", b"*1*=", b"''", b"%", b"%E2%82", b";", b'"',
    b"=", b"\x00", b"\xff", b"\xe2\x82", b"boundary=", b"charset=", b"multipart/mixed", b"message/rfc822",
    b"base64", b"quoted-printable", b"name=", b"filename*=", b"<!--", b"<b>", b"&#", b"\\", b":", b" ", b"\t",
    b"Content-Type: ", b"Content-Disposition: attachment; ", b"Content-Transfer-Encoding: ",
]  # fmt: skip

text_words = st.text(
    alphabet=st.sampled_from(list("free money casino €ß日本Привет<>&;#x0123456789\u200b\ufeff\x00\r\n\t")),
    max_size=60,
)


def _encode_body(text: str, charset: str, cte: str) -> bytes:
    try:
        raw = text.encode(charset or "utf-8", "replace")
    except (LookupError, ValueError, UnicodeError):
        raw = text.encode("utf-8", "surrogatepass")
    if cte == "base64":
        return base64.encodebytes(raw)
    if cte == "quoted-printable":
        return quopri.encodestring(raw)
    return raw


@st.composite
def filename_params(draw: Any) -> str:
    name = draw(st.text(alphabet=st.sampled_from(list("ab.exe€ \"'%;=?*")), min_size=0, max_size=12))
    form = draw(st.integers(0, 5))
    if form == 0:
        return f'; filename="{name}"'
    if form == 1:
        return "; filename*=UTF-8''" + "".join(f"%{b:02X}" for b in name.encode())
    if form == 2:
        half = len(name) // 2
        return f"; filename*0*=UTF-8''{name[:half]}; filename*1*={name[half:]}"
    if form == 3:
        return f'; name="=?utf-8?b?{base64.b64encode(name.encode()).decode()}?="'
    if form == 4:
        return f"; filename*=x-bogus'en'{name}; filename*0={name}"  # mixed forms break the stdlib merge
    return ""


@st.composite
def leaf(draw: Any) -> bytes:
    ctype = draw(st.sampled_from(LEAF_TYPES))
    charset = draw(st.sampled_from(CHARSETS))
    cte = draw(st.sampled_from(ENCODINGS))
    text = draw(text_words)
    if ctype == "text/html":
        text = draw(st.sampled_from(["<p>", "<b>fr</b>ee", "<script>", "<!--", "&#102;", "<td>"])) + text
    headers = f"Content-Type: {ctype}; charset={charset}{draw(filename_params())}\r\n"
    if draw(st.booleans()):
        headers += f"Content-Disposition: attachment{draw(filename_params())}\r\n"
    if cte:
        headers += f"Content-Transfer-Encoding: {cte}\r\n"
    body = _encode_body(text, charset, cte)
    if draw(st.booleans()):
        body = draw(st.binary(max_size=40)) + body  # bad base64 / QP / bytes
    return headers.encode("utf-8", "surrogateescape") + b"\r\n" + body


def _container(children: st.SearchStrategy[list[bytes]]) -> st.SearchStrategy[bytes]:
    @st.composite
    def build(draw: Any) -> bytes:
        parts = draw(children)
        kind = draw(st.sampled_from(["multipart/mixed", "multipart/alternative", "multipart/digest", "message/rfc822"]))
        if kind == "message/rfc822":
            inner = parts[0] if parts else b"\r\n"
            return b"Content-Type: message/rfc822\r\n\r\nSubject: inner\r\n" + inner
        boundary = draw(st.sampled_from([b"b1", b"b2", b"=_x", b"", b"b1 b2", b'"q"']))
        declared = draw(st.sampled_from([boundary, boundary, b"other", b""]))  # sometimes wrong or missing
        body = b"".join(b"--" + boundary + b"\r\n" + p + b"\r\n" for p in parts)
        closing = b"--" + boundary + b"--\r\n" if draw(st.booleans()) else b""
        preamble = draw(st.sampled_from([b"", b"preamble\r\n"]))
        header = b"Content-Type: " + kind.encode() + b'; boundary="' + declared + b'"\r\n\r\n'
        return header + preamble + body + closing

    return build()


mime_trees: st.SearchStrategy[bytes] = st.recursive(
    leaf(), lambda children: _container(st.lists(children, max_size=5)), max_leaves=25
)

top_headers = st.lists(
    st.tuples(
        st.sampled_from([b"Subject", b"X-Mailer", b"From", b"To", b"X-\xff", b"Subject ", b"X-A"]),
        st.one_of(
            st.binary(max_size=80),
            st.sampled_from(
                [b"=?utf-8?b?ZnJlZQ==?=", b"=?koi8-r?q?=F0=D2?= =?koi8-r?q?=C9?=", b"=?bogus?x?y?=", b"=?", b"caf\xe9"]
            ),
        ),
    ),
    max_size=6,
)


@st.composite
def messages(draw: Any) -> bytes:
    """A full message: top-level headers, a MIME tree, then 0-6 byte-level mutations."""
    head = b"".join(name + b": " + value.replace(b"\r", b"").replace(b"\n", b"\r\n ") + b"\r\n"
                    for name, value in draw(top_headers))  # fmt: skip
    data = bytearray(head + b"MIME-Version: 1.0\r\n" + draw(mime_trees))
    for _ in range(draw(st.integers(0, 6))):
        op = draw(st.integers(0, 3))
        pos = draw(st.integers(0, len(data)))
        if op == 0:
            data[pos:pos] = draw(st.sampled_from(TOKENS))
        elif op == 1:
            del data[pos : pos + draw(st.integers(1, 16))]
        elif op == 2 and pos < len(data):
            data[pos] = draw(st.integers(0, 255))
        else:
            start = draw(st.integers(0, len(data)))
            data[pos:pos] = data[start : start + draw(st.integers(1, 200))]
    return bytes(data)
