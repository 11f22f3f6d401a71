"""The architecture as code: the core knows no feature, and the import graph has no cycle.

The contracts live in pyproject.toml ([tool.importlinter]); `lint-imports` checks them (CI runs
it as a static check, and this test runs it too). These tests also keep the contract honest: a
new top-level package that is not core must be on its forbidden list.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import grimp

REPO = Path(__file__).resolve().parents[2]
CORE = {"service", "pipeline", "engines", "config", "message", "verdict", "metrics", "logs"}
SHELL = {"__main__"}  # `python -m quorum`: the command line's entry


def contracts() -> dict[str, dict[str, object]]:
    data = tomllib.loads((REPO / "pyproject.toml").read_text())
    return {c["id"]: c for c in data["tool"]["importlinter"]["contracts"]}


def top_level() -> set[str]:
    root = REPO / "milter" / "quorum"
    names = {p.stem for p in root.glob("*.py") if p.stem != "__init__"}
    names |= {p.name for p in root.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    return names


def test_every_package_outside_the_core_is_forbidden_to_it() -> None:
    forbidden = {m.removeprefix("quorum.") for m in contracts()["core-knows-no-feature"]["forbidden_modules"]}  # type: ignore[union-attr]
    sources = {m.removeprefix("quorum.") for m in contracts()["core-knows-no-feature"]["source_modules"]}  # type: ignore[union-attr]
    assert sources == CORE
    missing = top_level() - CORE - SHELL - forbidden
    assert not missing, f"add these to [tool.importlinter] core-knows-no-feature forbidden_modules: {sorted(missing)}"


def test_the_import_graph_has_no_cycle() -> None:
    """Every import counts, those under TYPE_CHECKING and inside functions included."""
    graph = grimp.build_graph("quorum", include_external_packages=False)
    cycles = set()
    for importer in sorted(graph.modules):
        for imported in graph.find_modules_directly_imported_by(importer):
            back = graph.find_shortest_chain(importer=imported, imported=importer)
            if back:
                cycles.add(" -> ".join((importer, *back)))
    assert not cycles, "import cycles:\n" + "\n".join(sorted(cycles))


def test_the_import_contracts_hold() -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run([str(lint)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout


def test_every_metric_has_one_owner_the_core_or_a_declared_feature() -> None:
    """A `quorum_*` series is defined in quorum.metrics or in the metrics module its feature declares
    (features.Feature.metrics): an operator reading a series finds its owner, and no two define one."""
    import importlib
    import pkgutil

    import prometheus_client
    from prometheus_client.metrics import MetricWrapperBase

    import quorum
    from quorum.features import all_features

    for info in pkgutil.walk_packages(quorum.__path__, "quorum."):
        if not info.name.endswith("__main__"):
            importlib.import_module(info.name)
    owners: dict[str, str] = {}
    modules = ["quorum.metrics", *(f.metrics for f in all_features() if f.metrics)]
    for name in modules:
        for value in vars(importlib.import_module(name)).values():
            if isinstance(value, MetricWrapperBase):
                assert value._name not in owners, f"{value._name} defined in {owners[value._name]} and {name}"
                owners[value._name] = name
    registered = {metric.name for metric in prometheus_client.REGISTRY.collect() if metric.name.startswith("quorum_")}
    assert registered and registered <= set(owners), f"metrics without a declared owner: {registered - set(owners)}"
