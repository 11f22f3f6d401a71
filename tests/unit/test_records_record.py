"""What one session record holds, from the typed transaction and its outcome."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from quorum.auth.findings import AuthFindings
from quorum.auth.spf import SpfResult
from quorum.message import Envelope
from quorum.pipeline import replies
from quorum.pipeline.policy import Decision
from quorum.pipeline.stages import Action, Outcome
from quorum.pipeline.transaction import RCPT_REFUSALS_KEPT, Connection, Refusal, Scan, Transaction
from quorum.ratelimit.buckets import Charge
from quorum.ratelimit.limiter import Reservation
from quorum.ratelimit.settings import Rule
from quorum.records import record
from quorum.records.format import json_line
from quorum.records.stage import RecordsStage
from quorum.verdict import Category, Status, Verdict


def transaction() -> Transaction:
    conn = Connection("192.0.2.7", "mail.example.net", "mail.example.net")
    env = Envelope("192.0.2.7", "mail.example.net", "mail.example.net", "alice@Example.NET", ["bob@example.org"])
    env.macros.update({"i": "4ABC123", "{auth_authen}": "alice"})
    txn = Transaction(conn, env)
    rule = Rule("messages", 10, 3600.0)
    txn.results.put(Reservation((Charge("client_ip", "192.0.2.7", rule, "k", 1),), "redis"), by="ratelimit")
    return txn


def outcome() -> Outcome:
    verdicts = [
        Verdict("clamav", Category.ANTIVIRUS, Status.CLEAN, elapsed=0.012),
        Verdict("rspamd", Category.ANTISPAM, Status.SPAM, score=16.0, threshold=15.0, elapsed=0.2),
        Verdict("spamassassin", Category.ANTISPAM, Status.ERROR, error="timeout", elapsed=5.0),
    ]
    d = Decision(Action.TAG, "spam", score=1.07, verdicts=verdicts, degraded=["spamassassin"], reasons=["spam by any"])
    spf = SpfResult("pass", "mailfrom", "example.net", "alice@example.net")
    scan = Scan(log={"dkim": "none"})
    scan.results.put(AuthFindings(spf=spf), by="auth")
    return Outcome(Action.TAG, None, d, scan, 2048, 0.25)


def test_record_of_a_scanned_message() -> None:
    r = record.from_outcome(transaction(), outcome())
    assert r["stage"] == "eom" and r["qid"] == "4ABC123" and r["auth_user"] == "alice"
    assert (r["sender_domain"], r["recipient_domains"], r["client_ip"]) == ("example.net", ["example.org"], "192.0.2.7")
    assert (r["verdict"], r["action"], r["decided"], r["score"], r["size"]) == ("spam", "tag", "tag", 1.07, 2048)
    assert r["elapsed_ms"] == 250.0 and r["reply"] is None and r["tenant"] is None
    assert [(e["engine"], e["status"]) for e in r["engines"]] == [
        ("clamav", "clean"),
        ("rspamd", "spam"),
        ("spamassassin", "error"),
    ]
    assert r["engines"][2]["error"] == "timeout" and r["engines"][1]["threshold"] == 15.0
    assert r["spf"] == "pass" and r["facts"] == {"dkim": "none"}
    assert r["ratelimit"] == {"source": "redis", "buckets": ["client_ip"]}
    assert json.loads(json.dumps(r)) == r


def test_json_log_line_is_one_line_even_with_hostile_text() -> None:
    txn = transaction()
    txn.envelope.sender = 'evil"\r\nX-Injected: 1@example.net'
    line = json_line(txn, outcome(), notes=["header edits failed"])
    assert "\n" not in line and "\r" not in line
    parsed = json.loads(line)
    assert parsed["sender"] == txn.envelope.sender and parsed["reasons"][-1] == "header edits failed"


class Collect:
    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    def submit(self, r: dict[str, Any]) -> bool:
        self.records.append(r)
        return True

    def close(self) -> None:
        pass


def test_a_refusal_at_data_is_recorded_with_its_bucket_kind() -> None:
    sink = Collect()
    stage = RecordsStage(sink)  # type: ignore[arg-type]
    txn = transaction()
    stage.aborted(txn)  # RSET/QUIT before DATA with nothing refused: no message was offered, no record
    assert sink.records == []
    reply = replies.rate_limited("sender_domain example.net", 30)
    txn.refusal = Refusal("ratelimit", "data", reply)
    stage.aborted(txn)
    [r] = sink.records
    assert (r["verdict"], r["action"], r["stage"], r["refused_by"]) == ("refused", "tempfail", "data", "ratelimit")
    assert r["reply_code"] == "451" and r["ratelimit"] == {"refused": "sender_domain"}
    txn.refusal = Refusal("ratelimit", "data", reply, detail="client_ip")  # the kind, as the stage notes it
    stage.aborted(txn)
    assert sink.records[-1]["ratelimit"] == {"refused": "client_ip"}


def test_recipients_refused_at_rcpt_are_recorded_when_the_client_gives_up() -> None:
    sink = Collect()
    stage = RecordsStage(sink)  # type: ignore[arg-type]
    txn = transaction()
    txn.envelope.recipients.clear()
    listed = replies.dnsbl_listed("192.0.2.7", "zen.example")
    for rcpt in ("a@Example.ORG", "b@example.com"):
        txn.refused_recipient(Refusal("dnsbl", "rcpt", listed, recipient=rcpt))
    stage.aborted(txn)  # QUIT after every RCPT was refused
    [r] = sink.records
    assert (r["verdict"], r["action"], r["stage"], r["refused_by"]) == ("refused", "reject", "rcpt", "dnsbl")
    assert r["recipients"] == ["a@Example.ORG", "b@example.com"]
    assert r["recipient_domains"] == ["example.com", "example.org"]
    assert r["reply"] == str(listed) and r["refused_recipient_count"] == 2
    assert [x["recipient"] for x in r["refused_recipients"]] == ["a@Example.ORG", "b@example.com"]
    assert "accepted_recipients" not in r
    txn.envelope.recipients.append("ok@example.net")  # accepted, then the client quit before DATA
    stage.aborted(txn)
    r = sink.records[-1]
    assert r["recipients"] == ["a@Example.ORG", "b@example.com"] and r["accepted_recipients"] == ["ok@example.net"]
    assert r["recipient_domains"] == ["example.com", "example.org"]


def test_a_delivered_message_lists_the_recipients_refused_beside_it_and_keeps_only_the_first() -> None:
    txn = transaction()
    for i in range(RCPT_REFUSALS_KEPT + 50):
        txn.refused_recipient(Refusal("access", "rcpt", replies.access_denied("no"), recipient=f"u{i}@example.org"))
    r = record.from_outcome(txn, outcome())
    assert r["recipients"] == ["bob@example.org"] and r["refused_recipient_count"] == RCPT_REFUSALS_KEPT + 50
    assert len(r["refused_recipients"]) == RCPT_REFUSALS_KEPT
    denied = str(replies.access_denied("no"))
    assert r["refused_recipients"][0] == {"recipient": "u0@example.org", "stage": "access", "reply": denied}
    assert denied.startswith("5")


def test_finished_submits_one_record() -> None:
    sink = Collect()
    RecordsStage(sink).finished(transaction(), outcome())  # type: ignore[arg-type]
    assert len(sink.records) == 1 and sink.records[0]["verdict"] == "spam"


def test_spf_known_at_mail_from_is_recorded_when_the_scan_returned_none() -> None:
    txn = transaction()
    txn.results.put(SpfResult("fail", "mailfrom", "example.net", "alice@example.net"), by="auth")
    ended = replace(outcome(), scan=Scan(log={"dkim": "none"}))
    assert record.from_outcome(txn, ended)["spf"] == "fail"


def test_a_dry_run_is_never_recorded() -> None:
    """`quorum scan` runs every stage on a transaction marked dry_run: its refusals and its outcome
    are printed, never written as sessions (they would count in `quorum stats`)."""
    sink = Collect()
    stage = RecordsStage(sink)  # type: ignore[arg-type]
    txn = transaction()
    txn.dry_run = True
    txn.refusal = Refusal("ratelimit", "data", replies.rate_limited("sender_domain example.net", 30))
    txn.refused_recipient(Refusal("dnsbl", "rcpt", replies.rate_limited("x", 1), recipient="bob@example.org"))
    stage.aborted(txn)
    stage.finished(txn, outcome())
    assert sink.records == []
