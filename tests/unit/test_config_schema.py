"""`quorum schema`: the JSON Schema editors check quorum.toml with is built from the models that
validate it at load, plug-ins included, and agrees with the loader on the shipped configs."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from pydantic import TypeAdapter

from quorum.assembly import config_schema
from quorum.features import all_features

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = [ROOT / "milter/quorum/config/default.toml", ROOT / "compose/quorum.toml"]


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    found = config_schema()
    jsonschema.Draft4Validator.check_schema(found)
    return found


def errors(schema: dict[str, Any], document: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft4Validator(schema)
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(document)]


def test_every_feature_declares_tables_with_a_json_schema() -> None:
    for feature in all_features():
        for name, model in feature.tables().items():
            assert TypeAdapter(model).json_schema(), (feature.name, name)


def test_core_engine_and_plug_in_tables_are_in_the_schema(schema: dict[str, Any]) -> None:
    tables = set(schema["properties"])
    assert {"milter", "policy", "replies", "engines"} <= tables
    assert "hello" in tables  # examples/feature-hello, installed into the test venv
    declared = {name for f in all_features() for name in f.tables()}
    assert declared <= tables
    text = json.dumps(schema)
    for engine_type in ("clamav", "rspamd", "spamassassin", "keyword"):
        assert f'"enum": ["{engine_type}"]' in text, engine_type
    assert '"const"' not in text and "$defs" not in text  # taplo reads JSON Schema draft 4


@pytest.mark.parametrize("path", SHIPPED, ids=["embedded-default", "stack-config"])
def test_the_shipped_configs_satisfy_the_schema(schema: dict[str, Any], path: Path) -> None:
    assert errors(schema, tomllib.loads(path.read_text())) == []


@pytest.mark.parametrize(
    "document",
    [
        {"milter": {"scan_dedline": 10}},
        {"milterr": {}},
        {"policy": {"on_virus": "explode"}},
        {"milter": {"workers": 1}},
        {"engines": {"av": {"type": "clamav", "adress": "x:1"}}},
        {"hello": {"greeting": ""}},
    ],
)
def test_the_schema_refuses_what_the_loader_refuses(schema: dict[str, Any], document: dict[str, Any]) -> None:
    assert errors(schema, document)


def test_the_command_prints_the_schema(tmp_path: Path) -> None:
    out = tmp_path / "quorum.schema.json"
    done = subprocess.run(
        [sys.executable, "-m", "quorum", "schema", "-o", str(out)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(out.read_text())["title"].startswith("Quorum configuration")
