"""Render an operator's template in a short-lived child process with CPU, memory and wall-time limits.

Jinja2's sandbox keeps a template away from Python internals but cannot stop nested loops or huge
strings; a child process can be killed. fork+exec (subprocess) is safe from the milter's threads.
Cost: one Python start (about 50 ms) per notice that uses a custom template; package defaults are
rendered in process.
"""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from quorum.notify.sandbox import RenderError

CHILD = Path(__file__).with_name("child.py")
CHILD_MEMORY = 512 << 20  # address space of the child; Python and Jinja2 need about 40 MiB


def render_isolated(source: str, variables: Mapping[str, Any], max_size: int, timeout: float) -> str:
    """The rendered text; RenderError on any template error, limit or child failure."""
    if not sys.executable:
        raise RenderError("no Python interpreter to run the render child")
    request = json.dumps({"source": source, "variables": dict(variables), "max_size": max_size}).encode()
    argv = [sys.executable, "-I", str(CHILD), str(math.ceil(timeout)), str(CHILD_MEMORY)]
    try:
        proc = subprocess.run(argv, input=request, capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise RenderError(f"rendering took longer than {timeout:g}s") from exc
    except OSError as exc:
        raise RenderError(f"cannot start the render child: {exc}") from exc
    if proc.returncode in (-signal.SIGXCPU, -signal.SIGKILL):  # its CPU limit (RLIMIT_CPU) ended it first
        raise RenderError(f"rendering took longer than {timeout:g}s of CPU")
    if proc.returncode != 0:
        tail = proc.stderr.decode("utf-8", "replace").strip().splitlines()[-1:]
        raise RenderError(f"render child exited with {proc.returncode}: {' '.join(tail) or 'no message'}")
    try:
        answer = json.loads(proc.stdout)
    except ValueError as exc:
        raise RenderError("render child gave no answer") from exc
    if not answer.get("ok"):
        raise RenderError(str(answer.get("error", "unknown error")))
    text = str(answer.get("text", ""))
    if len(text) > max_size:
        raise RenderError(f"output exceeds {max_size} characters")
    return text
