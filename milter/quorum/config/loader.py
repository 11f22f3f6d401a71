"""Reading the TOML file and validating the tables Quorum itself owns (`[milter]`, `[policy]`,
`[replies]`). A leaf: it imports nothing but `quorum.config`; `quorum.assembly` adds the engines'
and features' tables and builds the `Config`."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from quorum.config.fields import ConfigError, Table
from quorum.config.model import MilterSettings, PolicySettings, ReplyTexts

DEFAULT_CONFIG = Path(__file__).with_name("default.toml")


def read_toml(path: str | Path) -> dict[str, Any]:
    """The file's TOML document; ConfigError naming the file and the fix when it cannot be read."""
    try:
        return tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read the file: {exc.strerror or exc}"]) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{path}: not UTF-8 text ({exc.reason}); save the file as UTF-8"]) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{path}: TOML syntax error: {exc}"]) from exc
    except RecursionError as exc:
        raise ConfigError([f"{path}: TOML nested too deeply; flatten the arrays or inline tables"]) from exc
    except ValueError as exc:  # e.g. an integer of more than 4300 digits
        raise ConfigError([f"{path}: TOML value cannot be read: {exc}"]) from exc


def parse_core(root: Table) -> tuple[MilterSettings, PolicySettings, ReplyTexts]:
    """`[milter]`, `[policy]` and `[replies]`: the tables Quorum itself owns."""
    milter = root.model("milter", MilterSettings)
    for key, message in milter.warnings():
        root.problems.warn(f"milter.{key}", message)
    return milter, root.model("policy", PolicySettings), root.model("replies", ReplyTexts)
