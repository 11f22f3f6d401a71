"""`Table`: a view on one TOML table that knows its dotted path and where its problems go.

Tables are validated by their pydantic models (quorum.config.schema): `root.model("name", Model)`.
What a model cannot say (a cross-table check, a file to read, a warning) is reported on the
table's `problems` under `table.key(name)`.
"""

from __future__ import annotations

import builtins
import difflib
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from quorum.config.problems import ConfigError, Problems, is_dir, shown
from quorum.config.schema import validate

if TYPE_CHECKING:
    from pydantic import BaseModel

__all__ = ["ConfigError", "Problems", "Table", "is_dir", "shown"]

M = TypeVar("M", bound="BaseModel")


class Table:
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

    def raw(self, name: builtins.str, default: Any = None) -> Any:
        self._seen.add(name)
        return self.data.get(name, default)

    def table(self, name: builtins.str) -> Table:
        value = self.raw(name, {})
        if not isinstance(value, Mapping):
            self.problems.error(
                self.key(name), f"expected a table, got {shown(value)}; fix the value or remove the key"
            )
            value = {}
        return Table(value, self.key(name), self.problems)

    def model(self, name: builtins.str, cls: type[M], context: Mapping[builtins.str, Any] | None = None) -> M:
        """The sub-table `name` validated by the pydantic model `cls`; when it is not valid, its
        problems are recorded and the model's defaults stand in."""
        return self.table(name).as_model(cls, context)

    def as_model(self, cls: type[M], context: Mapping[builtins.str, Any] | None = None) -> M:
        """This table validated by `cls`; its defaults (problems recorded) when it is not valid."""
        self._seen.update(self.data)
        found = validate(cls, self.data, self.path, self.problems, context)
        return found if found is not None else cls.model_construct()

    def reject_unknown(self, allowed_extra: Iterable[builtins.str] = ()) -> None:
        """Report keys nobody read: usually a typo the operator wants to hear about."""
        known = sorted({*self._seen, *allowed_extra})
        for name in self.data:
            if name not in known:
                near = difflib.get_close_matches(name, known, n=1)
                hint = f"did you mean {near[0]!r}?" if near else "check the spelling"
                self.problems.error(self.key(name), f"unknown key; {hint} (see README, Configuration)")
