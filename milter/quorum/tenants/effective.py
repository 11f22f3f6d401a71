"""The effective policy of one recipient domain: global values, then the file's table, then Redis's.

Merging is per key (`policy.on_spam` from the file, `replies.spam` from Redis, the rest global);
`rules` and extension values are replaced whole by a higher layer (an extension may merge).
The fingerprint hashes the canonical effective values only (never the domain or where values came
from), so domains whose policies are the same share one SMTP transaction.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from quorum.config.model import EngineSettings, PolicySettings
from quorum.pipeline.replies import ReplyTexts
from quorum.tenants.extensions import EXTENSIONS
from quorum.tenants.schema import POLICY_KEYS, REPLY_FIELDS, DomainEntry, SchemaContext

if TYPE_CHECKING:
    from quorum.pipeline.transaction import Transaction

GLOBAL, FILE, REDIS = "global", "file", "redis"
_SCALARS = (bool, int, float, str)
ENGINE_OVERRIDES = ("mode", "weight", "threshold")


@dataclass(frozen=True)
class EngineOverride:
    """A domain's `[domains."d".engines.NAME]` values; None keeps the engine's own setting."""

    mode: str | None = None
    weight: float | None = None
    threshold: float | None = None

    def apply(self, settings: EngineSettings) -> EngineSettings:
        changes = {k: getattr(self, k) for k in ENGINE_OVERRIDES if getattr(self, k) is not None}
        return settings.model_copy(update=changes) if changes else settings


class Provenance(Mapping[str, str]):
    """Dotted key -> "global" | "file" | "redis": the few keys a layer set, over a shared key set."""

    __slots__ = ("_keys", "_set")

    def __init__(self, keys: frozenset[str], layer_set: Mapping[str, str]) -> None:
        self._keys = keys
        self._set = layer_set

    def __getitem__(self, key: str) -> str:
        if key not in self._keys:
            raise KeyError(key)
        return self._set.get(key, GLOBAL)

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def __repr__(self) -> str:
        return f"Provenance({dict(self._set)!r}, others global)"

    @property
    def pattern(self) -> Mapping[str, str]:
        """The keys not from the global config, and their source (hashable, shared)."""
        return self._set


_INTERNED: dict[Any, Any] = {}


def _intern(value: Any) -> Any:
    """One shared object for equal hashable values (provenance patterns, key sets): a bounded table."""
    shared = _INTERNED.get(value)
    if shared is None:
        if len(_INTERNED) >= 4096:
            _INTERNED.clear()
        _INTERNED[value] = shared = value
    return shared


_EMPTY: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class EffectivePolicy:
    """What applies to one recipient. `provenance` maps dotted keys to "global" | "file" | "redis"."""

    domain: str | None  # the most specific tenant entry that applied ("a.example.com", "*.example.com"), or None
    sources: tuple[str, ...]  # e.g. ("file:*.example.com", "redis:a.example.com"); () for the global policy
    engines: tuple[str, ...] | None  # the engines that scan this mail; None = every enabled engine
    policy: PolicySettings
    engine_overrides: Mapping[str, EngineOverride]
    dmarc_enforce: str
    dnsbl: bool
    replies: ReplyTexts
    rules: tuple[Any, ...]  # the domain's rules (global [[rules]] apply to every transaction besides)
    bypass: bool
    extensions: Mapping[str, Any]
    provenance: Mapping[str, str]
    fingerprint: str
    base: Mapping[str, Any] = field(repr=False, default_factory=lambda: _EMPTY)  # the global values (shared)
    overlay: Mapping[str, Any] = field(repr=False, default_factory=lambda: _EMPTY)  # what the layers set (small)

    @property
    def values(self) -> dict[str, Any]:
        """Every effective value by dotted key (built on demand: for `quorum domain show`, not per message)."""
        used = set(self.engines if self.engines is not None else self.base.get("engines", ()))
        out = {k: v for k, v in self.base.items() if not k.startswith("engines.") or k.split(".")[1] in used}
        out.update(self.overlay)
        return out

    def __hash__(self) -> int:
        return hash((self.domain, self.fingerprint))

    def uses_engine(self, name: str) -> bool:
        return self.engines is None or name in self.engines

    def engine_settings(self, configured: Iterable[EngineSettings]) -> dict[str, EngineSettings]:
        """The enabled engines this policy uses, by name, with the domain's overrides applied."""
        out: dict[str, EngineSettings] = {}
        for e in configured:
            if e.enabled and self.uses_engine(e.name):
                override = self.engine_overrides.get(e.name)
                out[e.name] = override.apply(e) if override is not None else e
        return out

    def same_policy(self, other: EffectivePolicy) -> bool:
        return self.fingerprint == other.fingerprint

    def explain(self) -> list[dict[str, Any]]:
        """[{key, value, source}] in a stable order, for `quorum domain show`."""
        return [
            {"key": key, "value": to_plain(value), "source": self.provenance.get(key, GLOBAL)}
            for key, value in self.values.items()
        ]


class GlobalLayer:
    """The global values every domain starts from, flattened like a `DomainEntry`."""

    def __init__(self, config: Any, ctx: SchemaContext | None = None, replies: ReplyTexts | None = None) -> None:
        self.ctx = ctx or SchemaContext.from_config(config)
        self.engines: tuple[EngineSettings, ...] = tuple(e for e in config.engines if e.enabled)
        auth = config.feature("auth")
        replies = replies or getattr(config, "replies", None) or ReplyTexts()
        values: dict[str, Any] = {"engines": tuple(e.name for e in self.engines)}
        values.update({f"policy.{k}": getattr(config.policy, k) for k in POLICY_KEYS})
        for e in self.engines:
            values.update({f"engines.{e.name}.{k}": getattr(e, k) for k in ENGINE_OVERRIDES})
        dmarc_on = auth is not None and auth.auth_enabled
        values["dmarc_enforce"] = auth.auth.dmarc_enforce if dmarc_on else "off"
        values["dnsbl"] = bool(auth is not None and auth.dnsbl)
        values.update({f"replies.{k}": getattr(replies, k) for k in REPLY_FIELDS})
        values["rules"] = ()
        values["bypass"] = False
        for key, ext in EXTENSIONS.items():
            values[key] = ext.global_value(config)
        self.values: Mapping[str, Any] = MappingProxyType(values)
        self.policy = merge(self, ())


def merge(base: GlobalLayer, layers: Sequence[tuple[str, DomainEntry]]) -> EffectivePolicy:
    """Apply `layers` ((FILE|REDIS, entry), lowest first) over the global values."""
    values = dict(base.values)
    provenance = dict.fromkeys(values, GLOBAL)
    all_engines = list(values["engines"])
    engine_set: list[str] | None = None
    for source, entry in layers:
        listed, toggles = entry.engine_layer()
        if listed is not None:
            engine_set = list(listed)
        if toggles:
            current = engine_set if engine_set is not None else list(all_engines)
            engine_set = [n for n in current if toggles.get(n, True)]
            engine_set += [n for n, on in toggles.items() if on and n not in engine_set and n in all_engines]
        if listed is not None or toggles:
            provenance["engines"] = source
        for key, value in entry.values.items():
            if key == "engines" or (key.startswith("engines.") and key.endswith(".enabled")):
                continue
            if key not in values and key.startswith("engines."):
                continue  # an engine disabled globally since the record was written
            ext = EXTENSIONS.get(key)
            values[key] = ext.merge(values.get(key), value) if ext is not None and key in values else value
            provenance[key] = source
        if "replies.disclose_virus_name" not in entry.values and provenance["replies.disclose_virus_name"] == GLOBAL:
            values["replies.disclose_virus_name"] = False  # a tenant's refusals name no virus unless it says so
            provenance["replies.disclose_virus_name"] = source
    if engine_set is not None:
        in_use = set(engine_set)
        values["engines"] = tuple(n for n in all_engines if n in in_use)  # config order: canonical
    used = set(values["engines"])
    for key in [k for k in values if k.startswith("engines.") and k.split(".")[1] not in used]:
        del values[key]
        provenance.pop(key, None)
    overrides = {}
    for name in values["engines"]:
        changed = {
            k: values[f"engines.{name}.{k}"] for k in ENGINE_OVERRIDES if provenance[f"engines.{name}.{k}"] != GLOBAL
        }
        if changed:
            overrides[name] = EngineOverride(**changed)
    domain = layers[-1][1].name if layers else None
    layer_set = {k: v for k, v in provenance.items() if v != GLOBAL}
    overlay = {k: values[k] for k in layer_set}
    if engine_set is not None:
        overlay["engines"] = values["engines"]
    return EffectivePolicy(
        domain=domain,
        sources=tuple(f"{source}:{entry.name}" for source, entry in layers),
        engines=values["engines"] if engine_set is not None else None,
        policy=PolicySettings(**{k: values[f"policy.{k}"] for k in POLICY_KEYS}),
        engine_overrides=MappingProxyType(overrides) if overrides else _EMPTY,
        dmarc_enforce=values["dmarc_enforce"],
        dnsbl=values["dnsbl"],
        replies=ReplyTexts(**{k: values[f"replies.{k}"] for k in REPLY_FIELDS}),
        rules=tuple(values["rules"]),
        bypass=values["bypass"],
        extensions=MappingProxyType({k: values[k] for k in EXTENSIONS}),
        provenance=Provenance(_intern(frozenset(provenance)), _intern(_Frozen(layer_set))),
        fingerprint=fingerprint(values),
        base=base.values,
        overlay=overlay,
    )


class _Frozen(dict[str, str]):
    """A hashable dict, to intern provenance patterns (never mutated once built)."""

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(frozenset(self.items()))


def fingerprint(values: Mapping[str, Any]) -> str:
    """A stable hash of canonical effective values (128 bits, hex)."""
    plain = [(k, v if v is None or isinstance(v, _SCALARS) else to_plain(v)) for k, v in sorted(values.items())]
    text = json.dumps(plain, separators=(",", ":"), ensure_ascii=False)
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def to_plain(value: Any) -> Any:
    """JSON-ready canonical form: dataclasses and mappings as sorted dicts, sequences as lists."""
    if value is None or isinstance(value, _SCALARS):
        return value
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    if isinstance(value, (dict, MappingProxyType, Mapping)):
        return {str(k): to_plain(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (set, frozenset)):
        return sorted((to_plain(v) for v in value), key=repr)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        plain = {f.name: to_plain(getattr(value, f.name)) for f in dataclasses.fields(value) if f.compare}
        return {"__type__": type(value).__name__, **plain}
    if isinstance(value, BaseModel):
        return {"__type__": type(value).__name__, **{k: to_plain(getattr(value, k)) for k in type(value).model_fields}}
    pattern = getattr(value, "pattern", None)  # a compiled regular expression
    if isinstance(pattern, (str, bytes)):
        return {"__pattern__": pattern if isinstance(pattern, str) else pattern.decode("latin-1")}
    return repr(value)


def voting_antivirus(effective: EffectivePolicy, configured: Iterable[EngineSettings]) -> list[str]:
    """The antivirus engines that vote under `effective`; empty means its mail is never checked for
    viruses (and is labelled `unchecked`, never `clean`: see quorum.pipeline.policy)."""
    from quorum.engines import adapter_class
    from quorum.verdict import Category

    names = []
    for name, s in effective.engine_settings(configured).items():
        try:
            category = adapter_class(s.type).category
        except LookupError:
            continue  # reported by the engine table's own validation
        if s.mode == "vote" and category is Category.ANTIVIRUS:
            names.append(name)
    return names


def no_antivirus_warning(effective: EffectivePolicy, configured: Iterable[EngineSettings]) -> str | None:
    """check-config's and `quorum domain set`'s warning for a policy without a voting antivirus engine."""
    if effective.bypass or voting_antivirus(effective, configured):
        return None
    return (
        "no antivirus engine votes under this policy: its mail is delivered as X-Quorum-Verdict: unchecked; "
        "add an antivirus engine (e.g. clamav) to its engines, enable it or set its mode to vote"
    )


def effective(txn: Transaction) -> EffectivePolicy | None:
    """The transaction's tenant policy as this feature's own type (the pipeline knows it only as a
    `TenantPolicy`): for the features that read their own per-domain values (DMARC enforcement,
    DNSBL on/off, a domain's rules)."""
    tenant = txn.tenant
    return tenant if isinstance(tenant, EffectivePolicy) else None
