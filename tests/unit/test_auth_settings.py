"""Config of [dns], [auth], [[dnsbl]] and [access]: validated at load, stages built in order."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from pydantic import TypeAdapter

from quorum.assembly import parse_config
from quorum.auth.feature import TABLES, AuthFeatureSettings
from quorum.config import ConfigError
from quorum.features import FEATURES


def load(text: str) -> AuthFeatureSettings | None:
    return parse_config(tomllib.loads(text)).feature("auth")  # type: ignore[no-any-return]


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        parse_config(tomllib.loads(text))
    return exc.value.problems


def test_absent_tables_mean_no_feature() -> None:
    assert load("") is None
    assert load("[dns]\nnameservers = ['127.0.0.1']\n") is None
    assert load("[auth]\nenabled = false\n") is None


def test_full_example(tmp_path: Path) -> None:
    (tmp_path / "clients").write_text("192.0.2.0/24 OK\n")
    (tmp_path / "headers").write_text("/^Subject:.*casino/i REJECT\n")
    settings = load(f"""
[milter]
authserv_id = "mx.example.net"

[dns]
nameservers = ["127.0.0.1", "::1"]
port = 5353
timeout = "1500ms"
cache_size = 0

[auth]
spf_at = "mail"
dkim_max_size = "2M"
dkim_max_signatures = 3
dmarc_enforce = "reject"
dmarc_quarantine_action = "hold"
trusted_networks = ["10.0.0.0/8", "2001:db8::/32"]

[[dnsbl]]
zone = "zen.spamhaus.org"
action = "reject"
codes = ["127.0.0.2", "127.0.0.4/31"]

[[dnsbl]]
zone = "bl.spamcop.net"
weight = 0.5

[access]
client = "{tmp_path / "clients"}"
header = "{tmp_path / "headers"}"
exempt_recipients = ["postmaster", "abuse@example.net"]
reload_interval = "30s"
""")
    assert settings is not None
    assert (settings.dns.nameservers, settings.dns.port, settings.dns.timeout, settings.dns.cache_size) == (
        ("127.0.0.1", "::1"),
        5353,
        1.5,
        0,
    )
    a = settings.auth
    assert (a.spf_at, a.dkim_max_size, a.dkim_max_signatures, a.dmarc_enforce, a.dmarc_quarantine_action) == (
        "mail",
        2 * 1024 * 1024,
        3,
        "reject",
        "hold",
    )
    assert [str(n) for n in a.trusted_networks] == ["10.0.0.0/8", "2001:db8::/32"]
    assert [(x.zone, x.action, x.weight, [str(c) for c in x.codes]) for x in settings.dnsbl] == [
        ("zen.spamhaus.org", "reject", 1.0, ["127.0.0.2/32", "127.0.0.4/31"]),
        ("bl.spamcop.net", "score", 0.5, []),
    ]
    assert settings.access.exempt_recipients == ("postmaster", "abuse@example.net")
    assert settings.access.reload_interval == 30.0


def test_stages_in_order(tmp_path: Path) -> None:
    (tmp_path / "rcpt").write_text("vip.test OK\n")
    config = parse_config(
        tomllib.loads(f"""
[milter]
authserv_id = "mx.example.net"
[auth]
[[dnsbl]]
zone = "bl.test"
[access]
recipient = "{tmp_path / "rcpt"}"
""")
    )
    (feature,) = [f for f in FEATURES if f.name == "auth"]
    stages = feature.build(config)
    try:
        assert [s.name for s in stages] == ["trust", "access", "dnsbl", "auth"]  # trust first: all read it
        assert stages[3].authserv_id == "mx.example.net"  # type: ignore[attr-defined]
        assert stages[2].resolver is stages[3].resolver  # type: ignore[attr-defined]  # one resolver
    finally:
        for s in stages:
            s.close()


def test_defaults() -> None:
    settings = load("[auth]\n")
    assert settings is not None
    assert settings.auth.spf_at == "eom" and settings.auth.dmarc_enforce == "off"
    assert [str(n) for n in settings.auth.trusted_networks] == ["127.0.0.0/8", "::1/128"]
    assert settings.dns.nameservers == () and settings.dnsbl == ()
    assert settings.access.exempt_recipients == ("postmaster", "abuse")


def test_errors_name_the_key_and_the_fix(tmp_path: Path) -> None:
    (tmp_path / "bad").write_text("192.0.2.1 OK\n300.1.1.1 REJECT\n")
    found = problems(f"""
[dns]
nameservers = ["resolver.local"]
port = 70000
[auth]
spf_at = "rcpt"
dmarc_enforce = "yes"
trusted_networks = ["10.0.0.1/8"]
dkim_max_signature = 3
[[dnsbl]]
zone = "not a zone"
codes = ["10.0.0.1"]
[[dnsbl]]
action = "drop"
[access]
client = "{tmp_path / "bad"}"
sender = "{tmp_path / "absent"}"
exempt_recipients = ["@example.com"]
""")
    text = "\n".join(found)
    assert "dns.nameservers[0]: 'resolver.local' is not an IP address" in text
    assert "dns.port: must be at most 65535" in text
    assert "auth.spf_at: must be one of eom | mail" in text
    assert "auth.dmarc_enforce: must be one of off | quarantine | reject" in text
    assert "auth.trusted_networks[0]: '10.0.0.1/8' is not an address or network" in text
    assert "auth.dkim_max_signature: unknown key" in text
    assert "dnsbl[0].zone: 'not a zone' is not a DNS zone" in text
    assert "dnsbl[0].codes[0]: '10.0.0.1': not in 127.0.0.0/8" in text
    assert "dnsbl[1].zone: missing" in text
    assert "dnsbl[1].action: must be one of reject | score" in text
    assert f"access.client: {tmp_path / 'bad'}:2: '300.1.1.1' is not an IP address" in text
    assert f"access.sender: {tmp_path / 'absent'}: no such file" in text
    assert "access.exempt_recipients[0]: '@example.com'" in text


def test_dnsbl_must_be_an_array_of_tables() -> None:
    assert any(p.startswith("dnsbl: expected an array of tables") for p in problems('dnsbl = "zen.spamhaus.org"\n'))
    assert any("dnsbl[0].zone" in p and "listed twice" not in p for p in problems("[[dnsbl]]\nweight = 1\n"))
    twice = problems('[[dnsbl]]\nzone = "a.test"\n[[dnsbl]]\nzone = "A.test."\n')
    assert any("dnsbl[1].zone: a.test is listed twice" in p for p in twice)


def test_table_files_are_checked_when_another_key_is_wrong(tmp_path: Path) -> None:
    found = problems(f'[access]\nsender = "{tmp_path / "absent"}"\nreload_interval = -1\n')
    assert any(p.startswith("access.reload_interval: must be at least 0") for p in found)
    assert any(p.startswith("access.sender: ") and "no such file" in p for p in found)


def test_dmarc_without_spf_or_dkim_is_warned() -> None:
    config = parse_config(tomllib.loads("[auth]\ndkim = false\n"))
    assert any(w.startswith("auth.dmarc: DMARC is evaluated with SPF or DKIM switched off") for w in config.warnings)


@pytest.mark.parametrize("name", sorted(TABLES))
def test_tables_have_a_json_schema(name: str) -> None:
    schema = TypeAdapter(TABLES[name]).json_schema()
    assert schema
    if name == "dnsbl":
        entry = schema["$defs"]["DnsblList"]
        assert entry["required"] == ["zone"] and entry["properties"]["codes"]["items"] == {"type": "string"}
    if name == "auth":
        assert schema["properties"]["trusted_networks"]["default"] == ["127.0.0.0/8", "::1/128"]
