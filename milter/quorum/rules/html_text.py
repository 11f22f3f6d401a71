"""HTML reduced to the text a reader sees, for body rules.

Why lxml (libxml2's HTML parser, through a streaming target) and not the stdlib `html.parser`:
measured on this Python (3.11), `html.parser` is quadratic on hostile input — 800 KB of `<!--`
took 264 s, 400 KB of `<?` 14.5 s (the CVE-2025-6069 family) — while libxml2 reads the same
inputs in milliseconds, recovers from any garbage, decodes every entity and numeric reference,
and never builds a tree here (we only listen to start/end/data events).

Decisions:
- Inline tags join their text: `<b>fr</b>ee` reads "free" (that is what the reader sees, and
  splitting keywords with tags is an old spam trick). Block tags (p, div, br, td, li, ...) end a
  line, so words in different cells or paragraphs are not glued together.
- Text inside script, style and template is dropped; comments are dropped (`fr<!-- -->ee` is "free").
- Runs of blanks collapse to one space and `&nbsp;` is a space, as the browser shows them.
"""

from __future__ import annotations

import re
import time
from typing import Any

_BLOCK = frozenset(
    "address article aside blockquote br caption center dd div dl dt fieldset figcaption figure footer form "
    "h1 h2 h3 h4 h5 h6 header hr html body li main nav ol option p pre section table tbody td tfoot th thead "
    "title tr ul".split()
)
_HIDDEN = frozenset({"script", "style", "template"})
_BLANKS = re.compile(r"[ \t\r\n\f\v\u00a0]+")
_FEED = 65536


class _TextTarget:
    """lxml parser target: collects visible text, a newline for each block boundary."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.hidden = 0

    def start(self, tag: Any, attrib: Any) -> None:
        name = tag.lower() if isinstance(tag, str) else ""
        if name in _HIDDEN:
            self.hidden += 1
        elif name in _BLOCK:
            self.parts.append("\n")

    def end(self, tag: Any) -> None:
        name = tag.lower() if isinstance(tag, str) else ""
        if name in _HIDDEN:
            self.hidden = max(0, self.hidden - 1)
        elif name in _BLOCK:
            self.parts.append("\n")

    def data(self, text: str) -> None:
        if not self.hidden:
            self.parts.append(_BLANKS.sub(" ", text))

    def comment(self, text: str) -> None:
        pass

    def close(self) -> None:
        return None


def html_to_text(html: str, deadline: float | None = None) -> str:
    """Visible text of an HTML document or fragment; never raises (on a parser failure, the text
    collected so far is returned). Past `deadline` (time.monotonic()) the rest is not read."""
    from lxml import etree  # here, not at import: loading the config must not need the HTML parser

    target = _TextTarget()
    data = html.encode("utf-8", "replace")  # bytes with a fixed encoding: a <meta charset> cannot re-decode it
    try:
        parser = etree.HTMLParser(target=target, encoding="utf-8", recover=True, no_network=True, remove_pis=True)
        for i in range(0, len(data), _FEED):
            if deadline is not None and time.monotonic() > deadline:
                break
            parser.feed(data[i : i + _FEED])
        parser.close()
    except Exception:  # lxml raises on documents with no content at all; what we collected stands
        pass
    lines = (_BLANKS.sub(" ", line).strip() for line in "".join(target.parts).split("\n"))
    return "\n".join(line for line in lines if line)
