"""An example engine adapter, installed from outside the tree: `type = "keyword"`.

```toml
[engines.words]
type = "keyword"
words = ["casino", "viagra"]     # case-insensitive; spam when the message holds one of them
```

An adapter is an `Engine` subclass: its `Options` model (a subclass of `EngineTable`, the keys
every engine has) declares its own keys, so one model checks the whole `[engines.NAME]` table and
`quorum schema` shows it; `scan` returns a `Verdict`. The pipeline gives it what every engine has
(timeout, deadline, breaker, concurrency, `mode`, `weight`, `threshold`) without the adapter doing
anything. It runs in its engine's own thread pool, never holding the milter thread: the scan is a
bounded substring search over at most `max_size` bytes.
"""

from __future__ import annotations

from typing import Annotated, ClassVar

from pydantic import Field, StringConstraints

from quorum.config.model import EngineSettings, EngineTable
from quorum.config.schema import Size
from quorum.engines import Engine, ScanCall
from quorum.message import Message
from quorum.verdict import Category, Status, Verdict

Word = Annotated[str, StringConstraints(strip_whitespace=True, to_lower=True, min_length=1, max_length=200)]


class KeywordEngine(Engine):
    type_name = "keyword"
    category: ClassVar[Category] = Category.ANTISPAM

    class Options(EngineTable):
        words: tuple[Word, ...] = Field(min_length=1, max_length=1000)
        max_size: Size = Field(1024 * 1024, ge=1)

    def __init__(self, settings: EngineSettings) -> None:
        super().__init__(settings)
        self.words = tuple(w.encode("utf-8") for w in self.options["words"])

    def scan(self, message: Message, call: ScanCall) -> Verdict:
        longest = max((len(w) for w in self.words), default=1)
        tail = b""
        with message.open() as f:
            while chunk := f.read(65536):
                window = tail + chunk.lower()
                for word in self.words:
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
