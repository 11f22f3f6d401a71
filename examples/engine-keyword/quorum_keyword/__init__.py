"""An example engine adapter, installed from outside the tree: `type = "keyword"`.

```toml
[engines.words]
type = "keyword"
words = ["casino", "viagra"]     # case-insensitive; spam when the message holds one of them
```

An adapter is an `Engine` subclass: `parse_options` validates its own keys (every problem under
its dotted key), `scan` returns a `Verdict`. The pipeline gives it what every engine has (timeout,
deadline, breaker, concurrency, `mode`, `weight`, `threshold`) without the adapter doing anything.
It runs in its engine's own thread pool, never holding the milter thread: the scan is a bounded
substring search over at most `max_size` bytes.
"""

from __future__ import annotations

from typing import Any, ClassVar

from quorum.config.fields import Table, shown
from quorum.engines import Engine, ScanCall
from quorum.message import Message
from quorum.verdict import Category, Status, Verdict

MAX_WORDS = 1000


class KeywordEngine(Engine):
    type_name = "keyword"
    category: ClassVar[Category] = Category.ANTISPAM
    default_max_size: ClassVar[int] = 1024 * 1024

    @classmethod
    def parse_options(cls, table: Table) -> dict[str, Any]:
        words = table.raw("words", None)
        key = table.key("words")
        if words is None:
            table.problems.error(key, 'missing; list the words, e.g. words = ["casino"]')
            return {"words": ()}
        if not isinstance(words, list) or not words or len(words) > MAX_WORDS:
            table.problems.error(key, f"expected a list of 1 to {MAX_WORDS} words, got {shown(words)}")
            return {"words": ()}
        good = []
        for i, word in enumerate(words):
            if not isinstance(word, str) or not word.strip() or len(word) > 200:
                table.problems.error(
                    f"{key}[{i}]", f"expected a non-empty word of at most 200 characters, got {shown(word)}"
                )
            else:
                good.append(word.strip().lower().encode("utf-8"))
        return {"words": tuple(good)}

    def scan(self, message: Message, call: ScanCall) -> Verdict:
        words: tuple[bytes, ...] = self.options["words"]
        longest = max((len(w) for w in words), default=1)
        tail = b""
        with message.open() as f:
            while chunk := f.read(65536):
                window = tail + chunk.lower()
                for word in words:
                    if word in window:
                        return self.verdict(
                            Status.SPAM, score=1.0, threshold=1.0, detail=word.decode("utf-8", "replace")
                        )
                tail = window[-(longest - 1) :] if longest > 1 else b""
                if call.remaining() <= 0:
                    raise TimeoutError("timed out")
        return self.verdict(Status.CLEAN, score=0.0, threshold=1.0)

    def ping(self, timeout: float) -> None:
        return None
