"""Config validation: every problem names its dotted key, all problems are reported at once."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from quorum.assembly import load_config, parse_config
from quorum.cli import main as cli_main
from quorum.config import DEFAULT_CONFIG, ConfigError, Problems, Table
from quorum.config.schema import Duration, Int, Settings, Size


def problems_of(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    return info.value.problems


def clamav(**keys: Any) -> dict[str, Any]:
    return {"engines": {"clamav": {"type": "clamav", **keys}}}


# --- the shipped default -----------------------------------------------------------------------


def test_embedded_default_is_valid() -> None:
    config = load_config(DEFAULT_CONFIG)
    # The demo's Redis on loopback has no password: said, never silent (production: README, Redis).
    assert [w.split(":", 1)[0] for w in config.warnings] == ["redis.url"], config.warnings
    assert [e.name for e in config.enabled_engines] == ["clamav", "rspamd", "spamassassin"]
    assert config.milter.scan_deadline == 30.0


def test_empty_config_uses_defaults() -> None:
    config = parse_config({})
    assert config.engines == ()
    assert config.milter.socket == "inet:9900@127.0.0.1"
    assert config.policy.on_virus == "reject" and config.policy.on_engine_failure == "tempfail"


# --- every error names the key -------------------------------------------------------------------

BAD_VALUES = [
    ({"milter": {"scan_deadline": "soon"}}, "milter.scan_deadline"),
    ({"milter": {"scan_deadline": True}}, "milter.scan_deadline"),
    ({"milter": {"scan_deadline": 0.01}}, "milter.scan_deadline"),
    ({"milter": {"max_message_size": "25 MiB"}}, "milter.max_message_size"),
    ({"milter": {"max_message_size": 10}}, "milter.max_message_size"),
    ({"milter": {"max_message_size": 1.5}}, "milter.max_message_size"),
    ({"milter": {"on_oversize": "drop"}}, "milter.on_oversize"),
    ({"milter": {"socket": "tcp:9900"}}, "milter.socket"),
    ({"milter": {"socket": 9900}}, "milter.socket"),
    ({"milter": {"socket_mode": "rw-rw----"}}, "milter.socket_mode"),
    ({"milter": {"workers": 1}}, "milter.workers"),
    ({"milter": {"workers": "many"}}, "milter.workers"),
    ({"milter": {"tmpdir": "/nonexistent/quorum"}}, "milter.tmpdir"),
    ({"milter": {"log_level": "loud"}}, "milter.log_level"),
    ({"milter": "inet:9900"}, "milter"),
    ({"policy": {"on_virus": "bounce"}}, "policy.on_virus"),
    ({"policy": {"on_engine_failure": "ignore"}}, "policy.on_engine_failure"),
    ({"policy": {"spam_combine": "vote"}}, "policy.spam_combine"),
    ({"policy": {"spam_quorum": 0}}, "policy.spam_quorum"),
    ({"engines": {"x": {"type": "nope"}}}, "engines.x.type"),
    ({"engines": {"x": {}}}, "engines.x.type"),
    ({"engines": {"x": {"type": 3}}}, "engines.x.type"),
    ({"engines": {"bad name": {"type": "clamav"}}}, "engines.bad name"),
    ({"engines": "clamav"}, "engines"),
    (clamav(address="nohost"), "engines.clamav.address"),
    (clamav(timeout="fast"), "engines.clamav.timeout"),
    (clamav(timeout=0), "engines.clamav.timeout"),
    (clamav(max_size=0), "engines.clamav.max_size"),
    (clamav(enabled="yes"), "engines.clamav.enabled"),
    (clamav(mode="maybe"), "engines.clamav.mode"),
    (clamav(weight=-1), "engines.clamav.weight"),
    (clamav(concurrency=0), "engines.clamav.concurrency"),
]


@pytest.mark.parametrize(("data", "key"), BAD_VALUES, ids=[k for _, k in BAD_VALUES])
def test_each_error_names_its_key(data: dict[str, Any], key: str) -> None:
    problems = problems_of(data)
    assert problems and all(p.startswith(f"{key}: ") for p in problems), problems


@pytest.mark.parametrize(
    ("data", "key", "near"),
    [
        ({"milterr": {}}, "milterr", "milter"),
        ({"milter": {"scan_dedline": 10}}, "milter.scan_dedline", "scan_deadline"),
        ({"policy": {"on_viruses": "reject"}}, "policy.on_viruses", "on_virus"),
        (clamav(adress="127.0.0.1:3310"), "engines.clamav.adress", "address"),
        ({"milter": {"qqqqqqq": 1}}, "milter.qqqqqqq", None),
    ],
)
def test_unknown_keys_are_flagged_with_the_nearest_known_key(data: dict[str, Any], key: str, near: str | None) -> None:
    problems = problems_of(data)
    hint = f"did you mean {near!r}?" if near else "check the spelling"
    assert problems == [f"{key}: unknown key; {hint} (see README, Configuration)"]


def test_all_problems_are_reported_together() -> None:
    problems = problems_of(
        {
            "milter": {"scan_deadline": "soon", "bogus": 1},
            "engines": {"x": {"type": "nope"}, "clamav": {"type": "clamav", "timeout": "fast"}},
        }
    )
    keys = sorted(p.split(": ", 1)[0] for p in problems)
    assert keys == ["engines.clamav.timeout", "engines.x.type", "milter.bogus", "milter.scan_deadline"]


def test_messages_say_how_to_fix() -> None:
    (bad_type,) = problems_of({"milter": {"scan_deadline": "soon"}})
    assert 'expected seconds or a duration such as "10m"' in bad_type and "'soon'" in bad_type
    (engine,) = problems_of({"engines": {"x": {"type": "nope"}}})
    assert "use one of clamav | rspamd | spamassassin" in engine


# --- durations and sizes -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (30, 30.0),
        (2.5, 2.5),
        ("500ms", 0.5),
        ("30s", 30.0),
        ("10m", 600.0),
        ("1h", 3600.0),
        ("1d", 86400.0),
        (" 1.5s ", 1.5),
        ("45", 45.0),
    ],
)
def test_durations(value: Any, seconds: float) -> None:
    assert parse_config({"milter": {"scan_deadline": value}}).milter.scan_deadline == pytest.approx(seconds)


@pytest.mark.parametrize("value", ["soon", "10 minutes", "-5s", "1h30m", "", [10]])
def test_bad_durations(value: Any) -> None:
    (problem,) = problems_of({"milter": {"scan_deadline": value}})
    assert problem.startswith("milter.scan_deadline: ")


@pytest.mark.parametrize(
    ("value", "size"),
    [
        (100000, 100000),
        ("2048", 2048),
        ("100k", 102400),
        ("100KB", 102400),
        ("25M", 25 << 20),
        ("25mb", 25 << 20),
        ("1G", 1 << 30),
    ],
)
def test_sizes(value: Any, size: int) -> None:
    assert parse_config({"milter": {"max_message_size": value}}).milter.max_message_size == size


@pytest.mark.parametrize("value", ["25 MiB", "1.5M", "big", "-1", True])
def test_bad_sizes(value: Any) -> None:
    (problem,) = problems_of({"milter": {"max_message_size": value}})
    assert problem.startswith("milter.max_message_size: ")


def test_a_table_model_records_problems_without_raising() -> None:
    class Sect(Settings):
        n: Int = 7
        d: Duration = 0.0
        s: Size = 0
        names: tuple[str, ...] = ("z",)

    problems = Problems()
    root = Table({"sect": {"n": "x", "d": "1m", "s": "1k", "names": ["a", 1]}}, "", problems)
    assert root.model("sect", Sect) == Sect()  # invalid: the defaults stand in
    assert [p.split(":")[0] for p in problems.errors] == ["sect.n", "sect.names[1]"]
    assert Table({"d": "1m", "s": "1k"}, "sect", problems).as_model(Sect) == Sect(d=60.0, s=1024)


# --- cross checks --------------------------------------------------------------------------------


def test_warning_when_antivirus_max_size_is_below_max_message_size() -> None:
    config = parse_config({"milter": {"max_message_size": "25M"}, **clamav(max_size="10M")})
    (warning,) = config.warnings
    assert warning.startswith("engines.clamav.max_size: ") and "StreamMaxLength" in warning


def test_no_warning_for_a_disabled_engine() -> None:
    assert parse_config(clamav(max_size="10M", enabled=False)).warnings == ()


def test_spam_quorum_larger_than_the_voters_is_an_error() -> None:
    data = {"policy": {"spam_combine": "quorum", "spam_quorum": 3}, "engines": {"r": {"type": "rspamd"}}}
    (problem,) = problems_of(data)
    assert problem.startswith("policy.spam_quorum: ")


def test_engine_defaults_and_disabled_engines() -> None:
    config = parse_config(
        {"engines": {"a": {"type": "clamav"}, "b": {"type": "clamav", "enabled": False, "address": "/run/c.sock"}}}
    )
    assert [e.name for e in config.engines] == ["a", "b"]
    assert [e.name for e in config.enabled_engines] == ["a"]
    assert config.engines[1].options == {"address": "/run/c.sock", "reuse": False, "fdpass": True}
    assert config.engines[0].max_size == 25 * 1024 * 1024


# --- load_config --------------------------------------------------------------------------------


def test_load_config_reports_file_problems(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the file"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[milter\nsocket = 1\n")
    with pytest.raises(ConfigError, match="TOML syntax error"):
        load_config(bad)
    latin = tmp_path / "latin.toml"
    latin.write_bytes(b'[milter]\nname = "caf\xe9"\n')
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(latin)


# --- quorum check-config ------------------------------------------------------------------------


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "quorum.toml"
    path.write_text(text)
    return str(path)


def test_check_config_prints_every_problem_and_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, '[milter]\nscan_deadline = "soon"\n\n[engines.av]\ntype = "clamscan"\n')
    assert cli_main(["check-config", "-c", path]) != 0
    err = capsys.readouterr().err
    assert "error: milter.scan_deadline: " in err
    assert "error: engines.av.type: unknown engine type 'clamscan'" in err
    assert "2 problem(s)" in err


def test_check_config_accepts_a_valid_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, '[engines.clamav]\ntype = "clamav"\naddress = "127.0.0.1:3310"\n')
    assert cli_main(["check-config", "-c", path]) == 0
    out = capsys.readouterr().out
    assert "ok:" in out and "clamav (clamav)" in out and "warning" not in out


def test_check_config_warns_about_engine_size_limits(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, '[milter]\nmax_message_size = "25M"\n\n[engines.clamav]\ntype = "clamav"\nmax_size = "5M"\n')
    assert cli_main(["check-config", "-c", path]) == 0
    assert "warning: engines.clamav.max_size: " in capsys.readouterr().out


def test_check_config_as_a_program(tmp_path: Path) -> None:
    """The installed entry point, as an operator runs it (exit status included)."""
    path = write(tmp_path, '[milter]\nscan_deadline = "soon"\n\n[engines.av]\ntype = "clamscan"\n')
    bad = subprocess.run([sys.executable, "-m", "quorum", "check-config", "-c", path], capture_output=True, text=True)
    assert bad.returncode != 0
    assert "milter.scan_deadline" in bad.stderr and "engines.av.type" in bad.stderr
    good = subprocess.run(
        [sys.executable, "-m", "quorum", "check-config", "-c", str(DEFAULT_CONFIG)], capture_output=True, text=True
    )
    assert good.returncode == 0, good.stderr


def test_operator_snippets_never_accept_unscanned_mail() -> None:
    """Defect 12: every milter spec an operator may paste from postfix-conf/ fails closed."""
    import re
    from pathlib import Path

    conf = Path(__file__).resolve().parents[2] / "postfix-conf"
    for name in ("main.cf", "master.cf"):
        text = (conf / name).read_text()
        specs = re.findall(r"default_action\s*=\s*(\w+)", text)
        assert specs and set(specs) == {"tempfail"}, (name, specs)


def test_check_config_warns_when_dkim_could_judge_a_cut_body() -> None:
    """Defect 3: dkim_max_size above max_message_size with on_oversize = "accept" is inconsistent."""
    config = parse_config(
        {"milter": {"max_message_size": "1M", "on_oversize": "accept"}, "auth": {"dkim_max_size": "5M"}}
    )
    assert any(w.startswith("auth.dkim_max_size:") for w in config.warnings), config.warnings
    quiet = parse_config({"milter": {"max_message_size": "10M"}, "auth": {"dkim_max_size": "5M"}})
    assert not any("dkim_max_size" in w for w in quiet.warnings)


# --- non-finite and out-of-range numbers (issue 17, item 5) --------------------------------------

NAN, INF = float("nan"), float("inf")

NON_FINITE = [
    ({"milter": {"scan_deadline": NAN}}, "milter.scan_deadline"),
    ({"milter": {"scan_deadline": INF}}, "milter.scan_deadline"),
    ({"milter": {"scan_deadline": "nan s"}}, "milter.scan_deadline"),
    ({"milter": {"scan_deadline": "9" * 400 + "s"}}, "milter.scan_deadline"),  # float() of it is inf
    ({"milter": {"scan_deadline": 1e300}}, "milter.scan_deadline"),  # finite, but no timer takes it
    ({"milter": {"scan_deadline": 10**400}}, "milter.scan_deadline"),  # float() of it raises
    ({"milter": {"stop_timeout": -INF}}, "milter.stop_timeout"),
    ({"milter": {"progress_interval": NAN}}, "milter.progress_interval"),
    ({"milter": {"max_message_size": 10**30}}, "milter.max_message_size"),
    ({"milter": {"max_headers": 10**30}}, "milter.max_headers"),
    ({"milter": {"max_message_size": "99999999999999999999G"}}, "milter.max_message_size"),
    ({"policy": {"cascade_clean_below": NAN}}, "policy.cascade_clean_below"),
    ({"policy": {"spam_reject_score": NAN}}, "policy.spam_reject_score"),
    ({"policy": {"spam_reject_score": INF}}, "policy.spam_reject_score"),
    (clamav(threshold=NAN), "engines.clamav.threshold"),
    (clamav(threshold=INF), "engines.clamav.threshold"),
    (clamav(weight=NAN), "engines.clamav.weight"),
    (clamav(weight=INF), "engines.clamav.weight"),
    (clamav(timeout=NAN), "engines.clamav.timeout"),
    (clamav(breaker_cooldown=INF), "engines.clamav.breaker_cooldown"),
    (clamav(breaker_failures=10**30), "engines.clamav.breaker_failures"),
    ({"verdict_cache": {"ttl": NAN}, "redis": {"url": "redis://127.0.0.1:6379/0"}}, "verdict_cache.ttl"),
]


@pytest.mark.parametrize(("data", "key"), NON_FINITE, ids=[f"{k}={d}"[:60] for d, k in NON_FINITE])
def test_non_finite_and_huge_numbers_are_refused(data: dict[str, Any], key: str) -> None:
    """nan compares false both ways, so `scan_deadline = nan` passed `minimum=0.1` and made every
    message, EICAR included, pass `unchecked`; `threshold = nan` made an engine never vote spam."""
    problems = problems_of(data)
    assert any(p.startswith(f"{key}: ") for p in problems), problems


def test_non_finite_message_says_how_to_fix() -> None:
    (problem,) = problems_of({"milter": {"scan_deadline": NAN}})
    assert problem == (
        "milter.scan_deadline: must be a finite number, got nan; nan and inf are not values, write a number"
    )


def test_huge_values_are_shown_short() -> None:
    (problem,) = problems_of({"milter": {"max_headers": 10**3000}})
    assert problem.startswith("milter.max_headers: must be at most") and len(problem) < 200


@pytest.mark.parametrize(
    "mode", ["-1", "7777777", "1000", "4777", "0o660", "+660", " 660", "660\n", "0x1b6", "", "\uff18\uff18"]
)
def test_socket_mode_out_of_range_is_refused(mode: str) -> None:
    """`socket_mode = "-1"` and `"7777777"` were accepted (int(mode, 8)) and made the socket world-writable."""
    (problem,) = problems_of({"milter": {"socket_mode": mode}})
    assert problem.startswith('milter.socket_mode: expected an octal permission mode from "0000" to "0777"')


def test_socket_mode_as_a_toml_number_says_to_quote_it() -> None:
    (problem,) = problems_of({"milter": {"socket_mode": 660}})
    assert "write it as a string" in problem


@pytest.mark.parametrize(("mode", "value"), [("0660", 0o660), ("660", 0o660), ("0600", 0o600), ("0000", 0)])
def test_socket_mode_in_range(mode: str, value: int) -> None:
    config = parse_config({"milter": {"socket_mode": mode}})
    assert config.milter.socket_mode == value and config.warnings == ()


@pytest.mark.parametrize("mode", ["0666", "0662", "0777", "002"])
def test_world_writable_socket_mode_warns(mode: str) -> None:
    config = parse_config({"milter": {"socket_mode": mode}})
    assert len(config.warnings) == 1 and config.warnings[0].startswith("milter.socket_mode: ")
    assert "every local user" in config.warnings[0]


@pytest.mark.parametrize("socket", ["inet:99999@127.0.0.1", "inet:0@127.0.0.1", "inet:٩٩٠٠@127.0.0.1"])
def test_socket_port_out_of_range(socket: str) -> None:
    (problem,) = problems_of({"milter": {"socket": socket}})
    assert problem.startswith("milter.socket: ")


# --- malformed engine types are reported errors (issue 17, item 10) --------------------------------


@pytest.mark.parametrize(
    "type_name",
    [":clamav", ".x:Y", "x:", ":", "::", "clamav:", "a..b:C", "a.b.:C", "clamav ", "cl\u00e4mav", "\u0441lamav", ""],
)
def test_malformed_engine_types_are_errors(type_name: str) -> None:
    """`:clamav` raised ValueError (empty module name) and `.x:Y` TypeError (relative import) out of
    the loader: a traceback from check-config, a dead supervisor on SIGHUP."""
    (problem,) = problems_of({"engines": {"x": {"type": type_name}}})
    assert problem.startswith("engines.x.type: ")


@pytest.mark.parametrize(
    ("type_name", "why"),
    [
        ("os:path", "is not a quorum.engines.Engine subclass"),
        ("no_such_module_q:Engine", "cannot be loaded"),
        ("quorum.engines:NoSuchClass", "cannot be loaded"),
    ],
)
def test_unloadable_adapter_paths_are_errors(type_name: str, why: str) -> None:
    (problem,) = problems_of({"engines": {"x": {"type": type_name}}})
    assert problem.startswith("engines.x.type: ") and why in problem


def test_an_adapter_module_that_raises_on_import_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "broken_adapter_q.py").write_text("raise RuntimeError('boom at import')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    (problem,) = problems_of({"engines": {"x": {"type": "broken_adapter_q:Thing"}}})
    assert problem.startswith("engines.x.type: ") and "RuntimeError: boom at import" in problem


def test_an_adapter_whose_option_parser_raises_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "raising_adapter_q.py").write_text(
        "from pydantic import field_validator\n"
        "from quorum.engines.clamav import ClamAV\n"
        "class Raising(ClamAV):\n"
        "    class Options(ClamAV.Options):\n"
        "        @field_validator('address')\n"
        "        @classmethod\n"
        "        def _boom(cls, v):\n"
        "            raise KeyError('oops')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    (problem,) = problems_of({"engines": {"x": {"type": "raising_adapter_q:Raising", "address": "127.0.0.1:1"}}})
    assert problem.startswith("engines.x: ") and "KeyError" in problem


@pytest.mark.parametrize(
    "text",
    ["a = " + "[" * 3000 + "]" * 3000, "a = " + "9" * 5000, "[milter]\ntmpdir = '" + "x" * 5000 + "'"],
)
def test_unreadable_documents_are_config_errors(tmp_path: Path, text: str) -> None:
    path = tmp_path / "q.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.problems
