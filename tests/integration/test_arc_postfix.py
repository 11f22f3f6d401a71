"""Issue 19, ARC end to end: client -> Postfix -> `quorum run` -> sink, every key in the test NSD,
what the sink received judged by Perl's Mail::DKIM::ARC::Verifier (tests/harness/arc_verify.pl).

A mailing list (lists.test) is played by dkimpy's ARC signer with its own key: it checked the
original message (its A-R says dmarc=pass), changed nothing Quorum can see, and sealed. The
message then reaches Quorum from an address the From: domain's SPF does not list, so DMARC
(p=reject) fails there: only the trusted sealer's valid chain lets it through.
"""

from __future__ import annotations

import email
import re
from collections.abc import Iterator
from dataclasses import dataclass

import dkim
import pytest
from tests.harness.dkim_keys import KeyFile, write_rsa
from tests.harness.dkim_verifier import ArcVerdict, mail_arc
from tests.harness.sink import Delivered
from tests.zones import auth as z
from tests.zones.auth_stack import AUTH_BASE, AUTHSERV, AuthStack, auth_stack, header_values

pytestmark = pytest.mark.integration


@dataclass
class Stack:
    auth: AuthStack
    seal_key: KeyFile
    lists: z.DkimKey
    other: z.DkimKey

    def verify(self, raw: bytes) -> ArcVerdict:
        return mail_arc(raw, self.auth.dns.port)

    def received(self, raw: bytes, sender: str, client: str = z.CLIENT_BAD, login: str = "") -> Delivered:
        result = self.auth.send(raw, sender, client=client, login=login)
        assert result.accepted, result
        (got,) = self.auth.delivered(1)
        return got


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("arc-stack")
    seal_key = write_rsa(root / "keys" / "gw.test.arc1.pem", 2048)
    lists = z.make_key("lists.test", "arc", bits=2048)
    other = z.make_key("other-list.test", "arc", bits=2048)
    records = [
        ("arc1._domainkey.gw.test", "TXT", seal_key.record),
        ("arc._domainkey.lists.test", "TXT", lists.record),
        ("arc._domainkey.other-list.test", "TXT", other.record),
    ]
    body = (
        AUTH_BASE
        + f"""
[auth]
dmarc_enforce = "reject"

[arc]
seal = true
domain = "gw.test"
selector = "arc1"
key = "{seal_key.path}"
trusted_sealers = ["lists.test"]
"""
    )
    with auth_stack(root, body, records) as s:
        yield Stack(s, seal_key, lists, other)


def message(sender: str, subject: str = "[announce] release 2.0") -> bytes:
    return (
        f"From: News <{sender}>\r\n"
        "To: announce@lists.test\r\n"
        f"Subject: {subject}\r\n"
        "Date: Mon, 07 Dec 2026 12:00:00 +0000\r\n"
        f"Message-ID: <{abs(hash((sender, subject)))}@reject.test>\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "\r\n"
        "Release 2.0 is out.\r\n"
    ).encode()


def list_sealed(raw: bytes, key: z.DkimKey, header_from: str = "reject.test") -> bytes:
    """`raw` as the list passes it on: its A-R (DMARC passed at the list), then its ARC set."""
    srv = key.domain.encode()
    raw = b"Authentication-Results: " + srv + b"; dmarc=pass header.from=" + header_from.encode() + b"\r\n" + raw
    added = dkim.arc_sign(raw, key.selector.encode(), srv, key.private_pem, srv, linesep=b"\r\n")
    return b"".join(added) + raw


def ours(raw: bytes) -> str:
    head = email.message_from_bytes(raw.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n")
    (value,) = [v for v in head.get_all("Authentication-Results", []) if str(v).strip().startswith(AUTHSERV)]
    return re.sub(r"\s+", " ", str(value))


def test_mail_from_outside_is_sealed_as_the_first_hop_and_verifies(stack: Stack) -> None:
    got = stack.received(message("news@nodmarc.test", "first hop"), "news@nodmarc.test", client=z.CLIENT_GOOD)
    assert got.raw.startswith(b"ARC-Seal: i=1; cv=none; a=rsa-sha256; d=gw.test; s=arc1;")
    verdict = stack.verify(got.raw)
    assert verdict.result == "pass", verdict
    assert [(i, cv, d) for i, cv, d, _ in verdict.seals] == [(1, "none", "gw.test")]
    (aar,) = header_values(got.raw, "ARC-Authentication-Results")
    assert aar.strip().startswith(b"i=1; " + AUTHSERV.encode())


def test_a_trusted_lists_chain_overrides_dmarc_and_is_extended(stack: Stack) -> None:
    got = stack.received(
        list_sealed(message("news@reject.test"), stack.lists), "bounce@reject.test", client=z.CLIENT_BAD
    )
    header = ours(got.raw)
    assert "dmarc=fail" in header and "overridden by arc from lists.test" in header, header
    assert "arc=pass" in header
    verdict = stack.verify(got.raw)
    assert verdict.result == "pass", verdict
    assert [(i, cv, d) for i, cv, d, _ in verdict.seals] == [(1, "none", "lists.test"), (2, "pass", "gw.test")]
    assert stack.auth.log_lines("dmarc_action=none(overridden by arc from lists.test")


def test_an_untrusted_sealer_does_not_override_dmarc(stack: Stack) -> None:
    result = stack.auth.send(
        list_sealed(message("news@reject.test", "other"), stack.other), "bounce@reject.test", client=z.CLIENT_BAD
    )
    assert result.code == 550 and "DMARC" in result.text, result


def test_a_chain_broken_after_the_seal_is_sealed_with_cv_fail(stack: Stack) -> None:
    sealed = list_sealed(message("news@nodmarc.test", "changed"), stack.lists, "nodmarc.test")
    broken = sealed.replace(b"Release 2.0 is out.", b"Release 2.0 is out. Buy now!")
    got = stack.received(broken, "news@nodmarc.test", client=z.CLIENT_GOOD)
    assert "arc=fail" in ours(got.raw)
    verdict = stack.verify(got.raw)
    assert verdict.result == "fail", verdict
    assert (2, "fail", "gw.test") in [(i, cv, d) for i, cv, d, _ in verdict.seals]


def test_a_broken_chain_from_a_trusted_sealer_is_refused_by_dmarc(stack: Stack) -> None:
    sealed = list_sealed(message("news@reject.test", "tampered"), stack.lists)
    broken = sealed.replace(b"Release 2.0 is out.", b"Release 2.0 is out. Click here.")
    result = stack.auth.send(broken, "bounce@reject.test", client=z.CLIENT_BAD)
    assert result.code == 550, result


def test_authenticated_submissions_are_not_sealed(stack: Stack) -> None:
    got = stack.received(message("news@nodmarc.test", "own user"), "news@nodmarc.test", login="alice")
    assert b"ARC-Seal:" not in got.raw


def test_the_verifier_is_not_trivially_passing(stack: Stack) -> None:
    got = stack.received(message("news@nodmarc.test", "tamper test"), "news@nodmarc.test", client=z.CLIENT_GOOD)
    assert stack.verify(got.raw).result == "pass"
    tampered = got.raw.replace(b"Release 2.0 is out.", b"Release 3.0 is out.")
    assert stack.verify(tampered).result == "fail"
