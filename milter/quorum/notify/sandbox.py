"""Jinja2's immutable sandbox for notice templates: no Python internals, no file access, bounded output.

The sandbox blocks attribute access to internals (`__class__`, `__globals__`, `mro`, ...), mutation
of lists and dicts, and caps `range()` at 100000 items; undefined names fail (StrictUndefined) so a
typo shows up as an error and the package default is used instead. It does not bound CPU or memory:
operator templates are therefore rendered in a child process with limits (see isolate.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from jinja2 import StrictUndefined, Template
from jinja2.sandbox import ImmutableSandboxedEnvironment


class RenderError(Exception):
    """A template could not be rendered safely; the message says why."""


def environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(
        autoescape=False,  # text/plain: nothing to escape
        undefined=StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        cache_size=0,
    )
    for name in ("lipsum", "cycler", "joiner", "namespace"):  # not needed for notices; namespace allows mutation
        env.globals.pop(name, None)
    return env


def render_source(source: str | Template, variables: Mapping[str, Any], max_size: int) -> str:
    """Render `source` (or a template compiled by `environment()`); RenderError for any failure,
    including output over `max_size` characters."""
    try:
        template = environment().from_string(source) if isinstance(source, str) else source
        parts: list[str] = []
        size = 0
        for chunk in template.generate(**variables):
            size += len(chunk)
            if size > max_size:
                raise RenderError(f"output exceeds {max_size} characters")
            parts.append(chunk)
    except RenderError:
        raise
    except RecursionError as exc:
        raise RenderError("template nests too deeply") from exc
    except MemoryError as exc:
        raise RenderError("template needs too much memory") from exc
    except Exception as exc:  # TemplateSyntaxError, UndefinedError, SecurityError, OverflowError, TypeError, ...
        raise RenderError(f"{type(exc).__name__}: {exc}") from exc
    return "".join(parts)
