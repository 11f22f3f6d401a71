"""Optional features, registered in one place (like Django's INSTALLED_APPS).

A feature is one module that declares `TABLES` (the top-level config tables it owns, each with its
pydantic model: validated once at load, printed by `quorum schema`), `parse(root)` (its settings
from those tables, or None when it is off) and `build(config, settings)` (its stages); optionally
its subcommands (`cli`) and its per-domain keys (`tenant_keys`: key -> module, see
quorum.tenants.extensions).
Order matters: stages run in registration order (the auth feature builds access, DNSBL, then
SPF/DKIM/DMARC; rate limits come after, so an SPF result computed at MAIL FROM is visible to them).

An installed package adds a feature by declaring an entry point in the group `quorum.features`
whose value is its module (`hello = "quorum_hello.feature"`, examples/feature-hello): the module
provides `TABLES`, `parse(root) -> settings | None` and `build(config, settings) -> [Stage]`, like the
built-in ones. Installed features run after the built-in ones and before `signing` and `records` (which records
what every stage before it did); a name that is already taken is ignored with a warning.
"""

from __future__ import annotations

import functools
import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from quorum.config import Config, Table
    from quorum.pipeline.stages import Stage


@dataclass(frozen=True)
class Feature:
    name: str
    module: str  # provides parse(root: Table) -> settings and build(config, settings) -> list[Stage]
    # The module of its `quorum` subcommands: add_cli(sub, with_config), handles(command) and
    # run_cli(args, config) (quorum.records.cli). An installed feature's own module may provide them.
    cli: str = ""
    # The per-domain keys it adds to `[domains."d"]`: (key, module with parse_domain/global_value/
    # merge; see quorum.tenants.extensions). An installed feature's module declares TENANT_KEYS.
    tenant: tuple[tuple[str, str], ...] = ()
    # The module defining its Prometheus metrics (every `quorum_*` series has one owner: the core's
    # quorum.metrics or one feature's; tests/unit/test_architecture.py checks it).
    metrics: str = ""

    def tables(self) -> dict[str, Any]:
        """The top-level tables this feature owns and their models (the module's `TABLES`)."""
        return dict(getattr(importlib.import_module(self.module), "TABLES", {}))

    def _load(self, attr: str) -> Callable[..., Any]:
        return getattr(importlib.import_module(self.module), attr)  # type: ignore[no-any-return]

    def parse(self, root: Table) -> Any:
        return self._load("parse")(root)

    def build(self, config: Config) -> list[Stage]:
        settings = config.feature(self.name)
        return list(self._load("build")(config, settings)) if settings is not None else []

    def commands(self) -> Any:
        """The module holding this feature's subcommands, or None."""
        if self.cli:
            return importlib.import_module(self.cli)
        module = importlib.import_module(self.module)
        return module if hasattr(module, "add_cli") else None


FEATURES: tuple[Feature, ...] = (
    Feature("auth", "quorum.auth.feature", metrics="quorum.auth.metrics"),
    Feature("ratelimit", "quorum.ratelimit.feature", cli="quorum.ratelimit.cli", metrics="quorum.ratelimit.metrics"),
    Feature("flow", "quorum.flow.feature", metrics="quorum.flow.metrics"),  # concurrency slots at MAIL FROM/RCPT
    Feature(
        "quarantine",
        "quorum.quarantine.feature",
        cli="quorum.quarantine.cli",
        tenant=(("quarantine_retention", "quorum.quarantine.tenant"),),
    ),
    Feature("tenants", "quorum.tenants.feature", cli="quorum.tenants.cli"),
    Feature("backscatter", "quorum.backscatter.feature", tenant=(("backscatter", "quorum.backscatter.tenant"),)),
    Feature("verdict_cache", "quorum.verdictcache.feature", metrics="quorum.verdictcache.store"),
    # after ratelimit: [redis] problems are reported once
    Feature(
        "notify", "quorum.notify.feature", tenant=(("notify", "quorum.notify.tenant"),), metrics="quorum.notify.metrics"
    ),
    Feature("rules", "quorum.rules.feature"),  # [[rules]] + [mime]; evaluated by the pipeline at end of data
    Feature(
        "banner",
        "quorum.banner.feature",
        tenant=(("banner", "quorum.banner.tenant"),),
        metrics="quorum.banner.metrics",
    ),  # before signing: the signature covers the banner
    Feature(
        "signing",
        "quorum.signing.feature",
        cli="quorum.signing.cli",
        tenant=(("signing", "quorum.signing.tenant"),),
        metrics="quorum.signing.metrics",
    ),  # DKIM: amends after every other feature
    # last: it records what the stages before it did
    Feature("records", "quorum.records.feature", cli="quorum.records.cli", metrics="quorum.records.metrics"),
)

ENTRY_POINTS = "quorum.features"
log = logging.getLogger("quorum.features")


@functools.cache
def installed_features() -> tuple[Feature, ...]:
    """Features installed packages declare (entry point group `quorum.features`), read once."""
    taken = {f.name for f in FEATURES}
    found: list[Feature] = []
    try:
        for ep in sorted(entry_points(group=ENTRY_POINTS), key=lambda e: e.name):
            if ep.name in taken:
                log.warning("feature %r from %s ignored: the name is taken", ep.name, ep.value)
                continue
            taken.add(ep.name)
            module = ep.value.partition(":")[0]
            loaded = importlib.import_module(module)
            keys = tuple(dict(getattr(loaded, "TENANT_KEYS", {})).items())
            found.append(Feature(ep.name, module, tenant=keys, metrics=getattr(loaded, "METRICS_MODULE", "")))
    except Exception:  # noqa: BLE001 - broken package metadata must not stop Quorum
        log.exception("cannot read the %s entry points", ENTRY_POINTS)
    return tuple(found)


def all_features() -> tuple[Feature, ...]:
    """Built-in features, then installed ones, then `signing` (it signs what all the others added)
    and `records` (it records what all the others did)."""
    *head, signing, last = FEATURES  # signing signs what every other feature added
    return (*head, *installed_features(), signing, last)
