"""`[engines.NAME]` tables: each validated by its adapter's `Options` model (EngineTable's keys
every engine has, plus the adapter's own)."""

from __future__ import annotations

import re

from quorum.config.fields import Problems, Table, shown
from quorum.config.model import EngineSettings, EngineTable
from quorum.engines import adapter_class, engine_types

_ENGINE_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
# `package.module:Class`: identifiers only, absolute (a relative or empty module name cannot load).
_ADAPTER_PATH = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*", re.ASCII)
COMMON = frozenset(EngineTable.model_fields)


def parse_engines(t: Table, problems: Problems) -> tuple[EngineSettings, ...]:
    engines: list[EngineSettings] = []
    for name in t.data:
        et = t.table(name)
        if not _ENGINE_NAME.match(name):
            problems.error(et.path, "engine names may hold letters, digits, '-' and '_' only; rename the table")
        options_model = _options_model(et, problems)
        if options_model is None:
            continue
        checked = _validate(et, options_model)
        if checked is None:
            continue
        common = {k: getattr(checked, k) for k in COMMON}
        options = {k: getattr(checked, k) for k in type(checked).model_fields if k not in COMMON}
        engines.append(EngineSettings(name=name, options=options, **common))
    return tuple(engines)


def _validate(et: Table, model: type[EngineTable]) -> EngineTable | None:
    from quorum.config.schema import validate

    try:
        return validate(model, et.data, et.path, et.problems)
    except Exception as exc:  # noqa: BLE001 - a third-party adapter's validator must not crash the load
        et.problems.error(et.path, f"the {et.data.get('type')} adapter failed to read its options: {exc!r}")
        return None


def _options_model(et: Table, problems: Problems) -> type[EngineTable] | None:
    types = engine_types()
    type_name = et.data.get("type")
    if type_name is None:
        problems.error(et.key("type"), f"missing; set type to one of {' | '.join(types)}")
        return None
    if not isinstance(type_name, str):
        problems.error(et.key("type"), f"expected a string, got {shown(type_name)}; fix the value or remove the key")
        return None
    if not type_name:
        problems.error(et.key("type"), f"empty; set type to one of {' | '.join(types)}")
        return None
    if type_name not in types and not _ADAPTER_PATH.fullmatch(type_name):
        problems.error(
            et.key("type"),
            f"unknown engine type {shown(type_name)}; use one of {' | '.join(types)} "
            "or a dotted path 'package.module:Class' to a third-party adapter",
        )
        return None
    try:
        options: type[EngineTable] = adapter_class(type_name).Options
    except LookupError as exc:
        problems.error(et.key("type"), str(exc))
        return None
    except Exception as exc:  # noqa: BLE001 - a third-party module may fail to import in any way
        problems.error(et.key("type"), f"engine type {type_name!r} cannot be loaded: {type(exc).__name__}: {exc}")
        return None
    if not (isinstance(options, type) and issubclass(options, EngineTable)):
        problems.error(et.key("type"), f"engine type {type_name!r}: its Options is not an EngineTable model")
        return None
    return options
