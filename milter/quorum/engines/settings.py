"""`[engines.NAME]` tables: the keys every engine has, then the adapter's own (`parse_options`)."""

from __future__ import annotations

import re

from quorum.config import model
from quorum.config.fields import Problems, Table
from quorum.config.model import EngineSettings
from quorum.engines import ENGINE_TYPES, adapter_class

_ENGINE_NAME = re.compile(r"^[A-Za-z0-9_-]+$")


def parse_engines(t: Table, problems: Problems) -> tuple[EngineSettings, ...]:
    engines: list[EngineSettings] = []
    for name in t.data:
        et = t.table(name)
        if not _ENGINE_NAME.match(name):
            problems.error(et.path, "engine names may hold letters, digits, '-' and '_' only; rename the table")
        type_name = et.str("type", "")
        if not type_name and "type" not in et.data:
            problems.error(et.key("type"), f"missing; set type to one of {' | '.join(ENGINE_TYPES)}")
            continue
        if not type_name:
            continue
        try:
            cls = adapter_class(type_name)
        except LookupError as exc:
            problems.error(et.key("type"), str(exc))
            continue
        d = EngineSettings(name, type_name)
        settings = EngineSettings(
            name=name,
            type=type_name,
            enabled=et.bool("enabled", True),
            timeout=et.duration("timeout", d.timeout, minimum=0.05),
            max_size=et.size("max_size", cls.default_max_size, minimum=1),
            mode=et.choice("mode", d.mode, model.ENGINE_MODES),
            weight=et.float("weight", d.weight, minimum=0.0),
            threshold=et.opt_float("threshold", minimum=0.0),
            concurrency=et.int("concurrency", d.concurrency, minimum=1, maximum=1024),
            breaker_failures=et.int("breaker_failures", d.breaker_failures, minimum=1),
            breaker_cooldown=et.duration("breaker_cooldown", d.breaker_cooldown, minimum=0.1),
            options=cls.parse_options(et),
        )
        et.reject_unknown()
        engines.append(settings)
    return tuple(engines)
