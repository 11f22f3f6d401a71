"""`[engines.NAME]` tables: the keys every engine has, then the adapter's own (`parse_options`)."""

from __future__ import annotations

import re

from quorum.config import model
from quorum.config.fields import Problems, Table, shown
from quorum.config.model import EngineSettings
from quorum.engines import adapter_class, engine_types

_ENGINE_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
# `package.module:Class`: identifiers only, absolute (a relative or empty module name cannot load).
_ADAPTER_PATH = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*", re.ASCII)


def parse_engines(t: Table, problems: Problems) -> tuple[EngineSettings, ...]:
    engines: list[EngineSettings] = []
    types = engine_types()
    for name in t.data:
        et = t.table(name)
        if not _ENGINE_NAME.match(name):
            problems.error(et.path, "engine names may hold letters, digits, '-' and '_' only; rename the table")
        type_name = et.str("type", "")
        if not type_name and "type" not in et.data:
            problems.error(et.key("type"), f"missing; set type to one of {' | '.join(types)}")
            continue
        if not type_name:
            if isinstance(et.data.get("type"), str):  # type = "": not a type (a wrong type was reported)
                problems.error(et.key("type"), f"empty; set type to one of {' | '.join(types)}")
            continue
        if type_name not in types and not _ADAPTER_PATH.fullmatch(type_name):
            problems.error(
                et.key("type"),
                f"unknown engine type {shown(type_name)}; use one of {' | '.join(types)} "
                "or a dotted path 'package.module:Class' to a third-party adapter",
            )
            continue
        try:
            cls = adapter_class(type_name)
        except LookupError as exc:
            problems.error(et.key("type"), str(exc))
            continue
        except Exception as exc:  # noqa: BLE001 - a third-party module may fail to import in any way
            problems.error(et.key("type"), f"engine type {type_name!r} cannot be loaded: {type(exc).__name__}: {exc}")
            continue
        d = EngineSettings(name, type_name)
        try:
            options = cls.parse_options(et)
            default_max_size = cls.default_max_size
        except Exception as exc:  # noqa: BLE001 - a third-party adapter's validator must not crash the load
            problems.error(et.path, f"the {type_name} adapter failed to read its options: {type(exc).__name__}: {exc}")
            continue
        settings = EngineSettings(
            name=name,
            type=type_name,
            enabled=et.bool("enabled", True),
            timeout=et.duration("timeout", d.timeout, minimum=0.05),
            max_size=et.size("max_size", default_max_size, minimum=1),
            mode=et.choice("mode", d.mode, model.ENGINE_MODES),
            weight=et.float("weight", d.weight, minimum=0.0),
            threshold=et.opt_float("threshold", minimum=0.0),
            concurrency=et.int("concurrency", d.concurrency, minimum=1, maximum=1024),
            breaker_failures=et.int("breaker_failures", d.breaker_failures, minimum=1),
            breaker_cooldown=et.duration("breaker_cooldown", d.breaker_cooldown, minimum=0.1),
            options=options,
        )
        et.reject_unknown()
        engines.append(settings)
    return tuple(engines)
