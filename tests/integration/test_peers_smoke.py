"""Smoke run of bench/peers.py (issue 13's peer benchmark): Debian's clamav-milter and Quorum + ClamAV,
on TCP and on unix sockets (there Quorum passes clamd a descriptor, FILDES), through the real
Postfix with ~20 messages each. Only that the harness works
and the messages really arrived is asserted; the speed is the benchmark's business, never a test's."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
ROWS = ("clamav-milter", "quorum + clamav", "clamav-milter (unix sockets)", "quorum + clamav (unix sockets)")


def test_peer_benchmark_delivers_through_both_rows() -> None:
    argv = [sys.executable, str(REPO / "bench" / "peers.py"), "--rows", ",".join(ROWS)]
    argv += ["--count", "20", "--latency", "3", "--warmup", "3", "--loads", "distinct", "--no-smtp-source", "--json"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(proc.stdout)["rows"]
    assert set(rows) == set(ROWS)
    for name, row in rows.items():
        load = row["loads"]["distinct"]
        assert (load["accepted"], load["delivered"]) == (20, 20), (name, load)
        assert row["probes"], f"{name}: the probe message before or after the load was not delivered"
        assert row["latency"]["refused"] == 0, (name, row["latency"])
        cpu = row["cpu_ms_per_message"]["distinct"]
        assert sum(v for v in cpu.values() if v > 0) > 0, (name, cpu)  # CPU is read and attributed
        if name.startswith("quorum"):  # the worker (`python -m quorum.worker`) is counted as Quorum
            assert cpu.get("quorum", 0) > 0, (name, cpu)
        # Postfix's own share can round to nothing on a busy machine (10 ms ticks): not asserted
