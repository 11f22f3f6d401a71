"""The composition root: the one module that knows every part and puts them together.

`quorum.config` is a leaf (it validates the tables Quorum itself owns); engines and features know
the config model but not each other. Here the document is read into one `Config` (core tables,
each engine's table through its adapter, each feature's tables), checked across parts, and turned
into the pipeline's parts (engine runners, stages, the tenant directory, the verdict cache, the
JSON log line): `build_pipeline(config)`. The core (`service`, `pipeline`, `engines`, `config`)
never imports this module or a feature; the command line (`quorum.cli`) hands this module to the
service, which calls `load_config` and `build_pipeline` on reload.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from quorum.config.fields import ConfigError, Problems, Table
from quorum.config.loader import DEFAULT_CONFIG, parse_core, read_toml
from quorum.config.model import Config
from quorum.engines import adapter_class, build_engine
from quorum.engines.settings import parse_engines
from quorum.features import all_features
from quorum.verdict import Category

if TYPE_CHECKING:
    from quorum.pipeline.pipeline import Pipeline
    from quorum.pipeline.runner import EngineRunner, ScanCache
    from quorum.pipeline.stages import Stage

__all__ = [
    "DEFAULT_CONFIG",
    "build_pipeline",
    "build_runners",
    "build_stages",
    "config_schema",
    "load_config",
    "parse_config",
]
CORE_TABLES = ("milter", "policy", "replies", "engines")


def load_config(path: str | Path) -> Config:
    """Load and validate; raises ConfigError listing every problem."""
    return parse_config(read_toml(path), str(path))


def parse_config(data: Mapping[str, Any], path: str | None = None) -> Config:
    """Validate a TOML document; ConfigError listing every problem. Never anything else: a value no
    validator foresaw is a reported error too, so `check-config` and a reload never crash on it."""
    try:
        return _parse_config(data, path)
    except ConfigError:
        raise
    except RecursionError as exc:
        raise ConfigError([f"{path or 'config'}: nested too deeply; flatten the arrays and tables"]) from exc
    except Exception as exc:  # noqa: BLE001 - see the docstring
        raise ConfigError(
            [f"{path or 'config'}: cannot be validated ({type(exc).__name__}: {exc}); check the values it holds"]
        ) from exc


def _parse_config(data: Mapping[str, Any], path: str | None) -> Config:
    problems = Problems()
    root = Table(data, "", problems)
    milter, policy, replies = parse_core(root)
    engines = parse_engines(root.table("engines"), problems)
    features: dict[str, Any] = {}
    for f in all_features():
        try:
            features[f.name] = f.parse(root)
        except Exception as exc:  # noqa: BLE001 - a validator's bug is a reported error, never a crash
            problems.error(f.name, f"cannot be validated ({type(exc).__name__}: {exc}); check its tables")
    declared = {name for f in all_features() for name in _tables(f, problems)}
    root.reject_unknown(allowed_extra=declared)
    config = Config(milter, policy, engines, features, replies, (), path)
    _cross_checks(config, problems)
    if problems.errors:
        raise ConfigError(problems.errors)
    return Config(milter, policy, engines, features, replies, tuple(problems.warnings), path)


def _tables(feature: Any, problems: Problems) -> dict[str, Any]:
    try:
        return feature.tables()  # type: ignore[no-any-return]
    except Exception as exc:  # noqa: BLE001 - an installed feature's module may fail to import
        problems.error(feature.name, f"cannot be loaded ({type(exc).__name__}: {exc}); reinstall or remove it")
        return {}


def config_schema() -> dict[str, Any]:
    """The JSON Schema of the whole file: Quorum's tables, every engine type's table (by `type`)
    and every feature's tables, built-in and installed, from the same models that validate it."""
    from typing import Annotated, Literal, Union

    from pydantic import Field, create_model

    from quorum.config.model import MilterSettings, PolicySettings, ReplyTexts
    from quorum.config.schema import Settings
    from quorum.engines import engine_types

    kinds = [
        create_model(f"Engine_{name}", __base__=adapter_class(name).Options, type=(Literal[name], ...))  # type: ignore[call-overload,arg-type]
        for name in engine_types()
    ]
    engine = Annotated[Union[tuple(kinds)], Field(discriminator="type")] if len(kinds) > 1 else kinds[0]  # noqa: UP007
    fields: dict[str, Any] = {
        "milter": (MilterSettings, None),
        "policy": (PolicySettings, None),
        "replies": (ReplyTexts, None),
        "engines": (dict[str, engine], None),  # type: ignore[valid-type]
    }
    for feature in all_features():
        for name, model in feature.tables().items():
            fields.setdefault(name, (model | None, None))
    root = create_model("QuorumConfig", __base__=Settings, **fields)
    schema: dict[str, Any] = _draft4(root.model_json_schema())
    schema["$schema"] = "http://json-schema.org/draft-04/schema#"
    schema["title"] = "Quorum configuration (quorum.toml)"
    return schema


def _draft4(node: Any) -> Any:
    """pydantic writes JSON Schema 2020-12; taplo (Even Better TOML) reads draft 4: `const` becomes
    a one-value `enum`, numeric exclusive bounds become draft 4's boolean form, `$defs` `definitions`."""
    if isinstance(node, list):
        return [_draft4(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {("definitions" if k == "$defs" else k): _draft4(v) for k, v in node.items() if k != "discriminator"}
    if "const" in out:
        out["enum"] = [out.pop("const")]
    for bound, plain in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if isinstance(out.get(bound), int | float) and not isinstance(out.get(bound), bool):
            out[plain], out[bound] = out[bound], True
    if isinstance(out.get("$ref"), str):
        out["$ref"] = out["$ref"].replace("#/$defs/", "#/definitions/")
    return out


def build_pipeline(config: Config) -> Pipeline:
    """The pipeline for `config`, every part built here."""
    from quorum.pipeline.pipeline import Parts, Pipeline
    from quorum.records.format import json_line
    from quorum.tenants import TenantPolicies
    from quorum.verdictcache.feature import make_cache

    closers = []
    cache_settings = config.feature("verdict_cache")
    cache = make_cache(cache_settings) if cache_settings is not None else None
    if cache is not None:
        closers.append(cache.store.close)
    stages = build_stages(config)
    parts = Parts(build_runners(config, cache), stages, TenantPolicies(config), json_line, closers)
    return Pipeline(config, parts)


def build_runners(config: Config, cache: ScanCache | None = None) -> list[EngineRunner]:
    from quorum.pipeline.runner import EngineRunner

    return [EngineRunner(build_engine(s), cache) for s in config.enabled_engines]


def build_stages(config: Config) -> list[Stage]:
    """Every feature's stages, in registration order (the order their hooks run in)."""
    return [stage for feature in all_features() for stage in feature.build(config)]


def _cross_checks(config: Config, problems: Problems) -> None:
    milter, policy, engines = config.milter, config.policy, config.engines
    for e in engines:
        if not e.enabled:
            continue
        if adapter_class(e.type).category is Category.ANTIVIRUS and milter.max_message_size > e.max_size:
            problems.warn(
                f"engines.{e.name}.max_size",
                f"{e.max_size} is below milter.max_message_size ({milter.max_message_size}); "
                "larger messages are not scanned by this engine (skipped; too large for every antivirus "
                f'engine: on_oversize = "{milter.on_oversize}"). Raise max_size (and the engine\'s own '
                "limit, e.g. clamd StreamMaxLength) or lower max_message_size",
            )
    if milter.on_oversize == "accept":
        problems.warn(
            "milter.on_oversize",
            '"accept" delivers messages over max_message_size (or over every antivirus engine\'s max_size) '
            'unscanned, with a 250 (labelled "unchecked"); use "reject" (552) or "tempfail" (452) unless '
            "every such message is known safe",
        )
    _antivirus_coverage(config, problems)
    spam_voters = [
        e for e in engines if e.enabled and e.mode == "vote" and adapter_class(e.type).category is Category.ANTISPAM
    ]
    if policy.spam_combine == "quorum" and spam_voters and policy.spam_quorum > len(spam_voters):
        problems.error(
            "policy.spam_quorum",
            f"{policy.spam_quorum} exceeds the {len(spam_voters)} voting antispam engine(s); lower it",
        )
    auth = config.feature("auth")
    dkim_max = getattr(getattr(auth, "auth", None), "dkim_max_size", None)
    if auth is not None and auth.auth_enabled and dkim_max is not None and milter.on_oversize == "accept":
        if dkim_max > milter.max_message_size:
            problems.warn(
                "auth.dkim_max_size",
                f"{dkim_max} is above milter.max_message_size ({milter.max_message_size}) with on_oversize = "
                '"accept": messages between the two are stored cut and their DKIM signatures read neutral '
                "(never fail). Lower dkim_max_size to max_message_size or raise max_message_size",
            )


def _antivirus_coverage(config: Config, problems: Problems) -> None:
    """A policy (the global one, a file tenant's) under which no antivirus engine votes labels its
    mail `unchecked`: said at load, so it is a choice and not an accident."""
    from quorum.tenants.effective import FILE, GlobalLayer, merge, no_antivirus_warning

    base = GlobalLayer(config)
    gap = no_antivirus_warning(base.policy, config.engines)
    if gap is not None and config.enabled_engines:  # no engine at all is no accident; one AV short is
        problems.warn("engines", gap)
    tenants = config.feature("tenants")
    for name, entry in getattr(tenants, "domains", {}).items():
        gap = no_antivirus_warning(merge(base, [(FILE, entry)]), config.engines)
        if gap is not None:
            problems.warn(f'domains."{name}"', gap)
