"""End-to-end tests of the docker-compose stack through the published Postfix port.

The stack is brought up (and always torn down) by compose/test-stack.sh, which runs
`QUORUM_COMPOSE_TESTS=1 pytest -m compose tests/compose` (tests/conftest.py skips compose tests
without that variable). Against a stack you started yourself, also set QUORUM_COMPOSE_PROJECT
(and QUORUM_SMTP_PORT / QUORUM_SINK_PORT / QUORUM_COMPOSE_CMD if not the defaults). Without
QUORUM_COMPOSE_PROJECT every test is skipped.

Cases: clean mail delivered with `X-Quorum-Verdict: clean`; the rate limiter runs its script
in the redis container for each message; EICAR refused with 5xx; GTUBE
delivered tagged `X-Spam-Flag: YES`; the spamassassin container stopped -> the message is
still decided per policy (delivered with degraded=spamassassin, or 4xx); the quorum container
stopped -> Postfix answers 4xx. Stopped containers are started again afterwards.
"""

from __future__ import annotations

import importlib.util
import json
import re
import smtplib
import sys
import time
import tomllib
import urllib.request
import uuid
from collections.abc import Iterator
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import compat32
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.compose


def _load_stackctl() -> Any:
    spec = importlib.util.spec_from_file_location("quorum_stackctl", REPO / "compose" / "stackctl.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


stackctl = _load_stackctl()

RCPT = "user@example.test"
SENDER = "sender@sender.example"
DELIVERY_TIMEOUT = 90.0
# Built from pieces so no file in the repository is itself a virus/spam test pattern.
EICAR = "X5O!P%@AP[4\\PZX54(P^)7CC)7}$" + "EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*" + "GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"


# --- helpers ---------------------------------------------------------------------------------


class Sink:
    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"

    def messages(self) -> list[dict[str, Any]]:
        with urllib.request.urlopen(f"{self.base}/messages", timeout=10) as resp:
            return json.loads(resp.read())  # type: ignore[no-any-return]

    def wait_for(self, token: str, timeout: float = DELIVERY_TIMEOUT) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for m in self.messages():
                if token in m["data"]:
                    return m
            time.sleep(0.5)
        raise AssertionError(f"no message with {token} reached the sink within {timeout:.0f}s")

    def absent(self, token: str) -> bool:
        return all(token not in m["data"] for m in self.messages())


def headers_of(delivered: dict[str, Any]) -> Any:
    return BytesParser(policy=compat32).parsebytes(delivered["data"].encode("utf-8"), headersonly=True)


def message(token: str, body: str, subject: str = "compose test") -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = f"Sender <{SENDER}>"
    msg["To"] = RCPT
    msg["Subject"] = f"{subject} {token}"
    msg["Message-ID"] = f"<{token}@sender.example>"
    msg.set_content(f"{body}\n\ntoken {token}\n")
    return msg


def send(port: int, msg: EmailMessage) -> tuple[int, str]:
    """Submit over SMTP; returns (code, text) of the final reply or of the first refusal."""
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=120) as smtp:
            smtp.ehlo("client.sender.example")
            refused = smtp.send_message(msg, from_addr=SENDER, to_addrs=[RCPT])
            assert not refused, refused
            return 250, "accepted"
    except smtplib.SMTPRecipientsRefused as exc:
        code, text = next(iter(exc.recipients.values()))
        return code, text.decode(errors="replace")
    except smtplib.SMTPResponseException as exc:
        err = exc.smtp_error
        return exc.smtp_code, err.decode(errors="replace") if isinstance(err, bytes) else str(err)


def verdict(delivered: dict[str, Any]) -> str:
    value = headers_of(delivered).get("X-Quorum-Verdict")
    assert value is not None, f"no X-Quorum-Verdict header in:\n{delivered['data'][:2000]}"
    return " ".join(str(value).split())


def policy() -> dict[str, Any]:
    with open(REPO / "compose" / "quorum.toml", "rb") as fh:
        return tomllib.load(fh).get("policy", {})  # type: ignore[no-any-return]


# --- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stack() -> Iterator[Any]:
    import os

    if not os.environ.get("QUORUM_COMPOSE_PROJECT"):
        pytest.skip("needs a running compose stack: run compose/test-stack.sh (sets QUORUM_COMPOSE_PROJECT)")
    stackctl.wait_healthy(timeout=120, quiet=True)
    yield stackctl


@pytest.fixture(scope="module")
def sink(stack: Any) -> Sink:
    return Sink(stack.sink_port())


@pytest.fixture
def smtp_port(stack: Any) -> int:
    return int(stack.smtp_port())


@pytest.fixture
def token() -> str:
    return f"qc-{uuid.uuid4().hex[:16]}"


# --- cases -----------------------------------------------------------------------------------


def test_clean_message_is_delivered_with_verdict_header(smtp_port: int, sink: Sink, token: str) -> None:
    t0 = time.monotonic()
    code, text = send(smtp_port, message(token, "Hello, this is an ordinary message about lunch."))
    assert code == 250, f"{code} {text}"
    delivered = sink.wait_for(token)
    print(f"clean: accepted and delivered in {time.monotonic() - t0:.2f}s")
    v = verdict(delivered)
    assert v.split(";")[0].strip() == "clean", v
    assert delivered["rcpt_to"] == [RCPT]


def redis_script_calls(stack: Any) -> int:
    """EVAL/EVALSHA calls Redis has served: Quorum's rate limiter runs one script per message."""
    # Redis speaks only TLS and knows only Quorum's ACL user: quorum-redis --cli logs in as it.
    res = stack.exec_in("redis", "quorum-redis", "--cli", "INFO", "commandstats")
    assert res.returncode == 0, res.stderr
    calls = re.findall(r"^cmdstat_(?:eval|evalsha|eval_ro|evalsha_ro):calls=(\d+)", res.stdout, re.M)
    return sum(int(c) for c in calls)


def test_rate_counters_are_kept_in_redis(stack: Any, smtp_port: int, sink: Sink, token: str) -> None:
    # The counters themselves are short-lived (a GCRA key lives for about one emission
    # interval, here under 4 s), so count the script calls instead of looking for keys.
    before = redis_script_calls(stack)
    code, text = send(smtp_port, message(token, "Counted by the rate limiter."))
    assert code == 250, f"{code} {text}"
    sink.wait_for(token)
    after = redis_script_calls(stack)
    print(f"redis: {after - before} rate-limit script call(s) for one message ({after} in total)")
    assert after > before, "Quorum ran no rate-limit script in Redis for a delivered message"


def test_eicar_is_refused_with_5xx(smtp_port: int, sink: Sink, token: str) -> None:
    t0 = time.monotonic()
    msg = message(token, "See the attachment.")
    msg.add_attachment(EICAR.encode(), maintype="application", subtype="octet-stream", filename="eicar.com")
    code, text = send(smtp_port, msg)
    print(f"eicar: {code} {text} in {time.monotonic() - t0:.2f}s")
    assert 500 <= code < 600, f"{code} {text}"
    time.sleep(2)
    assert sink.absent(token)


def test_gtube_is_tagged_as_spam(smtp_port: int, sink: Sink, token: str) -> None:
    t0 = time.monotonic()
    code, text = send(smtp_port, message(token, GTUBE))
    on_spam = policy().get("on_spam", "tag")
    if on_spam == "reject":
        assert 500 <= code < 600, f"{code} {text}"
        return
    assert code == 250, f"{code} {text}"
    delivered = sink.wait_for(token)
    print(f"gtube: delivered in {time.monotonic() - t0:.2f}s, verdict {verdict(delivered)!r}")
    assert headers_of(delivered).get("X-Spam-Flag", "").strip().upper() == "YES"
    assert verdict(delivered).startswith("spam"), verdict(delivered)


def timed(label: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
    t0 = time.monotonic()
    result = fn(*args, **kwargs)
    print(f"{label}: {time.monotonic() - t0:.2f}s")
    return result


def test_spamassassin_down_message_still_decided(stack: Any, smtp_port: int, sink: Sink, token: str) -> None:
    timed("stop spamassassin", stack.stop, "spamassassin")
    try:
        t0 = time.monotonic()
        code, text = send(smtp_port, message(token, "Sent while spamd is down."))
        elapsed = time.monotonic() - t0
        print(f"spamassassin down: {code} {text} in {elapsed:.2f}s")
        if policy().get("on_spam_engine_failure", "accept") == "accept":
            assert code == 250, f"{code} {text}"
            v = verdict(sink.wait_for(token))
            print(f"spamassassin down: verdict {v!r}")
            degraded = re.search(r"degraded=([^;\s]+)", v)
            assert degraded and "spamassassin" in degraded.group(1).split(","), v
        else:
            assert 400 <= code < 500, f"{code} {text}"
    finally:
        timed("start spamassassin", stack.start, "spamassassin")
        timed("spamassassin+quorum healthy again", stack.wait_healthy, ["spamassassin", "quorum"], 180, True)


def test_quorum_down_postfix_answers_4xx(stack: Any, smtp_port: int, sink: Sink, token: str) -> None:
    timed("stop quorum", stack.stop, "quorum")
    try:
        t0 = time.monotonic()
        code, text = send(smtp_port, message(token, "Sent while the milter is down."))
        print(f"quorum down: {code} {text} in {time.monotonic() - t0:.2f}s")
        assert 400 <= code < 500, f"{code} {text}"
        time.sleep(2)
        assert sink.absent(token)
    finally:
        timed("start quorum", stack.start, "quorum")
        timed("quorum+postfix healthy again", stack.wait_healthy, ["quorum", "postfix"], 180, True)
