"""The dedicated Postfix instance relays to the sink unchanged, honours XCLIENT and the operator's fragment."""

from __future__ import annotations

import email.utils
import uuid
from pathlib import Path

import pytest
from tests.harness.ports import free_port
from tests.harness.postfix import FRAGMENT, PostfixInstance, fragment_params, listening, parse_main_cf
from tests.harness.sink import Sink, delivered
from tests.harness.smtp_client import send, session

pytestmark = pytest.mark.integration


def message(token: str, subject: str = "Lunch", body: str = "Shall we have lunch tomorrow?\r\n") -> bytes:
    return (
        "From: Alice <alice@example.com>\r\n"
        "To: Bob <bob@example.org>\r\n"
        f"Subject: {subject}\r\n"
        f"Date: {email.utils.formatdate()}\r\n"
        f"Message-ID: <{token}@example.com>\r\n"
        "\r\n"
        f"{body}"
    ).encode()


def split(raw: bytes) -> tuple[bytes, bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    return head, body


def test_plain_message_is_relayed_with_only_a_received_header_added(postfix: PostfixInstance, sink: Sink) -> None:
    token = uuid.uuid4().hex
    raw = message(token)
    result = send(postfix.smtp_port, "alice@example.com", ["bob@example.org"], raw)
    assert result.accepted, result
    assert result.queue_id
    got = delivered(sink, token)
    assert got.mail_from == "alice@example.com"
    assert got.rcpt_tos == ["bob@example.org"]
    assert got.raw.endswith(raw)
    added = got.raw[: -len(raw)].decode()
    assert added.startswith("Received: from client.example") and f"id {result.queue_id}" in added
    assert got.path is not None and got.path.read_bytes() == got.raw


def test_8bit_message_arrives_byte_identical(postfix: PostfixInstance, sink: Sink) -> None:
    token = uuid.uuid4().hex
    body = "Grüße aus Köln — naïve café, 日本語, emoji 🎉\r\n.dot line stays\r\n"
    raw = message(token, subject="Grüße, Ärger & 日本", body=body)  # raw UTF-8, no MIME headers at all
    result = send(postfix.smtp_port, "alice@example.com", ["bob@example.org"], raw)
    assert result.accepted, result
    got = delivered(sink, token)
    assert "BODY=8BITMIME" in got.mail_options
    assert got.raw.endswith(raw)
    assert split(got.raw)[1] == body.encode()
    assert got.header("Subject") == "Grüße, Ärger & 日本"


def test_xclient_presents_another_client(postfix: PostfixInstance, sink: Sink) -> None:
    token = uuid.uuid4().hex
    xclient = {"ADDR": "192.0.2.10", "NAME": "mail.example.net", "HELO": "helo.example.net", "LOGIN": "alice"}
    result = send(postfix.smtp_port, "alice@example.com", ["bob@example.org"], message(token), xclient=xclient)
    assert result.xclient is not None and result.xclient.code == 220
    assert result.accepted, result
    received = delivered(sink, token).header("Received") or ""
    assert received.startswith("from helo.example.net (mail.example.net [192.0.2.10])"), received
    assert "with ESMTPA" in received  # LOGIN made it an authenticated session


def test_rejections_are_returned_not_raised(postfix: PostfixInstance, sink: Sink) -> None:
    postfix.set_main({"message_size_limit": "2000", "smtpd_recipient_restrictions": "reject_non_fqdn_recipient"})
    try:
        result = send(postfix.smtp_port, "alice@example.com", ["bob@example.org"], message("big", body="x" * 3000))
        assert result.data is not None and result.code == 552, result
        bad = send(postfix.smtp_port, "alice@example.com", ["bob@localhost", "carol@example.org"], b"x\r\n")
        assert bad.rcpts["bob@localhost"].permanent, bad
        assert bad.rcpts["carol@example.org"].code == 250
        assert bad.accepted
    finally:
        postfix.set_main({"message_size_limit": None, "smtpd_recipient_restrictions": None})
    assert parse_main_cf((postfix.config_dir / "main.cf").read_text())["message_size_limit"] == "27262976"


def test_session_stays_open_across_an_event(postfix: PostfixInstance, sink: Sink) -> None:
    token = uuid.uuid4().hex
    with session(postfix.smtp_port) as smtp:
        assert smtp.ehlo().code == 250
        assert smtp.mail("alice@example.com").code == 250
        assert smtp.rcpt("bob@example.org").code == 250
        sink.clear()  # "something happens" between RCPT and DATA
        reply = smtp.data(message(token))
    assert reply.code == 250, reply
    assert delivered(sink, token).rcpt_tos == ["bob@example.org"]


def test_hold_queue_release_and_flush(postfix: PostfixInstance, sink: Sink, tmp_path: Path) -> None:
    checks = tmp_path / "header_checks"
    checks.write_text("/^Subject: hold me/ HOLD quarantined by test\n")
    postfix.set_main({"header_checks": f"regexp:{checks}"})
    token = uuid.uuid4().hex
    try:
        result = send(postfix.smtp_port, "alice@example.com", ["bob@example.org"], message(token, "hold me"))
        assert result.accepted and result.queue_id
        assert result.queue_id in postfix.hold_queue_ids()
        assert token in postfix.postcat(result.queue_id)
        postfix.wait_queue_empty(10)  # held mail does not count
        postfix.release(result.queue_id)
        postfix.flush()
        assert delivered(sink, token).header("Subject") == "hold me"
        postfix.wait_queue_empty(10, include_hold=True)
    finally:
        postfix.set_main({"header_checks": None})


def test_fragment_milter_is_used_and_down_milter_tempfails(postfix: PostfixInstance, sink: Sink) -> None:
    fragment = parse_main_cf(FRAGMENT.read_text())
    port = free_port()  # nothing listens: Quorum is "down"
    postfix.set_milter(f"inet:127.0.0.1:{port}")
    try:
        main = parse_main_cf((postfix.config_dir / "main.cf").read_text())
        assert main["smtpd_milters"] == fragment_params(f"inet:127.0.0.1:{port}")["smtpd_milters"]
        assert f"inet:127.0.0.1:{port}, default_action=tempfail" in main["smtpd_milters"]
        for name in ("milter_protocol", "milter_connect_macros", "milter_mail_macros", "milter_end_of_data_macros"):
            assert main[name] == fragment[name]
        result = send(postfix.smtp_port, "alice@example.com", ["bob@example.org"], message(uuid.uuid4().hex))
        assert result.final.temporary, result
        postfix.wait_for_log(rf"connect to Milter service inet:127\.0\.0\.1:{port}")
    finally:
        postfix.set_milter(None)
    token = uuid.uuid4().hex
    assert send(postfix.smtp_port, "alice@example.com", ["bob@example.org"], message(token)).accepted
    delivered(sink, token)


def test_restart_cycles_leave_no_processes(tmp_path: Path, sink: Sink) -> None:
    instance = PostfixInstance(tmp_path / "pf", sink.port)
    try:
        for _ in range(3):
            instance.start()
            token = uuid.uuid4().hex
            assert send(instance.smtp_port, "a@example.com", ["b@example.org"], message(token)).accepted
            delivered(sink, token)
            instance.stop()
            assert not listening(instance.smtp_port)
            assert not instance_processes(instance)
    finally:
        instance.stop()


def instance_processes(instance: PostfixInstance) -> list[str]:
    """Live processes whose environment names this instance's config directory."""
    marker = f"MAIL_CONFIG={instance.config_dir}".encode()
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if marker in environ.read_bytes().split(b"\0"):
                found.append(environ.parent.name)
        except OSError:
            continue
    return found
