"""Per-domain keys owned by other features (`notify`, `backscatter`, `quarantine_retention`, ...).

A feature that adds a key to `[domains."d"]` declares it on its Feature (`tenant=` in
quorum.features, or `TENANT_KEYS = {key: module}` in an installed feature's module), naming the
module that provides

- `parse_domain(table: Table, key: str) -> value`: validate `table.raw(key)` (the domain's table;
  report problems under `table.key(key)`) and return a frozen value built from plain data
  (str/int/float/bool, tuples, frozen dataclasses, mappings): it is part of the fingerprint;
- optionally `global_value(config) -> value`: the value where no domain sets the key (default None);
- optionally `merge(lower, upper) -> value`: how a Redis record's value combines with the file's
  (default: the upper layer's value replaces the lower one).

Values reach the stages as `EffectivePolicy.extensions[key]`, with provenance under `key`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any


@dataclass(frozen=True)
class DomainExtension:
    key: str
    module: str

    def _module(self) -> ModuleType:
        return importlib.import_module(self.module)

    def parse(self, table: Any, key: str) -> Any:
        return self._module().parse_domain(table, key)

    def global_value(self, config: Any) -> Any:
        fn: Callable[[Any], Any] | None = getattr(self._module(), "global_value", None)
        return fn(config) if fn is not None else None

    def merge(self, lower: Any, upper: Any) -> Any:
        fn: Callable[[Any, Any], Any] | None = getattr(self._module(), "merge", None)
        return fn(lower, upper) if fn is not None else upper


def _declared() -> dict[str, DomainExtension]:
    from quorum.features import all_features

    return {key: DomainExtension(key, module) for f in all_features() for key, module in f.tenant}


EXTENSIONS: dict[str, DomainExtension] = _declared()


def register_extension(ext: DomainExtension) -> None:
    """Add (or replace) a per-domain key at run time, e.g. from a test or a plug-in."""
    EXTENSIONS[ext.key] = ext


def unregister_extension(key: str) -> None:
    EXTENSIONS.pop(key, None)
