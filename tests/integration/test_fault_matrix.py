"""The fault matrix under load, bounded for CI (the full run with every fault is bench/faults.py).

Through real Postfix and `quorum run` (fail-closed: on_engine_failure = "tempfail"), with real
clamd, rspamd, spamd, Redis and NSD owned by this module, 10 SMTP sessions send a clean/virus/spam
mix while one fault at a time is injected; each fault gets >= 200 messages. For every message: it
was delivered exactly once, or refused with a code the client saw (or never answered, so never
accepted); no virus and no message without X-Quorum-Verdict is delivered; clean mail never gets a
5xx. Timings are printed, never asserted.

CI runs seven of the ten faults, one per failure path, to stay within ~4 minutes (about 25 s a
fault): clamd killed (the AV engine refuses connections: tempfail), clamd SIGSTOPped (it hangs:
the scan deadline, then tempfail), spamd hung (a spam engine hangs: decided by the others), Redis
killed (rate limits fall back to local counters), the milter worker SIGKILLed mid-message (the
supervisor restarts it; Postfix's default_action=tempfail covers the gap), the whole `quorum run`
SIGKILLed and restarted, and 10 SIGHUP reloads. Left to the bench: rspamd killed (the same path
as spamd, but rspamd needs ~10 s to come back), the DNS server stopped (auth results become
temperror; no reply code changes) and `postfix reload` (Postfix's own business; it keeps sessions).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from tests.harness.fault_load import Row
from tests.harness.fault_stack import Fault, FaultStack, faults, run_phase, table

pytestmark = pytest.mark.integration

COUNT = 200
CI_FAULTS = (
    "clamd killed+restarted",
    "clamd SIGSTOP 5s",
    "spamd hung (SIGSTOP)",
    "redis killed+restarted",
    "milter worker SIGKILL",
    "quorum run SIGKILL+restart",
    "10 reloads (SIGHUP)",
)
_rows: list[Row] = []


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultStack]:
    with FaultStack(tmp_path_factory.mktemp("fault-matrix"), scan_deadline=3.0, breaker_cooldown=3.0) as running:
        yield running
        print("\n" + table(_rows))
        tracebacks = running.quorum.log_text().count("Traceback")
        print(f"tracebacks in quorum's log: {tracebacks}")


def _by_name(stack: FaultStack) -> dict[str, Fault]:
    return {f.name: f for f in faults(stack, hold=4.0, stop_hold=5.0)}


@pytest.mark.parametrize("name", CI_FAULTS)
def test_every_message_accounted_for(stack: FaultStack, name: str) -> None:
    row = run_phase(stack, _by_name(stack)[name], COUNT, sessions=10, max_after=60.0)
    _rows.append(row)
    print(f"\n{Row.HEAD}\n{row.line()}  codes={dict(row.codes)}")
    assert row.sent >= COUNT
    assert row.problems() == []
    assert row.delivered + row.tempfail + row.reject + row.no_reply == row.sent
