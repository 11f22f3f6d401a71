"""A harness Postfix that also runs the notice listener exactly as postfix-conf/master.cf.notify has it.

The main port runs the milter (Quorum); the listener (a second smtpd in the same master) runs none
and relays to the same sink. `listener_enabled = False` + `reload()` takes only the listener down,
as an operator's mistake or a restart would: mail on the main port keeps flowing.
"""

from __future__ import annotations

from pathlib import Path

from tests.harness.ports import free_port
from tests.harness.postfix import MASTER_CF, REPO_ROOT, PostfixInstance, _write_cool

SNIPPET = REPO_ROOT / "postfix-conf" / "master.cf.notify"
SNIPPET_ADDRESS = "127.0.0.1:10026"


def listener_lines(port: int, snippet: Path = SNIPPET) -> str:
    """The snippet's service lines (comments dropped) with its address moved to `port`."""
    lines = [line for line in snippet.read_text().splitlines() if line.strip() and not line.lstrip().startswith("#")]
    text = "\n".join(lines) + "\n"
    if SNIPPET_ADDRESS not in text:
        raise ValueError(f"{snippet}: the listener address {SNIPPET_ADDRESS} is missing")
    return text.replace(SNIPPET_ADDRESS, f"127.0.0.1:{port}")


class NoticeListenerPostfix(PostfixInstance):
    """PostfixInstance + the notice listener on `notify_port` (while `listener_enabled`)."""

    def __init__(self, workdir: Path, sink_port: int, milter: str | None = None) -> None:
        super().__init__(workdir, sink_port, milter=milter)
        self.notify_port = free_port()
        self.listener_enabled = True

    def write_config(self) -> None:
        super().write_config()
        master = MASTER_CF.format(port=self.smtp_port)
        if self.listener_enabled:
            master += listener_lines(self.notify_port)
        _write_cool(self.config_dir / "master.cf", master)
