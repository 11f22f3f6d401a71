"""The Authentication-Results header we write, and recognising forged ones that claim our id."""

from __future__ import annotations

import authres
import pytest

from quorum.auth.dkim import DkimResult
from quorum.auth.dmarc import DmarcResult
from quorum.auth.results import claimed_authserv_id, claims_our_id, header_value
from quorum.auth.spf import SpfResult


def parse(value: str) -> authres.AuthenticationResultsHeader:
    return authres.AuthenticationResultsHeader.parse_value(value.replace("\n\t", " "))


def test_full_header_round_trips_through_authres() -> None:
    value = header_value(
        "mx.example.net",
        SpfResult("pass", "mailfrom", "example.com", "bounce@example.com"),
        [
            DkimResult("pass", "example.com", "sel", "rsa-sha256", "AbCdEf012345"),
            DkimResult("fail", "x.example", "s2", reason="body hash mismatch"),
        ],
        DmarcResult("pass", "example.com", "reject", "p", "example.com", published_p="reject"),
    )
    assert value.startswith("mx.example.net;\n\tspf=pass")
    header = parse(value)
    assert header.authserv_id == "mx.example.net"
    methods = [(r.method, r.result) for r in header.results]
    assert methods == [("spf", "pass"), ("dkim", "pass"), ("dkim", "fail"), ("dmarc", "pass")]
    spf, dkim1, _, dmarc = header.results
    assert spf.smtp_mailfrom == "bounce@example.com"
    assert (dkim1.header_d, dkim1.header_s) == ("example.com", "sel")
    assert {(p.type, p.name): p.value for p in dkim1.properties}[("header", "b")] == "AbCdEf012345"
    assert "dkim=fail (body hash mismatch) header.d=x.example" in value  # authres drops comments when parsing
    assert next((p.type, p.name, p.value) for p in dmarc.properties) == ("header", "from", "example.com")
    # RFC 9989's polrec ptype comes last: parsers that predate it (authres too) still read header.from
    assert value.endswith(
        "dmarc=pass (p=reject dis=none) header.from=example.com polrec.p=reject polrec.domain=example.com"
    )


def test_dmarc_fail_comment_names_the_policy_and_disposition() -> None:
    value = header_value(
        "mx", None, None, DmarcResult("fail", "sub.org.test", "reject", "sp", "org.test", published_p="none")
    )
    assert "dmarc=fail (sp=reject dis=reject) " in value
    assert "header.from=sub.org.test polrec.p=none polrec.domain=org.test" in value
    testing = header_value("mx", None, None, DmarcResult("fail", "t.test", "reject", "p", "t.test", "reject", True))
    assert "dis=none; t=y" in testing


def test_unsigned_is_dkim_none_and_helo_identity_and_auth() -> None:
    value = header_value(
        "mx", SpfResult("pass", "helo", "mx.example.com", "postmaster@mx.example.com"), [], None, "alice"
    )
    header = parse(value)
    assert [(r.method, r.result) for r in header.results] == [("auth", "pass"), ("spf", "pass"), ("dkim", "none")]
    assert header.results[0].smtp_auth == "alice"
    assert header.results[1].smtp_helo == "mx.example.com"


def test_nothing_evaluated_is_none() -> None:
    assert header_value("mx", None, None, None) == "mx; none"


def test_comments_cannot_break_the_header() -> None:
    value = header_value(
        "mx", SpfResult("fail", "mailfrom", "e.test", "a@e.test", "bad (very) \\ bad\r\nX-Evil: 1"), None, None
    )
    assert "\r" not in value and "X-Evil: 1" not in value.split("\n\t", 1)[0]
    assert parse(value).results[0].result == "fail"


@pytest.mark.parametrize(
    ("raw", "claimed"),
    [
        (b" mx.example.net; spf=pass smtp.mailfrom=a@b", "mx.example.net"),
        (b" MX.Example.NET; none", "mx.example.net"),
        (b"mx.example.net 1; dkim=pass", "mx.example.net"),
        (b" (forged) mx.example.net; dkim=pass", "mx.example.net"),
        (b" (nested (comment) \\) here) mx.example.net;", "mx.example.net"),
        (b'\r\n\t"mx.example.net"; spf=pass', "mx.example.net"),
        (b" mx.example.net.;spf=pass", "mx.example.net"),
        (b" other.example; spf=pass", "other.example"),
        (b" ", ""),
        (b" ;;;", ""),
        (b" (unterminated comment mx.example.net;", ""),
    ],
)
def test_claimed_authserv_id(raw: bytes, claimed: str) -> None:
    assert claimed_authserv_id(raw) == claimed


def test_predicate_matches_only_our_id() -> None:
    ours = claims_our_id("MX.example.net")
    assert ours(b" mx.example.net; spf=pass")  # type: ignore[operator]
    assert not ours(b" mx.example.net.evil; spf=pass")  # type: ignore[operator]
    assert not ours(b" evil.mx.example.net; spf=pass")  # type: ignore[operator]
