"""SPF through pyspf with every lookup going to our resolver (an in-memory one here)."""

from __future__ import annotations

import threading
import time

import pytest
import spf as pyspf
from tests.zones.fake_resolver import FakeResolver

from quorum.auth.spf import check_spf

GOOD = "192.0.2.10"
BAD = "198.51.100.20"


@pytest.fixture()
def resolver() -> FakeResolver:
    many = " ".join(f"a:h{i}.many.test" for i in range(1, 12))
    records = [
        ("pass.test", "TXT", "v=spf1 ip4:192.0.2.0/24 -all"),
        ("fail.test", "TXT", "v=spf1 ip4:198.18.0.0/15 -all"),
        ("soft.test", "TXT", "v=spf1 ~all"),
        ("neutral.test", "TXT", "v=spf1 ?all"),
        ("none.test", "A", "192.0.2.1"),
        ("loop.test", "TXT", "v=spf1 include:loop.test -all"),
        ("many.test", "TXT", f"v=spf1 {many} -all"),
        ("two.test", "TXT", "v=spf1 -all"),
        ("two.test", "TXT", "v=spf1 +all"),
        ("include.test", "TXT", "v=spf1 include:pass.test -all"),
        ("mx.test", "TXT", "v=spf1 mx -all"),
        ("mx.test", "MX", "10 mx1.mx.test."),
        ("mx1.mx.test", "A", GOOD),
        ("helo.pass.test", "TXT", "v=spf1 ip4:192.0.2.0/24 -all"),
        ("split.test", "TXT", '"v=spf1 ip4:192.0.2.0/24 " "-all"'),
        ("six.test", "TXT", "v=spf1 ip6:2001:db8::/32 -all"),
    ]
    records += [(f"h{i}.many.test", "A", f"198.18.0.{i}") for i in range(1, 12)]
    return FakeResolver(records, failing=["temp.test"])


def deadline() -> float:
    return time.monotonic() + 5


@pytest.mark.parametrize(
    ("domain", "ip", "expected"),
    [
        ("pass.test", GOOD, "pass"),
        ("pass.test", BAD, "fail"),
        ("fail.test", GOOD, "fail"),
        ("soft.test", GOOD, "softfail"),
        ("neutral.test", GOOD, "neutral"),
        ("none.test", GOOD, "none"),
        ("nxdomain.test", GOOD, "none"),
        ("loop.test", GOOD, "permerror"),
        ("many.test", GOOD, "permerror"),
        ("two.test", GOOD, "permerror"),
        ("include.test", GOOD, "pass"),
        ("mx.test", GOOD, "pass"),
        ("split.test", GOOD, "pass"),
        ("six.test", "2001:db8::25", "pass"),
        ("temp.test", GOOD, "temperror"),
    ],
)
def test_results(resolver: FakeResolver, domain: str, ip: str, expected: str) -> None:
    result = check_spf(resolver, ip, f"user@{domain}", "helo.example", deadline())
    assert result.result == expected, result
    assert result.identity == "mailfrom"
    assert result.domain == domain
    assert result.sender == f"user@{domain}"


def test_lookups_go_through_our_resolver(resolver: FakeResolver) -> None:
    check_spf(resolver, GOOD, "user@include.test", "helo", deadline())
    assert ("include.test", "TXT") in resolver.asked
    assert ("pass.test", "TXT") in resolver.asked


def test_ten_lookup_limit_counts_terms(resolver: FakeResolver) -> None:
    result = check_spf(resolver, GOOD, "user@many.test", "helo", deadline())
    assert result.result == "permerror"
    assert "lookup" in result.reason.lower() and "lookup" in result.comment.lower()
    # pyspf stops at the limit: the eleventh name is never asked
    assert ("h11.many.test", "A") not in resolver.asked


def test_null_sender_checks_helo_identity(resolver: FakeResolver) -> None:
    result = check_spf(resolver, GOOD, "", "helo.pass.test", deadline())
    assert (result.result, result.identity, result.domain) == ("pass", "helo", "helo.pass.test")
    assert result.sender == "postmaster@helo.pass.test"


@pytest.mark.parametrize("helo", ["", "[192.0.2.10]", "localhost"])
def test_null_sender_without_usable_helo_is_none(resolver: FakeResolver, helo: str) -> None:
    assert check_spf(resolver, GOOD, "<>", helo, deadline()).result == "none"


def test_no_client_address_is_none(resolver: FakeResolver) -> None:
    result = check_spf(resolver, "", "user@pass.test", "helo", deadline())
    assert result.result == "none"
    assert resolver.asked == []


def test_expired_deadline_is_temperror(resolver: FakeResolver) -> None:
    result = check_spf(resolver, GOOD, "user@pass.test", "h", time.monotonic() - 1)
    assert result.result == "temperror"


def test_hook_is_unbound_after_a_check_and_per_thread(resolver: FakeResolver) -> None:
    check_spf(resolver, GOOD, "user@pass.test", "h", deadline())
    from quorum.auth import spf as ours

    assert getattr(ours._bound, "binding", None) is None
    assert pyspf.DNSLookup is ours._lookup
    results: list[str] = []

    def other() -> None:
        results.append(check_spf(resolver, GOOD, "user@fail.test", "h", deadline()).result)

    threads = [threading.Thread(target=other) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == ["fail"] * 4
