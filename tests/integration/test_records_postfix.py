"""A mixed load through the real Postfix into `quorum run` with session records on a real Redis
Cluster: `quorum stats --json` counts what was sent (by verdict and action exactly), each delivered
message's record names the engine results its X-Quorum-Engines header shows; with Redis down the
same mail gets the same answers and the records are dropped and counted."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import MailStack
from tests.harness.clamd import Clamd
from tests.harness.messages import EICAR, GTUBE, HAM, mail
from tests.harness.ports import free_port
from tests.harness.quorum import engine_table
from tests.harness.redis_server import RedisAuth, RedisCluster
from tests.harness.sink import delivered, engines_header
from tests.harness.smtp_client import SendResult, send
from tests.harness.spamd import Spamd

from quorum.pipeline.transaction import Transaction

pytestmark = pytest.mark.integration
LIMITED_IP = "203.0.113.50"
# Whether the pipeline notes a refusal before end-of-data on the transaction (txn.refusal):
# only then is a rate-limit refusal at DATA recorded (see the records stage).
REFUSALS_RECORDED = "refusal" in {f.name for f in dataclasses.fields(Transaction)}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    with RedisCluster(tmp_path_factory.mktemp("records-cluster"), auth=RedisAuth()) as cl:
        yield cl


REFUSED_RCPT = "gone@example.org"  # refused at RCPT by the access stage's recipient table


def body(redis_table: str, rules: Path, clamd: Clamd, spamd: Spamd) -> str:
    recipients = rules.parent / "recipient_access"
    recipients.write_text(f"{REFUSED_RCPT} REJECT no such mailbox\n")
    return (
        '[policy]\non_virus = "reject"\non_spam = "tag"\n\n'
        + engine_table("clamav", "clamav", address=clamd.address)
        + engine_table("spamassassin", "spamassassin", address=spamd.address)
        + redis_table
        + '\n[records]\nflush_interval = "20ms"\n'
        + f'\n[access]\nheader = "{rules}"\nrecipient = "{recipients}"\n'
        + '\n[ratelimit]\nbackoff = "200ms"\nclient_ip = { messages = 2, per = "1h" }\n'
        + '[ratelimit.networks."127.0.0.0/8"]\nexempt = true\n'
    )


# What the client sees for load()'s mix, by kind and final code, with Redis up or down.
REPLIES = Counter(
    {
        ("clean", 250): 3,
        ("virus", 554): 2,
        ("gtube", 250): 2,
        ("rule", 554): 1,
        ("norcpt", 554): 1,  # RCPT refused; DATA then gets Postfix's "no valid recipients"
        ("limited", 250): 2,
        ("limited", 451): 1,
    }
)


def load(smtp: int) -> tuple[list[tuple[str, SendResult, str]], Counter[str]]:
    """Send the mix; returns (kind, result, token) and the expected (verdict, action) counts."""
    sent = []
    plan = [("clean", HAM, "Lunch")] * 3 + [("virus", EICAR, "Lunch")] * 2 + [("gtube", GTUBE, "Lunch")] * 2
    plan += [("rule", HAM, "Casino night")]
    for kind, text, subject in plan:
        token = uuid.uuid4().hex
        sent.append((kind, send(smtp, "alice@example.com", ["bob@example.org"], mail(token, text, subject)), token))
    token = uuid.uuid4().hex  # every recipient refused at RCPT: the client gives up before DATA
    sent.append(("norcpt", send(smtp, "dave@example.com", [REFUSED_RCPT], mail(token, HAM)), token))
    for _ in range(3):  # the third is refused at DATA by the client_ip bucket
        token = uuid.uuid4().hex
        result = send(smtp, "carol@example.net", ["bob@example.org"], mail(token, HAM), xclient={"ADDR": LIMITED_IP})
        sent.append(("limited", result, token))
    expected: Counter[str] = Counter(
        {"clean/accept": 5, "virus/reject": 2, "spam/tag": 2, "unchecked/reject": 1}  # a rule decides first
    )
    expected["refused/reject"] = 1  # the recipient refused at RCPT
    if REFUSALS_RECORDED:
        expected["refused/tempfail"] = 1
    return sent, expected


def stats(config: Path, *extra: str) -> dict[str, Any]:
    run = subprocess.run(
        [sys.executable, "-m", "quorum", "stats", "-c", str(config), "--since", "10m", "--json", *extra],
        capture_output=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr.decode()
    return json.loads(run.stdout)  # type: ignore[no-any-return]


def test_mixed_load_is_counted_by_stats(
    mail_stack: MailStack, cluster: RedisCluster, clamd: Clamd, spamd: Spamd, tmp_path: Path
) -> None:
    for node in cluster.nodes:
        with node.client() as c:
            c.flushall()
    rules = tmp_path / "header_rules"
    rules.write_text("/^Subject:.*casino/i REJECT No casino mail, thanks\n")
    table = f'[redis]\nurl = "{cluster.urls[0]}"\ncluster = true\n'
    quorum = mail_stack.start(body(table, rules, clamd, spamd))
    sent, expected = load(mail_stack.postfix.smtp_port)
    codes = Counter((kind, result.code) for kind, result, _ in sent)
    assert codes == REPLIES, [(k, str(r.final)) for k, r, _ in sent]
    deadline = time.monotonic() + 15
    while True:
        s = stats(quorum.config_path)
        if s["records"] >= sum(expected.values()) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert s["records"] == sum(expected.values())
    by_verdict: Counter[str] = Counter()
    by_action: Counter[str] = Counter()
    for label, n in expected.items():
        verdict, action = label.split("/")
        by_verdict[verdict] += n
        by_action[action] += n
    assert s["totals"]["verdict"] == dict(by_verdict)
    assert s["totals"]["action"] == dict(by_action)
    assert s["engines"]["clamav"]["statuses"].get("infected") == 2
    assert s["engines"]["spamassassin"]["statuses"].get("spam") == 2
    if REFUSALS_RECORDED:
        assert s["ratelimit_refused"] == {"client_ip": 1}
    clients = {r["name"]: r for r in s["top"]["clients"]}
    assert clients[LIMITED_IP]["messages"] == (3 if REFUSALS_RECORDED else 2)
    # each delivered message: its record's engine statuses are those of its X-Quorum-Engines header
    records = _records(cluster)
    by_qid = {r["qid"]: r for r in records if r.get("qid")}
    for kind, result, token in sent:
        if not result.accepted:
            continue
        header = engines_header(delivered(mail_stack.sink, token))
        record = by_qid[result.queue_id]
        assert {e["engine"]: e["status"] for e in record["engines"]} == {
            name: value.split("(")[0] for name, value in header.items()
        }, (kind, header, record["engines"])
        assert record["action"] == ("tag" if kind == "gtube" else "accept")
    assert stats(quorum.config_path, "--domain", "example.net")["records"] == (3 if REFUSALS_RECORDED else 2)
    [norcpt] = [r for r in records if r.get("stage") == "rcpt"]
    assert (norcpt["sender"], norcpt["recipients"], norcpt["refused_by"]) == (
        "dave@example.com",
        [REFUSED_RCPT],
        "access",
    )
    [seen] = [result.rcpts[REFUSED_RCPT] for kind, result, _ in sent if kind == "norcpt"]  # what the client got
    assert norcpt["reply_code"] == str(seen.code) and "no such mailbox" in norcpt["reply"] and seen.code >= 500
    assert norcpt["refused_recipients"][0]["recipient"] == REFUSED_RCPT


def _records(cluster: RedisCluster) -> list[dict[str, Any]]:
    from quorum.assembly import parse_config
    from quorum.records import streams
    from quorum.records.feature import client_factory

    s = parse_config({"redis": {"url": cluster.urls[0], "cluster": True}, "records": {}}).feature("records")
    client = client_factory(s)()
    try:
        return list(streams.read(client, s, time.time() - 600))
    finally:
        client.close()


def test_redis_down_changes_nothing_for_mail(mail_stack: MailStack, clamd: Clamd, spamd: Spamd, tmp_path: Path) -> None:
    rules = tmp_path / "header_rules"
    rules.write_text("/^Subject:.*casino/i REJECT No casino mail, thanks\n")
    port = free_port()
    dead = f'[redis]\nurl = "redis://127.0.0.1:{free_port()}/0"\ntimeout = "100ms"\n'
    mail_stack.start(body(dead, rules, clamd, spamd), milter_extra=f'metrics_listen = "127.0.0.1:{port}"')
    sent, _ = load(mail_stack.postfix.smtp_port)
    codes = Counter((kind, result.code) for kind, result, _ in sent)
    # the client_ip bucket counts in process while Redis is away: the same answers as with Redis
    assert codes == REPLIES
    for _kind, result, token in sent:
        if result.accepted:
            delivered(mail_stack.sink, token)
    deadline = time.monotonic() + 10
    while True:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        line = [x for x in text.splitlines() if x.startswith('quorum_records_dropped_total{reason="redis_down"}')]
        if (line and float(line[0].split()[-1]) >= 10) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert line and float(line[0].split()[-1]) >= 10, line
