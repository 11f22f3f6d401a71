"""Which buckets a message touches: trust of the sender domain, grouping, overrides, keys."""

from __future__ import annotations

from typing import Any

from quorum.assembly import parse_config
from quorum.message import Envelope
from quorum.ratelimit.buckets import Planner, parse_key
from quorum.ratelimit.settings import RateLimitSettings


def planner(extra: dict[str, Any] | None = None) -> Planner:
    table: dict[str, Any] = {
        "sender_domain": {"messages": 500, "per": "1h"},
        "recipient_domain": {"messages": 5000, "recipients": 9000, "per": "1h"},
        "client_ip": {"messages": 200, "per": "10m"},
        "auth_user": {"recipients": 1000, "per": "1h"},
        **(extra or {}),
    }
    s = parse_config({"ratelimit": table}).feature("ratelimit")
    assert isinstance(s, RateLimitSettings)
    return Planner(s)


def env(**kw: Any) -> Envelope:
    base: dict[str, Any] = {
        "client_ip": "192.0.2.7",
        "sender": "alice@Example.COM",
        "recipients": ["a@one.test", "b@two.test", "<c@TWO.test>", "postmaster"],
    }
    base.update(kw)
    return Envelope(**base)


def summary(charges: list[Any]) -> list[tuple[str, str, str, int]]:
    return [(c.kind, c.subject, c.rule.unit, c.cost) for c in charges]


def test_untrusted_sender_domain_is_not_counted() -> None:
    assert summary(planner().message(env(), sender_trusted=False)) == [
        ("recipient_domain", "one.test", "messages", 1),
        ("recipient_domain", "one.test", "recipients", 1),
        ("recipient_domain", "two.test", "messages", 1),
        ("recipient_domain", "two.test", "recipients", 2),
        ("client_ip", "192.0.2.7", "messages", 1),
    ]


def test_trusted_sender_and_auth_user() -> None:
    e = env(macros={"{auth_authen}": "Alice@Example.com"})
    got = summary(planner().message(e, sender_trusted=True))
    assert got[0] == ("sender_domain", "example.com", "messages", 1)
    assert got[-1] == ("auth_user", "alice@example.com", "recipients", 4)


def test_keys_share_the_subject_as_hash_tag() -> None:
    p = planner()
    charges = p.message(env(), sender_trusted=True)
    keys = {c.key for c in charges}
    assert "quorum:rl:sd:m1h:{example.com}" in keys
    assert "quorum:rl:rd:r1h:{two.test}" in keys
    assert "quorum:rl:ip:m10m:{192.0.2.7}" in keys
    assert len(keys) == len(charges)


def test_subjects_are_escaped_in_keys() -> None:
    p = planner()
    rule = p.settings.defaults["auth_user"][0]
    assert p.key("auth_user", rule, "we}ird {user} \udcff") == "quorum:rl:au:r1h:{we%7Dird%20%7Buser%7D%20%FF}"


def test_cost_is_clamped_to_the_whole_bucket() -> None:
    p = planner({"auth_user": {"recipients": 3, "per": "1h"}})
    e = env(macros={"{auth_authen}": "bob"}, recipients=[f"u{i}@x.test" for i in range(10)])
    assert [c.cost for c in p.message(e, True) if c.kind == "auth_user"] == [3]


def test_overrides_and_exemptions() -> None:
    p = planner(
        {
            "domains": {
                "bulk.example": {"sender_domain": {"messages": 50000, "per": "1h"}},
                "one.test": {"exempt": True},
                "example.com": {"auth_user": {"messages": 0}},
            },
            "networks": {
                "192.0.2.0/24": {"exempt": True},
                "192.0.2.128/25": {"client_ip": {"messages": 7, "per": "1m"}},
            },
        }
    )
    e = env(sender="x@bulk.example", macros={"{auth_authen}": "carol@example.com"})
    got = {(c.kind, c.subject): c.rule.limit for c in p.message(e, True)}
    assert got[("sender_domain", "bulk.example")] == 50000
    assert ("recipient_domain", "one.test") not in got  # exempt
    assert ("client_ip", "192.0.2.7") not in got  # network exempt
    assert ("auth_user", "carol@example.com") not in got  # 0 = unlimited for users of example.com
    got = {(c.kind, c.subject): c.rule.limit for c in p.message(env(client_ip="192.0.2.200"), False)}
    assert got[("client_ip", "192.0.2.200")] == 7  # the longer prefix wins


def test_ip_subjects() -> None:
    p = planner()
    assert p.subject("client_ip", "2001:db8:1:2:3:4:5:6") == "2001:db8:1:2::/64"
    assert p.subject("client_ip", "IPv6:2001:db8::1") == "2001:db8::/64"
    assert p.subject("client_ip", "::ffff:192.0.2.1") == "192.0.2.1"
    assert p.subject("client_ip", "unknown") == ""
    assert not [c for c in p.message(env(client_ip=""), False) if c.kind == "client_ip"]
    assert p.connection("198.51.100.1")[0].key == "quorum:rl:ip:m10m:{198.51.100.1}"


def test_null_sender_and_no_domain_recipients() -> None:
    got = summary(planner().message(env(sender="", recipients=["postmaster"]), True))
    assert got == [("client_ip", "192.0.2.7", "messages", 1)]


def test_parse_key() -> None:
    assert parse_key("sender_domain:example.com") == [("sender_domain", "example.com")]
    assert parse_key("client_ip:2001:db8::1") == [("client_ip", "2001:db8::1")]
    assert parse_key("2001:db8::1") == [("client_ip", "2001:db8::1")]
    assert parse_key("alice@example.com") == [("auth_user", "alice@example.com")]
    assert parse_key("example.com") == [("sender_domain", "example.com"), ("recipient_domain", "example.com")]


# --- recipient_domain_share: one unauthenticated client's share of a recipient domain ------------


def share_planner(share: float = 0.2, by: str = "client_ip", **extra: Any) -> Planner:
    table: dict[str, Any] = {
        "recipient_domain": {"messages": 10, "recipients": 23, "per": "1h"},
        "recipient_domain_share": share,
        "recipient_domain_share_by": by,
        "networks": {"198.18.0.0/15": {"exempt": True}},
        **extra,
    }
    s = parse_config({"ratelimit": table}).feature("ratelimit")
    assert isinstance(s, RateLimitSettings)
    return Planner(s)


def test_an_unauthenticated_client_takes_from_its_share_of_each_recipient_domain() -> None:
    charges = share_planner().message(env(recipients=["a@one.test", "b@one.test"]), sender_trusted=True)
    shares = [c for c in charges if c.share_of]
    assert [(c.kind, c.subject, c.rule.unit, c.rule.limit, c.cost, c.share_of) for c in shares] == [
        ("recipient_domain", "one.test", "messages", 2, 1, "client_ip 192.0.2.7"),  # floor(10 x 0.2)
        ("recipient_domain", "one.test", "recipients", 4, 2, "client_ip 192.0.2.7"),  # floor(23 x 0.2)
    ]
    assert {c.rule.per for c in shares} == {3600.0}
    assert shares[0].key == "quorum:rl:rs:m1h:{one.test}:ip:192.0.2.7"
    assert shares[0].label == "recipient_domain one.test, share of client_ip 192.0.2.7"
    assert shares[0].metric_kind == "recipient_domain_share"
    # Same hash tag as the domain's own buckets: the same Cluster slot, still one call per slot.
    domain_keys = [c.key for c in charges if c.kind == "recipient_domain" and not c.share_of]
    assert {k.split("{")[1].split("}")[0] for k in [*domain_keys, *(c.key for c in shares)]} == {"one.test"}


def test_share_is_never_below_one_unit_and_a_big_message_is_capped() -> None:
    p = share_planner(0.01)
    many = [f"u{i}@one.test" for i in range(9)]
    shares = [c for c in p.message(env(recipients=many), sender_trusted=False) if c.share_of]
    assert [(c.rule.limit, c.cost) for c in shares] == [(1, 1), (1, 1)]


def test_no_share_for_authenticated_exempt_or_unshared() -> None:
    p = share_planner()
    assert not [c for c in p.message(env(macros={"{auth_authen}": "alice"}), sender_trusted=True) if c.share_of]
    assert not [c for c in p.message(env(client_ip="198.18.3.4"), sender_trusted=False) if c.share_of]
    assert not [c for c in share_planner(1.0).message(env(), sender_trusted=False) if c.share_of]
    # A domain may take its own share (or none: 1.0); an exempt domain has no bucket to share.
    p = share_planner(domains={"one.test": {"recipient_domain_share": 1.0}, "two.test": {"exempt": True}})
    assert not [c for c in p.message(env(), sender_trusted=False) if c.share_of]
    p = share_planner(domains={"one.test": {"recipient_domain_share": 0.5}})
    assert [c.rule.limit for c in p.message(env(), sender_trusted=False) if c.share_of and c.subject == "one.test"] == [
        5,
        11,
    ]


def test_share_subject_by_client_network_or_sender() -> None:
    v6 = [c.key for c in share_planner().message(env(client_ip="2001:db8::1:2"), sender_trusted=False) if c.share_of]
    assert v6 and all(k.endswith(":ip:2001:db8::/64") for k in v6)  # one /64 is one client
    unknown = [c.share_of for c in share_planner().message(env(client_ip=""), sender_trusted=False) if c.share_of]
    assert unknown and set(unknown) == {"client_ip unknown"}  # no address: all such clients share one
    by_sender = share_planner(by="sender")
    got = {c.share_of for c in by_sender.message(env(), sender_trusted=False) if c.share_of}
    assert got == {"sender alice@example.com"}
    bounces = {c.share_of for c in by_sender.message(env(sender=""), sender_trusted=False) if c.share_of}
    assert bounces == {"sender <>"}
    braces = [c.key for c in by_sender.message(env(sender="{x}@e.test"), sender_trusted=False) if c.share_of]
    assert braces and all(k.count("{") == 1 for k in braces)  # a sender can never move the hash tag
