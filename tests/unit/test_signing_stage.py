"""The signing stage in the post-decision hook: what it signs (and what it never signs), with which
keys, and that the message as the receiver gets it verifies (dkimpy's verifier, a fake DNS)."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dkim
import pytest
from tests.harness.dkim_keys import PKCS1, KeyFile, write_ed25519, write_rsa

from quorum.assembly import build_pipeline, parse_config
from quorum.message import Envelope, Message
from quorum.pipeline import amend
from quorum.pipeline.amend import FinalMessage
from quorum.pipeline.output import Edits
from quorum.pipeline.policy import Decision
from quorum.pipeline.stages import Action, Reply
from quorum.pipeline.transaction import Connection, Transaction
from quorum.signing import metrics
from quorum.signing.stage import SigningStage

MESSAGE = (
    b"Received: from client.example (client.example [192.0.2.1])\r\n\tby mx.example.net\r\n"
    b"From: Alice Example <alice@example.com>\r\n"
    b"To: Bob <bob@example.org>,\r\n\tCarol <carol@example.org>\r\n"
    b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?= and a long subject line that goes on\r\n and on\r\n"
    b"Date: Mon, 01 Jan 2024 12:00:00 +0000\r\n"
    b"Message-ID: <m1@example.com>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"X-Quorum-Verdict: clean\r\n"  # forged: Quorum removes it and adds its own
    b"\r\n"
    b"Hello  Bob,\t\r\n\r\nthe numbers are attached.   \r\n\r\n\r\n"
)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, KeyFile]:
    root = tmp_path_factory.mktemp("signing-keys")
    return {
        "rsa": write_rsa(root / "rsa.pem", 2048),
        "ed": write_ed25519(root / "ed.pem"),
        "sub": write_rsa(root / "sub.pem", 1024, PKCS1),
    }


def dns_of(keys: dict[str, KeyFile]) -> dict[bytes, bytes]:
    return {
        b"s1._domainkey.example.com.": keys["rsa"].record.encode(),
        b"ed1._domainkey.example.com.": keys["ed"].record.encode(),
        b"sub._domainkey.example.net.": keys["sub"].record.encode(),
    }


def stage(keys: dict[str, KeyFile], **extra: Any) -> SigningStage:
    entries = [
        {"domain": "example.com", "selector": "s1", "key": str(keys["rsa"].path)},
        {"domain": "example.com", "selector": "ed1", "key": str(keys["ed"].path)},
        {"domain": "*.example.net", "selector": "sub", "key": str(keys["sub"].path)},
    ]
    config = parse_config({"signing": {"keys": entries, **extra}})
    return SigningStage(config.feature("signing"))


def transaction(auth: str = "alice", client: str = "198.51.100.7") -> tuple[Transaction, Envelope]:
    macros = {"i": "4ABC", **({"{auth_authen}": auth} if auth else {})}
    env = Envelope(client, "client.example", "client.example", "alice@example.com", ["bob@example.org"], macros)
    return Transaction(Connection(client), env), env


def edits(action: Action = Action.ACCEPT) -> Edits:
    return Edits(
        action,
        remove=(("X-Quorum-Verdict", 1),),
        add=(
            ("Authentication-Results", "mx.example.net; spf=pass smtp.mailfrom=example.com"),
            ("X-Quorum-Verdict", "clean"),
            ("X-Quorum-Engines", "clamav=clean,\n\trspamd=clean(0.90/15.00)"),
        ),
    )


def run(s: SigningStage, raw: bytes = MESSAGE, auth: str = "alice", client: str = "198.51.100.7",
        action: Action = Action.ACCEPT) -> tuple[Edits, list[str], bytes]:  # fmt: skip
    """The stage's amendment applied as the pipeline applies it, and the message as the receiver gets it."""
    txn, env = transaction(auth, client)
    msg = Message.from_bytes(raw, env)
    try:
        out, notes = amend.run([s], txn, msg, edits(action))
        delivered = b"".join(FinalMessage(msg, out).chunks())
    finally:
        msg.close()
    return out, notes, delivered


def signatures(out: Edits) -> list[str]:
    return [value for name, value in out.add if name == "DKIM-Signature"]


def verify_all(raw: bytes, dns: dict[bytes, bytes]) -> list[bool]:
    def lookup(name: bytes, timeout: int = 5) -> bytes | None:
        return dns.get(name)

    def one(i: int) -> bool:
        try:
            return bool(dkim.DKIM(raw, minkey=1024).verify(idx=i, dnsfunc=lookup))
        except dkim.DKIMException:  # a body hash mismatch is raised, not returned
            return False

    count = len(re.findall(rb"(?im)^dkim-signature:", raw.split(b"\r\n\r\n", 1)[0]))
    return [one(i) for i in range(count)]


def tag(value: str, name: str) -> str:
    found = re.search(rf"(?:^|;)\s*{name}=([^;]*)", value)
    assert found, (name, value)
    return "".join(found.group(1).split())


def test_rsa_and_ed25519_signatures_verify_with_dkimpy(keys: dict[str, KeyFile]) -> None:
    out, notes, delivered = run(stage(keys))
    sigs = signatures(out)
    assert [tag(v, "a") for v in sigs] == ["rsa-sha256", "ed25519-sha256"]  # the first entry on top
    assert [(tag(v, "d"), tag(v, "s")) for v in sigs] == [("example.com", "s1"), ("example.com", "ed1")]
    assert all(tag(v, "c") == "relaxed/relaxed" and "l=" not in v for v in sigs)
    assert [name for name, _ in out.add][:2] == ["DKIM-Signature", "DKIM-Signature"]  # above Quorum's own
    assert notes == ["signing: signed d=example.com s=s1 a=rsa-sha256, d=example.com s=ed1 a=ed25519-sha256"]
    assert verify_all(delivered, dns_of(keys)) == [True, True]


def test_the_signed_header_list_and_over_signing(keys: dict[str, KeyFile]) -> None:
    out, _, _ = run(stage(keys))
    h = tag(signatures(out)[0], "h").split(":")
    assert h.count("from") == 2 and h.count("to") == 2 and h.count("subject") == 2 and h.count("date") == 2
    assert h.count("reply-to") == 1  # absent: signed as absent
    assert not {"received", "x-quorum-verdict", "x-quorum-engines", "authentication-results"} & set(h)


def test_a_change_after_signing_fails_and_quorums_own_fields_do_not_matter(keys: dict[str, KeyFile]) -> None:
    _, _, delivered = run(stage(keys))
    dns = dns_of(keys)
    head, body = delivered.split(b"\r\n\r\n", 1)
    assert verify_all(head + b"\r\n\r\n" + body.replace(b"numbers", b"Numbers"), dns) == [False, False]
    assert verify_all(head.replace(b"Subject: =?utf-8?q?Gr", b"Subject: =?utf-8?q?Xr") + b"\r\n\r\n" + body, dns) == [
        False,
        False,
    ]
    second_from = head + b"\r\nFrom: Mallory <mallory@example.com>\r\n\r\n" + body  # over-signed: breaks it
    assert verify_all(second_from, dns) == [False, False]
    # What a receiver's gateway does to Quorum's fields (strips ours, adds its own) changes nothing:
    stripped = re.sub(rb"(?m)^X-Quorum-[^\r\n]*\r\n(?:[ \t][^\r\n]*\r\n)*", b"", head + b"\r\n")
    relabelled = b"X-Quorum-Verdict: spam\r\nAuthentication-Results: other; dkim=pass\r\n" + stripped
    assert b"X-Quorum-Engines" not in relabelled
    assert verify_all(relabelled + b"\r\n" + body, dns) == [True, True]
    # Relaxed canonicalization: refolding and whitespace inside lines do not matter either.
    refolded = head.replace(b"that goes on\r\n and on", b"that goes on and  on")
    assert verify_all(refolded + b"\r\n\r\n" + body.replace(b"Hello  Bob", b"Hello Bob"), dns) == [True, True]


def test_a_subdomain_is_signed_by_its_wildcard_entry_as_the_parent(keys: dict[str, KeyFile]) -> None:
    raw = MESSAGE.replace(b"alice@example.com", b"alice@eu.Mail.Example.NET")
    out, _, delivered = run(stage(keys), raw)
    assert [(tag(v, "d"), tag(v, "s")) for v in signatures(out)] == [("example.net", "sub")]
    assert verify_all(delivered, dns_of(keys)) == [True]
    bare = MESSAGE.replace(b"alice@example.com", b"alice@example.net")  # "*." is for subdomains only
    out, notes, _ = run(stage(keys), bare)
    assert signatures(out) == [] and notes == ["signing: not signed: no key for example.net"]


def test_an_idn_from_domain_is_signed_as_its_a_label(keys: dict[str, KeyFile]) -> None:
    config = parse_config(
        {"signing": {"keys": [{"domain": "bücher.example", "selector": "s1", "key": str(keys["rsa"].path)}]}}
    )
    s = SigningStage(config.feature("signing"))
    assert config.feature("signing").keys[0].domain == "xn--bcher-kva.example"
    raw = MESSAGE.replace(b"alice@example.com", "alice@Bücher.example".encode())
    out, _, delivered = run(s, raw)
    assert [tag(v, "d") for v in signatures(out)] == ["xn--bcher-kva.example"]
    assert verify_all(delivered, {b"s1._domainkey.xn--bcher-kva.example.": keys["rsa"].record.encode()}) == [True]


def test_a_client_in_networks_is_signed_without_authentication(keys: dict[str, KeyFile]) -> None:
    s = stage(keys, networks=["192.0.2.0/24", "2001:db8::/32"])
    for client in ("192.0.2.77", "2001:db8::25", "IPv6:2001:db8::25", "::ffff:192.0.2.77"):
        out, _, _ = run(s, auth="", client=client)
        assert len(signatures(out)) == 2, client


def unsigned(reason: str) -> float:
    return metrics.UNSIGNED.labels(reason)._value.get()  # type: ignore[no-any-return]


def test_unauthenticated_mail_outside_networks_is_never_signed(keys: dict[str, KeyFile]) -> None:
    before = unsigned("untrusted")
    out, notes, _ = run(stage(keys, networks=["192.0.2.0/24"]), auth="", client="198.51.100.7")
    assert signatures(out) == [] and notes == [] and out.action is Action.ACCEPT
    assert unsigned("untrusted") == before + 1


@pytest.mark.parametrize(
    ("from_field", "reason", "note"),
    [
        (None, "no_from", "not signed: no From: address"),
        (b"From: undisclosed-recipients:;\r\n", "no_from", "not signed: no From: address"),
        (b"From: a@example.com, b@example.com\r\n", "multiple_from", "not signed: several From: addresses"),
        (b"From: a@example.com\r\nFrom: b@example.com\r\n", "multiple_from", "not signed: several From: addresses"),
    ],
)
def test_no_or_several_from_addresses_are_not_signed(
    keys: dict[str, KeyFile], from_field: bytes | None, reason: str, note: str
) -> None:
    raw = re.sub(rb"From: Alice[^\r]*\r\n", from_field or b"", MESSAGE)
    before = unsigned(reason)
    out, notes, _ = run(stage(keys), raw)
    assert signatures(out) == [] and notes == [f"signing: {note}"] and out.action is Action.ACCEPT
    assert unsigned(reason) == before + 1


def test_quarantined_mail_is_not_signed(keys: dict[str, KeyFile]) -> None:
    out, notes, _ = run(stage(keys), action=Action.QUARANTINE)
    assert signatures(out) == [] and notes == ["signing: not signed: held in quarantine"]


def test_a_domain_without_a_key_is_delivered_unsigned_and_logged_once_per_interval(
    keys: dict[str, KeyFile], caplog: pytest.LogCaptureFixture
) -> None:
    now = [1000.0]
    config = parse_config(
        {"signing": {"keys": [{"domain": "example.com", "selector": "s1", "key": str(keys["rsa"].path)}]}}
    )
    s = SigningStage(config.feature("signing"), clock=lambda: now[0])
    other = MESSAGE.replace(b"alice@example.com", b"alice@other.test")
    before = unsigned("no_key")
    with caplog.at_level(logging.WARNING, logger="quorum.signing"):
        for step in (0.0, 10.0, 3000.0, 600.0):  # the last one is 3610 s after the first line
            now[0] += step
            out, notes, _ = run(s, other)
            assert signatures(out) == [] and out.action is Action.ACCEPT
            assert notes == ["signing: not signed: no key for other.test"]
        run(s, MESSAGE.replace(b"alice@example.com", b"alice@third.test"))
    lines = [r.getMessage() for r in caplog.records if r.name == "quorum.signing"]
    assert [line.split(":")[0] for line in lines] == ["no DKIM key for other.test"] * 2 + ["no DKIM key for third.test"]
    assert unsigned("no_key") == before + 5


@pytest.mark.parametrize("on_failure", ["tempfail", "accept"])
def test_a_signing_failure_follows_on_failure(
    keys: dict[str, KeyFile], on_failure: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any, **kw: Any) -> Any:
        raise dkim.KeyFormatError("key gone bad")

    monkeypatch.setattr("quorum.signing.stage.sign", broken)
    out, notes, _ = run(stage(keys, on_failure=on_failure))
    assert signatures(out) == []
    if on_failure == "tempfail":
        assert out.action is Action.TEMPFAIL and out.reply is not None and str(out.reply).startswith("451 4.7.0")
        assert notes[0] == "signing: signing failed (KeyFormatError: key gone bad): answered 451"
    else:
        assert out.action is Action.ACCEPT
        assert notes == [
            "signing: signing failed (KeyFormatError: key gone bad): delivered unsigned (on_failure = accept)"
        ]


@pytest.fixture
def pipeline_with(keys: dict[str, KeyFile]) -> Iterator[Any]:
    entries = [{"domain": "example.com", "selector": "s1", "key": str(keys["rsa"].path)}]
    pipeline = build_pipeline(parse_config({"signing": {"keys": entries}}))
    yield pipeline
    pipeline.close()


@pytest.mark.parametrize(
    "decision",
    [
        Decision(Action.REJECT, "virus", Reply.reject("554", "5.7.1", "virus")),
        Decision(Action.TEMPFAIL, "unchecked", Reply.tempfail("451", "4.7.1", "try later")),
        Decision(Action.DISCARD, "spam"),
        Decision(Action.QUARANTINE, "spam", quarantine_reason="spam"),
    ],
    ids=["refused", "tempfailed", "discarded", "quarantined"],
)
def test_the_pipeline_never_signs_refused_or_held_mail(
    pipeline_with: Any, decision: Decision, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("quorum.pipeline.policy.Policy.decide", lambda *_: decision)
    txn, env = transaction()
    result = pipeline_with.check(txn, Message.from_bytes(MESSAGE, env))
    assert result.edits.action is decision.action
    assert not [n for n, _ in result.edits.add if n == "DKIM-Signature"]


def test_the_pipeline_signs_accepted_mail_after_its_own_edits(pipeline_with: Any, keys: dict[str, KeyFile]) -> None:
    txn, env = transaction()
    msg = Message.from_bytes(MESSAGE, env)
    result = pipeline_with.check(txn, msg)
    assert result.edits.action is Action.ACCEPT
    names = [n for n, _ in result.edits.add]
    assert names[0] == "DKIM-Signature" and "X-Quorum-Verdict" in names
    delivered = b"".join(FinalMessage(msg, result.edits).chunks())
    assert verify_all(delivered, dns_of(keys)) == [True]
    assert any(n.startswith("signing: signed d=example.com s=s1") for n in result.notes)


def test_a_big_body_is_hashed_from_the_spool(keys: dict[str, KeyFile], tmp_path: Path) -> None:
    body = b"".join(b"line %d with  trailing space \r\n" % i for i in range(100_000))  # ~3 MB: on disk
    txn, env = transaction()
    msg = Message.from_bytes(MESSAGE.split(b"\r\n\r\n")[0] + b"\r\n\r\n" + body, env, 1 << 16)
    try:
        assert msg.body.on_disk
        out, _ = amend.run([stage(keys)], txn, msg, edits())
        delivered = b"".join(FinalMessage(msg, out).chunks())
    finally:
        msg.close()
    assert verify_all(delivered, dns_of(keys)) == [True, True]


def test_a_tenants_own_keys_come_before_the_files(keys: dict[str, KeyFile], tmp_path: Path) -> None:
    from quorum.assembly import build_pipeline, load_config

    path = tmp_path / "q.toml"
    path.write_text(
        f'[signing]\n[[signing.keys]]\ndomain = "example.com"\nselector = "s1"\nkey = "{keys["rsa"].path}"\n'
        f'[tenants]\n[domains."example.com".signing]\nkeys = [{{ selector = "ed1", key = "{keys["ed"].path}" }}]\n'
    )
    pipeline = build_pipeline(load_config(path))
    try:
        env = Envelope("198.51.100.7", "c", "c", "alice@example.com", ["bob@example.org"])
        env.macros["{auth_authen}"] = "alice"
        txn = Transaction(Connection(env.client_ip), env, policy_of=pipeline.tenants.policy_for)
        msg = Message.from_bytes(MESSAGE, env)
        _, notes = amend.run(pipeline.amenders, txn, msg, edits())
        assert notes == ["signing: signed d=example.com s=ed1 a=ed25519-sha256"]
    finally:
        pipeline.close()


def test_a_tenant_signing_table_without_keys_is_an_error(tmp_path: Path) -> None:
    from quorum.assembly import load_config
    from quorum.config import ConfigError

    path = tmp_path / "q.toml"
    path.write_text('[signing]\nsign = "off"\n[tenants]\n[domains."example.com".signing]\nkeys = []\n')
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert 'domains."example.com".signing.keys' in str(err.value) or "signing.keys" in str(err.value)
