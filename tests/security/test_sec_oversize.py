"""Issue 17 item 3, through the real Postfix and clamd: padding a message past the size Quorum
scans must not get it delivered unscanned.

Before the fix, `on_oversize = "accept"` was the default: an EICAR attachment padded past
`max_message_size` (or past every antivirus engine's `max_size`) skipped every engine and was
delivered `unchecked`. Now the default refuses it (552 5.3.4); `"tempfail"` answers 452 4.3.4; only
an explicit `"accept"` delivers it, labelled `unchecked`, and check-config warns about that choice.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid

import pytest
from tests.conftest import MailStack
from tests.harness.clamd import Clamd
from tests.harness.messages import EICAR, mail
from tests.harness.quorum import engine_table
from tests.harness.sink import delivered
from tests.harness.smtp_client import send

pytestmark = pytest.mark.integration

LIMIT = 100_000


def padded_eicar(token: str, size: int) -> bytes:
    """EICAR first (a prefix scan would see it), then padding up to `size` bytes."""
    padding = b"".join(b"padding line %07d to push the message past the limit\r\n" % i for i in range(size // 50 + 1))
    return mail(token, EICAR + b"\r\n" + padding, "padded")


def sent(stack: MailStack, raw: bytes) -> tuple[int, str, bool]:
    token = raw.split(b"Message-ID: <", 1)[1].split(b"@", 1)[0].decode()
    result = send(stack.postfix.smtp_port, "alice@example.com", ["bob@example.org"], raw)
    if result.code == 250:
        delivered(stack.sink, token)
    else:
        time.sleep(1.0)  # a delivery, had there been one, would have reached the sink by now
    reached = any(token.encode() in m.raw for m in stack.sink.messages())
    return result.code, result.text, reached


@pytest.mark.parametrize(
    ("where", "on_oversize", "code"),
    [
        ("max_message_size", None, 552),
        ("max_message_size", "tempfail", 452),
        ("engine max_size", None, 552),
        ("engine max_size", "tempfail", 452),
    ],
)
def test_padded_virus_is_never_delivered_by_default(
    mail_stack: MailStack, clamd: Clamd, where: str, on_oversize: str | None, code: int
) -> None:
    extra = f'on_oversize = "{on_oversize}"\n' if on_oversize else ""
    if where == "max_message_size":
        extra += f"max_message_size = {LIMIT}\n"
        engine = engine_table("clamav", "clamav", address=clamd.address)
    else:  # Quorum stores it whole, but it is above what the antivirus engine is given
        engine = engine_table("clamav", "clamav", address=clamd.address, max_size=LIMIT)
    mail_stack.start('[policy]\non_engine_failure = "tempfail"\n\n' + engine, milter_extra=extra)
    raw = padded_eicar(uuid.uuid4().hex, 2 * LIMIT)
    result_code, text, reached = sent(mail_stack, raw)
    assert result_code == code, (result_code, text)
    assert text.startswith(f"{code // 100}.3.4"), text
    assert not reached


def test_explicit_accept_is_labelled_unchecked_and_warned_about(mail_stack: MailStack, clamd: Clamd) -> None:
    body = engine_table("clamav", "clamav", address=clamd.address)
    quorum = mail_stack.start(body, milter_extra=f'max_message_size = {LIMIT}\non_oversize = "accept"\n')
    token = uuid.uuid4().hex
    code, _, _ = sent(mail_stack, padded_eicar(token, 2 * LIMIT))
    assert code == 250  # the operator chose this: honestly labelled, never "clean"
    got = next(m for m in mail_stack.sink.messages() if token.encode() in m.raw)
    assert got.header_all("X-Quorum-Verdict") == ["unchecked"]
    check = subprocess.run(
        [sys.executable, "-m", "quorum", "check-config", "-c", str(quorum.config_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "milter.on_oversize" in check.stdout and "unscanned" in check.stdout, check.stdout


def test_default_config_refuses_oversize() -> None:
    """The embedded default and a config that does not name on_oversize refuse, never accept."""
    from quorum.assembly import parse_config

    assert parse_config({}).milter.on_oversize == "reject"
