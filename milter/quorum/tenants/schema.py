"""The `[domains."d"]` table: one schema for the config file and for Redis records.

A parsed table is a `DomainEntry`: the keys it sets, flattened to dotted names (`policy.on_spam`,
`engines.clamav.weight`, `replies.virus`, ...), so merging layers and telling where each value
came from are plain dict operations. Keys not set are absent: they keep the lower layer's value.

`engines` has two forms, because TOML cannot make one key both a list and a table:
`engines = ["clamav", "rspamd"]` (exactly these engines scan this domain's mail), or
`[domains."d".engines.NAME]` tables with `threshold`, `weight`, `mode` and `enabled` (switch one
engine off or on for the domain, keeping the others as the layer below has them).
"""

from __future__ import annotations

import re
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from quorum.config import model
from quorum.config.fields import Problems, Table
from quorum.config.model import PolicySettings
from quorum.pipeline.replies import PLACEHOLDERS, ReplyTexts
from quorum.tenants.extensions import EXTENSIONS
from quorum.tenants.names import WILDCARD, DomainNameError, normalise_pattern

DMARC_ENFORCE = ("off", "quarantine", "reject")
ENGINE_KEYS = ("enabled", "mode", "weight", "threshold")
MAX_REPLY_TEXT = 400  # an SMTP reply line is at most 512 octets with code and enhanced code
POLICY_KEYS = tuple(PolicySettings.model_fields)
REPLY_FIELDS = dict(ReplyTexts.model_fields)
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class EngineInfo:
    """What the schema needs to know about a configured engine."""

    enabled: bool
    antispam: bool
    mode: str = "vote"


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
        from quorum.engines import adapter_class
        from quorum.verdict import Category

        engines = {
            e.name: EngineInfo(e.enabled, adapter_class(e.type).category is Category.ANTISPAM, e.mode)
            for e in config.engines
        }
        auth = config.feature("auth")
        return cls(
            engines=engines,
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
    _engines(t, ctx, values)
    if "policy" in t.data:
        pt = t.table("policy")
        parsed = pt.as_model(PolicySettings)  # the [policy] model itself: same keys, bounds, messages
        values.update({f"policy.{k}": getattr(parsed, k) for k in pt.data if k in POLICY_KEYS})
    if "dmarc_enforce" in t.data:
        values["dmarc_enforce"] = t.choice("dmarc_enforce", "off", DMARC_ENFORCE)
        if values["dmarc_enforce"] != "off" and not ctx.auth_enabled:
            t.problems.warn(t.key("dmarc_enforce"), "DMARC is not evaluated ([auth] is off); enable [auth] for it")
    if "dnsbl" in t.data:
        values["dnsbl"] = t.bool("dnsbl", True)
        if values["dnsbl"] and not ctx.dnsbl_lists:
            t.problems.warn(t.key("dnsbl"), "no [[dnsbl]] list is configured: nothing is checked")
    if "bypass" in t.data:
        values["bypass"] = t.bool("bypass", False)
    if "replies" in t.data:
        _replies(t.table("replies"), values)
    if "rules" in t.data:
        values["rules"] = parse_rules(t.raw("rules"), t)
    for key, ext in EXTENSIONS.items():
        if key in t.data:
            values[key] = ext.parse(t, key)
    t.reject_unknown()
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
        _reject_nulls(data, path, problems)
        entry = parse_domain_table(Table(data, path, problems), name, ctx)
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


def _reject_nulls(data: Any, path: str, problems: Problems) -> None:
    """JSON records may hold null, which TOML has not: refuse it rather than read it as "unset"."""
    if isinstance(data, Mapping):
        for k, v in data.items():
            if v is None:
                problems.error(f"{path}.{k}", "null is not a value; remove the key to keep the default")
            else:
                _reject_nulls(v, f"{path}.{k}", problems)
    elif isinstance(data, list):
        for i, v in enumerate(data):
            _reject_nulls(v, f"{path}[{i}]", problems)


def parse_domains(t: Table, ctx: SchemaContext) -> dict[str, DomainEntry]:
    """`[domains]` of the config file: entries by normalised pattern."""
    out: dict[str, DomainEntry] = {}
    for raw_name in t.data:
        path = domain_path(raw_name)
        value = t.raw(raw_name)
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
    raw = t.raw("engines")
    key = t.key("engines")
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
    et = t.table("engines")
    for name in et.data:
        nt = et.table(name)
        if name not in ctx.engines:
            t.problems.error(nt.path, f"unknown engine; configured engines: {known}")
            continue
        if "enabled" in nt.data:
            on = nt.bool("enabled", True)
            if on and not ctx.engines[name].enabled:
                t.problems.error(nt.key("enabled"), f"engine {name!r} is disabled in [engines.{name}]; enable it there")
            values[f"engines.{name}.enabled"] = on
        if "mode" in nt.data:
            values[f"engines.{name}.mode"] = nt.choice("mode", "vote", typing.get_args(model.EngineMode))
        if "weight" in nt.data:
            values[f"engines.{name}.weight"] = nt.float("weight", 1.0, minimum=0.0)
        if "threshold" in nt.data:
            values[f"engines.{name}.threshold"] = nt.float("threshold", 0.0, minimum=0.0)
        nt.reject_unknown()


def _replies(t: Table, values: dict[str, Any]) -> None:
    for name, f in REPLY_FIELDS.items():
        if name not in t.data:
            continue
        if f.annotation in (bool, "bool"):
            values[f"replies.{name}"] = t.bool(name, False)
            continue
        text = t.str(name, "")
        if not isinstance(t.data[name], str):
            continue
        key = t.key(name)
        if not text.strip():
            t.problems.error(key, "empty; write the text the client is told, or remove the key for the default")
        elif len(text) > MAX_REPLY_TEXT:
            t.problems.error(key, f"{len(text)} characters; keep reply texts under {MAX_REPLY_TEXT}")
        elif _CONTROL.search(text):
            t.problems.error(key, "contains control characters (line breaks, tabs); write one plain line")
        else:
            allowed = PLACEHOLDERS.get(name, ())
            for placeholder in _PLACEHOLDER.findall(text):
                if placeholder not in allowed:
                    hint = ", ".join("{" + a + "}" for a in allowed) or "none"
                    t.problems.error(key, f"unknown placeholder {{{placeholder}}}; available here: {hint}")
                    break
            else:
                values[f"replies.{name}"] = text
    t.reject_unknown()
    disclose = values.get("replies.disclose_virus_name", False)
    if not disclose and "{name}" in values.get("replies.virus", ""):
        t.problems.error(
            t.key("virus"),
            "{name} discloses the virus name; set disclose_virus_name = true or remove {name}",
        )


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


def parse_rules(value: Any, table: Table) -> tuple[Any, ...]:
    """`[[domains."d".rules]]`: the same parser as the global `[[rules]]` (quorum.rules)."""
    from quorum.rules import parse_rules as rules_parser

    return tuple(rules_parser(value, table.key("rules"), table.problems))
