"""The `[domains."d"]` table: one schema for the config file and for Redis records.

A parsed table is a `DomainEntry`: the keys it sets, flattened to dotted names (`policy.on_spam`,
`engines.clamav.weight`, `replies.virus`, ...), so merging layers and telling where each value
came from are plain dict operations. Keys not set are absent: they keep the lower layer's value.

The models are the global ones: a domain's `policy` is checked by `PolicySettings`, its `replies`
by `ReplyTexts`, its per-engine overrides by `EngineTable`'s own fields (`EngineOverrides`), so
every bound is written once. `engines` has two forms, because TOML cannot make one key both a list
and a table: `engines = ["clamav", "rspamd"]` (exactly these engines scan this domain's mail), or
`[domains."d".engines.NAME]` tables with `threshold`, `weight`, `mode` and `enabled` (switch one
engine off or on for the domain, keeping the others as the layer below has them).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

from pydantic import Field, SkipValidation, create_model, model_validator

from quorum.config.fields import Problems, Table
from quorum.config.model import EngineTable, PolicySettings, ReplyTexts
from quorum.config.schema import Settings, raise_at, validate
from quorum.rules import Rule, parse_rules
from quorum.tenants.extensions import EXTENSIONS
from quorum.tenants.names import WILDCARD, DomainNameError, normalise_pattern

ENGINE_KEYS = ("enabled", "mode", "weight", "threshold")
POLICY_KEYS = tuple(PolicySettings.model_fields)
REPLY_FIELDS = dict(ReplyTexts.model_fields)
FLAGS = ("dmarc_enforce", "dnsbl", "bypass")

# `[domains."d".engines.NAME]`: the fields of `[engines.NAME]` a domain may change, as EngineTable has them.
_OVERRIDES: dict[str, Any] = {
    k: (EngineTable.model_fields[k].annotation, EngineTable.model_fields[k]) for k in ENGINE_KEYS
}
EngineOverrides = create_model("EngineOverrides", __base__=Settings, **_OVERRIDES)


class DomainTable(Settings):
    """`[domains."d"]` as written. `engines` and `rules` are checked by `parse_domain_table` (against
    the configured engines, by the rules parser): here they are described, for `quorum schema`."""

    engines: SkipValidation[tuple[str, ...] | dict[str, EngineOverrides]] = ()
    policy: PolicySettings = Field(default_factory=PolicySettings)
    replies: ReplyTexts = Field(default_factory=ReplyTexts)
    dmarc_enforce: Literal["off", "quarantine", "reject"] = "off"
    dnsbl: bool = True
    bypass: bool = False
    rules: SkipValidation[tuple[Rule, ...]] = ()

    @model_validator(mode="after")
    def _virus_name(self) -> DomainTable:
        """A tenant's refusals name no virus unless it says so (quorum.tenants.effective)."""
        r = self.replies
        if "{name}" in r.virus and not ("disclose_virus_name" in r.model_fields_set and r.disclose_virus_name):
            text = "{name} discloses the virus name; set disclose_virus_name = true or remove {name}"
            raise_at([(("replies", "virus"), text)])
        return self


@functools.cache
def _with_extensions(keys: tuple[str, ...]) -> type[DomainTable]:
    fields: dict[str, Any] = {k: (Any, None) for k in keys}
    return create_model("DomainTable", __base__=DomainTable, **fields)


def domain_table() -> type[DomainTable]:
    """DomainTable with the keys other features add (`notify`, ...: quorum.tenants.extensions), which
    their own `parse_domain` checks."""
    return _with_extensions(tuple(EXTENSIONS))


@dataclass(frozen=True)
class EngineInfo:
    """What the schema needs to know about a configured engine."""

    enabled: bool
    antispam: bool
    mode: str = "vote"

    @classmethod
    def of(cls, engines: Any) -> dict[str, EngineInfo]:
        from quorum.engines import adapter_class
        from quorum.verdict import Category

        return {e.name: cls(e.enabled, adapter_class(e.type).category is Category.ANTISPAM, e.mode) for e in engines}


@dataclass(frozen=True)
class SchemaContext:
    """The global config a domain table is checked against."""

    engines: Mapping[str, EngineInfo] = field(default_factory=dict)
    policy: PolicySettings = field(default_factory=PolicySettings)
    dnsbl_lists: bool = False
    auth_enabled: bool = False

    @property
    def enabled_engines(self) -> tuple[str, ...]:
        return tuple(name for name, info in self.engines.items() if info.enabled)

    @classmethod
    def from_config(cls, config: Any) -> SchemaContext:
        auth = config.feature("auth")
        return cls(
            engines=EngineInfo.of(config.engines),
            policy=config.policy,
            dnsbl_lists=bool(auth is not None and auth.dnsbl),
            auth_enabled=bool(auth is not None and auth.auth_enabled),
        )


@dataclass(frozen=True)
class DomainEntry:
    """One layer's `[domains."d"]` table: `values` maps dotted keys to the values it sets."""

    name: str  # normalised: "example.com" or "*.example.com"
    values: Mapping[str, Any]

    def engine_layer(self) -> tuple[tuple[str, ...] | None, dict[str, bool]]:
        """(the list form, or None; per-engine `enabled` switches of the table form)."""
        toggles = {
            k.split(".")[1]: bool(v)
            for k, v in self.values.items()
            if k.startswith("engines.") and k.endswith(".enabled")
        }
        return self.values.get("engines"), toggles


def domain_path(name: str) -> str:
    return f'domains."{name}"'


def parse_domain_table(t: Table, name: str, ctx: SchemaContext) -> DomainEntry:
    """Validate one domain table (problems go to `t.problems`, keys named from `t.path`)."""
    values: dict[str, Any] = {}
    table = validate(domain_table(), t.data, t.path, t.problems)
    if table is not None:
        for part in ("policy", "replies"):
            sub = getattr(table, part)
            values.update({f"{part}.{k}": getattr(sub, k) for k in sub.model_fields_set})
        values.update({k: getattr(table, k) for k in FLAGS if k in table.model_fields_set})
    if values.get("dmarc_enforce", "off") != "off" and not ctx.auth_enabled:
        t.problems.warn(t.key("dmarc_enforce"), "DMARC is not evaluated ([auth] is off); enable [auth] for it")
    if values.get("dnsbl") and not ctx.dnsbl_lists:
        t.problems.warn(t.key("dnsbl"), "no [[dnsbl]] list is configured: nothing is checked")
    _engines(t, ctx, values)
    if "rules" in t.data:  # the same parser as the global [[rules]] (quorum.rules)
        values["rules"] = tuple(parse_rules(t.data["rules"], t.key("rules"), t.problems))
    for key, ext in EXTENSIONS.items():
        if key in t.data:
            values[key] = ext.parse(t, key)
    entry = DomainEntry(name, MappingProxyType(values))
    _check_quorum(t, entry, ctx)
    return entry


def parse_fragment(data: Any, domain: str, ctx: SchemaContext) -> tuple[DomainEntry | None, Problems]:
    """A Redis record or a `quorum domain set` file: the table of one exact domain.

    `[domains."d"]` around the keys is accepted too. Returns (None, problems) when invalid.
    """
    problems = Problems()
    try:
        name = normalise_pattern(domain)
    except DomainNameError as exc:
        problems.error(domain_path(domain), f"{exc}; use the bare domain, e.g. example.com")
        return None, problems
    path = domain_path(name)
    if name.startswith(WILDCARD):
        problems.error(
            path,
            "wildcards are matched in the config file only (each recipient domain costs at most one Redis "
            'lookup); put [domains."*.example.com"] in the file, or store each subdomain',
        )
        return None, problems
    data = unwrap(data, name)
    if not isinstance(data, Mapping):
        problems.error(path, "expected a table of domain keys (engines, policy, replies, ...)")
        return None, problems
    try:
        entry = parse_domain_table(Table(_without_nulls(data, path, problems), path, problems), name, ctx)
    except RecursionError:
        problems.error(path, "nested too deeply; a domain record is a table of plain keys")
        return None, problems
    except Exception as exc:  # noqa: BLE001 - a record from Redis must never crash the reader
        problems.error(path, f"cannot be validated ({type(exc).__name__}: {exc}); rewrite it with quorum domain set")
        return None, problems
    return (None if problems.errors else entry), problems


def unwrap(data: Any, name: str) -> Any:
    """`{"domains": {"example.com": {...}}}` -> `{...}` when it names `name`; anything else as it is."""
    if isinstance(data, Mapping) and set(data) == {"domains"} and isinstance(data["domains"], Mapping):
        inner = data["domains"]
        if len(inner) == 1 and _same_domain(next(iter(inner)), name):
            return next(iter(inner.values()))
    return data


def _same_domain(a: str, b: str) -> bool:
    try:
        return normalise_pattern(a) == b
    except DomainNameError:
        return False


def _without_nulls(data: Any, path: str, problems: Problems) -> Any:
    """JSON records may hold null, which TOML has not: refused (once, here) rather than read as "unset";
    the rest is checked as usual."""
    if isinstance(data, Mapping):
        for k in [k for k, v in data.items() if v is None]:
            problems.error(f"{path}.{k}", "null is not a value; remove the key to keep the default")
        return {k: _without_nulls(v, f"{path}.{k}", problems) for k, v in data.items() if v is not None}
    if isinstance(data, list):
        for i in [i for i, v in enumerate(data) if v is None]:
            problems.error(f"{path}[{i}]", "null is not a value; remove the item")
        return [_without_nulls(v, f"{path}[{i}]", problems) for i, v in enumerate(data)]
    return data


def parse_domains(t: Table, ctx: SchemaContext) -> dict[str, DomainEntry]:
    """`[domains]` of the config file: entries by normalised pattern."""
    out: dict[str, DomainEntry] = {}
    for raw_name, value in t.data.items():
        path = domain_path(raw_name)
        try:
            name = normalise_pattern(raw_name)
        except DomainNameError as exc:
            t.problems.error(path, f'{exc}; use a domain such as "example.com" or "*.example.com"')
            continue
        if not isinstance(value, Mapping):
            t.problems.error(path, f"expected a table ([{path}] with engines, policy, ...), got {value!r}")
            continue
        if name in out:
            t.problems.error(path, f"{name} is configured twice (names are case-insensitive, IDNA-normalised); merge")
            continue
        out[name] = parse_domain_table(Table(value, path, t.problems), name, ctx)
    return out


def _engines(t: Table, ctx: SchemaContext, values: dict[str, Any]) -> None:
    if "engines" not in t.data:
        return
    raw, key = t.data["engines"], t.key("engines")
    known = ", ".join(ctx.engines) or "none"
    if isinstance(raw, list):
        if not all(isinstance(n, str) for n in raw):
            t.problems.error(key, f'expected a list of engine names such as ["clamav"], got {raw!r}')
            return
        names: list[str] = []
        for n in raw:
            if n not in ctx.engines:
                t.problems.error(key, f"unknown engine {n!r}; configured engines: {known}")
            elif not ctx.engines[n].enabled:
                t.problems.error(key, f"engine {n!r} is disabled in [engines.{n}]; enable it there or remove it here")
            elif n in names:
                t.problems.error(key, f"{n!r} is listed twice; keep one")
            else:
                names.append(n)
        values["engines"] = tuple(names)
        return
    if not isinstance(raw, Mapping):
        t.problems.error(key, f"expected a list of engine names or [{key}.NAME] tables, got {raw!r}")
        return
    for name, table in raw.items():
        path = f"{key}.{name}"
        if name not in ctx.engines:
            t.problems.error(path, f"unknown engine; configured engines: {known}")
            continue
        found = validate(EngineOverrides, table, path, t.problems)
        if found is None:
            continue
        changed = {k: getattr(found, k) for k in found.model_fields_set}
        if changed.get("enabled") and not ctx.engines[name].enabled:
            t.problems.error(f"{path}.enabled", f"engine {name!r} is disabled in [engines.{name}]; enable it there")
        values.update({f"engines.{name}.{k}": v for k, v in changed.items()})


def _check_quorum(t: Table, entry: DomainEntry, ctx: SchemaContext) -> None:
    """`spam_combine = "quorum"` needing more voting antispam engines than this domain uses."""
    v = entry.values
    combine = v.get("policy.spam_combine", ctx.policy.spam_combine)
    needed = v.get("policy.spam_quorum", ctx.policy.spam_quorum)
    if combine != "quorum" or not any(k == "engines" or k.startswith(("engines.", "policy.")) for k in v):
        return
    listed, toggles = entry.engine_layer()
    names = list(listed if listed is not None else ctx.enabled_engines)
    names = [n for n in names if toggles.get(n, True)] + [n for n, on in toggles.items() if on and n not in names]
    voters = [
        n
        for n in names
        if n in ctx.engines and ctx.engines[n].antispam and v.get(f"engines.{n}.mode", ctx.engines[n].mode) == "vote"
    ]
    if voters and needed > len(voters):
        t.problems.error(
            t.key("policy.spam_quorum"),
            f"{needed} exceeds the {len(voters)} voting antispam engine(s) this domain uses; lower it",
        )
