"""rspamd adapter: reply parsing (captured from rspamd 3.4), verdict mapping, envelope headers, faults."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest
from tests.harness.fake_engine import FakeEngine, http_reply

from quorum.assembly import parse_config
from quorum.config.fields import ConfigError
from quorum.config.model import EngineSettings
from quorum.engines import EngineError, ScanCall, build_engine
from quorum.engines.rspamd import MAX_REPLY, Rspamd, envelope_headers, parse_reply
from quorum.message import Envelope, Message
from quorum.verdict import Status

# Captured from rspamd 3.4 (`POST /checkv2`, engines/rspamd config, no DNS).
GTUBE_REPLY = (
    b'{"is_skipped":true,"score":15.0,"required_score":15.0,"action":"reject","symbols":{"GTUBE":{"name":"GTUBE",'
    b'"score":0.0,"metric_score":0.0}},"messages":{"smtp_message":"Gtube pattern"},'
    b'"message-id":"GTUBE1.1010101@example.net","time_real":0.055778}'
)
HAM_REPLY = (
    b'{"is_skipped":false,"score":0.900000,"required_score":15.0,"action":"no action","symbols":{"ARC_NA":'
    b'{"name":"ARC_NA","score":0.0,"metric_score":0.0,"description":"ARC signature absent"},"FROM_HAS_DN":'
    b'{"name":"FROM_HAS_DN","score":0.0,"metric_score":0.0,"description":"From header has a display name"},'
    b'"RCVD_COUNT_ZERO":{"name":"RCVD_COUNT_ZERO","score":0.0,"metric_score":0.0,"description":'
    b'"Message has no Received headers","options":["0"]},"TO_DN_NONE":{"name":"TO_DN_NONE","score":0.0,'
    b'"metric_score":0.0,"description":"None of the recipients have display names"},"MIME_TRACE":{"name":'
    b'"MIME_TRACE","score":0.0,"metric_score":0.0,"options":["0:+"]},"DATE_IN_PAST":{"name":"DATE_IN_PAST",'
    b'"score":1.0,"metric_score":1.0,"description":"Message date is in past","options":["204606"]},'
    b'"RCPT_COUNT_ONE":{"name":"RCPT_COUNT_ONE","score":0.0,"metric_score":0.0,"description":"One recipient",'
    b'"options":["1"]},"MID_RHS_MATCH_FROM":{"name":"MID_RHS_MATCH_FROM","score":0.0,"metric_score":0.0,'
    b'"description":"Message-ID RHS matches From domain"},"MIME_GOOD":{"name":"MIME_GOOD","score":-0.100000,'
    b'"metric_score":-0.100000,"description":"Known content-type","options":["text/plain"]}},"messages":{},'
    b'"message-id":"ham1.1010101@example.org","time_real":0.002385,"milter":{"remove_headers":{"X-Spam":0}}}'
)
ADD_HEADER_REPLY = (
    b'{"is_skipped":false,"score":10.400000,"required_score":15.0,"action":"add header","symbols":{'
    b'"BROKEN_HEADERS":{"name":"BROKEN_HEADERS","score":8.0,"metric_score":8.0},'
    b'"HFILTER_HOSTNAME_UNKNOWN":{"name":"HFILTER_HOSTNAME_UNKNOWN","score":2.5,"metric_score":2.5},'
    b'"MIME_GOOD":{"name":"MIME_GOOD","score":-0.1,"metric_score":-0.1}},"messages":{}}'
)
ERROR_REPLY = b'{"error":"invalid command","error_domain":"protocol-error"}'  # HTTP 500 on a wrong path
PING_REPLY = b"pong\r\n"

MESSAGE = (
    b"From: Alice <alice@example.org>\r\nTo: bob@example.com\r\nSubject: Lunch\r\n"
    b"Message-ID: <ham1@example.org>\r\n\r\nHi Bob, lunch on Thursday?\r\n"
)


def reply(action: str, score: float, required: float | None = 15.0, **symbols: float) -> Any:
    doc: dict[str, Any] = {"action": action, "score": score, "symbols": {k: {"score": v} for k, v in symbols.items()}}
    if required is not None:
        doc["required_score"] = required
    return parse_reply(json.dumps(doc).encode())


def engine(url: str = "http://127.0.0.1:9", threshold: float | None = None, **options: Any) -> Rspamd:
    opts = {"url": url, "password": None, "settings_id": None, **options}
    e = build_engine(EngineSettings("rspamd", "rspamd", threshold=threshold, concurrency=4, options=opts))
    assert isinstance(e, Rspamd)
    return e


def message(envelope: Envelope | None = None, raw: bytes = MESSAGE) -> Message:
    return Message.from_bytes(
        raw,
        envelope
        or Envelope(
            client_ip="192.0.2.10",
            client_name="mx.example.org",
            helo="mx.example.org",
            sender="alice@example.org",
            recipients=["bob@example.com", "carol@example.com"],
            macros={"i": "4XyZ1", "{auth_authen}": "alice"},
        ),
    )


def call(seconds: float = 5.0) -> ScanCall:
    return ScanCall(time.monotonic() + seconds)


# --- parsing ----------------------------------------------------------------------------------


def test_parse_captured_gtube() -> None:
    r = parse_reply(GTUBE_REPLY)
    assert (r.action, r.score, r.required_score, r.skipped) == ("reject", 15.0, 15.0, True)
    assert r.names == ("GTUBE",)
    assert r.smtp_message == "Gtube pattern"


def test_parse_captured_ham_orders_symbols_by_score() -> None:
    r = parse_reply(HAM_REPLY)
    assert (r.action, r.score, r.required_score) == ("no action", 0.9, 15.0)
    assert r.names[0] == "DATE_IN_PAST" and r.names[-1] == "MIME_GOOD"
    assert r.names[1:-1] == tuple(sorted(r.names[1:-1]))  # zero scores tie: by name


def test_names_are_capped() -> None:
    r = reply("no action", 1.0, **{f"S{i:02d}": float(i) for i in range(40)})
    assert len(r.names) == 20 and r.names[0] == "S39"


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"[1, 2]",
        b"{}",
        b'{"action": "reject"}',
        b'{"action": "reject", "score": "high"}',
        b'{"action": "reject", "score": NaN}',
        b'{"action": "reject", "score": Infinity}',
        b'{"action": "reject", "score": true}',
        b'{"action": 5, "score": 1}',
        b'{"action": "reject", "score": 1, "required_score": "x"}',
        b'{"action": "reject", "score": 1, "symbols": []}',
        b'{"action": "reject", "score": 1, "symbols": {"A": 1}}',
        b'{"action": "reject", "score": 1, "symbols": {"A": {"score": "x"}}}',
        b"[" * 100_000,
        b"\xff\xfe\x00garbage",
        ERROR_REPLY,
    ],
)
def test_malformed_replies_raise_engine_error(body: bytes) -> None:
    with pytest.raises(EngineError):
        parse_reply(body)


def test_error_reply_names_the_error() -> None:
    with pytest.raises(EngineError, match="invalid command"):
        parse_reply(ERROR_REPLY)


# --- verdict mapping --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("action", "score", "status"),
    [
        ("reject", 15.0, Status.SPAM),
        ("add header", 6.0, Status.SPAM),
        ("rewrite subject", 8.0, Status.SPAM),
        ("no action", 2.0, Status.CLEAN),
        ("no action", 20.0, Status.CLEAN),  # rspamd's action wins (e.g. a settings override)
    ],
)
def test_action_maps_to_status(action: str, score: float, status: Status) -> None:
    v = engine().verdict_from(reply(action, score))
    assert v.status is status
    assert (v.score, v.threshold) == (score, 15.0)
    assert v.detail == f"{score:.2f}/15.00"
    assert v.extra["action"] == action


@pytest.mark.parametrize(
    ("action", "score", "status"),
    [("greylist", 4.0, Status.CLEAN), ("soft reject", 4.0, Status.CLEAN), ("soft reject", 16.0, Status.SPAM)],
)
def test_soft_actions_vote_by_score_and_are_recorded(action: str, score: float, status: Status) -> None:
    v = engine().verdict_from(reply(action, score))
    assert v.status is status
    assert v.detail == f"{score:.2f}/15.00 {action}"


def test_soft_action_without_required_score_is_clean() -> None:
    v = engine().verdict_from(reply("greylist", 4.0, required=None))
    assert v.status is Status.CLEAN and v.threshold is None and v.detail == "4.00 greylist"


def test_engine_threshold_setting_is_not_applied_in_the_adapter() -> None:
    """`[engines.NAME] threshold` is the policy's: the adapter reports rspamd's own score and required score."""
    e = engine(threshold=5.0)
    v = e.verdict_from(reply("no action", 5.0))
    assert (v.status, v.score, v.threshold, v.detail) == (Status.CLEAN, 5.0, 15.0, "5.00/15.00")
    assert e.verdict_from(reply("reject", 4.9)).status is Status.SPAM


# --- defect 10: is_skipped and actions outside the known sets ---------------------------------

SKIPPED_REPLY = b'{"is_skipped":true,"score":0.0,"required_score":15.0,"action":"no action","symbols":{},"messages":{}}'


def test_is_skipped_is_no_vote() -> None:
    """rspamd skipped the message (settings, a skipping prefilter): not a clean vote."""
    v = engine().verdict_from(parse_reply(SKIPPED_REPLY))
    assert v.status is Status.SKIPPED and not v.status.answered
    assert v.detail == "rspamd-skipped" and v.extra["skipped"] == "true"
    assert v.label() == "skipped(rspamd-skipped)"


def test_is_skipped_with_a_spam_action_is_that_spam_verdict() -> None:
    """GTUBE: a prefilter decided `reject` and skipped the rest: rspamd did say spam."""
    v = engine().verdict_from(parse_reply(GTUBE_REPLY))
    assert v.status is Status.SPAM and v.extra["skipped"] == "true"


@pytest.mark.parametrize("action", ["discard", "quarantine"])
def test_rspamd_spam_actions_outside_the_old_set_are_spam(action: str) -> None:
    """rspamd's own discard/quarantine actions mean spam even below required_score (forced actions)."""
    v = engine().verdict_from(reply(action, 3.0))
    assert v.status is Status.SPAM and v.detail == "3.00/15.00"


@pytest.mark.parametrize(("score", "status"), [(16.0, Status.SPAM), (15.0, Status.SPAM), (4.0, Status.CLEAN)])
def test_custom_action_votes_by_score_against_required_score(score: float, status: Status) -> None:
    v = engine().verdict_from(reply("Junk Folder", score))
    assert v.status is status
    assert v.detail == f"{score:.2f}/15.00 custom:junk folder" and v.extra["action"] == "junk folder"


def test_custom_action_without_required_score_is_no_vote() -> None:
    v = engine().verdict_from(reply("junk folder", 40.0, required=None))
    assert (v.status, v.detail) == (Status.SKIPPED, "rspamd-unknown-action")


def test_captured_add_header_reply() -> None:
    v = engine().verdict_from(parse_reply(ADD_HEADER_REPLY))
    assert v.status is Status.SPAM and v.names[:2] == ("BROKEN_HEADERS", "HFILTER_HOSTNAME_UNKNOWN")
    assert v.label() == "spam(10.40/15.00)"


# --- envelope headers -------------------------------------------------------------------------


def test_envelope_headers_full() -> None:
    headers = envelope_headers(message().envelope)
    assert headers == [
        (b"IP", b"192.0.2.10"),
        (b"Helo", b"mx.example.org"),
        (b"Hostname", b"mx.example.org"),
        (b"From", b"alice@example.org"),
        (b"Rcpt", b"bob@example.com"),
        (b"Rcpt", b"carol@example.com"),
        (b"Queue-Id", b"4XyZ1"),
        (b"User", b"alice"),
    ]


def test_envelope_headers_edge_values() -> None:
    env = Envelope(
        client_ip="IPv6:2001:DB8::1",
        client_name="unknown",
        helo="h\u00e9lo.example",
        sender="",
        recipients=["<bob@ex\u00e4mple.com>", "j\u00fcrgen@example.com", "bad\r\nX-Injected: 1", "ok@example.com"],
    )
    assert envelope_headers(env) == [
        (b"IP", b"2001:db8::1"),
        (b"Helo", "h\u00e9lo.example".encode()),  # rspamd takes a UTF-8 HELO as is
        (b"From", b"<>"),
        (b"Rcpt", b"bob@xn--exmple-cua.com"),  # rspamd flags raw UTF-8 addresses as BROKEN_HEADERS
        (b"Rcpt", b"ok@example.com"),
    ]


def test_invalid_ip_and_undecodable_values_are_left_out() -> None:
    env = Envelope(client_ip="not-an-ip", helo="\udcff\x00", sender="\udcff@example.org", macros={"i": " "})
    assert envelope_headers(env) == []


# --- config -----------------------------------------------------------------------------------


def test_config_options() -> None:
    cfg = parse_config(
        {
            "engines": {
                "rspamd": {"type": "rspamd", "url": "https://rspamd.example:11333/scan", "settings_id": "inbound"}
            }
        }
    )
    (e,) = cfg.engines
    assert e.options == {"url": "https://rspamd.example:11333/scan", "password": None, "settings_id": "inbound"}


@pytest.mark.parametrize(
    ("key", "value", "words"),
    [
        ("url", "127.0.0.1:11333", "http(s) URL"),
        ("url", "ftp://127.0.0.1:11333", "http(s) URL"),
        ("url", "http://127.0.0.1:11333/?x=1", "http(s) URL"),
        ("url", "http://127.0.0.1:99999", "invalid port"),
        ("url", 11333, "expected a string"),
        ("settings_id", "a\nb", "printable"),
        ("password", "", "printable"),
        ("password", "p\u00e4ss", "ASCII"),
        ("pasword", "x", "unknown key"),
    ],
)
def test_config_errors_name_the_key(key: str, value: Any, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"engines": {"rs": {"type": "rspamd", key: value}}})
    assert any(p.startswith(f"engines.rs.{key}:") and words in p for p in info.value.problems), info.value.problems


# --- against fakes ----------------------------------------------------------------------------


def test_scan_sends_envelope_and_streams_body() -> None:
    with FakeEngine("reply", reply=http_reply(GTUBE_REPLY)) as fake:
        e = engine(fake.url, settings_id="inbound", password="secret")
        m = message()
        v = e.scan(m, call())
        e.close()
    assert v.status is Status.SPAM and v.names == ("GTUBE",) and v.detail == "15.00/15.00"
    head = fake.heads[0].decode()
    assert head.startswith("POST /checkv2 HTTP/1.1\r\n")
    lines = head.split("\r\n")[1:]
    for line in ("IP: 192.0.2.10", "Rcpt: bob@example.com", "Rcpt: carol@example.com", "Queue-Id: 4XyZ1"):
        assert line in lines
    assert "Settings-ID: inbound" in lines and "Password: secret" in lines
    assert f"Content-Length: {m.size}" in lines
    assert not any(line.lower().startswith("transfer-encoding") for line in lines)
    assert fake.bodies[0] == m.raw()


def test_scan_streams_a_large_spooled_body() -> None:
    raw = MESSAGE + b"x" * 3_000_000
    m = Message.from_bytes(raw, Envelope(), memory_limit=1 << 16)
    assert m.body.on_disk
    with FakeEngine("reply", reply=http_reply(HAM_REPLY)) as fake:
        v = engine(fake.url).scan(m, call())
    assert v.status is Status.CLEAN
    assert fake.bodies[0] == m.raw()[: 1 << 20]
    m.close()


def test_non_ascii_envelope_does_not_crash() -> None:
    env = Envelope(client_ip="\u00e9", helo="\u00e9\u00e9", sender="j\u00fcrgen@\u00e4.example", recipients=["\udcff"])
    with FakeEngine("reply", reply=http_reply(HAM_REPLY)) as fake:
        assert engine(fake.url).scan(message(env), call()).status is Status.CLEAN


def test_http_error_status() -> None:
    with FakeEngine("reply", reply=http_reply(ERROR_REPLY, "500 invalid command")) as fake:
        with pytest.raises(EngineError, match="HTTP 500: invalid command"):
            engine(fake.url).scan(message(), call())


def test_ping() -> None:
    with FakeEngine("reply", reply=http_reply(PING_REPLY, content_type="text/plain")) as fake:
        engine(fake.url).ping(2)
    with FakeEngine("reply", reply=http_reply(b"pang")) as fake, pytest.raises(EngineError, match="ping"):
        engine(fake.url).ping(2)
    with FakeEngine("hang") as fake, pytest.raises(EngineError, match="timeout"):
        engine(fake.url).ping(0.3)


@pytest.mark.parametrize(
    ("fake_args", "match"),
    [
        ({"mode": "reset"}, None),
        ({"mode": "garbage"}, None),
        ({"mode": "http_garbage"}, "not JSON"),
        ({"mode": "oversize"}, None),
        ({"mode": "oversize", "prefix": b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n"}, "larger"),
        ({"mode": "oversize", "prefix": b"HTTP/1.1 200 OK\r\nContent-Length: 104857600\r\n\r\n"}, "too large"),
        (
            {"mode": "oversize", "prefix": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n200000\r\n"},
            "larger",
        ),
        (
            {"mode": "reply", "reply": b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 2\r\n\r\n{}"},
            "gzip",
        ),
        ({"mode": "reply", "reply": b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n{}"}, None),  # short body
        ({"mode": "reply", "reply": b""}, None),  # closed without answering
    ],
)
def test_faults_raise_engine_error(fake_args: dict[str, Any], match: str | None) -> None:
    with FakeEngine(**fake_args) as fake:
        start = time.monotonic()
        with pytest.raises(EngineError, match=match):
            engine(fake.url).scan(message(), call(3.0))
        assert time.monotonic() - start < 5


@pytest.mark.parametrize("mode", ["hang", "http_hang", "slow"])
def test_hung_engine_returns_within_the_deadline(mode: str) -> None:
    with FakeEngine(mode, delay=3.0, reply=http_reply(HAM_REPLY)) as fake:
        start = time.monotonic()
        with pytest.raises(EngineError, match="timeout"):
            engine(fake.url).scan(message(), call(0.5))
        elapsed = time.monotonic() - start
    print(f"{mode}: EngineError after {elapsed:.3f}s (deadline 0.5s)")
    assert elapsed < 5


def test_slow_engine_within_the_deadline_answers() -> None:
    with FakeEngine("slow", delay=0.2, reply=http_reply(HAM_REPLY)) as fake:
        assert engine(fake.url).scan(message(), call(5)).status is Status.CLEAN


def test_connection_refused_and_spent_budget() -> None:
    with FakeEngine("hang") as fake:
        url = fake.url
    with pytest.raises(EngineError):
        engine(url).scan(message(), call(2))
    with pytest.raises(EngineError, match="timeout"):
        engine(url).scan(message(), call(0))


def test_cancelled_call_stops_between_chunks() -> None:
    c = call(5)
    c.cancel()
    with FakeEngine("hang") as fake, pytest.raises(EngineError, match="cancelled"):
        engine(fake.url).scan(message(), c)


def test_pool_is_shared_across_threads() -> None:
    with FakeEngine("slow", delay=0.2, reply=http_reply(HAM_REPLY)) as fake:
        e = engine(fake.url)
        results: list[Status] = []

        def one() -> None:
            results.append(e.scan(message(), call(5)).status)

        threads = [threading.Thread(target=one) for _ in range(8)]
        start = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.monotonic() - start
        e.close()
    assert results == [Status.CLEAN] * 8
    assert fake.requests == 8
    assert elapsed < 1.5  # 8 x 0.2 s, four at a time (pool = concurrency 4)


def test_reply_cap_is_one_mebibyte() -> None:
    body = json.dumps({"action": "no action", "score": 0, "pad": "x" * (MAX_REPLY - 100)}).encode()
    assert len(body) <= MAX_REPLY
    with FakeEngine("reply", reply=http_reply(body)) as fake:
        assert engine(fake.url).scan(message(), call()).status is Status.CLEAN


# --- keep-alive (rspamd 3.4 itself answers `Connection: close`: see the module docstring) --------

KEEPALIVE_REPLY = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(HAM_REPLY) + HAM_REPLY
)


def test_keepalive_connection_is_reused() -> None:
    with FakeEngine("keepalive", reply=KEEPALIVE_REPLY) as fake:
        e = engine(fake.url)
        statuses = [e.scan(message(), call()).status for _ in range(3)]
        e.close()
    assert statuses == [Status.CLEAN] * 3
    assert (fake.connections, fake.requests) == (1, 3)


def test_connection_close_is_not_reused() -> None:
    with FakeEngine("reply", reply=http_reply(HAM_REPLY)) as fake:
        e = engine(fake.url)
        for _ in range(3):
            assert e.scan(message(), call()).status is Status.CLEAN
    assert (fake.connections, fake.requests) == (3, 3)


def test_keepalive_connection_closed_by_the_server_is_retried_on_a_fresh_one() -> None:
    """The server said keep-alive but closed the idle connection: the next scan still answers."""
    with FakeEngine("reply", reply=KEEPALIVE_REPLY) as fake:
        e = engine(fake.url)
        assert e.scan(message(), call()).status is Status.CLEAN
        time.sleep(0.2)  # the fake has closed its side by now
        assert e.scan(message(), call()).status is Status.CLEAN
    assert (fake.connections, fake.requests) == (2, 2)


def test_https_handshake_is_bounded_by_the_deadline() -> None:
    with FakeEngine("hang") as fake:
        start = time.monotonic()
        with pytest.raises(EngineError, match="timeout"):
            engine(f"https://127.0.0.1:{fake.port}").scan(message(), call(0.5))
    assert time.monotonic() - start < 2
