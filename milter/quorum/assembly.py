"""The composition root: the one module that knows every part and puts them together.

`quorum.config` is a leaf (it validates the tables Quorum itself owns); engines and features know
the config model but not each other. Here the document is read into one `Config` (core tables,
each engine's table through its adapter, each feature's tables), checked across parts, and turned
into the pipeline's parts (engine runners, stages).
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
from quorum.features import FEATURES
from quorum.verdict import Category

if TYPE_CHECKING:
    from quorum.pipeline.runner import EngineRunner
    from quorum.pipeline.stages import Stage
    from quorum.verdictcache.cached import CachedScan

__all__ = ["DEFAULT_CONFIG", "build_runners", "build_stages", "load_config", "parse_config"]


def load_config(path: str | Path) -> Config:
    """Load and validate; raises ConfigError listing every problem."""
    return parse_config(read_toml(path), str(path))


def parse_config(data: Mapping[str, Any], path: str | None = None) -> Config:
    problems = Problems()
    root = Table(data, "", problems)
    milter, policy, replies = parse_core(root)
    engines = parse_engines(root.table("engines"), problems)
    features = {f.name: f.parse(root) for f in FEATURES}
    root.reject_unknown()
    config = Config(milter, policy, engines, features, replies, (), path)
    _cross_checks(config, problems)
    if problems.errors:
        raise ConfigError(problems.errors)
    return Config(milter, policy, engines, features, replies, tuple(problems.warnings), path)


def build_runners(config: Config, cache: CachedScan | None = None) -> list[EngineRunner]:
    from quorum.pipeline.runner import EngineRunner

    return [EngineRunner(build_engine(s), cache) for s in config.enabled_engines]


def build_stages(config: Config) -> list[Stage]:
    """Every feature's stages, in FEATURES order (the order their hooks run in)."""
    return [stage for feature in FEATURES for stage in feature.build(config)]


def _cross_checks(config: Config, problems: Problems) -> None:
    milter, policy, engines = config.milter, config.policy, config.engines
    for e in engines:
        if not e.enabled:
            continue
        if adapter_class(e.type).category is Category.ANTIVIRUS and milter.max_message_size > e.max_size:
            problems.warn(
                f"engines.{e.name}.max_size",
                f"{e.max_size} is below milter.max_message_size ({milter.max_message_size}); "
                "larger messages pass this engine unscanned (skipped). Raise max_size (and the engine's own "
                "limit, e.g. clamd StreamMaxLength) or lower max_message_size",
            )
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
