"""Optional features, registered in one place (like Django's INSTALLED_APPS).

Each feature parses its own config tables from the root table and builds its SMTP stage.
Order matters: stages run in registration order (the auth feature builds access, DNSBL, then
SPF/DKIM/DMARC; rate limits come after, so an SPF result computed at MAIL FROM is visible to them).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from quorum.config import Config, Table
    from quorum.pipeline.stages import Stage


@dataclass(frozen=True)
class Feature:
    name: str
    module: str  # provides parse(root: Table) -> settings and build(config, settings) -> list[Stage]

    def _load(self, attr: str) -> Callable[..., Any]:
        return getattr(importlib.import_module(self.module), attr)  # type: ignore[no-any-return]

    def parse(self, root: Table) -> Any:
        return self._load("parse")(root)

    def build(self, config: Config) -> list[Stage]:
        settings = config.feature(self.name)
        return list(self._load("build")(config, settings)) if settings is not None else []


FEATURES: tuple[Feature, ...] = (
    Feature("auth", "quorum.auth.feature"),
    Feature("ratelimit", "quorum.ratelimit.feature"),
    Feature("quarantine", "quorum.quarantine.feature"),
    Feature("tenants", "quorum.tenants.feature"),
    Feature("backscatter", "quorum.backscatter.feature"),
    Feature("verdict_cache", "quorum.verdictcache.feature"),
    Feature("notify", "quorum.notify.feature"),  # after ratelimit: [redis] problems are reported once
    Feature("rules", "quorum.rules.feature"),  # [[rules]] + [mime]; evaluated by the pipeline at end of data
    Feature("records", "quorum.records.feature"),  # last: it records what the stages before it did
)
