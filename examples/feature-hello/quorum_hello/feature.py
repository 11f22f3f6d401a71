"""`[hello] greeting = "..."`: adds `X-Hello: <greeting>` to every message Quorum delivers.

A feature is a module named by an entry point in the group `quorum.features`, with
- `TABLES`: the top-level config tables it owns and their pydantic models (`quorum schema`
  prints them; a key the model does not declare is an error with a "did you mean");
- `parse(root)`: its settings from the validated tables, or None when it is not configured;
- `build(config, settings)`: its stages.
This one uses the post-decision hook (`Stage.amend`): the header is added to the final message,
after the decision, so refused mail never gets it.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from quorum.config.fields import Table
from quorum.config.schema import Settings
from quorum.pipeline.amend import Amendment, FinalMessage
from quorum.pipeline.stages import Stage
from quorum.pipeline.transaction import Transaction


class HelloSettings(Settings):
    greeting: str = Field(min_length=1, max_length=64, pattern=r"^[ -~]+$")  # printable ASCII


TABLES = {"hello": HelloSettings}


def parse(root: Table) -> HelloSettings | None:
    return root.model("hello", HelloSettings) if "hello" in root.data else None


class HelloStage(Stage):
    name = "hello"

    def __init__(self, greeting: str) -> None:
        self.greeting = greeting

    def amend(self, txn: Transaction, final: FinalMessage) -> Amendment:
        return Amendment(headers=(("X-Hello", self.greeting),))


def build(config: Any, settings: HelloSettings) -> list[Stage]:
    return [HelloStage(settings.greeting)]
