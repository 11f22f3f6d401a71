"""Merging global -> file -> Redis, provenance, fingerprints, and the resolver's cache (fake store)."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from tests.unit.test_tenants_schema import config

from quorum.tenants import SchemaContext, TenantPolicies, parse_fragment
from quorum.tenants.effective import FILE, REDIS, GlobalLayer, merge
from quorum.tenants.settings import TenantSettings


def policies(domains: dict[str, Any] | None = None, store: Any = None, **kw: Any) -> TenantPolicies:
    cfg = config(domains or {}, **kw)
    return TenantPolicies(cfg, store=store, listen=False)


def test_no_match_is_the_global_policy() -> None:
    tp = policies({"example.com": {"policy": {"on_spam": "reject"}}})
    p = tp.policy_for("bob@other.test")
    assert p is tp.global_policy
    assert p.domain is None and p.sources == () and p.engines is None
    assert set(p.provenance.values()) == {"global"}
    assert p.replies.disclose_virus_name is True  # global behaviour unchanged
    assert tp.policy_for("no-domain") is tp.global_policy


def test_file_entry_overrides_per_key() -> None:
    tp = policies({"example.com": {"policy": {"on_spam": "reject"}, "replies": {"spam": "go away"}}})
    p = tp.policy_for("bob@EXAMPLE.com")
    assert p.domain == "example.com" and p.sources == ("file:example.com",)
    assert p.policy.on_spam == "reject" and p.policy.on_virus == tp.global_policy.policy.on_virus
    assert p.replies.spam == "go away" and p.replies.virus == tp.global_policy.replies.virus
    assert p.provenance["policy.on_spam"] == "file"
    assert p.provenance["policy.on_virus"] == "global"
    assert p.provenance["replies.spam"] == "file"
    # a tenant's refusals name no virus unless it says so
    assert p.replies.disclose_virus_name is False and p.provenance["replies.disclose_virus_name"] == "file"


def test_engines_list_and_overrides() -> None:
    tp = policies(
        {
            "b.example": {"engines": ["rspamd", "clamav"]},
            "*.c.example": {"engines": {"spamassassin": {"enabled": False}, "rspamd": {"weight": 2, "mode": "shadow"}}},
        }
    )
    b = tp.policy_for("x@b.example")
    assert b.engines == ("clamav", "rspamd")  # config order
    assert b.uses_engine("clamav") and not b.uses_engine("spamassassin")
    assert b.provenance["engines"] == "file"
    assert not any(k.startswith("engines.spamassassin") for k in b.provenance)
    c = tp.policy_for("x@shop.c.example")
    assert c.engines == ("clamav", "rspamd")
    assert c.engine_overrides["rspamd"].weight == 2.0
    cfg = config()
    settings = c.engine_settings(cfg.engines)
    assert sorted(settings) == ["clamav", "rspamd"]
    assert settings["rspamd"].weight == 2.0 and settings["rspamd"].mode == "shadow"
    assert settings["rspamd"].timeout == next(e for e in cfg.engines if e.name == "rspamd").timeout
    assert settings["clamav"] is next(e for e in cfg.engines if e.name == "clamav")
    assert c.provenance["engines.rspamd.weight"] == "file" and c.provenance["engines.clamav.mode"] == "global"
    assert sorted(tp.global_policy.engine_settings(cfg.engines)) == ["clamav", "rspamd", "spamassassin"]


def test_redis_layer_over_file_and_toggles() -> None:
    cfg = config({"*.example.com": {"engines": ["clamav", "rspamd"], "policy": {"on_spam": "quarantine"}}})
    base = GlobalLayer(cfg)
    ctx = SchemaContext.from_config(cfg)
    file_entry = cfg.feature("tenants").domains["*.example.com"]
    record, _ = parse_fragment(
        {"engines": {"spamassassin": {"enabled": True}}, "policy": {"on_virus": "quarantine"}}, "a.example.com", ctx
    )
    assert record is not None
    p = merge(base, [(FILE, file_entry), (REDIS, record)])
    assert p.domain == "a.example.com"
    assert p.sources == ("file:*.example.com", "redis:a.example.com")
    assert p.engines == ("clamav", "rspamd", "spamassassin")
    assert p.policy.on_spam == "quarantine" and p.policy.on_virus == "quarantine"
    assert p.provenance["engines"] == "redis"
    assert p.provenance["policy.on_spam"] == "file"
    assert p.provenance["policy.on_virus"] == "redis"
    assert p.provenance["policy.spam_combine"] == "global"
    assert p.provenance["replies.disclose_virus_name"] == "file"
    rows = {r["key"]: r for r in p.explain()}
    assert rows["policy.on_virus"] == {"key": "policy.on_virus", "value": "quarantine", "source": "redis"}
    json.dumps(p.explain())  # plain data


def test_global_dmarc_and_dnsbl_come_from_auth() -> None:
    tp = policies(
        {"strict.example": {"dmarc_enforce": "reject", "dnsbl": False}},
        auth={"dmarc_enforce": "quarantine"},
        dnsbl=[{"zone": "zen.example"}],
    )
    g = tp.global_policy
    assert (g.dmarc_enforce, g.dnsbl) == ("quarantine", True)
    s = tp.policy_for("a@strict.example")
    assert (s.dmarc_enforce, s.dnsbl) == ("reject", False)
    assert s.provenance["dmarc_enforce"] == "file"


def test_bypass_and_rules() -> None:
    tp = policies(
        {
            "open.example": {"bypass": True},
            "kw.example": {"rules": [{"name": "w", "where": "subject", "pattern": "win", "action": "reject"}]},
        }
    )
    assert tp.policy_for("a@open.example").bypass is True
    kw = tp.policy_for("a@kw.example")
    assert len(kw.rules) == 1 and kw.provenance["rules"] == "file"
    assert tp.global_policy.rules == () and tp.global_policy.bypass is False


# -- fingerprints -------------------------------------------------------------------------------
SAME = {"policy": {"on_spam": "reject"}, "engines": ["clamav", "rspamd"]}


def test_identical_policies_share_a_fingerprint() -> None:
    tp = policies({"a.example": SAME, "b.example": dict(SAME), "*.c.example": dict(SAME)})
    a, b, c = (tp.policy_for(f"x@{d}") for d in ("a.example", "b.example", "z.c.example"))
    assert a.fingerprint == b.fingerprint == c.fingerprint
    assert a.domain != b.domain and a.same_policy(b)


def test_same_values_from_other_sources_share_a_fingerprint() -> None:
    """Only effective values count: keys set to their global value, or every engine listed, change nothing."""
    tp = policies(
        {
            "explicit.example": {
                "engines": ["clamav", "rspamd", "spamassassin"],
                "policy": {"on_spam": "tag"},
                "replies": {"disclose_virus_name": True},
            },
            "weights.example": {"engines": {"rspamd": {"weight": 1.0}}, "replies": {"disclose_virus_name": True}},
            "plain.example": {"engines": ["clamav", "rspamd", "spamassassin"]},
        }
    )
    g = tp.global_policy
    assert tp.policy_for("a@explicit.example").fingerprint == g.fingerprint
    assert tp.policy_for("a@weights.example").fingerprint == g.fingerprint
    # a domain's default disclose_virus_name = false differs from the global true
    assert tp.policy_for("a@plain.example").fingerprint != g.fingerprint


@pytest.mark.parametrize(
    "change",
    [
        {"policy": {"on_spam": "quarantine"}},
        {"policy": {"on_virus": "quarantine"}},
        {"policy": {"spam_reject_score": 15}},
        {"policy": {"spam_combine": "max"}},
        {"engines": ["clamav"]},
        {"engines": {"rspamd": {"weight": 1.5}}},
        {"engines": {"rspamd": {"threshold": 6}}},
        {"engines": {"rspamd": {"mode": "shadow"}}},
        {"dmarc_enforce": "reject"},
        {"dnsbl": True},
        {"bypass": True},
        {"replies": {"spam": "nope"}},
        {"replies": {"disclose_virus_name": True}},
        {"rules": [{"name": "w", "where": "body", "pattern": "x", "action": "tag"}]},
    ],
)
def test_any_differing_value_differs(change: dict[str, Any]) -> None:
    tp = policies({"base.example": {}, "changed.example": change})
    assert tp.policy_for("a@base.example").fingerprint != tp.policy_for("a@changed.example").fingerprint


def test_fingerprint_is_stable_across_loads() -> None:
    one = policies({"a.example": SAME}).policy_for("x@a.example").fingerprint
    two = policies({"a.example": SAME}).policy_for("x@a.example").fingerprint
    assert one == two and len(one) == 32


# -- the resolver with a fake store ------------------------------------------------------------
class FakeStore:
    def __init__(self) -> None:
        self.records: dict[str, bytes] = {}
        self.fetches: list[str] = []
        self.down = False

    def set(self, domain: str, fragment: Any) -> None:
        self.records[domain] = fragment if isinstance(fragment, bytes) else json.dumps(fragment).encode()

    def fetch(self, domain: str) -> bytes | None:
        self.fetches.append(domain)
        if self.down:
            raise ConnectionError("connection refused")
        return self.records.get(domain)

    def close(self) -> None:
        pass


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def redis_policies(
    store: FakeStore, clock: Clock, domains: dict[str, Any] | None = None, **tenants: Any
) -> TenantPolicies:
    cfg = config(domains or {}, tenants={"refresh": "5s", "backoff": "1s", "warn_interval": "60s", **tenants})
    settings = cfg.feature("tenants")
    assert isinstance(settings, TenantSettings)
    return TenantPolicies(cfg, settings, store=store, clock=clock, listen=False)


def test_one_lookup_per_domain_and_refresh() -> None:
    store, clock = FakeStore(), Clock()
    store.set("a.example", {"policy": {"on_spam": "reject"}})
    tp = redis_policies(store, clock)
    for _ in range(5):
        assert tp.policy_for("x@a.example").policy.on_spam == "reject"
        assert tp.policy_for("x@none.example") is tp.global_policy  # negative entry
    assert store.fetches == ["a.example", "none.example"]
    store.set("a.example", {"policy": {"on_spam": "quarantine"}})
    clock.now += 4.9
    assert tp.policy_for("x@a.example").policy.on_spam == "reject"
    clock.now += 0.2
    p = tp.policy_for("x@a.example")
    assert p.policy.on_spam == "quarantine" and p.provenance["policy.on_spam"] == "redis"
    assert tp.stats.hits == 9 and tp.stats.lookups == 3


def test_unchanged_record_keeps_its_policy_object() -> None:
    store, clock = FakeStore(), Clock()
    store.set("a.example", {"bypass": True})
    tp = redis_policies(store, clock)
    first = tp.policy_for("x@a.example")
    clock.now += 10
    assert tp.policy_for("x@a.example") is first


def test_redis_over_file_wildcard() -> None:
    store, clock = FakeStore(), Clock()
    store.set("a.example.com", {"policy": {"on_virus": "quarantine"}})
    tp = redis_policies(store, clock, {"*.example.com": {"policy": {"on_spam": "reject"}}})
    a = tp.policy_for("x@a.example.com")
    assert (a.policy.on_spam, a.policy.on_virus) == ("reject", "quarantine")
    assert a.sources == ("file:*.example.com", "redis:a.example.com")
    b = tp.policy_for("x@b.example.com")
    assert b.sources == ("file:*.example.com",) and b.policy.on_virus == "reject"


def test_redis_down_keeps_last_known_records(caplog: pytest.LogCaptureFixture) -> None:
    store, clock = FakeStore(), Clock()
    store.set("a.example", {"policy": {"on_spam": "reject"}})
    tp = redis_policies(store, clock, {"b.example": {"policy": {"on_spam": "quarantine"}}})
    assert tp.policy_for("x@a.example").policy.on_spam == "reject"
    store.down = True
    clock.now += 10  # stale: a lookup is tried, fails, the cached record still applies
    with caplog.at_level(logging.WARNING, logger="quorum.tenants"):
        for _ in range(3):
            assert tp.policy_for("x@a.example").policy.on_spam == "reject"
            assert tp.policy_for("x@b.example").policy.on_spam == "quarantine"  # never cached: the file's
        clock.now += 2  # after the back-off: tried again, still down: no second warning within warn_interval
        assert tp.policy_for("x@a.example").policy.on_spam == "reject"
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "last known domain records keep applying" in warnings[0].getMessage()
    assert tp.stats.errors == 2 and tp.stats.skipped == 5
    store.down = False
    clock.now += 2
    assert tp.policy_for("x@a.example").policy.on_spam == "reject"
    assert tp.stats.errors == 2


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b'{"policy": {"on_spam": "bounce"}}', 'domains."a.example".policy.on_spam: must be one of'),
        (b'{"enginez": 1}', 'domains."a.example".enginez: unknown key'),
        (b"{not json", 'domains."a.example": not valid JSON'),
        (b"on_spam = ", "neither a JSON object nor valid TOML"),
        (b"\xff\xfe", "not UTF-8"),
    ],
)
def test_invalid_record_is_ignored_with_an_error(raw: bytes, expected: str, caplog: pytest.LogCaptureFixture) -> None:
    store, clock = FakeStore(), Clock()
    store.set("a.example", raw)
    tp = redis_policies(store, clock, {"a.example": {"policy": {"on_spam": "quarantine"}}})
    with caplog.at_level(logging.ERROR, logger="quorum.tenants"):
        p = tp.policy_for("x@a.example")
        clock.now += 10
        tp.policy_for("x@a.example")  # same bad record: not logged again
    assert p.policy.on_spam == "quarantine" and p.sources == ("file:a.example",)
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "a.example" in errors[0] and expected in errors[0], errors
    assert tp.stats.invalid == 1


def test_toml_record() -> None:
    store, clock = FakeStore(), Clock()
    store.set("a.example", b'engines = ["clamav"]\n[policy]\non_spam = "reject"\n')
    p = redis_policies(store, clock).policy_for("x@a.example")
    assert p.engines == ("clamav",) and p.policy.on_spam == "reject"


def test_cache_is_bounded_lru() -> None:
    store, clock = FakeStore(), Clock()
    for i in range(40):
        store.set(f"d{i}.example", {"policy": {"on_spam": "reject"}})
    tp = redis_policies(store, clock, cache_size=16)
    for i in range(40):
        tp.policy_for(f"x@d{i}.example")
    assert tp.cached_domains == 16
    tp.policy_for("x@d39.example")
    assert store.fetches.count("d39.example") == 1
    tp.policy_for("x@d0.example")
    assert store.fetches.count("d0.example") == 2


def test_identical_records_share_values() -> None:
    store, clock = FakeStore(), Clock()
    store.set("a.example", {"policy": {"on_spam": "reject"}})
    store.set("b.example", {"policy": {"on_spam": "reject"}})
    tp = redis_policies(store, clock)
    a, b = tp.policy_for("x@a.example"), tp.policy_for("x@b.example")
    assert a.fingerprint == b.fingerprint and a.domain == "a.example" and b.domain == "b.example"
    assert a.overlay is b.overlay and a.provenance is b.provenance and a.policy is b.policy


def test_invalidate() -> None:
    store, clock = FakeStore(), Clock()
    tp = redis_policies(store, clock)
    assert tp.policy_for("x@a.example") is tp.global_policy
    store.set("a.example", {"bypass": True})
    tp.invalidate("a.example")
    assert tp.policy_for("x@a.example").bypass is True
