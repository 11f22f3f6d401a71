"""Issue 17 item 6, through the real Postfix, clamd and Redis: a tenant under which no antivirus
engine votes never gets its mail labelled `clean`.

Before the fix, `[domains."d"] engines = []` (or clamav disabled or in shadow for the domain)
delivered mail as `X-Quorum-Verdict: clean` though nothing had looked for viruses. Now it is
`unchecked`, and both check-config (file domains, the global policy) and `quorum domain set`
(Redis records) warn.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from tests.conftest import MailStack
from tests.harness.clamd import Clamd
from tests.harness.messages import HAM, mail
from tests.harness.quorum import engine_table
from tests.harness.redis_server import RedisServer
from tests.harness.sink import delivered
from tests.harness.smtp_client import send

pytestmark = pytest.mark.integration

DOMAINS = {
    "noav.test": "engines = []",
    "disabled.test": '[domains."disabled.test".engines.clamav]\nenabled = false',
    "shadow.test": '[domains."shadow.test".engines.clamav]\nmode = "shadow"',
}


def tenants_toml() -> str:
    out = []
    for domain, body in DOMAINS.items():
        if body.startswith("[domains"):
            out.append(f'[domains."{domain}"]\ndnsbl = false\n{body}\n')
        else:
            out.append(f'[domains."{domain}"]\n{body}\n')
    return "\n".join(out)


def verdict_for(stack: MailStack, rcpt: str) -> str:
    token = uuid.uuid4().hex
    result = send(stack.postfix.smtp_port, "alice@example.com", [rcpt], mail(token, HAM, "hello"))
    assert result.accepted, result
    return delivered(stack.sink, token).header("X-Quorum-Verdict") or ""


def check_config(path: Path) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "quorum", "check-config", "-c", str(path)], capture_output=True, text=True, timeout=60
    )
    return out.stdout + out.stderr


def test_a_tenant_without_antivirus_is_unchecked_and_warned_about(mail_stack: MailStack, clamd: Clamd) -> None:
    body = engine_table("clamav", "clamav", address=clamd.address) + "\n" + tenants_toml()
    quorum = mail_stack.start(body)
    assert verdict_for(mail_stack, "bob@example.org") == "clean"  # the global policy scans it
    for domain in DOMAINS:
        assert verdict_for(mail_stack, f"user@{domain}") == "unchecked", domain
    text = check_config(quorum.config_path)
    for domain in DOMAINS:
        assert f'domains."{domain}"' in text and "no antivirus engine votes" in text, text


def test_a_redis_tenant_record_without_antivirus_is_warned_about_and_unchecked(
    mail_stack: MailStack, clamd: Clamd, redis_single: RedisServer, tmp_path: Path
) -> None:
    body = (
        engine_table("clamav", "clamav", address=clamd.address)
        + f'\n[tenants]\nstore = "redis"\nrefresh = "1s"\n\n[redis]\nurl = "{redis_single.url}"\n'
    )
    quorum = mail_stack.start(body)
    record = tmp_path / "noav.toml"
    record.write_text("engines = []\n")
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "quorum",
            "domain",
            "set",
            "redis-noav.test",
            "--file",
            str(record),
            "-c",
            str(quorum.config_path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "no antivirus engine votes" in out.stderr, out.stderr
    assert verdict_for(mail_stack, "user@redis-noav.test") == "unchecked"


def test_the_global_policy_without_antivirus_is_warned_about(mail_stack: MailStack, tmp_path: Path) -> None:
    config = tmp_path / "quorum.toml"
    config.write_text('[engines.rspamd]\ntype = "rspamd"\nurl = "http://127.0.0.1:1"\n')
    assert "no antivirus engine votes" in check_config(config)
