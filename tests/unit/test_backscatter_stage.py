"""Backscatter store (fake Redis client), settings, and the stage's hooks against fake transactions."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pydantic import TypeAdapter

from quorum.assembly import parse_config
from quorum.backscatter import batv
from quorum.backscatter.feature import TABLES
from quorum.backscatter.settings import BackscatterSettings, parse_settings
from quorum.backscatter.stage import HEADER, BackscatterStage, EnvelopeEdits
from quorum.backscatter.store import MessageIdStore
from quorum.config import ConfigError
from quorum.config.fields import Problems, Table
from quorum.message import Envelope, Message
from quorum.pipeline.results import Results
from quorum.pipeline.stages import Action, Outcome

KEY = b"k" * 32


class FakeRedis:
    def __init__(self) -> None:
        self.data: dict[str, tuple[bytes, int]] = {}
        self.calls: list[str] = []
        self.down = False

    def set(self, key: str, value: bytes, ex: int) -> bool:
        self.calls.append("SET")
        if self.down:
            raise ConnectionError("refused")
        self.data[key] = (value, ex)
        return True

    def exists(self, *keys: str) -> int:
        self.calls.append("EXISTS")
        if self.down:
            raise ConnectionError("refused")
        return sum(k in self.data for k in keys)

    def close(self) -> None:
        pass


@dataclass
class FakeTxn:
    envelope: Envelope
    id: str = "t1"
    tenant: Any = None
    connection: Any = None
    sender_rewrite: str | None = None
    recipient_rewrites: dict[str, str] = field(default_factory=dict)
    results: Results = field(default_factory=Results)


@dataclass
class Policy:
    backscatter: str = "reject"

    @property
    def extensions(self) -> dict[str, str]:
        return {"backscatter": self.backscatter}


@dataclass
class Clock:
    now: float = 1000.0
    steps: list[float] = field(default_factory=list)

    def __call__(self) -> float:
        return self.now


def make(redis: FakeRedis, clock: Clock | None = None, **kw: Any) -> tuple[BackscatterStage, MessageIdStore]:
    store = MessageIdStore(lambda: redis, ttl=14 * 86400, backoff=5, clock=clock or Clock())
    settings = BackscatterSettings(batv_key=KEY, **kw)
    return BackscatterStage(settings, store, ()), store


def txn(sender: str, auth: str = "", rcpts: tuple[str, ...] = ()) -> FakeTxn:
    env = Envelope("192.0.2.9", "", "helo", sender, list(rcpts))
    if auth:
        env.macros["{auth_authen}"] = auth
    return FakeTxn(env)


def msg(raw: bytes, env: Envelope) -> Message:
    return Message.from_bytes(raw, env)


def bounce_for(msgid: str) -> bytes:
    return (
        "From: MAILER-DAEMON@remote.example\r\nMessage-ID: <b@remote.example>\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n\r\n'
        "--B\r\nContent-Type: text/plain\r\n\r\nfailed\r\n"
        f"--B\r\nContent-Type: text/rfc822-headers\r\n\r\nMessage-ID: {msgid}\r\nSubject: x\r\n--B--\r\n"
    ).encode()


def run(stage: BackscatterStage, t: FakeTxn, raw: bytes) -> Any:
    stage.mail_from(t)  # type: ignore[arg-type]
    replies = [stage.rcpt(t, r) for r in t.envelope.recipients]  # type: ignore[arg-type]
    m = msg(raw, t.envelope)
    try:
        return replies, stage.examine(t, m, 0.0)  # type: ignore[arg-type]
    finally:
        m.close()


def test_store_one_command_each_and_key_shape() -> None:
    redis = FakeRedis()
    store = MessageIdStore(lambda: redis, ttl=3600)
    assert store.record("<Abc@Example.COM>") is True
    (key,) = redis.data
    assert key.startswith("quorum:bs:mid:{") and key.endswith("}") and redis.data[key] == (b"1", 3600)
    assert store.known(["<Abc@example.com>"]) is True  # domain case does not matter
    assert store.known(["<abc@example.com>"]) is False  # the local part does
    assert redis.calls == ["SET", "EXISTS", "EXISTS"]
    assert store.known([]) is False and store.record("") is False and len(redis.calls) == 3


def test_store_backs_off_when_redis_is_down(caplog: pytest.LogCaptureFixture) -> None:
    redis, clock = FakeRedis(), Clock()
    store = MessageIdStore(lambda: redis, backoff=5, clock=clock)
    redis.down = True
    assert store.known(["<a@b>"]) is None
    assert store.known(["<a@b>"]) is None and redis.calls == ["EXISTS"]  # no call during the backoff
    clock.now += 6
    redis.down = False
    assert store.known(["<a@b>"]) is False
    assert [r.getMessage()[:33] for r in caplog.records] == [
        "backscatter: Redis unavailable (C",
        "backscatter: Redis reachable agai",
    ]


def test_outbound_records_message_id_and_signs_sender() -> None:
    redis = FakeRedis()
    stage, _ = make(redis)
    t = txn("alice@example.com", auth="alice", rcpts=("bob@remote.example",))
    replies, findings = run(stage, t, b"Message-ID: <out-1@example.com>\r\nSubject: x\r\n\r\nhi\r\n")
    assert replies == [None] and findings.log["backscatter"] == "recorded" and redis.calls == ["SET"]
    edits = stage.envelope_edits(t)  # type: ignore[arg-type]
    assert isinstance(edits, EnvelopeEdits) and edits.recipients == ()
    assert edits.sender and batv.validate(edits.sender, {0: KEY}).address == "alice@example.com"
    stage.finished(t, Outcome(Action.ACCEPT))  # type: ignore[arg-type]
    assert stage.envelope_edits(t) is None  # type: ignore[arg-type]


def test_ordinary_inbound_mail_costs_nothing() -> None:
    redis = FakeRedis()
    stage, _ = make(redis)
    _, findings = run(stage, txn("someone@remote.example", rcpts=("bob@example.com",)), b"Subject: x\r\n\r\nhi\r\n")
    assert findings is None and redis.calls == []


def test_bounce_for_a_recorded_message_is_accepted() -> None:
    redis = FakeRedis()
    stage, store = make(redis)
    store.record("<out-1@example.com>")
    t = txn("", rcpts=("alice@example.com",))
    t.tenant = Policy("reject")
    _, findings = run(stage, t, bounce_for("<out-1@example.com>"))
    assert findings.reply is None and findings.log["backscatter"] == "dsn-ok"
    assert redis.calls == ["SET", "EXISTS"]


@pytest.mark.parametrize("action", ["reject", "tag", "quarantine", "off"])
def test_bounce_for_an_unknown_message_gets_the_domain_action(action: str) -> None:
    redis = FakeRedis()
    stage, _ = make(redis)
    t = txn("", rcpts=("alice@example.com",))
    t.tenant = Policy(action)
    _, findings = run(stage, t, bounce_for("<never-sent@example.com>"))
    if action == "reject":
        assert findings.reply.code == "550" and findings.reply.xcode == "5.7.1"
        assert "backscatter" in findings.reply.text and "<never-sent@example.com>" in findings.reply_reason
    elif action == "quarantine":
        assert findings.hold and findings.reply is None and "backscatter" in findings.reasons[0]
    elif action == "tag":
        assert findings.headers == [(HEADER, "unverified bounce")] and findings.spam_flag
    else:
        assert findings.reply is None and not findings.hold and not findings.headers
    assert redis.calls == ([] if action == "off" else ["EXISTS"])


def test_redis_down_accepts_the_bounce() -> None:
    redis = FakeRedis()
    redis.down = True
    stage, _ = make(redis)
    t = txn("", rcpts=("alice@example.com",))
    t.tenant = Policy("reject")
    _, findings = run(stage, t, bounce_for("<x@example.com>"))
    assert findings.reply is None and findings.log["backscatter"] == "unchecked-redis-down"


def test_valid_prvs_recipient_is_accepted_and_rewritten() -> None:
    redis = FakeRedis()
    stage, _ = make(redis)
    tagged = batv.sign("alice@example.com", KEY)
    t = txn("", rcpts=(tagged,))
    t.tenant = Policy("reject")
    replies, findings = run(stage, t, bounce_for("<unknown@example.com>"))
    assert replies == [None] and findings.reply is None and findings.log["backscatter"] == "batv-ok"
    assert redis.calls == []  # the tag is proof enough
    assert stage.envelope_edits(t) == EnvelopeEdits(None, ((tagged, "alice@example.com"),))  # type: ignore[arg-type]


def test_forged_prvs_recipient_is_refused_at_rcpt() -> None:
    stage, _ = make(FakeRedis())
    t = txn("", rcpts=("prvs=0123abcdef=alice@example.com",))
    t.tenant = Policy("reject")
    stage.mail_from(t)  # type: ignore[arg-type]
    reply = stage.rcpt(t, t.envelope.recipients[0])  # type: ignore[arg-type]
    assert reply is not None and reply.code == "550" and "forged BATV tag" in reply.text


def test_settings(tmp_path: Path) -> None:
    assert parse_settings(Table({}, "", Problems())) is None
    key_file = tmp_path / "batv.key"
    key_file.write_text("0123456789abcdef0123456789abcdef\n")
    problems = Problems()
    s = parse_settings(
        Table(
            {
                "backscatter": {"batv_key_file": str(key_file), "message_id_ttl": "7d", "action": "reject"},
                "redis": {"url": "redis://127.0.0.1:6390/0"},
            },
            "",
            problems,
        )
    )
    assert s is not None and not problems.errors
    assert s.batv_key == b"0123456789abcdef0123456789abcdef" and s.message_id_ttl == 7 * 86400
    assert s.action == "reject" and s.redis.url == "redis://127.0.0.1:6390/0" and s.batv_keys == {0: s.batv_key}
    problems = Problems()
    parse_settings(
        Table(
            {"backscatter": {"batv_key": "short", "batv_key_file": "/x", "action": "bounce", "colour": 1}}, "", problems
        )
    )
    text = "\n".join(problems.errors)
    assert "backscatter.batv_key: set batv_key or batv_key_file, not both" in text
    assert "backscatter.action: must be one of reject | tag | quarantine | off" in text
    assert "backscatter.colour: unknown key" in text
    problems = Problems()
    parse_settings(Table({"backscatter": {"batv_key": "short"}}, "", problems))
    assert problems.errors == [
        "backscatter.batv_key: the key is 5 bytes; use at least 16 random bytes (e.g. openssl rand -hex 32)"
    ]
    assert "secret" not in repr(BackscatterSettings(batv_key=b"secret-secret-secret"))


def test_hmac_matches_an_independent_computation() -> None:
    tagged = batv.sign("a@example.com", KEY, now=0)
    ddd = tagged[6:9]
    assert tagged[9:15] == hmac.new(KEY, f"0{ddd}a@example.com".encode(), hashlib.sha1).hexdigest()[:6]


def test_settings_problems_all_in_one_run(tmp_path: Path) -> None:
    short = tmp_path / "short.key"
    short.write_text("abc\n")
    problems = Problems()
    table = {"batv_key_file": str(short), "batv_key_number": 10, "key_prefix": "bs:{x}", "message_id_ttl": "1m"}
    s = parse_settings(Table({"backscatter": table}, "", problems))
    assert s is not None and s.batv_key is None
    assert problems.errors == [
        "backscatter.batv_key_number: must be at most 9, got 10",
        "backscatter.message_id_ttl: must be at least 3600.0, got 60.0",
        "backscatter.key_prefix: must not contain '{' or '}' (Redis Cluster hash tags); remove them",
        "backscatter.batv_key_file: the key is 3 bytes; use at least 16 random bytes (e.g. openssl rand -hex 32)",
    ]
    problems = Problems()
    parse_settings(Table({"backscatter": {"batv_key_file": str(tmp_path / "none"), "batv_key": 5}}, "", problems))
    assert problems.errors == ["backscatter.batv_key: expected a string, got 5; fix the value or remove the key"]
    problems = Problems()
    parse_settings(Table({"backscatter": {"batv_key_file": str(tmp_path / "none")}}, "", problems))
    assert problems.errors == [
        f"backscatter.batv_key_file: cannot read {tmp_path / 'none'}: No such file or directory; fix the path"
    ]
    assert parse_settings(Table({"backscatter": {"enabled": False, "colour": 1}}, "", problems)) is None


def test_a_domain_action_is_one_of_the_global_choices() -> None:
    config = parse_config({"domains": {"a.example": {"backscatter": "reject"}}})
    assert config.feature("tenants").domains["a.example"].values == {"backscatter": "reject"}
    for value in ("bounce", 5):
        with pytest.raises(ConfigError) as info:
            parse_config({"domains": {"a.example": {"backscatter": value}}})
        assert info.value.problems == [
            f'domains."a.example".backscatter: must be one of reject | tag | quarantine | off, got {value!r}'
        ]


def test_the_table_has_a_json_schema() -> None:
    schema = TypeAdapter(TABLES["backscatter"]).json_schema()
    assert schema["properties"]["batv_key"]["type"] == "string" and list(TABLES) == ["backscatter"]
    assert schema["properties"]["action"]["enum"] == ["reject", "tag", "quarantine", "off"]
