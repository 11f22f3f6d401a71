"""The pipeline with fake engines: parallel fan-out under one deadline, failures turned into
verdicts, one policy decision, and the header/reply sanitising that keeps engine text harmless."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar, Literal

import pytest
from tests.harness.fake_engine import FakeEngine as FakeServer

from quorum.assembly import build_pipeline, parse_config
from quorum.auth.spf import SpfResult
from quorum.config import Config
from quorum.config.model import EngineTable
from quorum.config.schema import Duration
from quorum.engines import ENGINE_TYPES, Engine, EngineError, ScanCall
from quorum.message import Envelope, Message
from quorum.pipeline.headers import engine_item, headers_to_add, sanitise_header, sanitise_reply, verdict_value
from quorum.pipeline.pipeline import Pipeline, Result
from quorum.pipeline.stages import Action
from quorum.pipeline.transaction import Connection, Transaction
from quorum.verdict import Category, Status, Verdict

Behaviour = Literal["clean", "infected", "spam", "ham", "hang", "stall", "raise", "fail", "barrier", "sleep"]
RELEASE = threading.Event()  # lets "hang" engines go at teardown
BARRIER: dict[str, threading.Barrier] = {}


class Fake(Engine):
    """Configured like a real engine: `behaviour`, `delay`, `name` (virus name) in its table."""

    type_name = "fake"
    category: ClassVar[Category] = Category.ANTIVIRUS
    calls: ClassVar[list[str]] = []

    class Options(EngineTable):
        behaviour: Behaviour = "clean"
        delay: Duration = 0.0
        virus: str = "Fake.Virus"

    def scan(self, message: Message, call: ScanCall) -> Verdict:
        Fake.calls.append(self.name)
        o = self.options
        behaviour = o["behaviour"]
        if behaviour == "hang":  # ignores the call's budget and cancellation entirely
            RELEASE.wait(60)
            return self.verdict(Status.CLEAN)
        if behaviour == "stall":  # a well-behaved adapter: its socket timeout is call.remaining()
            time.sleep(call.remaining())
            raise TimeoutError("timed out")
        if behaviour == "raise":
            raise RuntimeError("adapter bug")
        if behaviour == "fail":
            raise EngineError("bad reply from engine")
        if behaviour == "barrier":
            BARRIER["all"].wait()  # every engine must be inside scan() at the same time
        if behaviour == "sleep":
            time.sleep(o["delay"])
        if behaviour == "infected":
            return self.verdict(Status.INFECTED, names=(o["virus"],))
        if behaviour == "spam":
            return self.verdict(Status.SPAM, score=12.0, threshold=6.0)
        if behaviour == "ham":
            return self.verdict(Status.CLEAN, score=1.0, threshold=6.0)
        return self.verdict(Status.CLEAN)

    def ping(self, timeout: float) -> None:
        return None


class FakeSpam(Fake):
    type_name = "fake-spam"
    category = Category.ANTISPAM


@pytest.fixture(autouse=True)
def fake_types(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setitem(ENGINE_TYPES, "fake", f"{__name__}:Fake")
    monkeypatch.setitem(ENGINE_TYPES, "fake-spam", f"{__name__}:FakeSpam")
    RELEASE.clear()
    Fake.calls.clear()
    yield
    RELEASE.set()


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    executor = ThreadPoolExecutor(max_workers=16)
    yield executor
    RELEASE.set()
    executor.shutdown(wait=True, cancel_futures=True)


def config(engines: dict[str, dict[str, Any]], deadline: float = 5.0, **sections: dict[str, Any]) -> Config:
    data: dict[str, Any] = {"milter": {"scan_deadline": deadline, **sections.pop("milter", {})}, "engines": {}}
    for name, table in engines.items():
        data["engines"][name] = {"type": "fake", **table}
    data.update(sections)
    return parse_config(data)


def run(pool: ThreadPoolExecutor, cfg: Config, raw: bytes | None = None, spf: SpfResult | None = None) -> Result:
    env = Envelope("192.0.2.1", "client.example", "client.example", "alice@example.com", ["bob@example.org"])
    env.macros["i"] = "4ABCDEF"
    txn = Transaction(Connection(env.client_ip, env.client_name, env.helo), env)
    if spf is not None:
        txn.results.put(spf, by="auth")
        txn.log["spf"] = spf.result
    message = Message.from_bytes(raw or b"Subject: hi\r\nX-Quorum-Verdict: clean\r\n\r\nhello\r\n", env)
    pipeline = build_pipeline(cfg)
    try:
        result = pipeline.check(txn, message)
        pipeline.finish(txn, message, result, result.edits.action, result.edits.reply)
        return result
    finally:
        message.close()
        pipeline.close()


def by_engine(result: Result) -> dict[str, Verdict]:
    return {v.engine: v for v in result.decision.verdicts}


# --- fan-out ----------------------------------------------------------------------------------


def test_engines_scan_in_parallel(pool: ThreadPoolExecutor) -> None:
    names = ["a", "b", "c", "d"]
    BARRIER["all"] = threading.Barrier(len(names), timeout=4)  # breaks unless all four run at once
    result = run(pool, config({n: {"behaviour": "barrier"} for n in names}))
    assert {n: v.status for n, v in by_engine(result).items()} == dict.fromkeys(names, Status.CLEAN)
    assert result.decision.action is Action.ACCEPT and result.decision.label == "clean"
    assert sorted(Fake.calls) == names


def test_hung_engine_becomes_a_timeout_within_the_deadline(pool: ThreadPoolExecutor) -> None:
    cfg = config({"good": {}, "hung": {"behaviour": "hang"}}, deadline=0.5, policy={"on_engine_failure": "accept"})
    start = time.monotonic()
    result = run(pool, cfg)
    elapsed = time.monotonic() - start
    assert elapsed < 0.5 + 2.0, elapsed  # the deadline plus scheduling slack, nowhere near the 60 s hang
    hung = by_engine(result)["hung"]
    assert (hung.status, hung.error) == (Status.ERROR, "timeout")
    assert by_engine(result)["good"].status is Status.CLEAN
    assert result.decision.action is Action.ACCEPT
    assert result.decision.degraded == ["hung"]
    assert dict(result.edits.add)["X-Quorum-Verdict"] == "clean; degraded=hung"


def test_per_engine_timeout_shorter_than_the_deadline(pool: ThreadPoolExecutor) -> None:
    cfg = config({"slow": {"behaviour": "stall", "timeout": "200ms"}, "good": {}}, deadline=5)
    start = time.monotonic()
    result = run(pool, cfg)
    assert time.monotonic() - start < 3.0
    slow = by_engine(result)["slow"]
    assert (slow.status, slow.error) == (Status.ERROR, "timeout")


def test_only_hung_antivirus_tempfails(pool: ThreadPoolExecutor) -> None:
    result = run(pool, config({"hung": {"behaviour": "hang"}}, deadline=0.3))
    d = result.decision
    assert d.action is Action.TEMPFAIL and d.label == "unchecked"
    assert d.reply is not None and (d.reply.code, d.reply.xcode) == ("451", "4.7.1")
    assert result.edits.add == ()


def test_real_adapter_against_a_hanging_server_is_cancelled(pool: ThreadPoolExecutor) -> None:
    """The clamav adapter blocked in recv() is freed by the deadline (its socket is shut down)."""
    with FakeServer("hang") as server:
        cfg = parse_config(
            {"milter": {"scan_deadline": 0.5}, "engines": {"clamav": {"type": "clamav", "address": server.address}}}
        )
        start = time.monotonic()
        result = run(pool, cfg)
        assert time.monotonic() - start < 3.0
        assert by_engine(result)["clamav"].error == "timeout"
        assert result.decision.action is Action.TEMPFAIL
        pool.shutdown(wait=True)  # returns: no worker is stuck on the hung socket
        assert time.monotonic() - start < 4.0


def test_adapter_exception_becomes_an_error_verdict(pool: ThreadPoolExecutor) -> None:
    result = run(pool, config({"buggy": {"behaviour": "raise"}, "broken": {"behaviour": "fail"}, "good": {}}))
    v = by_engine(result)
    assert (v["buggy"].status, v["buggy"].error) == (Status.ERROR, "internal RuntimeError")
    assert (v["broken"].status, v["broken"].error) == (Status.ERROR, "bad reply from engine")
    assert result.decision.action is Action.ACCEPT  # "good" answered
    assert sorted(result.decision.degraded) == ["broken", "buggy"]


def test_adapter_exception_alone_tempfails_or_degrades(pool: ThreadPoolExecutor) -> None:
    assert run(pool, config({"buggy": {"behaviour": "raise"}})).decision.action is Action.TEMPFAIL
    accept = run(pool, config({"buggy": {"behaviour": "raise"}}, policy={"on_engine_failure": "accept"}))
    assert accept.decision.action is Action.ACCEPT
    assert dict(accept.edits.add)["X-Quorum-Verdict"] == "unchecked; degraded=buggy"


def test_virus_rejects_early_without_waiting_for_a_hung_engine(pool: ThreadPoolExecutor) -> None:
    cfg = config({"av": {"behaviour": "infected", "virus": "Eicar-Test"}, "hung": {"behaviour": "hang"}}, deadline=10)
    start = time.monotonic()
    result = run(pool, cfg)
    assert time.monotonic() - start < 5.0  # early exit: far from the 10 s deadline
    d = result.decision
    assert d.action is Action.REJECT and d.label == "virus"
    assert d.reply is not None and str(d.reply) == "554 5.7.1 message contains a virus (Eicar-Test)"
    assert by_engine(result)["hung"].status is Status.CANCELLED
    assert d.degraded == []


@pytest.mark.parametrize(
    ("on_virus", "action"),
    [("reject", Action.REJECT), ("quarantine", Action.QUARANTINE), ("discard", Action.DISCARD), ("tag", Action.TAG)],
)
def test_on_virus(pool: ThreadPoolExecutor, on_virus: str, action: Action) -> None:
    result = run(pool, config({"av": {"behaviour": "infected"}}, policy={"on_virus": on_virus}))
    assert result.decision.action is action
    if action is Action.QUARANTINE:
        assert dict(result.edits.add)["X-Quorum-Quarantine"] == "virus Fake.Virus found by av"


def test_shadow_engine_does_not_vote(pool: ThreadPoolExecutor) -> None:
    result = run(pool, config({"av": {}, "trial": {"behaviour": "infected", "mode": "shadow"}}))
    assert result.decision.action is Action.ACCEPT and result.decision.label == "clean"
    assert "trial:shadow" in result.decision.left_out


def test_spam_is_tagged(pool: ThreadPoolExecutor) -> None:
    cfg = parse_config({"engines": {"av": {"type": "fake"}, "sa": {"type": "fake-spam", "behaviour": "spam"}}})
    result = run(pool, cfg)
    headers = dict(result.edits.add)
    assert result.decision.action is Action.TAG
    assert headers["X-Quorum-Verdict"] == "spam; score=2.00"
    assert headers["X-Spam-Flag"] == "YES"
    assert headers["X-Quorum-Engines"] == "av=clean, sa=spam(12.00/6.00)"


# --- sizes ------------------------------------------------------------------------------------

BIG = b"Subject: big\r\n\r\n" + b"x" * 5000 + b"\r\n"


@pytest.mark.parametrize(
    ("on_oversize", "action", "reply"),
    [(None, Action.REJECT, "552 5.3.4"), ("tempfail", Action.TEMPFAIL, "452 4.3.4"), ("accept", Action.ACCEPT, None)],
)
def test_engine_max_size_skips(pool: ThreadPoolExecutor, on_oversize: str | None, action: Action, reply: str) -> None:
    """Too large for every antivirus engine is not scanned: by default refused like a message over
    max_message_size (a 250 means checked); delivered `unchecked` only under on_oversize = "accept"."""
    milter = {"on_oversize": on_oversize} if on_oversize else {}
    result = run(pool, config({"av": {"max_size": 1000}}, milter=milter), BIG)
    av = by_engine(result)["av"]
    assert (av.status, av.detail) == (Status.SKIPPED, "too-large")
    assert result.decision.action is action and result.decision.label == "unchecked"
    assert (str(result.decision.reply)[:9] if result.decision.reply else None) == reply
    assert Fake.calls == []


@pytest.mark.parametrize(("on_oversize", "reply"), [("reject", "552 5.3.4"), ("tempfail", "452 4.3.4")])
def test_oversize_refused_before_any_scan(pool: ThreadPoolExecutor, on_oversize: str, reply: str) -> None:
    cfg = config({"av": {}}, milter={"max_message_size": 2048, "on_oversize": on_oversize})
    result = run(pool, cfg, BIG)
    assert str(result.decision.reply).startswith(reply)
    assert Fake.calls == []


# --- robustness, headers, logging -------------------------------------------------------------


def test_an_internal_failure_is_a_tempfail(pool: ThreadPoolExecutor, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_: object) -> None:
        raise KeyError("policy bug")

    monkeypatch.setattr("quorum.pipeline.policy.Policy.decide", broken)
    result = run(pool, config({"av": {}}))
    assert result.decision.action is Action.TEMPFAIL
    assert str(result.decision.reply) == "451 4.3.0 internal error, please try again later"


def test_inbound_forgeable_headers_are_removed_highest_index_first(pool: ThreadPoolExecutor) -> None:
    raw = (
        b"X-Quorum-Verdict: clean\r\nSubject: hi\r\nx-quorum-verdict: clean\r\nX-Spam-Flag: NO\r\n"
        b"X-Quorum-Engines: x\r\nX-Spam-Status: No\r\nX-Other: keep\r\n\r\nbody\r\n"
    )
    result = run(pool, config({"av": {}}), raw)
    removed = {(n.lower(), i) for n, i in result.edits.remove}
    assert removed == {
        ("x-quorum-verdict", 1),
        ("x-quorum-verdict", 2),
        ("x-spam-flag", 1),
        ("x-quorum-engines", 1),
        ("x-spam-status", 1),
    }
    verdict_indices = [i for n, i in result.edits.remove if n.lower() == "x-quorum-verdict"]
    assert verdict_indices == [2, 1]  # chgheader by index: delete from the bottom up
    assert [n for n, _ in result.edits.add] == ["X-Quorum-Verdict", "X-Quorum-Engines"]


def test_per_message_log_line(pool: ThreadPoolExecutor, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="quorum.message"):
        run(pool, config({"av": {}, "av2": {"behaviour": "sleep", "delay": "50ms"}}))
    (line,) = [r.getMessage() for r in caplog.records if r.name == "quorum.message"]
    assert line.startswith("qid=4ABCDEF from=<alice@example.com> to=<bob@example.org> client=192.0.2.1 ")
    assert "verdict=clean action=accept" in line
    assert "engines=av:clean:" in line and ",av2:clean:" in line
    assert int(line.split("av2:clean:")[1].split("ms")[0]) >= 50


def test_spf_from_mail_from_is_logged_when_a_virus_ended_the_scan_first(
    pool: ThreadPoolExecutor, caplog: pytest.LogCaptureFixture
) -> None:
    """With spf_at = "mail" the SPF result is known before DATA; the log line says it even when no
    auth findings came back (the race that made an integration test flaky)."""
    spf = SpfResult("fail", "mailfrom", "example.com", "alice@example.com")
    with caplog.at_level(logging.INFO, logger="quorum.message"):
        run(pool, config({"av": {"behaviour": "infected", "virus": "Eicar-Test"}}), spf=spf)
    (line,) = [r.getMessage() for r in caplog.records if r.name == "quorum.message"]
    assert "verdict=virus" in line and " spf=fail " in line


# --- sanitising -------------------------------------------------------------------------------


def verdict(**kw: Any) -> Verdict:
    return Verdict("clam,av;(x)", Category.ANTIVIRUS, kw.pop("status", Status.INFECTED), **kw)


def test_engine_item_strips_separators_from_details() -> None:
    item = engine_item(verdict(names=("Evil,Name;(v2)\r\nInjected: yes",)))
    assert item == "clam-av-x-=infected(Evil Name v2 Injected: yes)"
    _, _, detail = item.partition("(")
    assert not set(detail[:-1]) & set(",;()\r\n")


def test_engine_item_bounds_the_detail() -> None:
    item = engine_item(verdict(status=Status.ERROR, error="x" * 500))
    assert len(item) < 120


def test_sanitise_reply_flattens_and_doubles_percent() -> None:
    assert sanitise_reply("virus 100%\r\n250 2.0.0 Ok\x00 done") == "virus 100%% 250 2.0.0 Ok done"
    assert sanitise_reply("50% off", double_percent=False) == "50% off"
    assert sanitise_reply("Grüße").isascii()
    assert len(sanitise_reply("y" * 5000)) <= 400


def test_sanitise_header_keeps_folds_but_no_bare_line_breaks() -> None:
    assert sanitise_header("a, b\r\n\tc\x00d") == "a, b\n\tc d"
    assert "\r" not in sanitise_header("x\r\ny: injected") and "\n" not in sanitise_header("x\r\ny: injected")


def test_virus_name_in_the_reply_is_sanitised_at_send_time(pool: ThreadPoolExecutor) -> None:
    result = run(pool, config({"av": {"behaviour": "infected", "virus": "W32.100%\r\nbad"}}))
    assert result.decision.reply is not None
    sent = sanitise_reply(result.decision.reply.text)
    assert "\r" not in sent and "\n" not in sent and "100%%" in sent


def test_verdict_value() -> None:
    cfg = config({"av": {"behaviour": "hang"}}, deadline=0.2, policy={"on_engine_failure": "accept"})
    with ThreadPoolExecutor(4) as pool:
        result = run(pool, cfg)
        RELEASE.set()
    assert verdict_value(result.decision) == "unchecked; degraded=av"
    assert headers_to_add(result.decision, result.scan)[0] == ("X-Quorum-Verdict", "unchecked; degraded=av")


# --- cascade ---------------------------------------------------------------------------------------


def cascade_run(pool: ThreadPoolExecutor, cheap: str, combine: str = "any") -> Result:
    cfg = config(
        {"cheap": {"type": "fake-spam", "behaviour": cheap}, "costly": {"type": "fake-spam", "behaviour": "spam"}},
        policy={"cascade": True, "spam_combine": combine},
    )
    env = Envelope("192.0.2.1", "c.example", "c.example", "a@example.com", ["b@example.org"])
    txn = Transaction(Connection(env.client_ip), env)
    message = Message.from_bytes(b"Subject: hi\r\n\r\nhello\r\n", env)
    pipeline = build_pipeline(cfg)
    pipeline.runners[0].cost, pipeline.runners[1].cost = 0.01, 0.3  # measured costs: "costly" goes last
    try:
        return pipeline.check(txn, message)
    finally:
        message.close()
        pipeline.close()


def test_cascade_skips_the_expensive_engine_when_it_cannot_change_the_answer(pool: ThreadPoolExecutor) -> None:
    result = cascade_run(pool, cheap="spam")  # any: already spam, tagged either way
    assert by_engine(result)["costly"].label() == "skipped(cascade)"
    assert Fake.calls == ["cheap"]
    assert result.decision.label == "spam" and result.decision.degraded == []
    assert "costly=skipped(cascade)" in dict(result.edits.add)["X-Quorum-Engines"]


def test_cascade_asks_the_expensive_engine_when_it_can(pool: ThreadPoolExecutor) -> None:
    result = cascade_run(pool, cheap="ham")  # any: the costly engine alone could make it spam
    assert Fake.calls == ["cheap", "costly"]
    assert by_engine(result)["costly"].status is Status.SPAM and result.decision.label == "spam"


def test_cascade_off_by_default_asks_everyone(pool: ThreadPoolExecutor) -> None:
    cfg = config({"cheap": {"type": "fake-spam", "behaviour": "spam"}, "costly": {"type": "fake-spam"}})
    assert not cfg.policy.cascade
    result = run(pool, cfg)
    assert sorted(Fake.calls) == ["cheap", "costly"] and "skipped" not in str(result.edits.add)


def test_recipients_refused_at_rcpt_are_noted_on_the_transaction() -> None:
    pipeline = build_pipeline(config({}, milter={"max_recipients": 1}))
    try:
        conn = Connection("192.0.2.1", "client.example", "client.example")
        txn = pipeline.begin(conn, "alice@example.com")
        assert pipeline.rcpt(txn, "bob@example.org") is None
        reply = pipeline.rcpt(txn, "carol@example.org")
        assert reply is not None and reply.code == "452"
        assert [(r.stage, r.recipient, r.reply) for r in txn.rcpt_refusals] == [("limits", "carol@example.org", reply)]
        assert txn.rcpt_refused == 1 and txn.envelope.recipients == ["bob@example.org"]
    finally:
        pipeline.close()


# --- a lone engine runs in the caller's thread -------------------------------------------------------


def _lone_clamav(address: str, **table: Any) -> tuple[Pipeline, Result]:
    cfg = parse_config({"engines": {"clamav": {"type": "clamav", "address": address, **table}}})
    pipeline = build_pipeline(cfg)
    env = Envelope("192.0.2.1", "client.example", "client.example", "alice@example.com", ["bob@example.org"])
    txn = Transaction(Connection(env.client_ip, env.client_name, env.helo), env)
    message = Message.from_bytes(b"Subject: hi\r\n\r\nhello\r\n", env)
    try:
        return pipeline, pipeline.check(txn, message)
    finally:
        message.close()


def test_a_lone_engine_scans_in_the_callers_thread_without_a_hand_off() -> None:
    with FakeServer("reply", reply=b"stream: OK\0") as server:
        pipeline, result = _lone_clamav(server.address)
        try:
            assert by_engine(result)["clamav"].status is Status.CLEAN
            assert not pipeline.runners[0].executor._threads  # no worker was ever started
        finally:
            pipeline.close()


def test_a_lone_engine_with_every_slot_taken_queues_on_its_pool() -> None:
    with FakeServer("reply", reply=b"stream: OK\0") as server:
        cfg = parse_config({"engines": {"clamav": {"type": "clamav", "address": server.address, "concurrency": 1}}})
        pipeline = build_pipeline(cfg)
        runner = pipeline.runners[0]
        assert runner._slots.acquire(blocking=False)  # another session's scan holds the only slot
        threading.Timer(0.2, runner._slots.release).start()
        env = Envelope("192.0.2.1", "c.example", "c.example", "alice@example.com", ["bob@example.org"])
        message = Message.from_bytes(b"Subject: hi\r\n\r\nhello\r\n", env)
        try:
            result = pipeline.check(Transaction(Connection(env.client_ip), env), message)
            assert by_engine(result)["clamav"].status is Status.CLEAN  # waited for the slot, then scanned
            assert runner.executor._threads  # on the engine's own pool
        finally:
            message.close()
            pipeline.close()


def test_an_engine_behind_a_host_name_is_never_run_inline() -> None:
    """getaddrinfo is not bounded by the scan deadline: such a scan stays on the pool."""
    with FakeServer("reply", reply=b"stream: OK\0") as server:
        port = server.address.rsplit(":", 1)[1]
        pipeline, result = _lone_clamav(f"localhost:{port}")
        try:
            assert not pipeline.runners[0].engine.bounded_by_call
            assert by_engine(result)["clamav"].status is Status.CLEAN
            assert pipeline.runners[0].executor._threads
        finally:
            pipeline.close()
