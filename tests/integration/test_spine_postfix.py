"""Issue #2, the spine: real Postfix -> `quorum run` -> ClamAV -> sink, end to end.

Every test sends real SMTP to a dedicated Postfix whose smtpd_milters points at a `quorum run`
started with the config under test (TCP or unix socket), scanning with a real clamd.
"""

from __future__ import annotations

import base64
import email.utils
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.conftest import MailStack
from tests.harness.clamd import Clamd
from tests.harness.messages import EICAR
from tests.harness.postfix import PostfixInstance
from tests.harness.quorum import QuorumProcess, engine_table
from tests.harness.sink import Sink, delivered
from tests.harness.smtp_client import SendResult, send

pytestmark = pytest.mark.integration

SENDER = "alice@example.com"
RCPT = "bob@example.org"
QUORUM = [sys.executable, "-m", "quorum"]


# --- messages -------------------------------------------------------------------------------


def message(token: str, body: bytes = b"Shall we have lunch tomorrow?\r\n", headers: str = "") -> bytes:
    return (
        "From: Alice <alice@example.com>\r\n"
        "To: Bob <bob@example.org>\r\n"
        "Subject: Lunch\r\n"
        f"Date: {email.utils.formatdate()}\r\n"
        f"Message-ID: <{token}@example.com>\r\n"
        f"{headers}"
        "\r\n"
    ).encode() + body


def zipped(name: str, data: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(name, data)
    return buf.getvalue()


def with_attachment(token: str, filename: str, data: bytes) -> bytes:
    b64 = base64.encodebytes(data).replace(b"\n", b"\r\n")
    body = (
        b"--b1\r\nContent-Type: text/plain\r\n\r\nsee attachment\r\n"
        b'--b1\r\nContent-Type: application/octet-stream; name="' + filename.encode() + b'"\r\n'
        b"Content-Transfer-Encoding: base64\r\n"
        b'Content-Disposition: attachment; filename="' + filename.encode() + b'"\r\n\r\n' + b64 + b"--b1--\r\n"
    )
    mime = 'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b1"\r\n'
    return message(token, body, mime)


def eicar_message(kind: str, token: str) -> bytes:
    if kind == "inline":
        return message(token, b"Here it is:\r\n" + EICAR + b"\r\n")
    if kind == "base64":
        return with_attachment(token, "eicar.com", EICAR)
    return with_attachment(token, "eicar.zip", zipped("eicar.com", EICAR))


# --- helpers --------------------------------------------------------------------------------


def policy(on_virus: str = "reject", on_engine_failure: str = "tempfail") -> str:
    return f'[policy]\non_virus = "{on_virus}"\non_engine_failure = "{on_engine_failure}"\n\n'


def clamav_body(clamd: Clamd, **policy_kw: str) -> str:
    return policy(**policy_kw) + engine_table("clamav", "clamav", address=clamd.address)


_KEYS: dict[int, tuple[str, bool, str]] = {}
_SOCKET_DIRS: list[Path] = []


def use(stack: MailStack, body: str, unix: bool = False, milter_extra: str = "") -> QuorumProcess:
    """The running Quorum if it already has this config (saves a restart), else a fresh one."""
    key = (body, unix, milter_extra)
    q = stack.quorum
    if q and q.service.running and _KEYS.get(id(q)) == key:
        stack.sink.clear()
        return q
    if not unix:
        quorum = stack.start(body, milter_extra=milter_extra)
    else:
        # smtpd runs as user postfix: it cannot reach a socket inside pytest's 0700 tmp dirs,
        # nor connect to a root-owned 0660 socket unless the group is postfix's (as an operator sets it).
        stack.stop()
        workdir = Path(tempfile.mkdtemp(prefix="quorum-spine-"))
        workdir.chmod(0o755)
        _SOCKET_DIRS.append(workdir)
        quorum = QuorumProcess(workdir, body, unix=True, milter_extra=milter_extra)
        if "socket_group" not in quorum.config_path.read_text():
            quorum.milter_extra += 'socket_group = "postfix"\n'
            quorum.write_config()
        quorum.start()
        stack.quorum = quorum
        stack.postfix.set_milter(quorum.postfix_address)
        stack.sink.clear()
    _KEYS[id(quorum)] = key
    return quorum


def assert_not_delivered(postfix: PostfixInstance, sink: Sink, token: str) -> None:
    """Nothing is queued any more (held mail aside), so everything Postfix accepted has reached the sink."""
    postfix.wait_queue_empty(timeout=30)
    assert not [m for m in sink.messages() if token.encode() in m.raw]


def sent(port: int, raw: bytes, rcpts: list[str] | None = None) -> SendResult:
    return send(port, SENDER, rcpts or [RCPT], raw)


def header_values(raw: bytes, name: str) -> list[bytes]:
    head = raw.split(b"\r\n\r\n", 1)[0]
    rx = re.compile(rb"^" + re.escape(name.encode()) + rb":(.*(?:\r\n[ \t].*)*)", re.IGNORECASE | re.MULTILINE)
    return [m.group(1).strip() for m in rx.finditer(head)]


def quorum_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*QUORUM, *args], capture_output=True, text=True, timeout=timeout, check=False)


def assert_no_traceback(quorum: QuorumProcess) -> None:
    log = quorum.log_text()
    assert "Traceback" not in log and " ERROR " not in log, log[-3000:]


# --- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def _remove_socket_dirs(mail_stack: MailStack) -> Iterator[None]:
    yield
    mail_stack.stop()
    for path in _SOCKET_DIRS:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module", params=["tcp", "unix"])
def transport(request: pytest.FixtureRequest) -> str:
    """Module scope so pytest groups the tests per transport (one Quorum start each)."""
    return str(request.param)


@pytest.fixture
def av_stack(transport: str, mail_stack: MailStack, clamd: Clamd) -> QuorumProcess:
    """Quorum with ClamAV and `on_virus = "reject"`, on either transport."""
    return use(mail_stack, clamav_body(clamd), unix=transport == "unix")


@pytest.fixture
def tcp_stack(mail_stack: MailStack, clamd: Clamd) -> QuorumProcess:
    return use(mail_stack, clamav_body(clamd))


@pytest.fixture
def clean_hold(postfix: PostfixInstance) -> Iterator[PostfixInstance]:
    yield postfix
    if postfix.hold_queue_ids():
        postfix.delete("ALL")


# --- a signature made up at test time ---------------------------------------------------------


def test_random_marker_in_nested_archive_is_rejected(
    tcp_stack: QuorumProcess, clamd: Clamd, postfix: PostfixInstance, sink: Sink
) -> None:
    marker = f"QUORUM-MARKER-{os.urandom(16).hex()}".encode()
    name = f"Quorum.Test.Marker-{os.urandom(4).hex()}"
    nested = zipped("outer.zip", zipped("inner.txt", b"padding " + marker + b" padding"))
    before, after = uuid.uuid4().hex, uuid.uuid4().hex

    assert sent(postfix.smtp_port, with_attachment(before, "nested.zip", nested)).code == 250
    delivered(sink, before)  # unknown until the signature exists
    clamd.add_signature(name, marker.hex())
    result = sent(postfix.smtp_port, with_attachment(after, "nested.zip", nested))
    assert result.code == 554 and result.text.startswith("5.7.1"), result
    assert name in result.text, result
    assert_not_delivered(postfix, sink, after)


# --- clean mail and our headers -----------------------------------------------------------------


def test_clean_message_is_delivered_with_verdict_headers(
    av_stack: QuorumProcess, postfix: PostfixInstance, sink: Sink
) -> None:
    token = uuid.uuid4().hex
    raw = message(token)
    result = sent(postfix.smtp_port, raw)
    assert result.code == 250, result
    got = delivered(sink, token)
    assert got.header_all("X-Quorum-Verdict") == ["clean"]
    assert got.header_all("X-Quorum-Engines") == ["clamav=clean"]
    assert got.raw.endswith(raw.split(b"\r\n\r\n", 1)[1])


def test_forged_inbound_verdict_headers_are_replaced(
    av_stack: QuorumProcess, postfix: PostfixInstance, sink: Sink
) -> None:
    token = uuid.uuid4().hex
    forged = (
        "X-Quorum-Verdict: clean; forged=yes\r\n"
        "X-Spam-Flag: NO\r\n"
        "x-quorum-verdict: clean\r\n"
        "X-Quorum-Engines: clamav=clean(forged)\r\n"
        "X-Spam-Flag:\r\n YES\r\n"
        "X-Spam-Status: No, score=-100\r\n"
    )
    result = sent(postfix.smtp_port, message(token, b"Trust me.\r\n", forged))
    assert result.code == 250, result
    got = delivered(sink, token)
    assert header_values(got.raw, "X-Quorum-Verdict") == [b"clean"]
    assert header_values(got.raw, "X-Quorum-Engines") == [b"clamav=clean"]
    assert header_values(got.raw, "X-Spam-Flag") == []
    assert header_values(got.raw, "X-Spam-Status") == []
    assert b"forged" not in got.raw


# --- viruses ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["inline", "base64", "zip"])
def test_eicar_is_rejected(kind: str, av_stack: QuorumProcess, postfix: PostfixInstance, sink: Sink) -> None:
    token = uuid.uuid4().hex
    result = sent(postfix.smtp_port, eicar_message(kind, token))
    assert result.code == 554, result
    assert result.text.startswith("5.7.1") and "Eicar-Test-Signature" in result.text, result
    assert_not_delivered(postfix, sink, token)


def test_quarantine_puts_the_message_on_hold(
    mail_stack: MailStack, clamd: Clamd, clean_hold: PostfixInstance, sink: Sink
) -> None:
    postfix = clean_hold
    quorum = use(mail_stack, clamav_body(clamd, on_virus="quarantine"))
    token = uuid.uuid4().hex
    result = sent(postfix.smtp_port, eicar_message("base64", token))
    assert result.code == 250, result
    assert result.queue_id in postfix.hold_queue_ids()
    held = postfix.postcat(result.queue_id)
    assert re.search(r"X-Quorum-Quarantine: virus Eicar-Test-Signature\S* found by clamav", held), held
    assert "X-Quorum-Verdict: virus" in held
    quorum.wait_for_log(rf"qid={result.queue_id} quarantined: virus Eicar-Test-Signature")
    assert_not_delivered(postfix, sink, token)


def test_discard_accepts_and_drops(mail_stack: MailStack, clamd: Clamd, postfix: PostfixInstance, sink: Sink) -> None:
    quorum = use(mail_stack, clamav_body(clamd, on_virus="discard"))
    token = uuid.uuid4().hex
    result = sent(postfix.smtp_port, eicar_message("zip", token))
    assert result.code == 250, result
    assert_not_delivered(postfix, sink, token)
    assert result.queue_id not in postfix.hold_queue_ids()
    quorum.wait_for_log(rf"qid={result.queue_id} .*verdict=virus action=discard")


# --- failures ---------------------------------------------------------------------------------


@pytest.fixture
def doomed_clamd(tmp_path: Path) -> Iterator[Clamd]:
    """A clamd of the test's own, so stopping it leaves the shared one alone."""
    server = Clamd(tmp_path / "clamd").start()
    yield server
    server.stop()


def test_clamd_down_tempfails_or_degrades(
    mail_stack: MailStack, doomed_clamd: Clamd, postfix: PostfixInstance, sink: Sink
) -> None:
    quorum = use(mail_stack, clamav_body(doomed_clamd))
    up = uuid.uuid4().hex
    assert sent(postfix.smtp_port, message(up)).code == 250
    delivered(sink, up)
    assert quorum_cli("health", "-c", str(quorum.config_path)).returncode == 0

    doomed_clamd.stop()
    health = quorum_cli("health", "-c", str(quorum.config_path))
    assert health.returncode == 1 and "FAIL engine clamav" in health.stdout, health
    token = uuid.uuid4().hex
    result = sent(postfix.smtp_port, message(token))
    assert result.code == 451 and result.text.startswith("4.7.1"), result
    assert_not_delivered(postfix, sink, token)

    use(mail_stack, clamav_body(doomed_clamd, on_engine_failure="accept"))
    token = uuid.uuid4().hex
    assert sent(postfix.smtp_port, message(token)).code == 250
    got = delivered(sink, token)
    assert got.header_all("X-Quorum-Verdict") == ["unchecked; degraded=clamav"]
    assert (got.header("X-Quorum-Engines") or "").startswith("clamav=error")


def test_quorum_down_means_tempfail(mail_stack: MailStack, clamd: Clamd, postfix: PostfixInstance, sink: Sink) -> None:
    use(mail_stack, clamav_body(clamd))
    mail_stack.stop()
    token = uuid.uuid4().hex
    result = sent(postfix.smtp_port, message(token))
    assert 400 <= result.code < 500, result
    assert_not_delivered(postfix, sink, token)


# --- sizes, odd bytes --------------------------------------------------------------------------

BIG = 100_000


@pytest.mark.parametrize("on_oversize", ["reject", "accept"])
def test_oversize(on_oversize: str, mail_stack: MailStack, clamd: Clamd, postfix: PostfixInstance, sink: Sink) -> None:
    extra = f'max_message_size = {BIG}\non_oversize = "{on_oversize}"\n'
    use(mail_stack, clamav_body(clamd), milter_extra=extra)
    token = uuid.uuid4().hex
    raw = message(token, b"".join(b"line %06d of a long message\r\n" % i for i in range(BIG // 25)))
    assert len(raw) > BIG
    result = sent(postfix.smtp_port, raw)
    if on_oversize == "reject":
        assert result.code == 552 and result.text.startswith("5.3.4"), result
        assert_not_delivered(postfix, sink, token)
    else:
        assert result.code == 250, result
        got = delivered(sink, token)
        # Not "clean": nothing scanned it; and not degraded: a size skip is no engine failure.
        assert got.header_all("X-Quorum-Verdict") == ["unchecked"]
        assert got.header_all("X-Quorum-Engines") == ["clamav=skipped(too-large)"]
        assert got.raw.endswith(raw.split(b"\r\n\r\n", 1)[1])


def test_8bit_message_with_raw_header_bytes_passes_unchanged(
    av_stack: QuorumProcess, postfix: PostfixInstance, sink: Sink
) -> None:
    token = uuid.uuid4().hex
    headers = (
        b"Subject: Caf\xe9 cr\xe8me \xff\xfe broken\r\n"
        b"X-Folded: first part\r\n\tsecond part \xe4\r\n   third part\r\n"
        b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: 8bit\r\n"
    )
    body = b"Gr\xfc\xdfe aus K\xf6ln \xe2\x82\xac \x80\x81\r\n.dot line\r\nend\r\n"
    raw = (
        b"From: Alice <alice@example.com>\r\nTo: Bob <bob@example.org>\r\n"
        b"Message-ID: <" + token.encode() + b"@example.com>\r\n" + headers + b"\r\n" + body
    )
    result = sent(postfix.smtp_port, raw)
    assert result.code == 250, result
    got = delivered(sink, token)
    assert got.body == body
    assert headers in got.raw  # folding and 8-bit bytes exactly as sent
    assert got.header_all("X-Quorum-Verdict") == ["clean"]
    av_stack.wait_for_log(rf"qid={result.queue_id} ")
    assert_no_traceback(av_stack)


# --- engines in the config ----------------------------------------------------------------------


def test_two_clamav_instances_tcp_and_unix_both_report(
    mail_stack: MailStack, clamd: Clamd, postfix: PostfixInstance, sink: Sink
) -> None:
    body = (
        policy()
        + engine_table("clamav-tcp", "clamav", address=clamd.address)
        + engine_table("clamav-unix", "clamav", address=str(clamd.socket_path))
    )
    use(mail_stack, body)
    token = uuid.uuid4().hex
    assert sent(postfix.smtp_port, message(token)).code == 250
    got = delivered(sink, token)
    assert got.header_all("X-Quorum-Engines") == ["clamav-tcp=clean, clamav-unix=clean"]
    bad = sent(postfix.smtp_port, eicar_message("inline", uuid.uuid4().hex))
    assert bad.code == 554 and re.search(r"\(Eicar-Test-Signature[^ ,]*\)", bad.text), bad


def test_disabled_engine_is_left_out(mail_stack: MailStack, clamd: Clamd, postfix: PostfixInstance, sink: Sink) -> None:
    body = (
        policy()
        + engine_table("clamav", "clamav", address=clamd.address)
        + engine_table("clamav-off", "clamav", address="127.0.0.1:9", enabled=False)
    )
    quorum = use(mail_stack, body)
    quorum.wait_for_log(r"listening on \S+; engines: clamav\n")
    token = uuid.uuid4().hex
    assert sent(postfix.smtp_port, message(token)).code == 250
    got = delivered(sink, token)
    assert got.header_all("X-Quorum-Engines") == ["clamav=clean"]
    assert got.header_all("X-Quorum-Verdict") == ["clean"]


def test_per_message_log_line(av_stack: QuorumProcess, postfix: PostfixInstance, sink: Sink) -> None:
    token = uuid.uuid4().hex
    result = send(postfix.smtp_port, SENDER, [RCPT, "carol@example.net"], message(token))
    assert result.code == 250, result
    qid = result.queue_id
    assert qid
    line = av_stack.wait_for_log(rf"quorum\.message.*qid={qid} .*").group(0)
    assert f"from=<{SENDER}>" in line
    assert f"to=<{RCPT}>,<carol@example.net>" in line
    assert "verdict=clean action=accept" in line
    assert re.search(r"engines=clamav:clean:\d+ms", line), line
    assert re.search(r"time=\d+ms", line), line


# --- command line ------------------------------------------------------------------------------


def test_health_against_the_running_stack(av_stack: QuorumProcess) -> None:
    result = quorum_cli("health", "-c", str(av_stack.config_path))
    assert result.returncode == 0, result
    assert "ok   milter" in result.stdout and "ok   engine clamav (clamav)" in result.stdout


def test_scan_json(clamd: Clamd, tmp_path: Path) -> None:
    config = tmp_path / "quorum.toml"
    config.write_text(clamav_body(clamd))
    msg = tmp_path / "eicar.eml"
    msg.write_bytes(eicar_message("zip", uuid.uuid4().hex))
    result = quorum_cli("scan", "-c", str(config), str(msg), "--json", "--sender", SENDER, "--rcpt", RCPT)
    assert result.returncode == 0, result
    out = json.loads(result.stdout)
    assert out["verdict"] == "virus"
    assert out["action"] == "reject"
    assert out["reply"].startswith("554 5.7.1")
    assert [(e["engine"], e["status"]) for e in out["engines"]] == [("clamav", "infected")]
    assert out["engines"][0]["names"][0].startswith("Eicar-Test-Signature")

    msg.write_bytes(message(uuid.uuid4().hex))
    out = json.loads(quorum_cli("scan", "-c", str(config), str(msg), "--json").stdout)
    assert (out["verdict"], out["action"]) == ("clean", "accept")
    assert "X-Quorum-Verdict: clean" in out["headers_added"]
