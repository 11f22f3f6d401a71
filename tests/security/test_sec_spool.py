"""Issue 17 item 11: a killed worker must leave no message body on disk.

Bodies above `body_memory_limit` are spooled to a temp file. That file must have no name from the
moment it exists (O_TMPFILE, or an unlink right after mkstemp): a worker killed mid-message
(SIGKILL, the OOM killer) then leaves nothing behind in the temp dir, neither in `[milter] tmpdir`
nor in $TMPDIR. Checked through real Postfix: messages held at end-of-data by an engine that never
answers, the worker SIGKILLed, the temp dir looked at before, during and after.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.conftest import MailStack
from tests.harness.fake_engine import FakeEngine
from tests.harness.messages import HAM, mail
from tests.harness.quorum import QuorumProcess, engine_table
from tests.harness.smtp_client import SendResult, send

pytestmark = pytest.mark.integration

BIG = (HAM + b"\r\n") * 30_000  # ~2.7 MB: far past the 4 KiB body_memory_limit below


@pytest.fixture
def hang() -> Iterator[FakeEngine]:
    engine = FakeEngine("hang")
    yield engine
    engine.stop()


def spool_fds(pid: int, directory: Path) -> list[str]:
    """Targets of the worker's open descriptors on files in `directory` (a deleted file reads
    `<dir>/#inode (deleted)` for O_TMPFILE, `<dir>/name (deleted)` after an unlink)."""
    out = []
    fd_dir = Path(f"/proc/{pid}/fd")
    for entry in fd_dir.iterdir():
        try:
            target = os.readlink(entry)
        except OSError:
            continue
        if target.startswith(f"{directory}/"):
            out.append(target)
    return out


def wait_for(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise TimeoutError(what)


def hold_messages(stack: MailStack, count: int) -> tuple[list[threading.Thread], list[SendResult]]:
    results: list[SendResult] = []

    def one() -> None:
        token = uuid.uuid4().hex
        raw = mail(token, BIG, "Quarterly figures")
        results.append(send(stack.postfix.smtp_port, "alice@example.com", ["bob@example.org"], raw, timeout=120))

    threads = [threading.Thread(target=one, daemon=True) for _ in range(count)]
    for t in threads:
        t.start()
    return threads, results


def kill_worker_mid_message(quorum: QuorumProcess, stack: MailStack, hang: FakeEngine, spool: Path, count: int) -> None:
    """`count` big messages held at end-of-data, the worker SIGKILLed; asserts nothing is left in `spool`."""
    (worker,) = quorum.worker_pids()
    threads, results = hold_messages(stack, count)
    wait_for(lambda: hang.connections >= count, 60, f"{count} scans did not reach the hung engine")
    # every body is on disk (descriptors into the spool dir) and yet nothing there has a name
    held = spool_fds(worker, spool)
    during = sorted(os.listdir(spool))
    os.kill(worker, signal.SIGKILL)
    wait_for(lambda: not Path(f"/proc/{worker}").exists(), 10, "the worker did not die")
    after_kill = sorted(os.listdir(spool))
    # the supervisor starts a new worker; Postfix tempfails the held messages (milter gone)
    wait_for(lambda: bool(quorum.worker_pids()) and quorum.worker_pids() != [worker], 30, "no new worker")
    for t in threads:
        t.join(120)
    assert len(results) == count and all(not r.accepted for r in results), results
    assert after_kill == [], f"message bodies left on disk by the killed worker: {after_kill}"
    assert len(held) >= count, held  # the bodies were on disk in that directory...
    assert all(target.endswith(" (deleted)") for target in held), held  # ...with no name
    assert during == [], f"message bodies had a name while being scanned: {during}"
    assert sorted(os.listdir(spool)) == []


def config(hang: FakeEngine) -> str:
    return engine_table("av", "clamav", address=hang.address, timeout=60)


@pytest.mark.parametrize("count", [1, 3])
def test_a_killed_worker_leaves_no_body_in_the_configured_tmpdir(
    mail_stack: MailStack, hang: FakeEngine, tmp_path: Path, count: int
) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    extra = f'tmpdir = "{spool}"\nbody_memory_limit = 4096\nscan_deadline = 60\n'
    quorum = mail_stack.start(config(hang), milter_extra=extra)
    kill_worker_mid_message(quorum, mail_stack, hang, spool, count)


def test_a_killed_worker_leaves_no_body_in_tmpdir_from_the_environment(
    mail_stack: MailStack, hang: FakeEngine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No `[milter] tmpdir`: the spool goes to the system temp dir, $TMPDIR here."""
    spool = tmp_path / "envtmp"
    spool.mkdir()
    monkeypatch.setenv("TMPDIR", str(spool))  # inherited by `quorum run` and its worker
    quorum = mail_stack.start(config(hang), milter_extra="body_memory_limit = 4096\nscan_deadline = 60\n")
    kill_worker_mid_message(quorum, mail_stack, hang, spool, 1)
