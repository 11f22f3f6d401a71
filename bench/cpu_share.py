"""CPU time by program over a stretch of a benchmark, from /proc (Linux).

A snapshot sums utime+stime+cutime+cstime of every process, grouped by program. Counting the
reaped children's time at their parent makes the difference of two snapshots right for processes
that exit in between (Postfix's smtpd/cleanup are reaped by `master`, spamc by spamass-milter): an
exited child's whole life appears in its parent's cutime, and its part before the first snapshot
is subtracted with the child's own earlier entry.
"""

from __future__ import annotations

import os
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")
POSTFIX = {
    "master", "smtpd", "cleanup", "qmgr", "smtp", "trivial-rewrite", "anvil", "pickup", "tlsmgr",
    "scache", "bounce", "showq", "proxymap", "local", "lmtp", "error", "discard", "postdrop",
}  # fmt: skip
PEERS = {"clamav-milter", "spamass-milter", "spamc"}


def group_of(pid: int, comm: str, cmdline: str) -> str:
    if pid == os.getpid():
        return "bench (load + sink)"
    if " -m quorum run" in cmdline or "bin/quorum run" in cmdline or "-m quorum.worker" in cmdline:
        return "quorum"
    if comm in POSTFIX:
        return "postfix"
    if comm in PEERS:
        return "peer milters"
    if comm.startswith("rspamd") or "rspamd" in cmdline.split(" ", 1)[0]:
        return "rspamd"
    if "spamd" in comm or "spamd" in cmdline[:200]:
        return "spamd"
    if comm == "clamd":
        return "clamd"
    if comm.startswith("redis"):
        return "redis"
    if comm == "nsd":
        return "nsd"
    return "other"


def snapshot() -> dict[tuple[int, str], float]:
    """CPU seconds per (pid, group) right now."""
    out: dict[tuple[int, str], float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        ticks = sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
        key = (pid, group_of(pid, comm, cmdline))
        out[key] = out.get(key, 0.0) + ticks / TICK
    return out


def spent(before: dict[tuple[int, str], float], after: dict[tuple[int, str], float]) -> dict[str, float]:
    """CPU seconds per group between two snapshots (exited processes: see the module docstring)."""
    by_group: dict[str, float] = {}
    for (pid, group), seconds in after.items():
        by_group[group] = by_group.get(group, 0.0) + seconds - before.get((pid, group), 0.0)
    for (pid, group), seconds in before.items():
        if (pid, group) not in after:
            by_group[group] = by_group.get(group, 0.0) - seconds
    ordered = sorted(by_group.items(), key=lambda item: -item[1])
    return {g: round(s, 3) for g, s in ordered if abs(s) >= 0.001}
