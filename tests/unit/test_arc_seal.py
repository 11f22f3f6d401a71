"""ARC sealing (quorum.auth.arcseal) and the trusted-sealer DMARC override (issue 19, item 4).

Every set Quorum makes is verified by dkimpy's ARC verifier, on its own (cv=none) and on a chain a
mailing list sealed with dkimpy (cv=pass); the override applies only to a trusted sealer's valid
chain whose oldest ARC-Authentication-Results vouches for the From: domain.
"""

from __future__ import annotations

import ipaddress
import re
import time
from pathlib import Path
from typing import Any

import dkim
import pytest
from tests.zones.auth import DkimKey, make_key, message
from tests.zones.fake_resolver import FakeResolver

from quorum.assembly import load_config
from quorum.auth.arcseal import ArcSealStage, latest_cv
from quorum.auth.findings import AuthFindings
from quorum.auth.settings import ArcSettings, AuthSettings
from quorum.auth.stage import AuthStage
from quorum.config import ConfigError
from quorum.message import Message
from quorum.pipeline import amend
from quorum.pipeline.amend import FinalMessage
from quorum.pipeline.output import Edits
from quorum.pipeline.results import Results
from quorum.pipeline.stages import Action
from quorum.pipeline.transaction import Connection, Findings, Transaction
from quorum.signing.keys import generate, write_private

OURS = "mx.quorum.test"
SPOOFED = "198.51.100.20"  # authorised by nobody: SPF fails for reject.test


@pytest.fixture(scope="module")
def lists_key() -> DkimKey:
    return make_key("lists.example.org", "arc", bits=1024)


@pytest.fixture(scope="module")
def seal_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """(path of Quorum's ARC key, its DNS record)."""
    pem, key = generate("rsa", 2048)
    path = tmp_path_factory.mktemp("arc") / "arc.pem"
    write_private(str(path), pem)
    return str(path), key.record()


@pytest.fixture()
def dns(lists_key: DkimKey, seal_key: tuple[str, str]) -> FakeResolver:
    return FakeResolver(
        [
            ("arc._domainkey.lists.example.org", "TXT", lists_key.record),
            ("q1._domainkey.gw.quorum.test", "TXT", seal_key[1]),
            ("reject.test", "TXT", "v=spf1 ip4:192.0.2.0/24 -all"),
            ("_dmarc.reject.test", "TXT", "v=DMARC1; p=reject"),
        ]
    )


def list_seal(raw: bytes, key: DkimKey, vouch: str = "dmarc=pass header.from=reject.test") -> bytes:
    """`raw` as a mailing list passes it on: its own A-R, then dkimpy's ARC set over it."""
    raw = raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    arc = b"; arc=pass" if re.search(rb"(?im)^ARC-Seal:", raw) else b""
    raw = b"Authentication-Results: lists.example.org; " + vouch.encode() + arc + b"\r\n" + raw
    added = dkim.arc_sign(raw, b"arc", b"lists.example.org", key.private_pem, b"lists.example.org", linesep=b"\r\n")
    return b"".join(added) + raw


def auth_stage(dns: FakeResolver, trusted: tuple[str, ...] = ()) -> AuthStage:
    settings = AuthSettings(trusted_networks=(ipaddress.ip_network("127.0.0.0/8"),), dmarc_enforce="reject")
    return AuthStage(settings, dns, OURS, trusted_sealers=trusted)


def examine(stage: AuthStage, raw: bytes, auth_user: str = "") -> tuple[Findings, Transaction, Message]:
    conn = Connection()
    txn = Transaction(conn, conn.envelope())
    env = txn.envelope
    env.client_ip, env.helo, env.sender = SPOOFED, "list.example", "bounce@reject.test"
    env.recipients.append("user@rcpt.test")
    if auth_user:
        env.macros["{auth_authen}"] = auth_user
    msg = Message.from_bytes(raw, env)
    return stage.examine(txn, msg, time.monotonic() + 5), txn, msg


def a_r(found: Findings) -> str:
    return " ".join(v.replace("\n\t", " ") for n, v in found.headers if n == "Authentication-Results")


SPOOF = message("news@reject.test")  # From: reject.test, sent from an address its SPF does not list


# -- the trusted-sealer override --------------------------------------------------------------------


def test_dmarc_fail_is_enforced_without_a_trusted_sealer(dns: FakeResolver, lists_key: DkimKey) -> None:
    found, _, _ = examine(auth_stage(dns), list_seal(SPOOF, lists_key))
    assert found.reply is not None and found.reply.action is Action.REJECT
    assert "arc=pass" in a_r(found)


def test_a_trusted_sealer_overrides_dmarc_and_says_so(dns: FakeResolver, lists_key: DkimKey) -> None:
    found, _, _ = examine(auth_stage(dns, ("lists.example.org",)), list_seal(SPOOF, lists_key))
    assert found.reply is None
    header = a_r(found)
    assert "dmarc=fail" in header and "overridden by arc from lists.example.org" in header
    assert found.log["dmarc_action"].startswith("none(overridden by arc from lists.example.org")
    auth = found.results.get(AuthFindings)
    assert auth is not None and auth.record_fields()["dmarc_override"].startswith("arc from lists.example.org")


def test_another_sealer_being_trusted_does_not_help(dns: FakeResolver, lists_key: DkimKey) -> None:
    found, _, _ = examine(auth_stage(dns, ("forwarder.example.net",)), list_seal(SPOOF, lists_key))
    assert found.reply is not None and found.reply.action is Action.REJECT


def test_a_broken_chain_from_a_trusted_sealer_does_not_override(dns: FakeResolver, lists_key: DkimKey) -> None:
    sealed = list_seal(SPOOF, lists_key).replace(b"this is a test.", b"this is a fake.")
    assert sealed != list_seal(SPOOF, lists_key)
    found, _, _ = examine(auth_stage(dns, ("lists.example.org",)), sealed)
    assert found.reply is not None and found.reply.action is Action.REJECT
    assert "arc=fail" in a_r(found)


def test_an_oldest_aar_that_vouches_for_nothing_does_not_override(dns: FakeResolver, lists_key: DkimKey) -> None:
    sealed = list_seal(SPOOF, lists_key, vouch="dmarc=fail header.from=reject.test; spf=fail smtp.mailfrom=x@y.test")
    found, _, _ = examine(auth_stage(dns, ("lists.example.org",)), sealed)
    assert found.reply is not None and found.reply.action is Action.REJECT


def test_an_aligned_dkim_pass_at_the_list_vouches(dns: FakeResolver, lists_key: DkimKey) -> None:
    sealed = list_seal(SPOOF, lists_key, vouch="dkim=pass header.d=reject.test header.s=s1; dmarc=none")
    found, _, _ = examine(auth_stage(dns, ("lists.example.org",)), sealed)
    assert found.reply is None and "lists.example.org, dkim=pass at i=1" in a_r(found)


# -- sealing --------------------------------------------------------------------------------------


def seal_stage(path: str, **kw: Any) -> ArcSealStage:
    return ArcSealStage(ArcSettings(seal=True, domain="gw.quorum.test", selector="q1", key=path, **kw), OURS)


def sealed(
    dns: FakeResolver, path: str, raw: bytes, action: Action = Action.ACCEPT, auth_user: str = ""
) -> tuple[bytes, list[str]]:
    """The message as delivered after the auth stage and the seal stage ran on `raw`."""
    found, txn, msg = examine(auth_stage(dns), raw, auth_user)
    edits = Edits(action, add=tuple(found.headers))
    results = Results()
    results.update(found.results)
    out, notes = amend.run([seal_stage(path)], txn, msg, edits, results)
    return b"".join(FinalMessage(msg, out).chunks()), notes


def verify(raw: bytes, dns: FakeResolver, seal_key: tuple[str, str], lists_key: DkimKey) -> tuple[Any, Any, Any]:
    keys = {b"q1._domainkey.gw.quorum.test.": seal_key[1], b"arc._domainkey.lists.example.org.": lists_key.record}

    def txt(name: bytes, timeout: float = 5) -> bytes:
        return keys[name if name.endswith(b".") else name + b"."].encode()

    result: tuple[Any, Any, Any] = dkim.ARC(raw).verify(dnsfunc=txt)
    return result


def test_the_first_hop_is_sealed_with_cv_none_and_verifies(
    dns: FakeResolver, seal_key: tuple[str, str], lists_key: DkimKey
) -> None:
    out, notes = sealed(dns, seal_key[0], message("a@reject.test"))
    assert out.startswith(b"ARC-Seal: i=1; cv=none; a=rsa-sha256; d=gw.quorum.test; s=q1;")
    assert b"\r\nARC-Message-Signature: i=1;" in out and b"\r\nARC-Authentication-Results: i=1; mx.quorum.test;" in out
    cv, sets, reason = verify(out, dns, seal_key, lists_key)
    assert cv == b"pass", reason
    assert b"dmarc=fail" in sets[0]["aar-value"]
    assert notes == ["arc_seal: sealed i=1 cv=none d=gw.quorum.test s=q1"]


def test_a_lists_chain_is_extended_with_cv_pass_and_verifies(
    dns: FakeResolver, seal_key: tuple[str, str], lists_key: DkimKey
) -> None:
    out, _ = sealed(dns, seal_key[0], list_seal(SPOOF, lists_key))
    assert out.startswith(b"ARC-Seal: i=2; cv=pass;")
    cv, sets, reason = verify(out, dns, seal_key, lists_key)
    assert cv == b"pass", reason
    assert [s["as-domain"] for s in sets] == [b"gw.quorum.test", b"lists.example.org"]


def test_a_broken_chain_is_sealed_with_cv_fail_and_not_extended_past_it(
    dns: FakeResolver, seal_key: tuple[str, str], lists_key: DkimKey
) -> None:
    broken = list_seal(SPOOF, lists_key).replace(b"this is a test.", b"this is a fake.")
    out, notes = sealed(dns, seal_key[0], broken)
    assert out.startswith(b"ARC-Seal: i=2; cv=fail;")
    assert latest_cv(Message.from_bytes(out).headers) == "fail"
    cv, _, _ = verify(out, dns, seal_key, lists_key)
    assert cv != b"pass"
    again, notes = sealed(dns, seal_key[0], out)  # the next hop: a chain that ended in cv=fail
    assert again.count(b"ARC-Seal:") == 2
    assert notes == ["arc_seal: not sealed: the incoming ARC chain ended in a failure"]


def test_authenticated_and_quarantined_mail_is_not_sealed(dns: FakeResolver, seal_key: tuple[str, str]) -> None:
    out, notes = sealed(dns, seal_key[0], message("a@reject.test"), auth_user="alice")
    assert b"ARC-Seal" not in out and notes == []
    out, notes = sealed(dns, seal_key[0], message("a@reject.test"), action=Action.QUARANTINE)
    assert b"ARC-Seal" not in out and notes == ["arc_seal: not sealed: held in quarantine"]


def test_without_our_authentication_results_nothing_is_sealed(dns: FakeResolver, seal_key: tuple[str, str]) -> None:
    found, txn, msg = examine(auth_stage(dns), message("a@reject.test"))
    results = Results()
    results.update(found.results)
    out, notes = amend.run([seal_stage(seal_key[0])], txn, msg, Edits(Action.ACCEPT), results)
    assert out.add == () and notes == ["arc_seal: not sealed: no Authentication-Results of Quorum's"]


def test_the_seal_runs_after_every_other_amendment() -> None:
    assert amend.ordered([ArcSealStage.__new__(ArcSealStage), _Banner()])[0].name == "banner"


class _Banner:
    name = "banner"
    amend_phase = amend.CONTENT

    def amend(self, txn: Transaction, final: FinalMessage) -> None:
        return None


# -- configuration ----------------------------------------------------------------------------------


def load(tmp_path: Path, text: str) -> Any:
    path = tmp_path / "quorum.toml"
    path.write_text(text)
    return load_config(path)


def test_sealing_needs_domain_selector_and_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load(tmp_path, "[auth]\n[arc]\nseal = true\n")
    text = str(err.value)
    assert "arc.domain" in text and "arc.selector" in text and "arc.key" in text


def test_an_ed25519_key_cannot_seal(tmp_path: Path) -> None:
    pem, _ = generate("ed25519")
    write_private(str(tmp_path / "ed.pem"), pem)
    with pytest.raises(ConfigError) as err:
        load(
            tmp_path, f'[auth]\n[arc]\nseal = true\ndomain = "gw.example"\nselector = "a"\nkey = "{tmp_path}/ed.pem"\n'
        )
    assert "arc.key" in str(err.value) and "RSA" in str(err.value)


def test_sealing_without_the_auth_checks_is_refused(tmp_path: Path, seal_key: tuple[str, str]) -> None:
    with pytest.raises(ConfigError) as err:
        load(tmp_path, f'[arc]\nseal = true\ndomain = "gw.example"\nselector = "a"\nkey = "{seal_key[0]}"\n')
    assert "arc.seal" in str(err.value)


def test_a_valid_arc_table_builds_the_seal_stage(tmp_path: Path, seal_key: tuple[str, str]) -> None:
    from quorum.assembly import build_pipeline

    config = load(
        tmp_path,
        f'[auth]\n[arc]\nseal = true\ndomain = "GW.Example"\nselector = "a"\nkey = "{seal_key[0]}"\n'
        'trusted_sealers = ["Lists.Example.org"]\n',
    )
    pipeline = build_pipeline(config)
    names = [s.name for s in pipeline.amenders]
    assert "arc_seal" in names
    auth = next(s for s in pipeline.stages if s.name == "auth")
    assert isinstance(auth, AuthStage) and auth.trusted_sealers == frozenset({"lists.example.org"})
    pipeline.close()
