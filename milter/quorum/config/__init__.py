"""Configuration: one TOML file, validated at load with messages that name the key and the fix."""

from quorum.config.fields import ConfigError, Problems, Table
from quorum.config.loader import DEFAULT_CONFIG, load_config, parse_config
from quorum.config.model import Config, EngineSettings, MilterSettings, PolicySettings

__all__ = [
    "DEFAULT_CONFIG",
    "Config",
    "ConfigError",
    "EngineSettings",
    "MilterSettings",
    "PolicySettings",
    "Problems",
    "Table",
    "load_config",
    "parse_config",
]
