"""Issue 17, item 7: a sender-table OK keyed on the forgeable envelope sender no longer lifts DMARC
enforcement or spam verdicts, through the real Postfix.

`partner.test OK` in the sender table; partner.test publishes SPF for 192.0.2.0/24. A client outside
it writing MAIL FROM:<x@partner.test> with From: a p=reject domain is refused; the real partner
(SPF pass) still gets its exemption, but not for somebody else's From: domain.
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

[access]
sender = "{sender_table}"
"""
)

RECORDS = [
    ("partner.test", "TXT", "v=spf1 ip4:192.0.2.0/24 -all"),
    ("_dmarc.partner.test", "TXT", "v=DMARC1; p=none"),
]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthStack]:
    root = tmp_path_factory.mktemp("sec-access-ok")
    table = root / "sender"
    table.write_text("partner.test OK\n.partner.test OK\n")
    with auth_stack(root, BODY.replace("{sender_table}", str(table)), RECORDS) as s:
        yield s


@pytest.mark.parametrize("sender", ["x@partner.test", "x@mail.partner.test", "X@PARTNER.TEST"])
def test_forged_partner_sender_spoofing_a_p_reject_domain_is_refused(stack: AuthStack, sender: str) -> None:
    sent = stack.send(z.message("ceo@reject.test"), sender, client=z.CLIENT_BAD)
    assert sent.code == 550 and not sent.accepted, sent


def test_forged_partner_sender_with_a_signature_of_another_domain_is_refused(stack: AuthStack) -> None:
    raw = stack.keys["thirdparty.test"].sign(z.message("ceo@reject.test"))
    sent = stack.send(raw, "x@partner.test", client=z.CLIENT_BAD)
    assert sent.code == 550, sent


def test_forged_partner_sender_p_quarantine_is_tagged_spam(stack: AuthStack) -> None:
    sent = stack.send(z.message("ceo@quarantine.test"), "x@partner.test", client=z.CLIENT_BAD)
    assert sent.accepted, sent
    (msg,) = stack.delivered()
    assert (msg.header("X-Quorum-Verdict") or "").startswith("spam"), msg.raw[:2000]


def test_real_partner_still_gets_its_exemption(stack: AuthStack) -> None:
    sent = stack.send(z.message("news@partner.test"), "bounce@partner.test", client=z.CLIENT_GOOD)
    assert sent.accepted, sent
    (msg,) = stack.delivered()
    assert not (msg.header("X-Quorum-Verdict") or "").startswith("spam")  # no AV engine here: "unchecked"
    assert stack.log_lines("sender verified by spf")


def test_real_partner_cannot_lift_dmarc_for_another_from_domain(stack: AuthStack) -> None:
    sent = stack.send(z.message("ceo@reject.test"), "bounce@partner.test", client=z.CLIENT_GOOD)
    assert sent.code == 550, sent


def test_authenticated_partner_is_exempt(stack: AuthStack) -> None:
    sent = stack.send(z.message("x@partner.test"), "x@partner.test", client=z.CLIENT_BAD, login="partner")
    assert sent.accepted, sent
