"""Engine adapters, chosen by the `type` string of an `[engines.NAME]` table.

Built-in types map to modules here; any other `type` may be a dotted path `package.module:Class`
to a third-party adapter. Adding an engine means adding a module and a line below; the pipeline
never changes.
"""

from __future__ import annotations

import importlib

from quorum.config.model import EngineSettings
from quorum.engines.base import Engine, EngineError, ScanCall

ENGINE_TYPES: dict[str, str] = {
    "clamav": "quorum.engines.clamav:ClamAV",
    "rspamd": "quorum.engines.rspamd:Rspamd",
    "spamassassin": "quorum.engines.spamassassin:SpamAssassin",
}


def adapter_class(type_name: str) -> type[Engine]:
    """The Engine subclass for a config `type`; LookupError with the fix if there is none."""
    target = ENGINE_TYPES.get(type_name, type_name if ":" in type_name else None)
    if target is None:
        raise LookupError(
            f"unknown engine type {type_name!r}; use one of {' | '.join(ENGINE_TYPES)} "
            "or a dotted path 'package.module:Class'"
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


__all__ = ["ENGINE_TYPES", "Engine", "EngineError", "ScanCall", "adapter_class", "build_engine"]
