"""Issue 17, item 13: forged Authentication-Results claiming our authserv-id in disguise (quoted string
with quoted-pairs, NBSP and other invisible characters, encoded-words, fullwidth letters, case, a
trailing dot) are removed on the way through the real Postfix: the sink never sees one. Headers of
other ADMDs, and of a trusted upstream id, are kept."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from tests.zones import auth as z
from tests.zones.auth_stack import AUTH_BASE, AUTHSERV, AuthStack, auth_stack, header_values

pytestmark = pytest.mark.integration

BODY = (
    AUTH_BASE
    + """
[auth]
dmarc_enforce = "reject"
trusted_upstream_authserv_ids = ["dkim.upstream.example"]
"""
)

FORGED = [
    b' "mx.test.example"; dmarc=pass header.from=reject.test',
    b' "mx\\.test\\.example"; dmarc=pass header.from=reject.test',
    b' "m\\x\\.\\test.example"; dmarc=pass header.from=reject.test',
    b" mx.test.example\xc2\xa0; dmarc=pass header.from=reject.test",
    b" \xc2\xa0mx.test.example; dmarc=pass header.from=reject.test",
    b" mx.test.example\xe2\x80\x8b; dmarc=pass header.from=reject.test",
    b" mx.test.example\xe3\x80\x80; dmarc=pass header.from=reject.test",
    b" \xef\xbd\x8d\xef\xbd\x98.test.example; dmarc=pass header.from=reject.test",
    b" =?utf-8?q?mx.test.example?=; dmarc=pass header.from=reject.test",
    b' (x) "MX.TEST.EXAMPLE." (y); dmarc=pass header.from=reject.test',
    b"\r\n\tmx.test.example\r\n\t; dmarc=pass header.from=reject.test",
]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthStack]:
    with auth_stack(tmp_path_factory.mktemp("sec-authres"), BODY) as s:
        yield s


@pytest.mark.parametrize("forged", FORGED, ids=[f"variant{i}" for i in range(len(FORGED))])
def test_forged_authentication_results_never_reach_the_mailbox(stack: AuthStack, forged: bytes) -> None:
    raw = z.message("alice@spf-pass.test", extra=[b"Authentication-Results:" + forged])
    sent = stack.send(raw, "alice@spf-pass.test")
    assert sent.accepted, sent
    (msg,) = stack.delivered()
    values = header_values(msg.raw, "Authentication-Results")
    assert len(values) == 1, values  # ours only
    assert values[0].strip().startswith(AUTHSERV.encode() + b";")
    assert b"header.from=reject.test" not in msg.raw


def test_other_and_upstream_ids_are_kept_and_all_forgeries_go_at_once(stack: AuthStack) -> None:
    kept = [b" other.example; spf=pass smtp.mailfrom=a@b.test", b" dkim.upstream.example; dkim=pass header.d=b.test"]
    raw = z.message(
        "alice@spf-pass.test",
        extra=[b"Authentication-Results:" + h for h in [FORGED[0], kept[0], FORGED[3], kept[1], FORGED[1]]],
    )
    sent = stack.send(raw, "alice@spf-pass.test")
    assert sent.accepted, sent
    (msg,) = stack.delivered()
    values = [v.strip() for v in header_values(msg.raw, "Authentication-Results")]
    assert len(values) == 3, values
    assert kept[0].strip() in values and kept[1].strip() in values
    assert sum(v.startswith(AUTHSERV.encode() + b";") for v in values) == 1
