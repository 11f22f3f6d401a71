"""DMARC per RFC 9989: record syntax, the DNS Tree Walk, Organizational Domains, alignment, policy."""

from __future__ import annotations

import time

import pytest
from tests.zones.fake_resolver import FakeResolver

from quorum.auth.dkim import DkimResult
from quorum.auth.dmarc import (
    DmarcRecord,
    _Lookup,
    author_domain,
    evaluate,
    organizational_domain,
    parse_record,
    tree_walk,
)
from quorum.auth.dmarc import walk as dmarc_walk
from quorum.auth.resolver import DnsTempError
from quorum.auth.spf import SpfResult
from quorum.message import Header


def spf(result: str, domain: str) -> SpfResult:
    return SpfResult(result, "mailfrom", domain, f"bounce@{domain}")


def dkim(result: str, domain: str) -> DkimResult:
    return DkimResult(result, domain, "sel")


def frm(value: str) -> list[Header]:
    return [Header("From", f" {value}".encode()), Header("Subject", b" hi")]


@pytest.mark.parametrize(
    ("text", "tags"),
    [
        (b"v=DMARC1; p=reject", {"v": "DMARC1", "p": "reject"}),
        (b"v=DMARC1;p=none;", {"v": "DMARC1", "p": "none"}),
        (b"v = DMARC1 ; p = quarantine ; sp=none", {"v": "DMARC1", "p": "quarantine", "sp": "none"}),
        (b"v=DMARC1", {"v": "DMARC1"}),
        (b"p=reject; v=DMARC1", None),
        (b"v=dmarc1; p=reject", None),
        (b"v=spf1 -all", None),
        (b"v=DMARC1; p=reject; junk", {"v": "DMARC1", "p": "reject"}),
        (b"\xff", None),
    ],
)
def test_parse_record(text: bytes, tags: dict[str, str] | None) -> None:
    assert parse_record(text) == tags


@pytest.mark.parametrize(
    ("value", "domain", "problem"),
    [
        ("Alice <alice@Example.COM>", "example.com", ""),
        ("alice@example.com.", "example.com", ""),
        ('"Doe, John" <j@example.com>, other@example.com', "example.com", ""),
        ("a@example.com, b@example.org", "", "From names several domains"),
        ("undisclosed", "", "no domain in From"),
        ("Jörg <j@bücher.example>", "xn--bcher-kva.example", ""),
    ],
)
def test_author_domain(value: str, domain: str, problem: str) -> None:
    assert author_domain(frm(value)) == (domain, problem)


def test_author_domain_needs_exactly_one_from() -> None:
    assert author_domain([Header("Subject", b" x")]) == ("", "no From header")
    assert author_domain(frm("a@x.example") + frm("b@x.example")) == ("", "several From headers")


def walk(found: dict[str, str], domain: str) -> tuple[list[str], list[str]]:
    asked: list[str] = []

    def record(name: str) -> DmarcRecord | None:
        asked.append(name)
        tags = parse_record(found[name].encode()) if name in found else None
        return DmarcRecord(name, tags) if tags else None

    return [r.domain for r in tree_walk(domain, record)], asked


def test_tree_walk_shortcut_keeps_queries_at_five() -> None:
    _, asked = walk({}, "a.b.c.d.e.mail.example.com")
    assert asked == ["a.b.c.d.e.mail.example.com", "e.mail.example.com", "mail.example.com", "example.com", "com"]


def test_tree_walk_collects_records_and_stops_at_psd() -> None:
    found = {"mail.example.com": "v=DMARC1; p=none", "example.com": "v=DMARC1; p=reject", "com": "v=DMARC1; psd=y"}
    assert walk(found, "a.mail.example.com")[0] == ["mail.example.com", "example.com", "com"]
    found["example.com"] = "v=DMARC1; p=reject; psd=n"
    domains, asked = walk(found, "a.mail.example.com")
    assert domains == ["mail.example.com", "example.com"] and "com" not in asked
    # psd=n at the start stops at once
    assert walk({"x.example": "v=DMARC1; psd=n"}, "x.example")[1] == ["x.example"]


@pytest.mark.parametrize(
    ("found", "domain", "org"),
    [
        # the spec's examples
        ({"mail.example.com": "v=DMARC1", "example.com": "v=DMARC1"}, "a.mail.example.com", "example.com"),
        ({"com": "v=DMARC1; psd=y"}, "a.mail.example.com", "example.com"),
        ({}, "a.mail.example.com", "a.mail.example.com"),
        ({"mail.example.com": "v=DMARC1; psd=n", "example.com": "v=DMARC1"}, "a.mail.example.com", "mail.example.com"),
        ({"example.com": "v=DMARC1", "com": "v=DMARC1; psd=y"}, "example.com", "example.com"),
        ({"com": "v=DMARC1; psd=y"}, "com", "com"),
    ],
)
def test_organizational_domain(found: dict[str, str], domain: str, org: str) -> None:
    def record(name: str) -> DmarcRecord | None:
        tags = parse_record(found[name].encode()) if name in found else None
        return DmarcRecord(name, tags) if tags else None

    assert organizational_domain(domain, tree_walk(domain, record)) == org


@pytest.fixture()
def dns() -> FakeResolver:
    return FakeResolver(
        [
            ("_dmarc.example.com", "TXT", "v=DMARC1; p=reject; rua=mailto:d@example.com"),
            ("_dmarc.strict.example", "TXT", "v=DMARC1; p=reject; adkim=s; aspf=s"),
            ("_dmarc.org.example", "TXT", "v=DMARC1; p=none; sp=reject; np=quarantine"),
            ("sub.org.example", "A", "192.0.2.1"),
            ("_dmarc.none.example", "TXT", "v=DMARC1; p=none"),
            ("_dmarc.test.example", "TXT", "v=DMARC1; p=reject; t=y"),
            ("_dmarc.two.example", "TXT", "v=DMARC1; p=reject"),
            ("_dmarc.two.example", "TXT", "v=DMARC1; p=none"),
            ("_dmarc.badp.example", "TXT", "v=DMARC1; p=bogus; rua=mailto:x@badp.example"),
            ("_dmarc.badp2.example", "TXT", "v=DMARC1; p=bogus"),
            ("_dmarc.nop.example", "TXT", "v=DMARC1; rua=mailto:x@nop.example"),
            ("_dmarc.psd.example", "TXT", "v=DMARC1; p=quarantine; psd=y"),
            ("_dmarc.own.example.com", "TXT", "v=DMARC1; p=none"),
        ],
        failing=["_dmarc.broken.example"],
    )


def run(dns: FakeResolver, author: str, s: SpfResult | None, d: list[DkimResult]) -> tuple[str, str, str]:
    result = evaluate(frm(f"x@{author}"), s, d, dns, time.monotonic() + 5)
    return result.result, result.policy_tag, result.policy


def test_pass_by_spf_alone_with_relaxed_alignment(dns: FakeResolver) -> None:
    result = evaluate(frm("x@example.com"), spf("pass", "bounce.example.com"), [], dns, time.monotonic() + 5)
    assert (result.result, result.spf_aligned, result.dkim_aligned) == ("pass", True, False)
    assert (result.policy, result.published_p, result.policy_domain) == ("reject", "reject", "example.com")


def test_pass_by_dkim_alone(dns: FakeResolver) -> None:
    result = evaluate(
        frm("x@example.com"),
        spf("fail", "example.com"),
        [dkim("fail", "evil.example"), dkim("pass", "example.com")],
        dns,
        time.monotonic() + 5,
    )
    assert (result.result, result.spf_aligned, result.dkim_aligned) == ("pass", False, True)


def test_unaligned_passes_do_not_count(dns: FakeResolver) -> None:
    assert run(dns, "example.com", spf("pass", "other.example"), [dkim("pass", "other.example")]) == (
        "fail",
        "p",
        "reject",
    )
    # a subdomain with its own record still shares example.com as Organizational Domain
    assert run(dns, "example.com", spf("pass", "own.example.com"), []) == ("pass", "p", "reject")
    # a lookalike suffix is not a subdomain
    assert run(dns, "example.com", spf("pass", "badexample.com"), []) == ("fail", "p", "reject")


def test_strict_alignment_needs_the_exact_domain(dns: FakeResolver) -> None:
    assert (
        run(dns, "strict.example", spf("pass", "mail.strict.example"), [dkim("pass", "mail.strict.example")])[0]
        == "fail"
    )
    assert run(dns, "strict.example", spf("pass", "strict.example"), [])[0] == "pass"


def test_subdomain_policy_sp_and_np(dns: FakeResolver) -> None:
    assert run(dns, "org.example", None, []) == ("fail", "p", "none")
    assert run(dns, "sub.org.example", None, []) == ("fail", "sp", "reject")
    assert run(dns, "ghost.org.example", None, []) == ("fail", "np", "quarantine")
    # a pass never needs the existence check
    dns.asked.clear()
    assert run(dns, "ghost.org.example", spf("pass", "org.example"), [])[0] == "pass"
    assert ("ghost.org.example", "A") not in dns.asked


def test_no_record_multiple_records_and_invalid_policy(dns: FakeResolver) -> None:
    assert run(dns, "nothing.example", None, []) == ("none", "", "")
    assert run(dns, "two.example", None, []) == ("none", "", "")
    assert run(dns, "badp.example", None, []) == ("fail", "p", "none")  # rua given: as if p=none
    assert run(dns, "badp2.example", None, []) == ("none", "", "")
    assert run(dns, "nop.example", None, []) == ("fail", "p", "none")


def test_psd_policy_applies_below_a_public_suffix(dns: FakeResolver) -> None:
    result = evaluate(frm("x@shop.psd.example"), None, [], dns, time.monotonic() + 5)
    assert (result.result, result.policy_domain, result.policy) == ("fail", "psd.example", "quarantine")
    # relaxed alignment below a PSD: siblings are different organisations
    assert run(dns, "shop.psd.example", spf("pass", "other.psd.example"), [])[0] == "fail"
    assert run(dns, "mail.shop.psd.example", spf("pass", "shop.psd.example"), [])[0] == "pass"


def test_testing_flag_is_reported(dns: FakeResolver) -> None:
    result = evaluate(frm("x@test.example"), None, [], dns, time.monotonic() + 5)
    assert (result.result, result.policy, result.testing) == ("fail", "reject", True)


def test_temporary_errors(dns: FakeResolver) -> None:
    assert run(dns, "broken.example", spf("pass", "broken.example"), [])[0] == "temperror"
    assert run(dns, "example.com", spf("temperror", "example.com"), [])[0] == "temperror"
    assert run(dns, "example.com", None, [dkim("temperror", "example.com")])[0] == "temperror"
    # an unaligned temperror cannot change the outcome
    assert run(dns, "example.com", spf("temperror", "other.example"), [])[0] == "fail"


def test_unusable_from_is_permerror(dns: FakeResolver) -> None:
    result = evaluate([Header("From", b" a@x.example, b@y.example")], None, [], dns, time.monotonic() + 5)
    assert result.result == "permerror"
    assert dns.asked == []


@pytest.fixture()
def uncooperative() -> FakeResolver:
    """Real DNS: the records exist, but some upper levels answer SERVFAIL or REFUSED."""
    return FakeResolver(
        [
            ("_dmarc.example.com", "TXT", "v=DMARC1; p=reject"),
            ("_dmarc.example.co.uk", "TXT", "v=DMARC1; p=reject"),
            ("_dmarc.example.net", "TXT", "v=DMARC1; p=reject"),
            ("_dmarc.org.example", "TXT", "v=DMARC1; p=none; sp=reject; np=quarantine"),
            ("_dmarc.same.example", "TXT", "v=DMARC1; p=none; sp=reject; np=reject"),
        ],
        failing=["_dmarc.com", "_dmarc.co.uk", "_dmarc.y.example.net", "_dmarc.example", "ghost.org.example"],
    )


def test_failing_tld_does_not_let_a_spoof_through(uncooperative: FakeResolver) -> None:
    """Defect: `_dmarc.com` SERVFAIL made a spoofed From: of a p=reject domain temperror (accepted)."""
    assert run(uncooperative, "example.com", spf("pass", "attacker.com"), [dkim("pass", "attacker.com")]) == (
        "fail",
        "p",
        "reject",
    )
    # a subdomain without a record of its own: example.com's record is the only one that can apply
    assert run(uncooperative, "sub.example.com", spf("pass", "attacker.com"), []) == ("fail", "p", "reject")

    # the failed name is asked once per message, however many walks pass by it
    uncooperative.asked.clear()
    assert (
        run(uncooperative, "example.com", spf("temperror", "b.example.com"), [dkim("pass", "m.example.com")])[0]
        == "pass"
    )
    assert uncooperative.asked.count(("_dmarc.com", "TXT")) == 1


def test_failing_tld_keeps_relaxed_alignment(uncooperative: FakeResolver) -> None:
    assert run(uncooperative, "example.com", spf("pass", "bounce.example.com"), []) == ("pass", "p", "reject")
    assert run(uncooperative, "example.com", None, [dkim("pass", "mail.example.com")])[0] == "pass"
    assert run(uncooperative, "sub.example.com", spf("pass", "example.com"), [])[0] == "pass"


def test_temperror_only_where_the_missing_answer_decides(uncooperative: FakeResolver) -> None:
    # `_dmarc.co.uk` unanswered: co.uk (psd=n, or psd=y at uk) could make attacker.co.uk aligned
    assert run(uncooperative, "example.co.uk", spf("pass", "attacker.co.uk"), [])[0] == "temperror"
    # ... but never a domain outside co.uk
    assert run(uncooperative, "example.co.uk", spf("pass", "other.example"), []) == ("fail", "p", "reject")
    # an exactly aligned pass needs no Organizational Domain
    assert run(uncooperative, "example.co.uk", spf("pass", "example.co.uk"), [])[0] == "pass"
    # no record of its own and the walk cut below example.net: y.example.net could hold psd=n; p=none
    assert run(uncooperative, "x.y.example.net", spf("pass", "attacker.test"), [])[0] == "temperror"
    # the Author Domain's own record unanswered: always temperror
    assert run(uncooperative, "y.example.net", spf("pass", "attacker.test"), [])[0] == "temperror"


def test_np_existence_check_failure(uncooperative: FakeResolver) -> None:
    # ghost.org.example A/AAAA/MX unanswered: np=quarantine or sp=reject?
    assert run(uncooperative, "ghost.org.example", None, [])[0] == "temperror"
    uncooperative.failing.add("ghost.same.example")
    # np equals sp: the answer cannot change the outcome
    assert run(uncooperative, "ghost.same.example", None, []) == ("fail", "sp", "reject")


def test_walk_reports_where_it_was_cut(uncooperative: FakeResolver) -> None:
    lookup = _Lookup(uncooperative, time.monotonic() + 5)
    cut = dmarc_walk("a.example.com", lookup.record)
    assert ([r.domain for r in cut.found], cut.unanswered) == (["example.com"], "com")
    assert cut.org_candidates() == {"example.com"}  # com: never an Organizational Domain itself
    cut = dmarc_walk("example.co.uk", lookup.record)
    assert cut.org_candidates() == {"example.co.uk", "co.uk"}
    with pytest.raises(DnsTempError):
        tree_walk("a.example.com", lookup.record)
