"""`[hello] greeting = "..."`: adds `X-Hello: <greeting>` to every message Quorum delivers.

A feature is a module with `parse(root)` (read and validate its own table, report every problem
under its dotted key, return its settings or None when the table is absent) and
`build(config, settings)` (its stages), named by an entry point in the group `quorum.features`.
This one uses the post-decision hook (`Stage.amend`): the header is added to the final message,
after the decision, so refused mail never gets it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from quorum.config.fields import Table, shown
from quorum.pipeline.amend import Amendment, FinalMessage
from quorum.pipeline.stages import Stage
from quorum.pipeline.transaction import Transaction

MAX_LENGTH = 64


@dataclass(frozen=True)
class HelloSettings:
    greeting: str


def parse(root: Table) -> HelloSettings | None:
    if "hello" not in root.data:
        return None
    t = root.table("hello")
    greeting = t.str("greeting", "")
    if not (0 < len(greeting) <= MAX_LENGTH and all(" " <= c <= "~" for c in greeting)):
        t.problems.error(
            t.key("greeting"),
            f"must be 1 to {MAX_LENGTH} printable ASCII characters, got {shown(greeting)}; "
            'write e.g. greeting = "Hello from Quorum"',
        )
    t.reject_unknown()
    return HelloSettings(greeting)


class HelloStage(Stage):
    name = "hello"

    def __init__(self, greeting: str) -> None:
        self.greeting = greeting

    def amend(self, txn: Transaction, final: FinalMessage) -> Amendment:
        return Amendment(headers=(("X-Hello", self.greeting),))


def build(config: Any, settings: HelloSettings) -> list[Stage]:
    return [HelloStage(settings.greeting)]
