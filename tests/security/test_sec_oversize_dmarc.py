"""Issue 17, item 3 (the DMARC part): a message over max_message_size, stored truncated with
`on_oversize = "accept"`, still gets DMARC enforced when the body cannot change the outcome - SPF
fails (or is not aligned) and no DKIM signature is aligned with the From: domain. A spoof of a
p=reject domain padded past the limit is refused through the real Postfix; a message whose aligned
signature cannot be checked on the cut body is not.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from tests.zones import auth as z
from tests.zones.auth_stack import AUTH_BASE, AuthStack, auth_stack

pytestmark = pytest.mark.integration

BODY = (
    AUTH_BASE
    + """
[auth]
dmarc_enforce = "reject"
dmarc_quarantine_action = "tag"
"""
)
LIMIT = 65536
PADDING = b"".join(b"%06d padding the message past max_message_size\r\n" % i for i in range(3000))  # ~170 KB


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthStack]:
    milter = f'max_message_size = {LIMIT}\non_oversize = "accept"\n'
    with auth_stack(tmp_path_factory.mktemp("sec-oversize"), BODY, milter_extra=milter) as s:
        yield s


def padded(from_addr: str) -> bytes:
    return z.message(from_addr, body=b"Pay the invoice today.\r\n" + PADDING)


def test_padded_spoof_of_a_p_reject_domain_is_refused(stack: AuthStack) -> None:
    sent = stack.send(padded("ceo@reject.test"), "ceo@reject.test", client=z.CLIENT_BAD)
    assert sent.code == 550, sent


def test_padded_spoof_with_a_signature_of_another_domain_is_refused(stack: AuthStack) -> None:
    raw = stack.keys["thirdparty.test"].sign(padded("ceo@reject.test"))
    sent = stack.send(raw, "x@thirdparty.test", client=z.CLIENT_GOOD)  # SPF passes, but not aligned
    assert sent.code == 550, sent


def test_padded_spoof_of_a_p_quarantine_domain_is_spam(stack: AuthStack) -> None:
    sent = stack.send(padded("ceo@quarantine.test"), "ceo@quarantine.test", client=z.CLIENT_BAD)
    assert sent.accepted, sent
    (msg,) = stack.delivered()
    assert (msg.header("X-Quorum-Verdict") or "").startswith("spam"), msg.raw[:1500]


def test_padded_message_with_an_aligned_signature_is_not_refused(stack: AuthStack) -> None:
    raw = stack.keys["aligned.test"].sign(padded("alice@aligned.test"))
    sent = stack.send(raw, "alice@aligned.test", client=z.CLIENT_BAD)  # SPF fails; only DKIM could pass
    assert sent.accepted, sent
    (msg,) = stack.delivered()
    assert "dkim=neutral" in " ".join(msg.header_all("Authentication-Results"))


def test_padded_message_passing_aligned_spf_is_delivered(stack: AuthStack) -> None:
    sent = stack.send(padded("alice@reject.test"), "alice@reject.test", client=z.CLIENT_GOOD)
    assert sent.accepted, sent
