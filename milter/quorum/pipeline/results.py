"""Typed result slots, one per result type (Haraka's `transaction.results`).

A stage stores what it found under the result's own type (`results.put(spf, by="auth")`); every
other stage, the record and the log read it by type (`results.get(SpfResult)`), and the core never
needs to know the type. The first stage that writes a type owns that slot for the transaction (or
the findings): another stage writing it is a bug and raises, so every fact has one author.

A result that belongs in the session record (and the JSON log line) says so itself: it provides
`record_fields() -> dict` (e.g. `{"spf": "pass"}`), so the recorder reads every feature's results
without knowing their types.
"""

from __future__ import annotations

from typing import Any, TypeVar, cast

T = TypeVar("T")


class SlotTaken(RuntimeError):
    """A stage wrote a result type another stage owns."""


class Results:
    __slots__ = ("_owners", "_values")

    def __init__(self) -> None:
        self._values: dict[type, object] = {}
        self._owners: dict[type, str] = {}

    def put(self, value: object, by: str) -> None:
        """Store `value` in the slot of its type; `by` (the stage's name) owns the slot from now on."""
        kind = type(value)
        owner = self._owners.setdefault(kind, by)
        if owner != by:
            raise SlotTaken(f"{by} wrote {kind.__name__}, which {owner} owns")
        self._values[kind] = value

    def get(self, kind: type[T]) -> T | None:
        return cast("T | None", self._values.get(kind))

    def pop(self, kind: type[T], by: str) -> T | None:
        """Take the value out of its slot (the owner only: a reservation given back once)."""
        owner = self._owners.get(kind)
        if owner is not None and owner != by:
            raise SlotTaken(f"{by} took {kind.__name__}, which {owner} owns")
        return cast("T | None", self._values.pop(kind, None))

    def update(self, other: Results) -> None:
        """Add `other`'s slots (findings merged in stage order); the ownership rule holds across both."""
        for kind, value in other._values.items():
            self.put(value, other._owners[kind])

    def owner(self, kind: type) -> str | None:
        return self._owners.get(kind)

    def record_fields(self) -> dict[str, Any]:
        """The session-record fields of every result that provides them, in the order written."""
        out: dict[str, Any] = {}
        for value in self._values.values():
            fields = getattr(value, "record_fields", None)
            if callable(fields):
                out.update(fields())
        return out

    def __repr__(self) -> str:
        return f"Results({', '.join(f'{k.__name__}<-{self._owners[k]}' for k in self._values)})"
