"""Header regex rules with RE2: Postfix syntax, linear-time matching, clear load errors."""

from __future__ import annotations

import time

import pytest

from quorum.access.header_rules import match, parse_rules
from quorum.access.tables import TableError
from quorum.message import Header, Message

RULES = r"""
/^Subject:.*casino/i     REJECT Casino offers are not wanted here
/^X-Mailer: Bulk\/Sender/ HOLD
!/^Message-ID:/          WARN no Message-ID
/^From:.*@spam\.test/    DISCARD
"""


def headers(*pairs: tuple[str, str]) -> list[Header]:
    return [Header(name, b" " + value.encode()) for name, value in pairs]


def test_rules_fire_in_file_order() -> None:
    rules = parse_rules(RULES, "hdr")
    found = match(rules, headers(("Subject", "Big CASINO win"), ("Message-ID", "<1@x>")))
    assert [(m.rule.action, m.rule.text, m.rule.source) for m in found] == [
        ("REJECT", "Casino offers are not wanted here", "hdr:2")
    ]
    found = match(rules, headers(("X-Mailer", "Bulk/Sender 2.0"), ("From", "a@spam.test")))
    assert [m.rule.action for m in found] == ["HOLD", "WARN", "DISCARD"]
    assert found[1].header == "(no such header)"


def test_case_insensitive_by_default_and_case_sensitive_on_request() -> None:
    rules = parse_rules("/^subject: hello/ REJECT\n/(?-i)^Subject: SHOUT/ REJECT\n", "r")
    assert len(match(rules, headers(("SUBJECT", "Hello there")))) == 1
    assert len(match(rules, headers(("Subject", "shout")))) == 0
    assert len(match(rules, headers(("Subject", "SHOUT")))) == 1


def test_folded_and_8bit_headers_are_matched_unfolded() -> None:
    rules = parse_rules("/^Subject: first second$/ REJECT\n/Köln/ HOLD\n", "r")
    hdrs = [Header("Subject", b" first\r\n second"), Header("X-City", " Köln".encode())]
    assert [m.rule.action for m in match(rules, hdrs)] == ["REJECT", "HOLD"]


def test_catastrophic_backtracking_pattern_completes_at_once() -> None:
    rules = parse_rules("/^Subject: (a+)+$/ REJECT\n/^Subject: (x|x)*y/ REJECT\n", "r")
    evil = "a" * 50_000 + "!"
    start = time.monotonic()
    assert match(rules, headers(("Subject", evil), ("Subject", "x" * 50_000))) == []
    assert time.monotonic() - start < 1.0  # Python's re would run for ages on either


def test_on_a_whole_message() -> None:
    msg = Message.from_bytes(b"From: a@b.test\r\nSubject: casino night\r\n\r\nbody\r\n")
    rules = parse_rules(RULES, "r")
    assert [m.rule.action for m in match(rules, msg.headers)] == ["REJECT", "WARN"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("Subject: x REJECT\n", "r:1: a rule starts with /pattern/"),
        ("/unterminated REJECT\n", "r:1: the pattern has no closing /"),
        ("/(a)\\1/ REJECT\n", "r:1: RE2 cannot use this pattern (invalid escape sequence: \\1)"),
        ("/(?=a)b/ REJECT\n", "r:1: RE2 cannot use this pattern"),
        ("/x/ FROB\n", "r:1: unknown action 'FROB'"),
        ("/x/m REJECT\n", "r:1: unknown flag(s) 'm'"),
        ("/x/ HOLD now\n", "r:1: HOLD takes no text"),
        ("// REJECT\n", "r:1: empty pattern"),
    ],
)
def test_errors(text: str, message: str) -> None:
    with pytest.raises(TableError) as exc:
        parse_rules(text, "r")
    assert str(exc.value).startswith(message)
