"""Everything the product imports is a runtime dependency: a package only the test extra brings
works in the test venv and breaks the installed product (the compose image installs `pip install .`)."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Imported directly but brought (pinned) by a runtime dependency: pydantic's documented error type
# lives in pydantic_core, whose version pydantic fixes.
VIA = {"pydantic_core": "pydantic"}


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0].strip().lower().replace("_", "-")


def test_every_third_party_import_of_the_product_is_a_runtime_dependency() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = {_name(r) for r in project["dependencies"]}
    owners = packages_distributions()
    missing: dict[str, str] = {}
    for path in (ROOT / "milter" / "quorum").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top in sys.stdlib_module_names or top == "quorum":
                    continue
                dists = {d.lower().replace("_", "-") for d in owners.get(top, [])}
                if not dists & runtime and VIA.get(top) not in runtime:
                    missing[top] = str(path.relative_to(ROOT))
    assert not missing, f"imported by the product but not in [project] dependencies: {missing}"
