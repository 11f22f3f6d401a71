"""A real NSD + sink + `quorum run` + Postfix stack for the sender-authentication attack tests.

Client addresses other than 127.0.0.1 are presented with XCLIENT, so SPF sees them.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.harness.dns import DnsServer, zone_text
from tests.harness.postfix import PostfixInstance
from tests.harness.quorum import QuorumProcess
from tests.harness.sink import Delivered, Sink
from tests.harness.smtp_client import SendResult, send
from tests.zones import auth as z

AUTHSERV = "mx.test.example"  # tests/harness/quorum.py writes this [milter] authserv_id
RCPT = "user@rcpt.test"


@dataclass
class AuthStack:
    dns: DnsServer
    sink: Sink
    quorum: QuorumProcess
    postfix: PostfixInstance
    keys: dict[str, z.DkimKey]

    def send(
        self, raw: bytes, mail_from: str, client: str = z.CLIENT_GOOD, rcpts: tuple[str, ...] = (RCPT,), login: str = ""
    ) -> SendResult:
        self.postfix.wait_queue_empty(timeout=60)
        self.sink.clear()
        xclient = {"ADDR": client, "NAME": "[UNAVAILABLE]", "HELO": "client.example"}
        if login:
            xclient["LOGIN"] = login
        return send(self.postfix.smtp_port, mail_from, list(rcpts), raw, xclient=xclient)

    def delivered(self, count: int = 1) -> list[Delivered]:
        return self.sink.wait_for(count, timeout=60)

    def log_lines(self, needle: str) -> list[str]:
        text = self.quorum.service.log_path.read_text(errors="replace")
        return [line for line in text.splitlines() if needle in line]


# The top of an auth test's config: tag spam, resolve through the test NSD ({dns_port}), no cache.
AUTH_BASE = """
[policy]
on_spam = "tag"

[dns]
nameservers = ["127.0.0.1"]
port = {dns_port}
timeout = 1
cache_size = 0
"""


def header_values(raw: bytes, name: str) -> list[bytes]:
    head = raw.split(b"\r\n\r\n", 1)[0]
    rx = re.compile(rb"^" + re.escape(name.encode()) + rb":(.*(?:\r\n[ \t].*)*)", re.IGNORECASE | re.MULTILINE)
    return [m.group(1) for m in rx.finditer(head)]


@contextmanager
def auth_stack(
    root: Path,
    body: str,
    extra_records: list[tuple[str, str, str]] | None = None,
    milter_extra: str = "",
    postfix_overrides: dict[str, str] | None = None,
) -> Iterator[AuthStack]:
    """`body` is the TOML after [milter]; `{dns_port}` in it is replaced by the NSD port."""
    keys = z.make_keys()
    records = z.records(keys) + [(n.removesuffix(".test"), t, d) for n, t, d in (extra_records or [])]
    dns = DnsServer(root / "nsd", {z.ORIGIN: zone_text(z.ORIGIN, records, ttl=60)}).start()
    sink = Sink(root / "sink")
    sink.start()
    quorum = QuorumProcess(root / "quorum", body.replace("{dns_port}", str(dns.port)), milter_extra=milter_extra)
    postfix = PostfixInstance(
        root / "postfix", sink.port, milter=quorum.postfix_address, main_overrides=postfix_overrides
    )
    try:
        quorum.start()
        postfix.start()
        yield AuthStack(dns, sink, quorum, postfix, keys)
    finally:
        postfix.stop()
        quorum.stop()
        sink.stop()
        dns.stop()
