"""Engine adapters, chosen by the `type` string of an `[engines.NAME]` table.

Built-in types map to modules here. An installed package adds a type by declaring an entry point
in the group `quorum.engines` (`keyword = "quorum_keyword:KeywordEngine"`): `pip install` it and
name the type in a config table, no fork (examples/engine-keyword). Any other `type` may be a
dotted path `package.module:Class`. The pipeline never changes.
"""

from __future__ import annotations

import functools
import importlib
import logging
from importlib.metadata import entry_points

from quorum.config.model import EngineSettings
from quorum.engines.base import Engine, EngineError, ScanCall

ENGINE_TYPES: dict[str, str] = {
    "clamav": "quorum.engines.clamav:ClamAV",
    "rspamd": "quorum.engines.rspamd:Rspamd",
    "spamassassin": "quorum.engines.spamassassin:SpamAssassin",
}


ENTRY_POINTS = "quorum.engines"
log = logging.getLogger("quorum.engines")


@functools.cache
def installed_types() -> dict[str, str]:
    """Engine types installed packages declare (entry point group `quorum.engines`), read once;
    a built-in name cannot be taken over."""
    found: dict[str, str] = {}
    try:
        for ep in entry_points(group=ENTRY_POINTS):
            if ep.name in ENGINE_TYPES:
                log.warning("engine type %r from %s ignored: it is a built-in type", ep.name, ep.value)
            elif ":" in ep.value:
                found[ep.name] = ep.value
    except Exception:  # noqa: BLE001 - broken package metadata must not stop Quorum
        log.exception("cannot read the %s entry points", ENTRY_POINTS)
    return found


def engine_types() -> dict[str, str]:
    """Every engine type by name: built-in, then installed (see `installed_types`)."""
    return {**ENGINE_TYPES, **installed_types()}


def adapter_class(type_name: str) -> type[Engine]:
    """The Engine subclass for a config `type`; LookupError with the fix if there is none."""
    types = engine_types()
    target = types.get(type_name, type_name if ":" in type_name else None)
    if target is None:
        raise LookupError(
            f"unknown engine type {type_name!r}; use one of {' | '.join(types)} or a dotted path 'package.module:Class'"
        )
    module_name, _, class_name = target.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as exc:
        raise LookupError(f"engine type {type_name!r} cannot be loaded: {exc}") from exc
    if not (isinstance(cls, type) and issubclass(cls, Engine)):
        raise LookupError(f"engine type {type_name!r} is not a quorum.engines.Engine subclass")
    return cls


def build_engine(settings: EngineSettings) -> Engine:
    return adapter_class(settings.type)(settings)


__all__ = ["ENGINE_TYPES", "Engine", "EngineError", "ScanCall", "adapter_class", "build_engine", "engine_types"]
