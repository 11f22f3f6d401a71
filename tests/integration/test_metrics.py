"""The Prometheus exporter of a running `quorum run` counts what passed through Postfix."""

from __future__ import annotations

import urllib.request
import uuid

import pytest
from tests.conftest import MailStack
from tests.harness.clamd import Clamd
from tests.harness.messages import EICAR, HAM, mail
from tests.harness.ports import free_port
from tests.harness.quorum import engine_table
from tests.harness.smtp_client import send

pytestmark = pytest.mark.integration


def test_metrics_count_messages_and_engine_results(mail_stack: MailStack, clamd: Clamd) -> None:
    port = free_port()
    mail_stack.start(
        engine_table("clamav", "clamav", address=clamd.address), milter_extra=f'metrics_listen = "127.0.0.1:{port}"'
    )
    smtp = mail_stack.postfix.smtp_port
    assert send(smtp, "alice@example.com", ["bob@example.org"], mail(uuid.uuid4().hex, HAM)).code == 250
    assert send(smtp, "alice@example.com", ["bob@example.org"], mail(uuid.uuid4().hex, EICAR)).code == 554
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert 'quorum_messages_total{action="accept",verdict="clean"} 1.0' in text
    assert 'quorum_messages_total{action="reject",verdict="virus"} 1.0' in text
    assert 'quorum_engine_scans_total{engine="clamav",status="infected"} 1.0' in text
    assert "quorum_decision_seconds_count 2.0" in text
