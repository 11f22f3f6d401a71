"""Quarantine logic against a fake queue: nothing counts as released or deleted unless the queue confirms it."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from types import SimpleNamespace

import pytest
from pydantic import TypeAdapter

from quorum.assembly import parse_config
from quorum.config import ConfigError
from quorum.config.fields import Problems, Table
from quorum.quarantine.audit import audit_logger, invoking_user
from quorum.quarantine.cli import parse_age
from quorum.quarantine.feature import TABLES
from quorum.quarantine.held import header_values, quarantine_reason
from quorum.quarantine.manage import NOT_HELD, Quarantine, tenant_retention
from quorum.quarantine.postfix import PostfixCommandError, QueueEntry
from quorum.quarantine.settings import QuarantineSettings, parse_settings

NOW = 1_800_000_000
DAY = 86400


class FakeQueue:
    def __init__(self) -> None:
        self.entries_: dict[str, QueueEntry] = {}
        self.heads: dict[str, str] = {}
        self.refuse: set[str] = set()  # postsuper does not report these
        self.stuck: set[str] = set()  # postsuper reports them, but they stay in hold
        self.fail = False
        self.asked: list[str] = []

    def add(self, qid: str, rcpts: Sequence[str], age: float, reason: str | None = "virus X found by clamav") -> None:
        self.entries_[qid] = QueueEntry("hold", qid, int(NOW - age), 100, "s@example.com", tuple(rcpts))
        self.heads[qid] = "Subject: x\n" + (f"X-Quorum-Quarantine: {reason}\n" if reason else "")

    def entries(self) -> list[QueueEntry]:
        return list(self.entries_.values())

    def headers(self, ids: Sequence[str]) -> dict[str, str]:
        return {q: self.heads[q] for q in ids if q in self.heads and self.entries_[q].queue_name == "hold"}

    def _do(self, ids: Sequence[str], release: bool) -> list[str]:
        if self.fail:
            raise PostfixCommandError("postsuper exited 1: fatal: no permission")
        done = [q for q in ids if q not in self.refuse]
        for q in done:
            if q in self.stuck:
                continue
            if release:
                e = self.entries_[q]
                self.entries_[q] = QueueEntry("deferred", q, e.arrival_time, e.size, e.sender, e.recipients)
            else:
                del self.entries_[q]
        return done

    def release(self, ids: Sequence[str]) -> list[str]:
        return self._do(ids, True)

    def delete(self, ids: Sequence[str]) -> list[str]:
        return self._do(ids, False)

    def deliver_now(self, qid: str) -> str | None:
        self.asked.append(qid)
        return None


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def queue() -> FakeQueue:
    q = FakeQueue()
    q.add("AAAAA1", ["bob@a.example"], 40 * DAY)
    q.add("AAAAA2", ["eve@A.Example"], 1 * DAY)
    q.add("BBBBB1", ["carol@b.example", "dan@a.example"], 10 * DAY)
    q.add("FOREIGN1", ["x@a.example"], 50 * DAY, reason=None)  # held by Postfix, not by Quorum
    return q


def make(
    queue: FakeQueue, retention: float | None = None, per_domain: dict[str, float] | None = None
) -> tuple[Quarantine, Records]:
    log = logging.getLogger(f"test.audit.{id(queue)}")
    rec = Records()
    log.handlers[:] = [rec]
    log.setLevel(logging.INFO)
    q = Quarantine(
        QuarantineSettings(retention=retention),
        audit=log,
        who="tester",
        retention_for=(per_domain or {}).get,
        queue=queue,  # type: ignore[arg-type]
    )
    return q, rec


def test_list_only_quorum_held_per_domain(queue: FakeQueue) -> None:
    q, rec = make(queue)
    assert [m.queue_id for m in q.list_held()] == ["AAAAA1", "BBBBB1", "AAAAA2"]  # oldest first, no FOREIGN1
    assert [m.queue_id for m in q.list_held(domain="A.EXAMPLE.")] == ["AAAAA1", "BBBBB1", "AAAAA2"]
    assert [m.queue_id for m in q.list_held(domain="b.example")] == ["BBBBB1"]
    assert rec.lines[-1] == "user='tester' action=list messages=BBBBB1 result=ok listed=1 domain=b.example"
    assert [m.reason for m in q.held_for("EVE@a.example")] == ["virus X found by clamav"]


def test_release_confirmed_by_the_queue(queue: FakeQueue) -> None:
    q, rec = make(queue)
    result = q.release(["AAAAA1"])
    assert result.ok and result.done == ["AAAAA1"] and result.notes["AAAAA1"] == "deferred"
    assert queue.asked == ["AAAAA1"]
    assert rec.lines == ["user='tester' action=release messages=AAAAA1 result=ok done=1"]


@pytest.mark.parametrize("trouble", ["refuse", "stuck", "fail"])
def test_release_failure_is_never_reported_as_released(queue: FakeQueue, trouble: str) -> None:
    if trouble == "fail":
        queue.fail = True
    else:
        getattr(queue, trouble).add("AAAAA1")
    q, rec = make(queue)
    result = q.release(["AAAAA1", "AAAAA2"])
    assert "AAAAA1" in result.failed and "AAAAA1" not in result.done
    assert not result.ok
    assert "result=failed" in rec.lines[-1] or "result=partial" in rec.lines[-1]
    assert "AAAAA1:" in rec.lines[-1].split("failed=", 1)[1]


def test_not_held_by_quorum_and_bad_ids_are_refused(queue: FakeQueue) -> None:
    q, _ = make(queue)
    result = q.delete(["FOREIGN1", "NOSUCH9", "../etc", "AAAAA2"])
    assert result.done == ["AAAAA2"]
    assert result.failed == {"FOREIGN1": NOT_HELD, "NOSUCH9": NOT_HELD, "../etc": "not a Postfix queue id"}
    assert "FOREIGN1" in queue.entries_


def test_release_by_domain(queue: FakeQueue) -> None:
    q, rec = make(queue)
    result = q.release(domain="b.example")
    assert result.done == ["BBBBB1"]
    assert "domain=b.example" in rec.lines[-1]


def test_expire_with_older_than(queue: FakeQueue) -> None:
    q, rec = make(queue)
    result = q.expire(older_than=30 * DAY, now=NOW)
    assert result.done == ["AAAAA1"]
    assert set(queue.entries_) == {"AAAAA2", "BBBBB1", "FOREIGN1"}
    assert rec.lines[-1] == "user='tester' action=expire messages=AAAAA1 result=ok done=1"


def test_expire_by_retention_keeps_until_every_domain_allows(queue: FakeQueue) -> None:
    # a.example keeps 5 days, b.example 20: BBBBB1 (10 days, both domains) stays; AAAAA1 goes.
    q, _ = make(queue, retention=None, per_domain={"a.example": 5 * DAY, "b.example": 20 * DAY})
    assert q.expire(now=NOW).done == ["AAAAA1"]
    # Global retention fills domains without their own; a domain with none at all keeps its mail.
    queue2 = FakeQueue()
    queue2.add("CCCCC1", ["x@c.example"], 9 * DAY)
    queue2.add("DDDDD1", ["x@d.example"], 9 * DAY)
    q2, _ = make(queue2, retention=7 * DAY, per_domain={"d.example": 30 * DAY})
    assert q2.expire(now=NOW).done == ["CCCCC1"]
    q3, _ = make(queue2, retention=None)
    assert q3.expire(now=NOW).done == []


def test_tenant_retention_duck_typed() -> None:
    assert tenant_retention(None, "a.example") is None
    config = SimpleNamespace(feature=lambda name: None)
    assert tenant_retention(config, "a.example") is None
    by_method = SimpleNamespace(quarantine_retention=lambda d: 86400.0 if d == "a.example" else None)
    config = SimpleNamespace(feature=lambda name: by_method if name == "tenants" else None)
    assert tenant_retention(config, "a.example") == 86400.0
    by_table = SimpleNamespace(domains={"a.example": SimpleNamespace(quarantine_retention=3600)})
    config = SimpleNamespace(feature=lambda name: by_table if name == "tenants" else None)
    assert tenant_retention(config, "a.example") == 3600.0 and tenant_retention(config, "b.example") is None


def test_reason_is_the_last_unfolded_header() -> None:
    head = "Subject: s\nX-Quorum-Quarantine: forged\nx-quorum-quarantine: virus\n\tEicar found\n"
    assert header_values(head, "X-Quorum-Quarantine") == ["forged", "virus Eicar found"]
    assert quarantine_reason(head) == "virus Eicar found"
    assert quarantine_reason("Subject: s\n") is None


def test_parse_age() -> None:
    assert parse_age("7d") == 7 * DAY and parse_age("12h") == 43200 and parse_age("2w") == 14 * DAY
    assert parse_age("30") == 30 * DAY and parse_age("90m") == 5400
    with pytest.raises(argparse.ArgumentTypeError):
        parse_age("soon")


def test_settings_validation() -> None:
    problems = Problems()
    s = parse_settings(
        Table({"quarantine": {"retention": "30d", "postfix_config_dir": "/etc/postfix-out"}}, "", problems)
    )
    assert s.retention == 30 * DAY and s.postfix_config_dir == "/etc/postfix-out" and not problems.errors
    assert parse_settings(Table({}, "", Problems())) == QuarantineSettings()
    problems = Problems()
    parse_settings(
        Table({"quarantine": {"postfix_config_dir": "etc", "audit_log": "file", "retension": 1}}, "", problems)
    )
    text = "\n".join(problems.errors)
    assert "quarantine.postfix_config_dir" in text and "quarantine.audit_log" in text
    assert "quarantine.retension: unknown key; did you mean 'retention'?" in text
    assert "quarantine.postfix_config_dir: 'etc' is not an absolute path; e.g. /etc/postfix" in text
    assert "quarantine.audit_log: must be one of stderr | syslog | both, got 'file'" in text
    problems = Problems()
    parse_settings(Table({"quarantine": {"retention": "30m", "syslog_facility": "local8"}}, "", problems))
    assert problems.errors == [
        "quarantine.retention: must be at least 3600.0, got '30m'",
        "quarantine.syslog_facility: must be one of mail | auth | authpriv | daemon | user | local0 | local1 | "
        "local2 | local3 | local4 | local5 | local6 | local7, got 'local8'",
    ]


def test_a_domain_retention_has_the_bounds_of_the_global_one() -> None:
    config = parse_config({"domains": {"a.example": {"quarantine_retention": "30d"}, "b.example": {}}})
    values = {name: d.values for name, d in config.feature("tenants").domains.items()}
    assert values == {"a.example": {"quarantine_retention": 30 * DAY}, "b.example": {}}
    for value, problem in [
        ("1m", "must be at least 3600.0, got '1m'"),
        ("soon", "expected seconds or a duration such as \"10m\", got 'soon'; fix the value or remove the key"),
        (float("inf"), "must be a finite number, got inf"),
    ]:
        with pytest.raises(ConfigError) as info:
            parse_config({"domains": {"a.example": {"quarantine_retention": value}}})
        [found] = info.value.problems
        assert found.startswith(f'domains."a.example".quarantine_retention: {problem}'), found


def test_the_table_has_a_json_schema() -> None:
    schema = TypeAdapter(TABLES["quarantine"]).json_schema()
    assert set(schema["properties"]) == set(QuarantineSettings.model_fields) and list(TABLES) == ["quarantine"]


def test_invoking_user_under_sudo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.getuid", lambda: 0)
    monkeypatch.setenv("SUDO_USER", "alice")
    assert invoking_user() == "alice (via sudo as root)"
    monkeypatch.delenv("SUDO_USER")
    assert invoking_user() == "root"


def test_unreachable_syslog_falls_back_to_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    logger = audit_logger(QuarantineSettings(audit_log="syslog", syslog_address="/nonexistent/log"))
    logger.info("user='x' action=list")
    err = capsys.readouterr().err
    assert "cannot log to syslog" in err and "action=list" in err
