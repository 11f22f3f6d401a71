"""The config loader under malformed input: every problem is a reported error naming its key.

Seeds are the shipped configs and every TOML example of the README; each leaf is replaced by values
of the wrong type, non-finite and huge numbers, odd strings and nested tables, each table by a
scalar, each engine `type` by malformed adapter paths. `parse_config` must answer with a Config or a
ConfigError whose problems name keys, never raise anything else, and never fall back to its
"cannot be validated" safety net (which would mean a validator crashed). `check-config` is run on a
sample of them as a separate process: exit 0 or 2, no traceback.
"""

from __future__ import annotations

import copy
import math
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quorum.assembly import parse_config
from quorum.config import DEFAULT_CONFIG, ConfigError

ROOT = Path(__file__).resolve().parents[2]

ODD_VALUES: list[Any] = [
    math.nan,
    -math.nan,
    math.inf,
    -math.inf,
    1e308,
    -1e308,
    10**30,
    -(10**30),
    2**63,
    -1,
    0,
    0.0,
    -0.0,
    True,
    "",
    " ",
    "nan",
    "inf",
    "-1",
    "nan s",
    "9" * 400 + "s",
    "9" * 400,
    "1e999",
    "7777777",
    "0o777",
    "\x00",
    "a\x00b",
    "\u202e\u00e9\u4e2d\U0001f600",
    "\n",
    "x" * 5000,
    [],
    [1, "a", None.__class__.__name__],
    [[[]]],
    {},
    {"nested": {"deeper": [1, 2, {"x": math.nan}]}},
]

ENGINE_TYPES = [
    ":clamav",
    ".x:Y",
    "x:",
    ":",
    "::",
    "clamav:",
    "os:path",
    "os.path:join",
    "builtins:object",
    "quorum.engines.base:Engine",
    "nonexistent_module_qq:Thing",
    "a..b:C",
    "a.b.:C",
    "clamav ",
    "CLAMAV",
    "cl\u00e4mav",
    "\u0441lamav",  # a Cyrillic es, not a Latin c
    "quorum.engines.clamav:ClamAV\n",
    "x" * 3000 + ":Y",
    "",
]


def _seeds() -> dict[str, dict[str, Any]]:
    seeds = {
        "default.toml": tomllib.loads(DEFAULT_CONFIG.read_text()),
        "compose": tomllib.loads((ROOT / "compose" / "quorum.toml").read_text()),
    }
    readme = (ROOT / "README.md").read_text()
    for i, block in enumerate(re.findall(r"```toml\n(.*?)```", readme, re.S)):
        try:
            seeds[f"README[{i}]"] = tomllib.loads(block)
        except tomllib.TOMLDecodeError:
            continue
    return seeds


SEEDS = _seeds()


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], Any]]:
    if isinstance(node, dict):
        for k, v in node.items():
            yield (*prefix, k), v
            yield from _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield (*prefix, i), v
            yield from _paths(v, (*prefix, i))


def _replace(doc: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    out = copy.deepcopy(doc)
    node: Any = out
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = value
    return out


def _mutants() -> Iterator[tuple[str, dict[str, Any]]]:
    for seed_name, seed in SEEDS.items():
        for path, original in _paths(seed):
            where = f"{seed_name}:{'.'.join(map(str, path))}"
            if isinstance(original, (dict, list)):
                for value in ("x", 1, math.nan, True):
                    yield f"{where}={value!r}", _replace(seed, path, value)
                continue
            for value in ODD_VALUES:
                yield f"{where}={value!r}"[:200], _replace(seed, path, value)
        engines = seed.get("engines")
        if isinstance(engines, dict):
            for name in engines:
                for type_name in ENGINE_TYPES:
                    yield (
                        f"{seed_name}:engines.{name}.type={type_name!r}"[:200],
                        _replace(seed, ("engines", name, "type"), type_name),
                    )
    # whole tables where Quorum expects its own
    for top in ("milter", "policy", "replies", "engines", "domains", "auth", "ratelimit", "redis", "rules"):
        for value in ODD_VALUES[:20]:
            yield f"{top}={value!r}"[:200], {top: value}
    yield "engines.x={}", {"engines": {"x": {}}}
    yield "engines.unicode", {"engines": {"\u00e9\u4e2d": {"type": "clamav"}}}
    yield "engines.empty-name", {"engines": {"": {"type": "clamav"}}}
    yield "domains.weird", {"domains": {"\x00": {}, "..": {}, "*": {}, "x" * 300: {}}}


MUTANTS = list(_mutants())
SAFETY_NET = "cannot be validated ("


def _check(label: str, doc: dict[str, Any]) -> list[str]:
    try:
        parse_config(doc)
    except ConfigError as exc:
        problems = exc.problems
    else:
        return []
    assert problems, label
    for problem in problems:
        assert SAFETY_NET not in problem, f"{label}: a validator crashed: {problem}"
        key, sep, message = problem.partition(": ")
        assert sep and key.strip() and message.strip(), f"{label}: the problem names no key: {problem!r}"
    return problems


def test_the_fuzz_corpus_is_large() -> None:
    assert len(SEEDS) >= 8
    assert len(MUTANTS) > 3000


def test_every_malformed_config_is_a_reported_error() -> None:
    failures = []
    for label, doc in MUTANTS:
        try:
            _check(label, doc)
        except AssertionError as exc:
            failures.append(str(exc))
        except Exception as exc:  # noqa: BLE001 - collected: the assertion below lists them all
            failures.append(f"{label}: {type(exc).__name__}: {exc}")
    assert not failures, f"{len(failures)} of {len(MUTANTS)}:\n" + "\n".join(f[:300] for f in failures[:40])


def _dotted(path: tuple[str, ...]) -> str:
    from quorum.config.schema import dotted

    return dotted("", path)


@pytest.mark.parametrize("value", [math.nan, -math.nan, math.inf, -math.inf, "nan s", "9" * 400 + "s", 1e300])
def test_non_finite_leaves_are_errors_naming_the_key(value: Any) -> None:
    """Every number of every seed, set to nan/inf/huge, is refused naming that key."""
    checked = 0
    for seed in SEEDS.values():
        for path, v in _paths(seed):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not all(isinstance(p, str) for p in path):
                continue
            problems = _check(str(path), _replace(seed, path, value))
            key = _dotted(path)
            assert any(p.startswith(f"{key}: ") for p in problems), (key, problems)
            checked += 1
    assert checked >= 20


def _toml_scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, int):
        return str(value)
    return '"' + "".join(c if c.isalnum() or c in " .:-_" else f"\\u{ord(c):04x}" for c in str(value)) + '"'


json_like = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**70), max_value=2**70),
        st.floats(allow_nan=True, allow_infinity=True),
        st.text(max_size=20),
        st.sampled_from(ENGINE_TYPES),
    ),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.sampled_from(sorted(SEEDS)),
    picks=st.lists(st.tuples(st.integers(min_value=0), json_like), min_size=1, max_size=4),
)
def test_random_mutations_are_reported_errors(seed: str, picks: list[tuple[int, Any]]) -> None:
    doc = SEEDS[seed]
    for index, value in picks:
        paths = [p for p, _ in _paths(doc)]
        if not paths or value is None:
            continue
        doc = _replace(doc, paths[index % len(paths)], value)
    _check(f"{seed} {picks!r}"[:300], doc)


CLI_CASES = [
    '[engines.x]\ntype = ":clamav"\n',
    '[engines.x]\ntype = ".x:Y"\n',
    '[engines.x]\ntype = "os:path"\n',
    "[milter]\nscan_deadline = nan\n",
    '[milter]\nscan_deadline = "nan s"\n',
    "[milter]\nstop_timeout = inf\n",
    '[milter]\nsocket_mode = "-1"\n',
    '[milter]\nsocket_mode = "7777777"\n',
    "[milter]\nsocket_mode = 660\n",
    '[milter]\ntmpdir = "a\\u0000b"\n',
    '[milter]\nuser = "a\\u0000b"\n',
    "[milter]\nworkers = " + "9" * 5000 + "\n",
    "a = " + "[" * 5000 + "]" * 5000 + "\n",
    "a = " + "{b=" * 3000 + "1" + "}" * 3000 + "\n",
    "[policy]\ncascade_clean_below = nan\n",
    '[engines.c]\ntype = "clamav"\nthreshold = nan\n',
    '[domains."example.com".engines.clamav]\nthreshold = nan\n[engines.clamav]\ntype = "clamav"\n',
    "[milter.scan_deadline]\nx = 1\n",
    "\ufeff[milter]\n",
    "[milter]\nname = '\u202e\u4e2d'\nsocket = 'inet:99999@127.0.0.1'\n",
]


@pytest.mark.parametrize("text", CLI_CASES, ids=range(len(CLI_CASES)))
def test_check_config_never_prints_a_traceback(tmp_path: Path, text: str) -> None:
    path = tmp_path / "quorum.toml"
    path.write_text(text, encoding="utf-8")
    out = subprocess.run(
        [sys.executable, "-m", "quorum", "check-config", "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "Traceback" not in out.stderr + out.stdout, out.stderr[-2000:]
    assert out.returncode == 2, (out.returncode, out.stdout, out.stderr[-2000:])
    lines = [line for line in out.stderr.splitlines() if line.startswith("error: ")]
    assert lines and all(": " in line[len("error: ") :] for line in lines), out.stderr
