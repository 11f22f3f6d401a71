"""The rules stage: global and tenant rules become findings (reply, hold, spam flag, vote)."""

from __future__ import annotations

import base64
import time

from quorum.assembly import parse_config
from quorum.message import Message
from quorum.pipeline.transaction import Connection, Transaction
from quorum.rules.stage import RulesStage
from quorum.tenants import TenantPolicies


def html_b64(text: str) -> bytes:
    part = base64.b64encode(f"<html><body><p>{text}</p></body></html>".encode()).decode()
    return (
        "Subject: news\r\nMIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary=x\r\n\r\n"
        "--x\r\nContent-Type: text/plain\r\n\r\nplain part\r\n"
        f"--x\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n{part}\r\n--x--\r\n"
    ).encode()


def stage_and_txn(data: dict[str, object], rcpt: str = "u@c.test") -> tuple[RulesStage, Transaction]:
    config = parse_config(data)
    stage = RulesStage(config.feature("rules"), config.replies)
    txn = Transaction(Connection("192.0.2.1"), Connection("192.0.2.1").envelope())
    txn.envelope.recipients.append(rcpt)
    txn.tenant = TenantPolicies(config, listen=False).policy_for(rcpt)
    return stage, txn


def test_tenant_body_keyword_in_base64_html_rejects_with_the_tenants_text() -> None:
    stage, txn = stage_and_txn(
        {
            "domains": {
                "c.test": {
                    "rules": [{"name": "casino", "where": "body", "pattern": "free spins", "action": "reject"}],
                    "replies": {"rule": "refused by C's policy ({rule})"},
                }
            }
        }
    )
    found = stage.examine(txn, Message.from_bytes(html_b64("Get <b>free spins</b> now")), time.monotonic() + 5)
    assert found is not None and found.reply is not None
    assert (found.reply.code, found.reply.text) == ("554", "refused by C's policy (casino)")
    assert found.log["rules"] == "casino:reject" and found.reply_reason.startswith("rule casino (body)")


def test_other_tenants_are_not_affected_and_global_rules_score() -> None:
    data = {
        "rules": [{"name": "lottery", "where": "subject", "pattern": "(?i)lottery", "action": "score", "score": 0.5}],
        "domains": {
            "c.test": {"rules": [{"name": "casino", "where": "body", "pattern": "free spins", "action": "reject"}]}
        },
    }
    stage, txn = stage_and_txn(data, rcpt="u@a.test")
    msg = Message.from_bytes(b"Subject: Lottery win\r\n\r\nfree spins\r\n")
    found = stage.examine(txn, msg, time.monotonic() + 5)
    assert found is not None and found.reply is None
    (vote,) = found.votes
    assert vote.engine == "rule:lottery" and vote.score == 0.5


def test_mime_structure_past_the_limits_is_refused() -> None:
    nested = b"Subject: deep\r\nContent-Type: multipart/mixed; boundary=b0\r\n\r\n"
    for i in range(1, 8):
        nested += f"--b{i - 1}\r\nContent-Type: multipart/mixed; boundary=b{i}\r\n\r\n".encode()
    nested += b"--b7\r\nContent-Type: text/plain\r\n\r\nx\r\n"
    stage, txn = stage_and_txn(
        {"mime": {"max_depth": 3}, "rules": [{"name": "k", "where": "body", "pattern": "zzz", "action": "tag"}]}
    )
    found = stage.examine(txn, Message.from_bytes(nested), time.monotonic() + 5)
    assert found is not None and found.reply is not None and (found.reply.code, found.reply.xcode) == ("554", "5.6.0")
