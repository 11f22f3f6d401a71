"""Issue 19, DKIM signing, end to end: client -> Postfix -> `quorum run` -> sink, keys published in
the test NSD, and what the sink received verified by independent verifiers asking that NSD: Perl's
Mail::DKIM (tests/harness/dkim_verify.pl) and rspamd (/checkv2). Debian 12's Mail::DKIM
(1.20230212) predates its Ed25519 support (it says "unsupported algorithm ed25519-sha256"), so
Ed25519 signatures are verified by rspamd, RSA ones by both.

Authenticated sessions are XCLIENT LOGIN= (Postfix hands the login to the milter as
{auth_authen}); `[signing] networks` covers a relay that does not authenticate.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from tests.harness.dkim_keys import KeyFile, write_ed25519, write_rsa
from tests.harness.dkim_verifier import Verdict, mail_dkim, rspamd_dkim
from tests.harness.rspamd import Rspamd
from tests.harness.sink import Delivered
from tests.harness.smtp_client import SendResult
from tests.zones import auth as z
from tests.zones.auth_stack import AUTH_BASE, AUTHSERV, AuthStack, auth_stack, header_values

pytestmark = pytest.mark.integration

RELAY = "198.18.0.5"  # in [signing] networks: signed without AUTH


@dataclass
class Stack:
    auth: AuthStack
    keys: dict[str, KeyFile]
    rspamd: Rspamd

    def send(self, raw: bytes, sender: str, login: str = "", client: str = z.CLIENT_GOOD) -> SendResult:
        return self.auth.send(raw, sender, client=client, login=login)

    def received(self, raw: bytes, sender: str, login: str = "", client: str = z.CLIENT_GOOD) -> Delivered:
        result = self.send(raw, sender, login, client)
        assert result.accepted, result
        (got,) = self.auth.delivered(1)
        return got

    def verify(self, raw: bytes) -> Verdict:
        return mail_dkim(raw, self.auth.dns.port)

    def results(self, raw: bytes) -> dict[str, str]:
        """Each signature's result ("d:s=selector" -> pass | fail | ...), as both verifiers agree on it."""
        by_rspamd = rspamd_dkim(self.rspamd.url, raw)
        for sig in self.verify(raw).signatures:
            name = f"{sig.domain}:s={sig.selector}"
            if sig.algorithm == "ed25519-sha256" and sig.detail == "invalid (unsupported algorithm ed25519-sha256)":
                continue  # Mail::DKIM 1.20230212: rspamd alone
            assert by_rspamd.get(name) == sig.result, (name, sig, by_rspamd)
        return by_rspamd

    def signed(self, raw: bytes) -> dict[str, str]:
        """`results` after checking that Mail::DKIM verified every RSA signature itself."""
        mail = self.verify(raw)
        assert [s.result for s in mail.signatures if s.algorithm == "rsa-sha256"], mail
        return self.results(raw)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("signing-stack")
    keys = {
        "rsa": write_rsa(root / "keys" / "signer.test.s1.pem", 2048),
        "ed": write_ed25519(root / "keys" / "signer.test.ed1.pem"),
        "sub": write_rsa(root / "keys" / "org.test.sub.pem", 2048),
        "new": write_rsa(root / "keys" / "rotate.test.new.pem", 2048),
        "other": write_rsa(root / "keys" / "rotate.test.other.pem", 2048),  # published for "new": a mismatch
        "unpublished": write_ed25519(root / "keys" / "rotate.test.next.pem"),
    }
    records = [
        ("s1._domainkey.signer.test", "TXT", keys["rsa"].record),
        ("ed1._domainkey.signer.test", "TXT", keys["ed"].record),
        ("sub._domainkey.org.test", "TXT", keys["sub"].record),
        ("new._domainkey.rotate.test", "TXT", keys["other"].record),
    ]

    def entry(domain: str, selector: str, key: str) -> str:
        return f'[[signing.keys]]\ndomain = "{domain}"\nselector = "{selector}"\nkey = "{keys[key].path}"\n'

    body = (
        AUTH_BASE
        + """
[auth]
dmarc_enforce = "reject"

[signing]
networks = ["198.18.0.0/16"]
log_interval = "1h"
"""
        + entry("signer.test", "s1", "rsa")
        + entry("signer.test", "ed1", "ed")
        + entry("*.org.test", "sub", "sub")
        + entry("rotate.test", "new", "new")
        + entry("rotate.test", "next", "unpublished")
    )
    # Postfix completes submissions (Message-ID, Date) as a submission server does.
    overrides = {"always_add_missing_headers": "yes"}
    with auth_stack(root, body, records, postfix_overrides=overrides) as s:
        rspamd = Rspamd(root / "rspamd", s.dns.port).start()
        try:
            yield Stack(s, keys, rspamd)
        finally:
            rspamd.stop()


def message(sender: str, subject: str = "quarterly numbers", extra: str = "") -> bytes:
    return (
        f"From: Alice Example <{sender}>\r\n"
        f"To: Bob <bob@rcpt.test>\r\n"
        f"Subject: {subject}\r\n"
        "Date: Mon, 01 Jan 2024 12:00:00 +0000\r\n"
        f"Message-ID: <{abs(hash((sender, subject)))}@signer.test>\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        f"{extra}"
        "\r\n"
        "Hello Bob,  \r\n\r\nthe numbers are\tattached.\r\n\r\n"
    ).encode()


def dkim_fields(raw: bytes) -> list[bytes]:
    """Each DKIM-Signature field's whole (folded) value."""
    head = raw.split(b"\r\n\r\n", 1)[0]
    return re.findall(rb"(?im)^DKIM-Signature:([^\r\n]*(?:\r\n[ \t][^\r\n]*)*)", head)


def test_authenticated_mail_is_signed_with_rsa_and_ed25519_and_verifies(stack: Stack) -> None:
    got = stack.received(message("alice@signer.test"), "alice@signer.test", login="alice")
    sigs = dkim_fields(got.raw)
    assert len(sigs) == 2, got.raw[:2000]
    assert stack.signed(got.raw) == {"signer.test:s=s1": "pass", "signer.test:s=ed1": "pass"}
    assert stack.verify(got.raw).overall == "pass"
    # the Ed25519 signature on its own (a receiver that knows only Ed25519, RFC 8463)
    ed_only = re.sub(rb"DKIM-Signature: v=1; a=rsa-sha256;[^\r]*\r\n(?:[ \t][^\r\n]*\r\n)*", b"", got.raw, count=1)
    assert len(dkim_fields(ed_only)) == 1
    assert stack.results(ed_only) == {"signer.test:s=ed1": "pass"}
    head = got.raw.split(b"\r\n\r\n", 1)[0]
    # Quorum's own fields are on the delivered message and outside the signature
    assert header_values(got.raw, "X-Quorum-Verdict") and header_values(got.raw, "Authentication-Results")
    assert AUTHSERV.encode() in b"".join(header_values(got.raw, "Authentication-Results"))
    h = re.search(rb"h=([^;]*);", b"".join(sigs[0].split())).group(1).split(b":")  # type: ignore[union-attr]
    assert b"from" in h and h.count(b"from") == 2
    assert not {b"x-quorum-verdict", b"authentication-results", b"received"} & set(h)
    assert b"l=" not in b"".join(sigs[0].split()).replace(b"; ", b";")
    assert head.index(b"DKIM-Signature:") < head.index(b"X-Quorum-Verdict:")


def test_a_message_changed_after_signing_fails_verification(stack: Stack) -> None:
    got = stack.received(message("alice@signer.test", "to be tampered"), "alice@signer.test", login="alice")
    both_fail = {"signer.test:s=s1": "fail", "signer.test:s=ed1": "fail"}
    assert set(stack.signed(got.raw).values()) == {"pass"}
    body_changed = got.raw.replace(b"the numbers are", b"the numbers were")
    assert stack.signed(body_changed) == both_fail
    (rsa,) = [s for s in stack.verify(body_changed).signatures if s.algorithm == "rsa-sha256"]
    assert "body has been altered" in rsa.detail, rsa
    subject_changed = got.raw.replace(b"Subject: to be tampered", b"Subject: to be trusted")
    assert stack.signed(subject_changed) == both_fail
    second_from = got.raw.replace(b"\r\n\r\n", b"\r\nFrom: Mallory <ceo@signer.test>\r\n\r\n", 1)
    assert stack.signed(second_from) == both_fail


def test_quorums_own_fields_can_change_downstream(stack: Stack) -> None:
    """A receiving Quorum strips our X-Quorum-* and adds its own; a receiver adds its A-R: still pass."""
    got = stack.received(message("alice@signer.test", "relabelled"), "alice@signer.test", login="alice")
    head, body = got.raw.split(b"\r\n\r\n", 1)
    kept = re.sub(rb"(?m)^X-Quorum-[^\r\n]*\r\n(?:[ \t][^\r\n]*\r\n)*", b"", head + b"\r\n")
    relabelled = b"X-Quorum-Verdict: spam; score=9.00\r\nAuthentication-Results: mx.receiver; dkim=pass\r\n" + kept
    assert b"X-Quorum-Engines" not in relabelled or b"X-Quorum-Verdict: clean" not in relabelled
    assert stack.signed(relabelled + b"\r\n" + body) == {"signer.test:s=s1": "pass", "signer.test:s=ed1": "pass"}


def test_unauthenticated_mail_is_not_signed(stack: Stack) -> None:
    got = stack.received(message("alice@signer.test", "forged"), "alice@signer.test", client=z.CLIENT_BAD)
    assert dkim_fields(got.raw) == []
    assert stack.verify(got.raw).overall == "none" and stack.results(got.raw) == {}


def test_a_relay_in_networks_is_signed_without_authentication(stack: Stack) -> None:
    got = stack.received(message("alice@signer.test", "via the relay"), "alice@signer.test", client=RELAY)
    assert stack.signed(got.raw) == {"signer.test:s=s1": "pass", "signer.test:s=ed1": "pass"}


def test_a_subdomain_is_signed_by_the_wildcard_entry(stack: Stack) -> None:
    got = stack.received(message("alice@eu.org.test", "from a subdomain"), "alice@eu.org.test", login="alice")
    assert stack.signed(got.raw) == {"org.test:s=sub": "pass"}


def test_a_from_domain_without_a_key_is_delivered_unsigned_and_logged_once(stack: Stack) -> None:
    for i in range(2):
        got = stack.received(message("bob@nokey.test", f"no key {i}"), "bob@nokey.test", login="bob")
        assert dkim_fields(got.raw) == []
    assert len(stack.auth.log_lines("no DKIM key for nokey.test")) == 1
    assert len(stack.auth.log_lines("not signed: no key for nokey.test")) == 2  # each message's log line


def test_several_from_addresses_are_not_signed(stack: Stack) -> None:
    raw = message("alice@signer.test", "two authors").replace(
        b"From: Alice Example <alice@signer.test>", b"From: alice@signer.test, carol@signer.test"
    )
    got = stack.received(raw, "alice@signer.test", login="alice")
    assert dkim_fields(got.raw) == []
    assert stack.auth.log_lines("not signed: several From: addresses")


def test_headers_postfix_completes_are_signed_as_delivered(stack: Stack) -> None:
    """A submission without Message-ID and Date: Postfix adds them (the client is authenticated);
    Quorum must sign what leaves, not what arrived (Message-ID and Date are over-signed)."""
    raw = re.sub(rb"(?m)^(Date|Message-ID): [^\r]*\r\n", b"", message("alice@signer.test", "completed"))
    got = stack.received(raw, "alice@signer.test", login="alice")
    assert header_values(got.raw, "Message-ID") and header_values(got.raw, "Date"), got.raw[:1500]
    assert stack.signed(got.raw) == {"signer.test:s=s1": "pass", "signer.test:s=ed1": "pass"}, got.raw[:2500]


def dkim_check(stack: Stack, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "quorum", "dkim", "check", "-c", str(stack.auth.quorum.config_path), *extra],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_dkim_check_looks_every_key_up_in_the_dns(stack: Stack) -> None:
    run = dkim_check(stack, "--json")
    assert run.returncode == 1, run.stdout + run.stderr  # not every record matches
    found = {(r["domain"], r["selector"]): r["status"] for r in json.loads(run.stdout)}
    assert found == {
        ("signer.test", "s1"): "match",
        ("signer.test", "ed1"): "match",
        ("*.org.test", "sub"): "match",
        ("rotate.test", "new"): "mismatch",  # the record publishes another key
        ("rotate.test", "next"): "missing",  # a rotation's next key, not published yet
    }
    ok = dkim_check(stack, "--domain", "signer.test")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert re.search(r"^signer\.test s=s1 \(rsa-2048, .*\): match", ok.stdout, re.M), ok.stdout
    assert re.search(r"^signer\.test s=ed1 \(ed25519, .*\): match", ok.stdout, re.M), ok.stdout
    text = dkim_check(stack, "--domain", "rotate.test").stdout
    assert "p= is another public key" in text and "no DKIM key record" in text
    # a rotation's next key, before it is configured: --key
    ed = dkim_check(stack, "--domain", "signer.test", "--selector", "ed1", "--key", str(stack.keys["ed"].path))
    assert ed.returncode == 0 and re.search(r"^signer\.test s=ed1 \(ed25519, .*\): match", ed.stdout, re.M), ed.stdout
    unpublished = str(stack.keys["unpublished"].path)
    later = dkim_check(stack, "--domain", "signer.test", "--selector", "e2026", "--key", unpublished)
    assert later.returncode == 1 and ": missing" in later.stdout, later.stdout


def test_scan_shows_what_would_be_signed(stack: Stack, tmp_path: Path) -> None:
    eml = tmp_path / "m.eml"
    eml.write_bytes(message("alice@signer.test", "dry run"))
    config = str(stack.auth.quorum.config_path)
    run = subprocess.run(
        [sys.executable, "-m", "quorum", "scan", "-c", config, str(eml), "--auth-user", "alice", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    added = json.loads(run.stdout)["headers_added"]
    sigs = [h for h in added if h.startswith("DKIM-Signature: ")]
    assert len(sigs) == 2 and "d=signer.test" in sigs[0] and "s=s1" in sigs[0] and "s=ed1" in sigs[1]
    anonymous = subprocess.run(
        [sys.executable, "-m", "quorum", "scan", "-c", config, str(eml), "--client-ip", z.CLIENT_BAD, "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert not [h for h in json.loads(anonymous.stdout)["headers_added"] if h.startswith("DKIM-Signature")]
