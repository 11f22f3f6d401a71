"""Configuration: the validated model and the helpers that validate it (a leaf package).

Loading a whole file (engines' and features' tables included) is `quorum.assembly.load_config`.
"""

from quorum.config.fields import ConfigError, Problems, Table
from quorum.config.loader import DEFAULT_CONFIG
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
]
