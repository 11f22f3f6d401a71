"""The base of every config model (pydantic v2) and the one translation of its errors.

A table's model is a `Settings` subclass: unknown keys are errors, values are not coerced (TOML
already types them: `workers = "64"` is a mistake worth hearing about), nan/inf are refused, and a
validated model is frozen. Bounds are written once, on the field (`Field(30.0, ge=0.1)`); the same
model validates the file and the Redis records that override it (tenants). `report` turns
pydantic's errors into Quorum's one-line problems: the full dotted key, what was wrong, what is
allowed, and for an unknown key the nearest known one.
"""

from __future__ import annotations

import difflib
import functools
import ipaddress
import re
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Annotated, Any, TypeVar, Union

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    WithJsonSchema,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from quorum.config.problems import Problems, shown

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")

# Hard bounds every number stays within, whatever the key: past them a value is a typo (or an
# attack on the config) and breaks the code that uses it (timers overflow, C calls refuse it).
MAX_DURATION = 1e9  # seconds, about 31 years (threading's timeouts stop at ~292 years)
MAX_SIZE = 1 << 50  # bytes: 1 PiB
MAX_INT = (1 << 63) - 1  # what a C long holds
MAX_FLOAT = 1e15


class Settings(BaseModel):
    """A config table. Subclasses declare fields with defaults and bounds, nothing else."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, strict=True, allow_inf_nan=False, arbitrary_types_allowed=True
    )

    @model_validator(mode="before")
    @classmethod
    def _arrays(cls, data: Any) -> Any:
        """TOML arrays arrive as lists; tuple fields (hashable, frozen) take them as tuples."""
        if isinstance(data, dict):
            names = _tuple_fields(cls)
            return {k: tuple(v) if k in names and isinstance(v, list) else v for k, v in data.items()}
        return data


@functools.cache
def _tuple_fields(cls: type[BaseModel]) -> frozenset[str]:
    return frozenset(
        name for name, f in cls.model_fields.items() if typing.get_origin(_unwrap(f.annotation, False)) is tuple
    )


def _bounded(limit: float) -> Any:
    def check(value: Any) -> Any:
        if abs(value) > limit:
            raise PydanticCustomError("quorum", "must be at most {limit}", {"limit": limit})
        return value

    return check


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}
_SIZE = re.compile(r"^\s*(\d+)\s*([kKmMgG])?[bB]?\s*$")
_SIZE_UNITS = {None: 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def _seconds(value: Any) -> Any:
    """A number, or a string such as "1h", "10m", "30s", "500ms"."""
    if isinstance(value, str) and (m := _DURATION.match(value)):
        return float(m.group(1)) * _UNITS[m.group(2)]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PydanticCustomError("quorum_type", 'expected seconds or a duration such as "10m"')
    if isinstance(value, int) and abs(value) > MAX_DURATION:  # float() of a huge int raises
        raise PydanticCustomError("quorum", "must be at most {limit}", {"limit": MAX_DURATION})
    return float(value)  # nan and inf go on to the float check, which refuses them


def _bytes(value: Any) -> Any:
    """A whole number, or a string such as "25M"."""
    if isinstance(value, str) and len(value) <= 64 and (m := _SIZE.match(value)):
        unit = m.group(2).lower() if m.group(2) else None
        return int(m.group(1)) * _SIZE_UNITS[unit]
    if isinstance(value, bool) or not isinstance(value, int):
        raise PydanticCustomError("quorum_type", 'expected bytes or a size such as "25M"')
    return value


Int = Annotated[int, AfterValidator(_bounded(MAX_INT))]
Float = Annotated[float, AfterValidator(_bounded(MAX_FLOAT))]
# An optional bounded number is `NonNegativeFloat | None`: the bound sits before the validator so
# the JSON Schema states it as `minimum` (after it, pydantic can only write its own "ge").
NonNegativeFloat = Annotated[float, Field(ge=0.0), AfterValidator(_bounded(MAX_FLOAT))]
# In the JSON Schema (editors), both a number and the string forms; the loader checks the bounds.
_DURATION_SCHEMA = {"anyOf": [{"type": "number", "minimum": 0}, {"type": "string", "pattern": _DURATION.pattern}]}
_SIZE_SCHEMA = {"anyOf": [{"type": "integer", "minimum": 0}, {"type": "string", "pattern": _SIZE.pattern}]}
Duration = Annotated[
    float, BeforeValidator(_seconds), AfterValidator(_bounded(MAX_DURATION)), WithJsonSchema(_DURATION_SCHEMA)
]
Size = Annotated[int, BeforeValidator(_bytes), AfterValidator(_bounded(MAX_SIZE)), WithJsonSchema(_SIZE_SCHEMA)]


IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def _network(value: Any) -> Any:
    """An address or CIDR; host bits set are an error (a typo more often than not)."""
    if isinstance(value, IPNetwork):
        return value
    if not isinstance(value, str):
        raise PydanticCustomError("quorum_type", 'expected an address or network such as "192.0.2.0/24"')
    try:
        return ipaddress.ip_network(value.strip(), strict=True)
    except ValueError as exc:
        raise ValueError(f'{value!r} is not an address or network ({exc}); write e.g. "192.0.2.0/24"') from None


Network = Annotated[IPNetwork, BeforeValidator(_network, json_schema_input_type=str)]
"""A client address or network (`trusted_networks`, `[signing] networks`)."""


def raise_at(problems: Iterable[tuple[str | tuple[str | int, ...], str]]) -> None:
    """Raise, from a validator, each (key or location, text) as the problem of that key: a
    cross-field check names the key to fix (not its table), and every one is reported, not only the
    first."""
    details = [
        InitErrorDetails(
            type=PydanticCustomError("value_error", text), loc=(key,) if isinstance(key, str) else key, input=None
        )
        for key, text in problems
    ]
    if details:
        raise ValidationError.from_exception_data("Settings", details)


def validate(
    model: type[M], data: Any, path: str, problems: Problems, context: Mapping[str, Any] | None = None
) -> M | None:
    """`model` validated from `data`; None (the problems recorded under `path`) when it is not valid."""
    if not isinstance(data, Mapping):
        problems.error(path or "config", f"expected a table, got {shown(data)}; fix the value or remove the key")
        return None
    try:
        return model.model_validate(dict(data), context=dict(context or {}))
    except ValidationError as exc:
        report(exc, model, path, problems)
        return None


STRICT = ConfigDict(strict=True, allow_inf_nan=False)
"""For a `TypeAdapter` of one value (a per-domain key): the same rules as a table's fields."""


def validate_value(adapter: TypeAdapter[T], value: Any, path: str, problems: Problems) -> T | None:
    """One value checked by `adapter` (built with `config=STRICT`); None, problems recorded at `path`."""
    try:
        return adapter.validate_python(value)
    except ValidationError as exc:
        report(exc, Settings, path, problems)
        return None


def report(exc: ValidationError, model: type[BaseModel], path: str, problems: Problems) -> None:
    for error in exc.errors(include_url=False):
        loc = tuple(error["loc"])
        problems.error(dotted(path, loc), explain(error, model, loc))


_BARE = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")


def dotted(path: str, loc: tuple[Any, ...]) -> str:
    """`engines.clamav.timeout`, `rules[0].when`, `domains."example.com".policy`."""
    out = path
    for part in loc:
        if part == "[key]":  # pydantic's marker after a refused dict key
            continue
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            name = str(part) if _BARE.fullmatch(str(part)) else f'"{part}"'
            out = f"{out}.{name}" if out else name
    return out or "config"


_EXPECTED = {
    "string_type": "a string",
    "int_type": "a whole number",
    "int_from_float": "a whole number",
    "int_parsing": "a whole number",
    "bool_type": "true or false",
    "float_type": "a number",
    "tuple_type": "a list",
    "list_type": "a list",
    "set_type": "a list",
    "frozen_set_type": "a list",
    "dict_type": "a table",
    "mapping_type": "a table",
    "model_type": "a table",
    "model_attributes_type": "a table",
    "dataclass_type": "a table",
}
_BOUNDS = {
    "greater_than_equal": ("ge", "at least"),
    "greater_than": ("gt", "above"),
    "less_than_equal": ("le", "at most"),
    "less_than": ("lt", "below"),
}
_LENGTHS = {
    "string_too_short": ("min_length", "at least", "characters"),
    "string_too_long": ("max_length", "at most", "characters"),
    "too_short": ("min_length", "at least", "items"),
    "too_long": ("max_length", "at most", "items"),
}


def explain(error: Mapping[str, Any], model: type[BaseModel], loc: tuple[Any, ...]) -> str:
    kind, value, ctx = error["type"], error.get("input"), error.get("ctx") or {}
    got = shown(value)
    if kind == "extra_forbidden":
        near = difflib.get_close_matches(str(loc[-1]), known_keys(model, loc[:-1]), n=1)
        hint = f"did you mean {near[0]!r}?" if near else "check the spelling"
        return f"unknown key; {hint} (see README, Configuration)"
    if kind == "missing":
        return "missing; set it (see README, Configuration)"
    if kind in _EXPECTED:
        return f"expected {_EXPECTED[kind]}, got {got}; fix the value or remove the key"
    if kind == "quorum_type":
        return f"{error['msg']}, got {got}; fix the value or remove the key"
    if kind in ("literal_error", "enum"):
        choices = re.findall(r"'((?:[^'\\]|\\.)*)'", str(ctx.get("expected", "")))
        return f"must be one of {' | '.join(choices)}, got {got}"
    if kind == "finite_number":
        return f"must be a finite number, got {got}; nan and inf are not values, write a number"
    if kind in _BOUNDS:
        name, words = _BOUNDS[kind]
        return f"must be {words} {ctx.get(name)}, got {got}"
    if kind in _LENGTHS:
        name, words, unit = _LENGTHS[kind]
        count = ctx.get(name)
        return f"must have {words} {count} {unit[:-1] if count == 1 else unit}, got {got}"
    if kind == "string_pattern_mismatch":
        return f"must match the pattern {ctx.get('pattern')}, got {got}"
    if kind == "quorum":
        return f"{error['msg']}, got {got}"
    message = str(error["msg"])
    return message.removeprefix("Value error, ").removeprefix("Assertion failed, ")


def known_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The keys the (nested) table at `loc` of `model` allows: for an unknown key's "did you mean"."""
    current: Any = model
    for part in loc:
        current = _inner_model(current, part)
        if current is None:
            return []
    return [f.alias or name for name, f in current.model_fields.items()] if _is_model(current) else []


def _is_model(value: Any) -> bool:
    return isinstance(value, type) and issubclass(value, BaseModel)


def _inner_model(current: Any, part: Any) -> Any:
    if _is_model(current):
        if isinstance(part, int) or part not in current.model_fields:
            return None
        return _unwrap(current.model_fields[part].annotation, want_item=False)
    return _unwrap(current, want_item=True)  # a list/dict of models: `part` is the index or key


def _unwrap(annotation: Any, want_item: bool) -> Any:
    while True:
        origin = typing.get_origin(annotation)
        if origin is Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (Union, types.UnionType):
            options = [a for a in typing.get_args(annotation) if a is not type(None)]
            annotation = options[0] if len(options) == 1 else None
        elif want_item and origin in (tuple, list, dict, Mapping):
            args = [a for a in typing.get_args(annotation) if a is not Ellipsis]
            annotation, want_item = (args[-1] if args else None), False
        else:
            return annotation
