"""Postfix's own queue tools for one instance (`-c config_dir`): postqueue -j, postcat, postsuper.

postsuper is always limited to the `hold` queue directory, so a message that left the hold queue
meanwhile (released by someone else) is never deleted or touched by mistake.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

QUEUE_ID = re.compile(r"^[0-9A-Za-z]{5,32}$")
_SECTION = re.compile(r"^\*\*\* (ENVELOPE RECORDS|MESSAGE CONTENTS|HEADER EXTRACTED|MESSAGE FILE END) (\S+) \*\*\*$")
_DONE = {
    "-H": re.compile(r"^postsuper: ([0-9A-Za-z]+): released from hold$"),
    "-d": re.compile(r"^postsuper: ([0-9A-Za-z]+): removed$"),
}
_BATCH = 200  # queue ids per postcat call


class PostfixCommandError(RuntimeError):
    """A Postfix tool could not be run or failed; the message says which and why."""


@dataclass(frozen=True)
class QueueEntry:
    """One `postqueue -j` record."""

    queue_name: str
    queue_id: str
    arrival_time: int
    size: int
    sender: str
    recipients: tuple[str, ...]


def _tool(name: str) -> str:
    return shutil.which(name, path="/usr/sbin:/usr/bin:/sbin:/bin") or f"/usr/sbin/{name}"


class PostfixQueue:
    """The queue of the Postfix instance configured in `config_dir`."""

    def __init__(self, config_dir: str = "/etc/postfix", timeout: float = 60.0) -> None:
        self.config_dir = config_dir
        self.timeout = timeout

    def _run(self, tool: str, args: Sequence[str], stdin: str | None = None) -> subprocess.CompletedProcess[bytes]:
        argv = [_tool(tool), "-c", self.config_dir, *args]
        env = {**os.environ, "MAIL_CONFIG": self.config_dir}
        try:
            return subprocess.run(
                argv,
                input=stdin.encode() if stdin is not None else None,
                capture_output=True,
                timeout=self.timeout,
                env=env,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise PostfixCommandError(f"{' '.join(argv)}: {exc}") from exc

    @staticmethod
    def _failed(proc: subprocess.CompletedProcess[bytes]) -> PostfixCommandError:
        err = proc.stderr.decode("utf-8", "replace").strip() or proc.stdout.decode("utf-8", "replace").strip()
        return PostfixCommandError(f"{' '.join(map(str, proc.args))} exited {proc.returncode}: {err}")

    def entries(self) -> list[QueueEntry]:
        """Every queued message (all queues), from `postqueue -j`."""
        proc = self._run("postqueue", ["-j"])
        if proc.returncode != 0:
            raise self._failed(proc)
        out = []
        for line in proc.stdout.decode("utf-8", "surrogateescape").splitlines():
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                out.append(
                    QueueEntry(
                        queue_name=str(rec["queue_name"]),
                        queue_id=str(rec["queue_id"]),
                        arrival_time=int(rec.get("arrival_time", 0)),
                        size=int(rec.get("message_size", 0)),
                        sender=str(rec.get("sender", "")),
                        recipients=tuple(str(r.get("address", "")) for r in rec.get("recipients", [])),
                    )
                )
            except (ValueError, KeyError, TypeError, AttributeError):
                continue  # a record this code does not understand is left alone
        return out

    def headers(self, queue_ids: Iterable[str]) -> dict[str, str]:
        """Header text of each message still in the hold queue (`postcat -ehq`); vanished ones are absent."""
        ids = [q for q in queue_ids if QUEUE_ID.match(q)]
        found: dict[str, str] = {}
        for start in range(0, len(ids), _BATCH):
            batch = ids[start : start + _BATCH]
            found.update(self._headers(batch))
            missing = [q for q in batch if q not in found]
            if missing and len(batch) > 1:  # postcat stops at the first file it cannot open
                for qid in missing:
                    found.update(self._headers([qid]))
        return found

    def _headers(self, ids: Sequence[str]) -> dict[str, str]:
        proc = self._run("postcat", ["-e", "-h", "-q", *ids])
        text = proc.stdout.decode("utf-8", "surrogateescape")
        found: dict[str, str] = {}
        current: str | None = None
        lines: list[str] = []
        for line in text.splitlines():
            m = _SECTION.match(line)
            if not m:
                if current is not None:
                    lines.append(line)
                continue
            if current is not None:
                found[current] = "\n".join(lines) + "\n"
            current, lines = None, []
            queue, _, qid = m.group(2).rpartition("/")
            if m.group(1) == "MESSAGE CONTENTS" and queue.endswith("hold"):
                current = qid
        return found

    def release(self, queue_ids: Sequence[str]) -> list[str]:
        """`postsuper -H` on the hold queue; the ids postsuper reports as released."""
        return self._postsuper("-H", queue_ids)

    def delete(self, queue_ids: Sequence[str]) -> list[str]:
        """`postsuper -d` on the hold queue; the ids postsuper reports as removed."""
        return self._postsuper("-d", queue_ids)

    def _postsuper(self, flag: str, queue_ids: Sequence[str]) -> list[str]:
        ids = [q for q in queue_ids if QUEUE_ID.match(q)]
        if not ids:
            return []
        proc = self._run("postsuper", [flag, "-", "hold"], stdin="".join(f"{q}\n" for q in ids))
        if proc.returncode != 0:
            raise self._failed(proc)
        done = []
        for line in proc.stderr.decode("utf-8", "replace").splitlines():
            m = _DONE[flag].match(line.strip())
            if m:
                done.append(m.group(1))
        return done

    def deliver_now(self, queue_id: str) -> str | None:
        """`postqueue -i`: ask qmgr to try this message now; the error text, or None when asked."""
        proc = self._run("postqueue", ["-i", queue_id])
        return None if proc.returncode == 0 else str(self._failed(proc))
