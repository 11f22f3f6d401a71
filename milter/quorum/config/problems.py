"""What validation found: every problem at once, each naming its dotted key and the fix."""

from __future__ import annotations

import builtins
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class ConfigError(Exception):
    """Raised by `load_config` with every problem found."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass
class Problems:
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def error(self, key: str, message: str) -> None:
        problem = f"{key}: {message}"
        if problem not in self.errors:  # two readers of one table report its problem once
            self.errors.append(problem)

    def warn(self, key: str, message: str) -> None:
        problem = f"{key}: {message}"
        if problem not in self.warnings:
            self.warnings.append(problem)


def shown(value: Any, limit: builtins.int = 80) -> builtins.str:
    """`repr(value)` cut to `limit` characters, for messages about values of any size."""
    if isinstance(value, builtins.int) and not isinstance(value, builtins.bool) and value.bit_length() > 200:
        return f"a number of about {int(value.bit_length() * 0.30103)} digits"
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def is_dir(path: builtins.str) -> builtins.bool:
    """Whether `path` is a directory; False (not an exception) for a NUL or a too-long name."""
    try:
        return Path(path).is_dir()
    except (OSError, ValueError):
        return False
