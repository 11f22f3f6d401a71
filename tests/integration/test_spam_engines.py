"""The rspamd and SpamAssassin adapters against the real daemons from the harness."""

from __future__ import annotations

import email.utils
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from tests.harness.dns import DnsServer
from tests.harness.rspamd import Rspamd
from tests.harness.spamd import Spamd

from quorum.config.model import EngineSettings
from quorum.engines import Engine, EngineError, ScanCall, build_engine
from quorum.message import Envelope, Message
from quorum.verdict import Status

pytestmark = pytest.mark.integration

GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
HAM_BODY = "shall we have lunch tomorrow at noon? The usual place is fine."


def raw_message(body: str, subject: str = "Lunch tomorrow") -> bytes:
    return (
        "From: Alice <alice@example.com>\r\n"
        "To: Bob <bob@example.org>\r\n"
        f"Subject: {subject}\r\n"
        f"Date: {email.utils.formatdate()}\r\n"
        f"Message-ID: {email.utils.make_msgid(domain='example.com')}\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "\r\n"
        f"Hi Bob,\r\n\r\n{body}\r\n\r\nCheers,\r\nAlice\r\n"
    ).encode()


def message(body: str, **envelope: Any) -> Message:
    env = Envelope(
        client_ip="192.0.2.1",
        client_name="mail.example.com",
        helo="mail.example.com",
        sender="alice@example.com",
        recipients=["bob@example.org"],
        macros={"i": "4ABCD1234"},
    )
    for key, value in envelope.items():
        setattr(env, key, value)
    return Message.from_bytes(raw_message(body), env)


def call(seconds: float = 20.0) -> ScanCall:
    return ScanCall(time.monotonic() + seconds)


def make(type_name: str, **options: Any) -> Engine:
    return build_engine(EngineSettings(type_name, type_name, timeout=20.0, options=options))


@pytest.fixture(scope="module")
def rspamd_server(tmp_path_factory: pytest.TempPathFactory, engines_dns: DnsServer) -> Iterator[Rspamd]:
    """A private rspamd (some tests kill it) on the session's DNS server."""
    server = Rspamd(tmp_path_factory.mktemp("rspamd"), engines_dns.port).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def spamd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Spamd]:
    """A private spamd: some tests kill it."""
    server = Spamd(tmp_path_factory.mktemp("spamd")).start()
    yield server
    server.stop()


@pytest.fixture
def rspamd(rspamd_server: Rspamd) -> Iterator[Engine]:
    engine = make("rspamd", url=rspamd_server.url, password=None, settings_id=None)
    yield engine
    engine.close()


@pytest.fixture(params=["SYMBOLS", "REPORT"])
def spamassassin(request: pytest.FixtureRequest, spamd_server: Spamd) -> Iterator[Engine]:
    engine = make("spamassassin", address=spamd_server.address, user=None, command=request.param)
    yield engine
    engine.close()


# --- rspamd ---


def test_rspamd_gtube_is_spam(rspamd: Engine) -> None:
    v = rspamd.scan(message(GTUBE), call())
    assert v.status is Status.SPAM, v
    assert v.score is not None and v.threshold is not None and v.score >= v.threshold > 0
    assert "GTUBE" in v.names and v.extra["action"] == "reject"


def test_rspamd_ham_is_clean(rspamd: Engine) -> None:
    v = rspamd.scan(message(HAM_BODY), call())
    assert v.status is Status.CLEAN, v
    assert v.score is not None and v.threshold is not None and v.score < v.threshold
    assert v.extra["action"] == "no action"


def test_rspamd_uses_the_envelope(rspamd: Engine) -> None:
    """SPF needs IP and From: rspamd only says R_SPF_ALLOW if the headers arrived."""
    ham = rspamd.scan(message(HAM_BODY), call())
    assert "R_SPF_ALLOW" in ham.names, ham
    forged = rspamd.scan(message(HAM_BODY, client_ip="198.51.100.7", client_name="unknown"), call())
    assert "R_SPF_FAIL" in forged.names and "HFILTER_HOSTNAME_UNKNOWN" in forged.names, forged
    assert forged.score is not None and ham.score is not None and forged.score > ham.score


def test_rspamd_authenticated_and_non_ascii_envelope(rspamd: Engine) -> None:
    env = {"sender": "j\u00fcrgen@ex\u00e4mple.com", "recipients": ["bob@example.org", "\u00fc@example.org"]}
    v = rspamd.scan(message(HAM_BODY, macros={"i": "Q1", "{auth_authen}": "alice"}, **env), call())
    assert v.status is Status.CLEAN and "BROKEN_HEADERS" not in v.names, v


def test_rspamd_threshold_is_left_to_the_policy(rspamd_server: Rspamd) -> None:
    """The adapter reports rspamd's own judgement; `[engines.X] threshold` is applied by the policy."""
    from quorum.config.model import PolicySettings
    from quorum.pipeline.policy import Policy

    settings = EngineSettings(
        "rs", "rspamd", threshold=0.0, options={"url": rspamd_server.url, "password": None, "settings_id": None}
    )
    engine = build_engine(settings)
    try:
        v = engine.scan(message(HAM_BODY), call())
        assert v.status is Status.CLEAN and v.threshold is not None and v.threshold > 0.0
        judged = Policy(PolicySettings(), {"rs": settings}).judged(v)
        assert judged.threshold == 0.0 and (judged.status is Status.SPAM) == (v.score is not None and v.score >= 0.0)
    finally:
        engine.close()


def test_rspamd_ping_and_parallel_scans(rspamd: Engine) -> None:
    rspamd.ping(5)
    statuses: list[Status] = []
    threads = [
        threading.Thread(target=lambda b=body: statuses.append(rspamd.scan(message(b), call()).status))
        for body in [GTUBE, HAM_BODY] * 4
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(statuses) == sorted([Status.SPAM, Status.CLEAN] * 4)


# --- SpamAssassin ---


def test_spamassassin_gtube_is_spam(spamassassin: Engine) -> None:
    v = spamassassin.scan(message(GTUBE), call())
    assert v.status is Status.SPAM, v
    assert v.score is not None and v.score >= 1000 and v.threshold == 5.0
    assert v.names[0] == "GTUBE" and v.detail is not None and v.detail.endswith("/5.00")


def test_spamassassin_ham_is_clean(spamassassin: Engine) -> None:
    v = spamassassin.scan(message(HAM_BODY), call())
    assert v.status is Status.CLEAN, v
    assert v.score is not None and v.score < 5.0


def test_spamassassin_ping_and_user(spamd_server: Spamd) -> None:
    engine = make("spamassassin", address=spamd_server.address, user="quorum", command="SYMBOLS")
    engine.ping(5)
    assert engine.scan(message(GTUBE), call()).status is Status.SPAM


# --- dead services (last: they kill the module's daemons) ---


def test_killed_spamd_is_engine_error(spamd_server: Spamd) -> None:
    engine = make("spamassassin", address=spamd_server.address, user=None, command="SYMBOLS")
    spamd_server.kill()
    start = time.monotonic()
    with pytest.raises(EngineError, match="cannot connect"):
        engine.scan(message(GTUBE), call(5))
    with pytest.raises(EngineError):
        engine.ping(1)
    assert time.monotonic() - start < 5


def test_killed_rspamd_is_engine_error(rspamd_server: Rspamd) -> None:
    engine = make("rspamd", url=rspamd_server.url, password=None, settings_id=None)
    try:
        assert engine.scan(message(HAM_BODY), call()).status is Status.CLEAN  # a pooled connection, maybe
        rspamd_server.kill()
        start = time.monotonic()
        with pytest.raises(EngineError):
            engine.scan(message(GTUBE), call(5))
        with pytest.raises(EngineError):
            engine.ping(1)
        assert time.monotonic() - start < 5
    finally:
        engine.close()
