"""`evaluate`: which rules fire on a message, with what action, score and excerpt."""

from __future__ import annotations

import base64
import time
from typing import Any

import pytest

from quorum.config.fields import Problems
from quorum.message import Message
from quorum.rules import MimeLimits, Rule, RuleHit, RuleResult, evaluate, parse_rules


def rules(*specs: dict[str, Any]) -> tuple[Rule, ...]:
    problems = Problems()
    items = [{"name": f"r{i}", "action": "reject", **spec} for i, spec in enumerate(specs)]
    parsed = parse_rules(items, "rules", problems)
    assert problems.errors == []
    return parsed


def run(rule_set: tuple[Rule, ...], raw: bytes, limits: MimeLimits | None = None, timeout: float = 60) -> RuleResult:
    return evaluate(rule_set, Message.from_bytes(raw), limits or MimeLimits(), time.monotonic() + timeout)


def html_b64_message(html: str) -> bytes:
    encoded = base64.encodebytes(html.encode("utf-8")).replace(b"\n", b"\r\n")
    return (
        b"From: a@example.org\r\nTo: b@example.com\r\nSubject: news\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/alternative; boundary="alt"\r\n\r\n'
        b"--alt\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nSee the HTML version.\r\n"
        b"--alt\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + encoded
        + b"--alt--\r\n"
    )


def test_keyword_in_a_base64_encoded_html_part() -> None:
    """The acceptance case: the keyword is only visible after base64, charset and HTML decoding."""
    raw = html_b64_message("<html><body><p>Limited offer: <b>cheap</b> <i>wat</i>ches &#x21;</p></body></html>")
    assert b"watches" not in raw
    result = run(rules({"name": "watches", "where": "body", "pattern": r"cheap\s+watches", "action": "reject"}), raw)
    assert result.hits == (RuleHit("watches", "body", "reject", 0.0, "Limited offer: cheap watches !"),)
    assert result.action == "reject" and result.limit_hit is None and not result.truncated and result.parts == 3


def test_no_rules_no_work() -> None:
    assert run((), b"Subject: x\r\n\r\nfree") == RuleResult()


def test_nothing_matches() -> None:
    result = run(rules({"where": "body", "pattern": "casino"}), b"Subject: x\r\n\r\nhello")
    assert result.hits == () and result.action is None and result.score == 0.0


def test_ignore_case() -> None:
    raw = b"Subject: FREE Money\r\n\r\nbody"
    assert run(rules({"where": "subject", "pattern": "free money"}), raw).hits == ()
    hit = run(rules({"where": "subject", "pattern": "free money", "ignore_case": True}), raw).hits
    assert [h.excerpt for h in hit] == ["FREE Money"]
    # (?i) in the pattern works as well
    assert run(rules({"where": "subject", "pattern": "(?i)free money"}), raw).hits


@pytest.mark.parametrize(
    ("action", "score", "expected_action", "expected_score"),
    [
        ("reject", None, "reject", 0.0),
        ("quarantine", None, "quarantine", 0.0),
        ("tag", 1.0, "tag", 1.0),
        ("score", 4.5, "score", 4.5),
    ],
)
def test_each_action(action: str, score: float | None, expected_action: str, expected_score: float) -> None:
    spec: dict[str, Any] = {"where": "body", "pattern": "casino", "action": action}
    if score is not None:
        spec["score"] = score
    result = run(rules(spec), b"Subject: x\r\n\r\nbest casino in town")
    assert [(h.action, h.score) for h in result.hits] == [(expected_action, expected_score)]
    assert result.action == expected_action and result.score == expected_score


def test_strongest_action_and_summed_score() -> None:
    rule_set = rules(
        {"where": "body", "pattern": "casino", "action": "score", "score": 2.0},
        {"where": "subject", "pattern": "win", "action": "tag", "score": 1.5},
        {"where": "body", "pattern": "spins", "action": "quarantine"},
        {"where": "body", "pattern": "absent", "action": "reject"},
    )
    result = run(rule_set, b"Subject: win now\r\n\r\ncasino free spins")
    assert [h.name for h in result.hits] == ["r0", "r1", "r2"]
    assert result.action == "quarantine" and result.score == 3.5


def test_subject_is_decoded_rfc2047() -> None:
    raw = b"Subject: =?koi8-r?b?8NLJ18XU?= =?utf-8?q?_=E2=82=AC100?=\r\n\r\nx"
    result = run(rules({"where": "subject", "pattern": "Привет €100"}), raw)
    assert [h.excerpt for h in result.hits] == ["Привет €100"]


def test_every_instance_of_a_header_is_checked() -> None:
    raw = b"X-Mailer: Outlook\r\nX-Mailer: =?utf-8?q?Bulk=20Sender?=\r\nSubject: x\r\n\r\nbody"
    result = run(rules({"where": "header:x-mailer", "pattern": "^Bulk Sender$"}), raw)
    assert [(h.where, h.excerpt) for h in result.hits] == [("header:x-mailer", "Bulk Sender")]


def test_header_name_is_case_insensitive_and_absent_headers_do_not_match() -> None:
    raw = b"x-spam-tool: massmailer 2\r\n\r\nbody"
    assert run(rules({"where": "header:X-Spam-Tool", "pattern": "massmailer"}), raw).hits
    assert not run(rules({"where": "header:X-Other", "pattern": ".*"}), raw).hits


def test_eight_bit_headers() -> None:
    utf8_with_a_stray_byte = b"Subject: caf\xc3\xa9 \xff\r\n\r\nbody"
    assert run(rules({"where": "subject", "pattern": "café \ufffd"}), utf8_with_a_stray_byte).hits
    assert run(rules({"where": "subject", "pattern": "café"}), b"Subject: caf\xe9\r\n\r\nx").hits  # latin-1


def test_filename_rule() -> None:
    raw = (
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nhi\r\n'
        b"--b\r\nContent-Type: application/octet-stream\r\n"
        b"Content-Disposition: attachment; filename*0*=UTF-8''invoice%E2%82%AC; filename*1*=.pdf.exe\r\n"
        b"\r\nAA\r\n--b--\r\n"
    )
    result = run(rules({"where": "filename", "pattern": r"(?i)\.(exe|scr|js)$", "action": "quarantine"}), raw)
    assert [(h.action, h.excerpt) for h in result.hits] == [("quarantine", "invoice€.pdf.exe")]


def test_html_decisions_in_rules() -> None:
    rule_set = rules({"where": "body", "pattern": r"\bfree\b"})
    html = b"Content-Type: text/html\r\n\r\n"
    assert run(rule_set, html + b"<b>fr</b>ee").hits  # inline tags join
    assert run(rule_set, html + b"&#102;ree").hits  # references decoded
    assert run(rule_set, html + b"fr<!-- x -->ee").hits
    assert not run(rule_set, html + b"<script>free</script>").hits  # script dropped
    assert not run(rule_set, html + b"<td>fr</td><td>ee</td>").hits  # cells stay apart


def test_a_rule_fires_once_with_its_first_match() -> None:
    result = run(rules({"where": "body", "pattern": "x[0-9]"}), b"Subject: s\r\n\r\nx1 x2 x3")
    assert [h.excerpt for h in result.hits] == ["x1 x2 x3"]


def test_excerpt_is_bounded_and_log_safe() -> None:
    body = b"a" * 500 + b" needle\x01\x1b[31m " + b"b" * 500
    (hit,) = run(rules({"where": "body", "pattern": "needle"}), b"Subject: s\r\n\r\n" + body).hits
    assert "needle" in hit.excerpt and len(hit.excerpt) <= 130
    assert hit.excerpt.startswith("...") and hit.excerpt.endswith("...")
    assert all(c.isprintable() for c in hit.excerpt)
    assert hit.reason().startswith('rule r0 (body) matched "...')


def test_limits_are_reported() -> None:
    parts = b"".join(b"--b\r\nContent-Type: text/plain\r\n\r\np\r\n" for _ in range(100))
    raw = b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n' + parts + b"--b--\r\n"
    result = run(rules({"where": "body", "pattern": "p"}), raw, MimeLimits(max_parts=10))
    assert result.limit_hit == "max_parts" and result.parts == 10 and result.hits


def test_header_only_rules_do_not_parse_mime() -> None:
    raw = b'Subject: hi\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n' + b"--b\r\n\r\n" * 1000
    result = run(rules({"where": "subject", "pattern": "hi"}), raw, MimeLimits(max_parts=2))
    assert result.hits and result.parts == 0 and result.limit_hit is None


def test_truncated_body_is_reported() -> None:
    result = run(
        rules({"where": "body", "pattern": "late"}),
        b"Subject: s\r\n\r\n" + b"x" * 5000 + b" late",
        MimeLimits(body_max_bytes=100),
    )
    assert result.truncated and result.hits == ()


def test_past_deadline_nothing_is_claimed() -> None:
    result = run(
        rules({"where": "subject", "pattern": "s"}, {"where": "body", "pattern": "x"}),
        b"Subject: s\r\n\r\nx",
        timeout=-1,
    )
    assert result.limit_hit == "deadline" and result.hits == ()
