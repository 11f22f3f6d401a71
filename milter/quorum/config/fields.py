"""Typed readers for TOML tables that collect every problem instead of stopping at the first.

Each problem names the key (`engines.clamav.timeout`) and says how to fix it.
"""

from __future__ import annotations

import builtins
import math
import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from quorum.config.problems import ConfigError, Problems, is_dir, shown
from quorum.config.schema import validate

__all__ = ["ConfigError", "Problems", "Table", "is_dir", "shown"]

if TYPE_CHECKING:
    from pydantic import BaseModel

T = TypeVar("T")
M = TypeVar("M", bound="BaseModel")


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}
_SIZE = re.compile(r"^\s*(\d+)\s*([kKmMgG])?[bB]?\s*$")
_SIZE_UNITS = {None: 1, "k": 1024, "m": 1024**2, "g": 1024**3}
# Hard bounds every number must stay within, whatever the key: past them a value is a typo (or an
# attack on the config) and breaks the code that uses it (timers overflow, C calls refuse it).
MAX_DURATION = 1e9  # seconds, about 31 years (threading's timeouts stop at ~292 years)
MAX_SIZE = 1 << 50  # bytes: 1 PiB
MAX_INT = (1 << 63) - 1  # what a C long holds
MAX_FLOAT = 1e15


class Table:
    """A view on one TOML table that knows its dotted path and records problems."""

    def __init__(self, data: Mapping[builtins.str, Any], path: builtins.str, problems: Problems) -> None:
        if not isinstance(data, Mapping):  # a caller that did not check: report it, read nothing
            problems.error(path or "config", f"expected a table, got {shown(data)}; fix the value or remove the key")
            data = {}
        self.data = data
        self.path = path
        self.problems = problems
        self._seen: set[builtins.str] = set()

    def key(self, name: builtins.str) -> builtins.str:
        return f"{self.path}.{name}" if self.path else name

    def _get(self, name: builtins.str, default: Any) -> Any:
        self._seen.add(name)
        return self.data.get(name, default)

    def _bad(self, name: builtins.str, expected: builtins.str, value: Any, default: T) -> T:
        self.problems.error(self.key(name), f"expected {expected}, got {shown(value)}; fix the value or remove the key")
        return default

    def str(self, name: builtins.str, default: builtins.str) -> builtins.str:
        value = self._get(name, default)
        if not isinstance(value, builtins.str):
            return self._bad(name, "a string", value, default)
        return value

    def opt_str(self, name: builtins.str) -> builtins.str | None:
        value = self._get(name, None)
        if value is None or isinstance(value, builtins.str):
            return value
        return self._bad(name, "a string", value, None)

    def bool(self, name: builtins.str, default: builtins.bool) -> builtins.bool:
        value = self._get(name, default)
        if not isinstance(value, builtins.bool):
            return self._bad(name, "true or false", value, default)
        return value

    def int(
        self,
        name: builtins.str,
        default: builtins.int,
        minimum: builtins.int | None = None,
        maximum: builtins.int | None = None,
    ) -> builtins.int:
        value = self._get(name, default)
        if isinstance(value, builtins.bool) or not isinstance(value, builtins.int):
            return self._bad(name, "a whole number", value, default)
        return self._range(name, value, default, _lo(minimum, -MAX_INT), _hi(maximum, MAX_INT))

    def float(
        self,
        name: builtins.str,
        default: builtins.float,
        minimum: builtins.float | None = None,
        maximum: builtins.float | None = None,
    ) -> builtins.float:
        value = self._get(name, default)
        if isinstance(value, builtins.bool) or not isinstance(value, (builtins.int, builtins.float)):
            return self._bad(name, "a number", value, default)
        number = _finite(value)
        if number is None:
            return self._not_finite(name, value, default)
        return self._range(name, number, default, _lo(minimum, -MAX_FLOAT), _hi(maximum, MAX_FLOAT))

    def opt_float(self, name: builtins.str, minimum: builtins.float | None = None) -> builtins.float | None:
        if self._get(name, None) is None:
            return None
        return self.float(name, 0.0, minimum)

    def _not_finite(self, name: builtins.str, value: Any, default: T) -> T:
        self.problems.error(
            self.key(name), f"must be a finite number, got {shown(value)}; nan and inf are not values, write a number"
        )
        return default

    def _range(self, name: builtins.str, value: Any, default: Any, lo: Any, hi: Any) -> Any:
        if isinstance(value, builtins.float) and not math.isfinite(value):
            return self._not_finite(name, value, default)
        if lo is not None and value < lo:
            self.problems.error(self.key(name), f"must be at least {lo}, got {shown(value)}")
            return default
        if hi is not None and value > hi:
            self.problems.error(self.key(name), f"must be at most {hi}, got {shown(value)}")
            return default
        return value

    def duration(self, name: builtins.str, default: builtins.float, minimum: builtins.float = 0.0) -> builtins.float:
        """Seconds, from a number or a string such as "1h", "10m", "30s", "500ms"."""
        value = self._get(name, default)
        if isinstance(value, builtins.bool):
            return self._bad(name, 'seconds or a duration such as "10m"', value, default)
        if isinstance(value, (builtins.int, builtins.float)):
            seconds = _finite(value)
        elif isinstance(value, builtins.str) and (m := _DURATION.match(value)):
            seconds = _finite(float(m.group(1)) * _UNITS[m.group(2)])
        else:
            return self._bad(name, 'seconds or a duration such as "10m"', value, default)
        if seconds is None:
            return self._not_finite(name, value, default)
        return self._range(name, seconds, default, minimum, MAX_DURATION)

    def size(self, name: builtins.str, default: builtins.int, minimum: builtins.int = 0) -> builtins.int:
        """Bytes, from a number or a string such as "25M"."""
        value = self._get(name, default)
        if isinstance(value, builtins.bool):
            return self._bad(name, 'bytes or a size such as "25M"', value, default)
        if isinstance(value, builtins.int):
            return self._range(name, value, default, minimum, MAX_SIZE)
        if isinstance(value, builtins.str) and len(value) <= 64 and (m := _SIZE.match(value)):
            unit = m.group(2).lower() if m.group(2) else None
            return self._range(name, int(m.group(1)) * _SIZE_UNITS[unit], default, minimum, MAX_SIZE)
        return self._bad(name, 'bytes or a size such as "25M"', value, default)

    def choice(self, name: builtins.str, default: builtins.str, choices: Iterable[builtins.str]) -> builtins.str:
        options = tuple(choices)
        value = self._get(name, default)
        if not isinstance(value, builtins.str) or value not in options:
            self.problems.error(self.key(name), f"must be one of {' | '.join(options)}, got {shown(value)}")
            return default
        return str(value)

    def str_list(self, name: builtins.str, default: list[builtins.str] | None = None) -> list[builtins.str]:
        value = self._get(name, default if default is not None else [])
        if not isinstance(value, list) or not all(isinstance(v, builtins.str) for v in value):
            return self._bad(name, "a list of strings", value, list(default or []))
        return list(value)

    def table(self, name: builtins.str) -> Table:
        value = self._get(name, {})
        if not isinstance(value, Mapping):
            self._bad(name, "a table", value, None)
            value = {}
        return Table(value, self.key(name), self.problems)

    def raw(self, name: builtins.str, default: Any = None) -> Any:
        return self._get(name, default)

    def model(self, name: builtins.str, cls: type[M], context: Mapping[builtins.str, Any] | None = None) -> M:
        """The sub-table `name` validated by the pydantic model `cls` (quorum.config.schema); when it
        is not valid, its problems are recorded and the model's defaults stand in."""
        return self.table(name).as_model(cls, context)

    def as_model(self, cls: type[M], context: Mapping[builtins.str, Any] | None = None) -> M:
        """This table validated by `cls`; its defaults (problems recorded) when it is not valid."""
        self._seen.update(self.data)
        found = validate(cls, self.data, self.path, self.problems, context)
        return found if found is not None else cls.model_construct()

    def reject_unknown(self, allowed_extra: Iterable[builtins.str] = ()) -> None:
        """Report keys nobody read: usually a typo the operator wants to hear about."""
        import difflib

        known = sorted({*self._seen, *allowed_extra})
        for name in self.data:
            if name not in known:
                near = difflib.get_close_matches(name, known, n=1)
                hint = f"did you mean {near[0]!r}?" if near else "check the spelling"
                self.problems.error(self.key(name), f"unknown key; {hint} (see README, Configuration)")


def _finite(value: builtins.int | builtins.float) -> builtins.float | None:
    """The value as a float, or None for nan, inf and integers too large for a float."""
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def _lo(given: Any, bound: Any) -> Any:
    return bound if given is None else max(given, bound)


def _hi(given: Any, bound: Any) -> Any:
    return bound if given is None else min(given, bound)
