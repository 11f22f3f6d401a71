"""Tenant domain matching: exact, wildcard (subdomains only), IDNA, most specific wins."""

from __future__ import annotations

import pytest

from quorum.tenants.names import (
    DomainMatcher,
    DomainNameError,
    normalise_domain,
    normalise_pattern,
    recipient_domain,
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Example.COM", "example.com"),
        ("example.com.", "example.com"),
        ("  example.com ", "example.com"),
        ("Bücher.Example", "xn--bcher-kva.example"),
        ("BÜCHER.example", "xn--bcher-kva.example"),  # UTS 46 case folding
        ("XN--BCHER-KVA.example", "xn--bcher-kva.example"),
        ("faß.de", "xn--fa-hia.de"),  # IDNA 2008: not folded to fass.de as IDNA 2003 would
        ("例え.テスト", "xn--r8jz45g.xn--zckzah"),
    ],
)
def test_normalise_domain(raw: str, expected: str) -> None:
    assert normalise_domain(raw) == expected


@pytest.mark.parametrize("raw", ["", ".", "a..b", "exa mple.com", "-bad.com", "x" * 64 + ".com", "a@b.com"])
def test_not_a_domain(raw: str) -> None:
    with pytest.raises(DomainNameError):
        normalise_domain(raw)


def test_patterns() -> None:
    assert normalise_pattern("*.Example.com") == "*.example.com"
    assert normalise_pattern("*.bücher.example") == "*.xn--bcher-kva.example"
    for bad in ("a.*.example.com", "*example.com", "**.example.com", "*"):
        with pytest.raises(DomainNameError):
            normalise_pattern(bad)


@pytest.mark.parametrize(
    ("recipient", "expected"),
    [
        ("bob@Example.com", "example.com"),
        ("<bob@example.com>", "example.com"),
        ('"a@b"@example.com', "example.com"),
        ("bob@bücher.example", "xn--bcher-kva.example"),
        ("postmaster", None),
        ("bob@", None),
        ("bob@exa mple.com", None),
    ],
)
def test_recipient_domain(recipient: str, expected: str | None) -> None:
    assert recipient_domain(recipient) == expected


def matcher() -> DomainMatcher[str]:
    return DomainMatcher(
        {
            "example.com": "apex",
            "*.example.com": "any-sub",
            "*.deep.example.com": "deep-sub",
            "exact.deep.example.com": "exact",
            "*.xn--bcher-kva.example": "idn-sub",
        }
    )


@pytest.mark.parametrize(
    ("domain", "pattern", "value"),
    [
        ("example.com", "example.com", "apex"),  # exact
        ("a.example.com", "*.example.com", "any-sub"),
        ("a.b.example.com", "*.example.com", "any-sub"),
        ("deep.example.com", "*.example.com", "any-sub"),  # *.deep does not match deep itself
        ("x.deep.example.com", "*.deep.example.com", "deep-sub"),  # most specific wildcard
        ("y.x.deep.example.com", "*.deep.example.com", "deep-sub"),
        ("exact.deep.example.com", "exact.deep.example.com", "exact"),  # exact beats any wildcard
        ("shop.xn--bcher-kva.example", "*.xn--bcher-kva.example", "idn-sub"),
    ],
)
def test_most_specific_match(domain: str, pattern: str, value: str) -> None:
    assert matcher().match(domain) == (pattern, value)


@pytest.mark.parametrize("domain", ["example.org", "notexample.com", "com", "xn--bcher-kva.example"])
def test_no_match(domain: str) -> None:
    assert matcher().match(domain) is None


def test_wildcard_does_not_match_its_apex() -> None:
    m: DomainMatcher[int] = DomainMatcher({"*.example.com": 1})
    assert m.match("example.com") is None
    assert m.match("www.example.com") == ("*.example.com", 1)
    assert sorted(m.patterns()) == ["*.example.com"]
