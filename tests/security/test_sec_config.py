"""Issue 17, item 5, through the real Postfix, clamd, rspamd and Redis: nan and inf are not values.

nan compares false both ways, so `scan_deadline = nan` passed `minimum = 0.1` and every message,
EICAR included, was delivered `unchecked`; `threshold = nan` (in the file or in a tenant record in
Redis) made an engine never vote spam; `socket_mode = "-1"` or `"7777777"` made the milter socket
world-writable. Each is now refused where it enters: `quorum run`, `check-config`, a reload,
`quorum domain set`, and a record written straight into Redis (ignored, with an error)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.conftest import MailStack
from tests.harness.clamd import Clamd
from tests.harness.messages import EICAR, GTUBE, HAM, mail
from tests.harness.quorum import QuorumProcess, engine_table
from tests.harness.redis_server import RedisServer
from tests.harness.rspamd import Rspamd
from tests.harness.sink import delivered
from tests.harness.smtp_client import SendResult, send

pytestmark = pytest.mark.integration

PREFIX = "quorum:tenant:"


def body(clamd: Clamd, rspamd: Rspamd, redis: RedisServer) -> str:
    return (
        '[policy]\non_virus = "reject"\non_spam = "reject"\non_engine_failure = "tempfail"\n\n'
        + engine_table("clamav", "clamav", address=clamd.address, timeout=20)
        + engine_table("rspamd", "rspamd", url=rspamd.url, timeout=20)
        + f'\n[redis]\nurl = "{redis.url}"\n\n[tenants]\nstore = "redis"\nrefresh = "1s"\nkey_prefix = "{PREFIX}"\n'
    )


@pytest.fixture(scope="module")
def stack(mail_stack: MailStack, clamd: Clamd, rspamd: Rspamd, redis_single: RedisServer) -> Iterator[MailStack]:
    mail_stack.start(body(clamd, rspamd, redis_single))
    yield mail_stack
    mail_stack.stop()


def submit(stack: MailStack, payload: bytes, rcpt: str = "bob@example.org") -> tuple[str, SendResult]:
    token = uuid.uuid4().hex
    return token, send(stack.postfix.smtp_port, "alice@example.com", [rcpt], mail(token, payload))


def assert_refused(result: SendResult, what: str) -> None:
    assert not result.accepted and result.code // 100 == 5 and what in result.text, result


def quorum_cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "quorum", *args, "-c", str(config)], capture_output=True, text=True, timeout=60
    )


NON_FINITE_STARTS = [
    ("scan_deadline = nan", "", "milter.scan_deadline"),
    ("scan_deadline = inf", "", "milter.scan_deadline"),
    ('scan_deadline = "nan s"', "", "milter.scan_deadline"),
    ('scan_deadline = "' + "9" * 400 + 's"', "", "milter.scan_deadline"),
    ("progress_interval = -inf", "", "milter.progress_interval"),
    ('socket_mode = "-1"', "", "milter.socket_mode"),
    ('socket_mode = "7777777"', "", "milter.socket_mode"),
    ("", "[engines.clamav2]\ntype = 'clamav'\nthreshold = nan\n", "engines.clamav2.threshold"),
    ("", "[engines.clamav2]\ntype = 'clamav'\ntimeout = nan\n", "engines.clamav2.timeout"),
]


@pytest.mark.parametrize(("milter_extra", "extra", "key"), NON_FINITE_STARTS, ids=[k for *_, k in NON_FINITE_STARTS])
def test_quorum_run_and_check_config_refuse_non_finite_values(
    tmp_path: Path, clamd: Clamd, rspamd: Rspamd, redis_single: RedisServer, milter_extra: str, extra: str, key: str
) -> None:
    quorum = QuorumProcess(tmp_path, body(clamd, rspamd, redis_single) + extra, milter_extra=milter_extra)
    check = quorum_cli(quorum.config_path, "check-config")
    assert check.returncode == 2 and f"error: {key}: " in check.stderr, check
    assert "Traceback" not in check.stderr
    try:
        run = subprocess.run(
            [sys.executable, "-m", "quorum", "run", "-c", str(quorum.config_path)],
            capture_output=True,
            text=True,
            timeout=30,
            env={**os.environ, "QUORUM_ALLOW_ROOT": "1"},
        )
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"quorum run started with {key} = {milter_extra or extra!r}") from exc
    assert run.returncode == 2 and f"error: {key}: " in run.stderr, run
    assert not quorum.pid_file.exists()


@pytest.mark.parametrize("value", ["nan", "inf", '"nan s"'])
def test_a_reload_to_a_nan_deadline_is_refused_and_eicar_stays_out(stack: MailStack, value: str) -> None:
    """The attack of the review: `scan_deadline = nan` by SIGHUP made EICAR deliverable."""
    quorum = stack.quorum
    assert quorum is not None
    good = quorum.body
    _, before = submit(stack, EICAR)
    assert_refused(before, "virus")
    refusal = "reload refused, keeping the running config: milter.scan_deadline: "
    done = quorum.log_text().count(refusal)
    quorum.milter_extra = f"scan_deadline = {value}"
    quorum.write_config(good)
    try:
        quorum.reload(wait=False)
        deadline = time.monotonic() + 15
        while quorum.log_text().count(refusal) == done:
            assert time.monotonic() < deadline, quorum.log_text()[-3000:]
            time.sleep(0.05)
        assert "reloaded " not in quorum.log_text().split(refusal)[-1]
        for _ in range(3):
            _, virus = submit(stack, EICAR)
            assert_refused(virus, "virus")
        token, ham = submit(stack, HAM)
        assert ham.accepted, ham
        assert delivered(stack.sink, token).header("X-Quorum-Verdict") == "clean"
    finally:
        quorum.milter_extra = ""
        quorum.write_config(good)


def _tenant_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / f"fragment-{uuid.uuid4().hex[:6]}.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("fragment", "key"),
    [
        ("[engines.rspamd]\nthreshold = nan\n", "engines.rspamd.threshold"),
        ("[engines.rspamd]\nthreshold = inf\n", "engines.rspamd.threshold"),
        ("[engines.rspamd]\nweight = -inf\n", "engines.rspamd.weight"),
        ("[policy]\nspam_reject_score = nan\n", "policy.spam_reject_score"),
        ("[policy]\ncascade_clean_below = nan\n", "policy.cascade_clean_below"),
    ],
)
def test_domain_set_refuses_non_finite_numbers(
    stack: MailStack, redis_single: RedisServer, tmp_path: Path, fragment: str, key: str
) -> None:
    quorum = stack.quorum
    assert quorum is not None
    domain = f"set-{uuid.uuid4().hex[:6]}.test"
    out = quorum_cli(quorum.config_path, "domain", "set", domain, "--file", str(_tenant_file(tmp_path, fragment)))
    assert out.returncode == 2 and f'domains."{domain}".{key}: must be a finite number' in out.stderr, out
    assert "nothing was stored" in out.stderr and "Traceback" not in out.stderr
    with redis_single.client() as client:
        assert client.get(PREFIX + domain) is None


@pytest.mark.parametrize(
    "record",
    [
        '{"engines": {"rspamd": {"threshold": NaN}}}',
        '{"engines": {"rspamd": {"threshold": Infinity}}}',
        '{"engines": {"rspamd": {"threshold": 1e999}}}',
        "[engines.rspamd]\nthreshold = nan\n",  # a TOML record
    ],
)
def test_a_nan_record_written_straight_to_redis_is_ignored(
    stack: MailStack, redis_single: RedisServer, record: str
) -> None:
    """Whoever writes the record without `quorum domain set`: the record is ignored with an error
    and the global policy applies (GTUBE refused as spam, EICAR as a virus), never "never spam"."""
    quorum = stack.quorum
    assert quorum is not None
    domain = f"raw-{uuid.uuid4().hex[:6]}.test"
    with redis_single.client() as client:
        client.set(PREFIX + domain, record.encode())
    _, spam = submit(stack, GTUBE, f"bob@{domain}")
    assert_refused(spam, "spam")
    quorum.wait_for_log(
        rf"tenant record of {domain} ignored \(file/global policy applies\): "
        rf'domains."{domain}".engines.rspamd.threshold: must be a finite number'
    )
    _, virus = submit(stack, EICAR, f"bob@{domain}")
    assert_refused(virus, "virus")
    token, ham = submit(stack, HAM, f"bob@{domain}")
    assert ham.accepted, ham
    assert delivered(stack.sink, token).header("X-Quorum-Verdict") == "clean"
    assert "Traceback" not in quorum.log_text()


def test_a_finite_tenant_threshold_still_applies(stack: MailStack, redis_single: RedisServer) -> None:
    """The control: a valid record is used (a very high threshold lets GTUBE through as tagged ham)."""
    domain = f"ok-{uuid.uuid4().hex[:6]}.test"
    with redis_single.client() as client:
        client.set(PREFIX + domain, json.dumps({"engines": {"rspamd": {"threshold": 100000.0}}}).encode())
    deadline = time.monotonic() + 10
    while True:
        token, result = submit(stack, GTUBE, f"bob@{domain}")
        if result.accepted or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert result.accepted, result
    assert delivered(stack.sink, token).header("X-Quorum-Verdict") == "clean"


def test_a_world_writable_socket_mode_is_warned_about(tmp_path: Path) -> None:
    config = tmp_path / "quorum.toml"
    config.write_text('[milter]\nsocket = "unix:/run/quorum-test/q.sock"\nsocket_mode = "0666"\n')
    out = quorum_cli(config, "check-config")
    assert out.returncode == 0, out
    assert "warning: milter.socket_mode: 0666 lets every local user connect" in out.stdout
