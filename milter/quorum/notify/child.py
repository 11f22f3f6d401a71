"""The render child: reads one JSON request on stdin, renders in the sandbox under rlimits, answers JSON.

Run as a script (`python -I child.py SECONDS MEMORY`) by isolate.py, so a template that loops or
allocates without end costs one killed process, never the milter.
"""

from __future__ import annotations

import importlib.util
import json
import resource
import sys
from pathlib import Path
from types import ModuleType


def _limit(cpu_seconds: int, memory: int) -> None:
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 1))
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _sandbox() -> ModuleType:
    """sandbox.py alone (it imports only Jinja2), not the quorum package: a faster start."""
    spec = importlib.util.spec_from_file_location("quorum_notify_sandbox", Path(__file__).with_name("sandbox.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv: list[str]) -> int:
    cpu_seconds, memory = int(argv[0]), int(argv[1])
    sandbox = _sandbox()
    request = json.loads(sys.stdin.buffer.read())
    _limit(cpu_seconds, memory)
    try:
        text = sandbox.render_source(request["source"], request["variables"], int(request["max_size"]))
        answer = {"ok": True, "text": text}
    except sandbox.RenderError as exc:
        answer = {"ok": False, "error": str(exc)}
    sys.stdout.write(json.dumps(answer))
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
