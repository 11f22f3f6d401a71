"""Issue 17 item 4: content clamd stopped scanning at one of its limits is never "clean".

clamd stops at MaxRecursion, MaxScanSize, MaxFiles, MaxFileSize (...) and, unless it runs with
`AlertExceedsMax yes`, answers OK for what it did not look at. The shipped engines/clamav/clamd.conf
(used by the harness and the container image) sets it, and keeps MaxFileSize above MaxScanSize
(clamd cuts one ZIP member at MaxFileSize without any alert). The ClamAV adapter turns
`Heuristics.Limits.Exceeded.<Limit>` into an explicit `infected(limits-exceeded)` verdict, which the
policy refuses. Every attack runs through real Postfix, Quorum and the real clamd, over TCP
(INSTREAM) and over the unix socket (FILDES); the archives are built at test time and are small on
the wire (a few hundred KB at most) however large they inflate.
"""

from __future__ import annotations

import base64
import email.utils
import io
import re
import uuid
import zipfile
from collections.abc import Callable, Iterator

import pytest
from tests.conftest import MailStack
from tests.harness.clamd import ENGINE_DIR, Clamd
from tests.harness.messages import EICAR
from tests.harness.quorum import QuorumProcess, engine_table
from tests.harness.sink import delivered, engines_header
from tests.harness.smtp_client import SendResult, send

pytestmark = pytest.mark.integration

MiB = 1 << 20


# --- archives, built at test time -------------------------------------------------------------


def unique() -> bytes:
    """Content no earlier scan has seen (clamd caches clean results by hash)."""
    return b"quarterly figures " + uuid.uuid4().hex.encode() + b"\r\n"


def zipped(members: list[tuple[str, bytes]], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as zf:
        for name, data in members:
            zf.writestr(name, data)
    return buf.getvalue()


def nested(depth: int, inner: bytes) -> bytes:
    """`inner` in a zip, in a zip, ... `depth` zips deep."""
    data = zipped([("payload.com", inner)])
    for level in range(depth - 1):
        data = zipped([(f"level{level}.zip", data)])
    return data


def zeros_member(zeros: int, inner: bytes) -> bytes:
    """One zip member: `zeros` bytes of zeros, then `inner` (deflated: ~1 KB per MB on the wire)."""
    buf = io.BytesIO()
    block = bytes(MiB)
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        with zf.open("backup.bin", "w", force_zip64=True) as f:
            for _ in range(zeros // MiB):
                f.write(block)
            f.write(inner)
    return buf.getvalue()


def zeros_members(count: int, each: int, inner: bytes) -> bytes:
    """`count` members of `each` zero bytes (each below MaxFileSize), then `inner` as its own member."""
    buf = io.BytesIO()
    block = bytes(MiB)
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for i in range(count):
            with zf.open(f"part{i}.bin", "w", force_zip64=True) as f:
                for _ in range(each // MiB):
                    f.write(block)
        zf.writestr("payload.com", inner)
    return buf.getvalue()


def many_files(count: int, inner: bytes) -> bytes:
    return zipped([(f"f{i}.txt", b"x") for i in range(count)] + [("payload.com", inner)], zipfile.ZIP_STORED)


def gzipped_zeros(zeros: int, inner: bytes) -> bytes:
    import gzip

    buf = io.BytesIO()
    block = bytes(MiB)
    with gzip.GzipFile(fileobj=buf, mode="wb", compresslevel=9) as f:
        for _ in range(zeros // MiB):
            f.write(block)
        f.write(inner)
    return buf.getvalue()


# --- messages ---------------------------------------------------------------------------------


def head(token: str, extra: str = "") -> bytes:
    return (
        "From: Alice <alice@example.com>\r\n"
        "To: Bob <bob@example.org>\r\n"
        "Subject: the files you asked for\r\n"
        f"Date: {email.utils.formatdate()}\r\n"
        f"Message-ID: <{token}@example.com>\r\n"
        f"{extra}"
    ).encode()


def with_attachment(token: str, filename: str, data: bytes) -> bytes:
    b64 = base64.encodebytes(data).replace(b"\n", b"\r\n")
    return (
        head(token, 'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b1"\r\n')
        + b"\r\n--b1\r\nContent-Type: text/plain\r\n\r\nsee attachment\r\n"
        + b'--b1\r\nContent-Type: application/octet-stream; name="'
        + filename.encode()
        + b'"\r\nContent-Transfer-Encoding: base64\r\n'
        + b'Content-Disposition: attachment; filename="'
        + filename.encode()
        + b'"\r\n\r\n'
        + b64
        + b"--b1--\r\n"
    )


def forwarded(token: str, depth: int, inner: bytes) -> bytes:
    """`inner` as a base64 attachment of a message forwarded (message/rfc822) `depth` times."""
    part = with_attachment(uuid.uuid4().hex, "payload.com", inner)
    for level in range(depth):
        boundary = f"fw{level}".encode()
        part = (
            head(uuid.uuid4().hex, f'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="fw{level}"\r\n')
            + b"\r\n--"
            + boundary
            + b"\r\nContent-Type: text/plain\r\n\r\nforwarded\r\n--"
            + boundary
            + b"\r\nContent-Type: message/rfc822\r\n\r\n"
            + part
            + b"\r\n--"
            + boundary
            + b"--\r\n"
        )
    return head(token, "MIME-Version: 1.0\r\nContent-Type: message/rfc822\r\n") + b"\r\n" + part


Build = Callable[[str], bytes]

# attack -> (message builder, the clamd limit it must hit)
LIMITS: dict[str, tuple[Build, str]] = {
    "eicar_15_zips_deep": (lambda t: with_attachment(t, "a.zip", nested(15, EICAR)), "MaxRecursion"),
    "eicar_30_zips_deep": (lambda t: with_attachment(t, "a.zip", nested(30, EICAR)), "MaxRecursion"),
    "clean_20_zips_deep": (lambda t: with_attachment(t, "a.zip", nested(20, unique())), "MaxRecursion"),
    "eicar_behind_200mb_zeros_in_one_member": (
        lambda t: with_attachment(t, "backup.zip", zeros_member(200 * MiB, EICAR)),
        "MaxScanSize",
    ),
    "eicar_behind_150mb_zeros_in_a_zip_in_a_zip": (
        lambda t: with_attachment(t, "backup.zip", zipped([("inner.zip", zeros_member(150 * MiB, EICAR))])),
        "MaxScanSize",
    ),
    "eicar_after_8_members_of_24mb": (
        lambda t: with_attachment(t, "backup.zip", zeros_members(8, 24 * MiB, EICAR)),
        "MaxScanSize",
    ),
    "clean_200mb_of_zeros": (
        lambda t: with_attachment(t, "backup.zip", zeros_member(200 * MiB, unique())),
        "MaxScanSize",
    ),
    "eicar_behind_200mb_zeros_gzip": (
        lambda t: with_attachment(t, "dump.gz", gzipped_zeros(200 * MiB, EICAR)),
        "MaxScanSize",
    ),
    "clean_10001_files": (lambda t: with_attachment(t, "many.zip", many_files(10_001, unique())), "MaxFiles"),
    "eicar_forwarded_20_times": (lambda t: forwarded(t, 20, EICAR), "MaxRecursion"),
}


@pytest.fixture(scope="module", params=["tcp", "unix"])
def av(request: pytest.FixtureRequest, mail_stack: MailStack, clamd: Clamd) -> Iterator[QuorumProcess]:
    """Quorum with clamav alone, reached over TCP (INSTREAM) or its unix socket (FILDES)."""
    address = clamd.address if request.param == "tcp" else str(clamd.socket_path)
    body = '[policy]\non_virus = "reject"\non_engine_failure = "tempfail"\n\n'
    body += engine_table("clamav", "clamav", address=address, timeout="60s")
    yield mail_stack.start(body, milter_extra="scan_deadline = 90\n")


def submit(stack: MailStack, raw: bytes) -> SendResult:
    return send(stack.postfix.smtp_port, "alice@example.com", ["bob@example.org"], raw, timeout=120)


def not_delivered(stack: MailStack, token: str) -> None:
    stack.postfix.wait_queue_empty(timeout=30)
    assert not [m for m in stack.sink.messages() if token.encode() in m.raw]


def test_the_shipped_clamd_config_alerts_on_its_limits() -> None:
    """The harness, the compose image (Dockerfile COPY) and operators start from this file."""
    conf = (ENGINE_DIR / "clamd.conf").read_text()
    settings = dict(re.findall(r"(?m)^(\w+)\s+(\S+)", conf))
    assert settings["AlertExceedsMax"] == "yes"
    size = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    mfs, mss = (int(settings[k][:-1]) * size[settings[k][-1]] for k in ("MaxFileSize", "MaxScanSize"))
    assert mfs > mss, "MaxFileSize must exceed MaxScanSize (clamd cuts a ZIP member at MaxFileSize silently)"
    dockerfile = (ENGINE_DIR / "Dockerfile").read_text()
    assert "COPY engines/clamav/clamd.conf " in dockerfile


@pytest.mark.parametrize("attack", list(LIMITS))
def test_content_past_a_clamd_limit_is_refused_not_clean(av: QuorumProcess, mail_stack: MailStack, attack: str) -> None:
    build, limit = LIMITS[attack]
    token = uuid.uuid4().hex
    raw = build(token)
    assert len(raw) < 4 * MiB  # small on the wire, and within FDPASS_MAX on the unix socket
    before = len(av.message_lines())
    result = submit(mail_stack, raw)
    assert result.code == 554, (attack, result)
    assert result.text.startswith("5.7.1") and limit in result.text, (attack, result)
    not_delivered(mail_stack, token)
    lines = av.message_lines()[before:]
    assert len(lines) == 1, lines
    assert "action=reject" in lines[0] and "engines=clamav:infected(limits-exceeded)" in lines[0], lines[0]
    assert f"Heuristics.Limits.Exceeded.{limit}" in lines[0], lines[0]
    assert "Traceback" not in av.log_text()


@pytest.mark.parametrize(
    ("what", "build"),
    [
        ("eicar_5_zips_deep", lambda t: with_attachment(t, "a.zip", nested(5, EICAR))),
        ("eicar_behind_20mb_zeros", lambda t: with_attachment(t, "a.zip", zeros_member(20 * MiB, EICAR))),
        ("eicar_behind_60mb_zeros_in_one_member", lambda t: with_attachment(t, "a.zip", zeros_member(60 * MiB, EICAR))),
    ],
)
def test_viruses_within_the_limits_are_still_found_by_name(
    av: QuorumProcess, mail_stack: MailStack, what: str, build: Build
) -> None:
    """Under the limits clamd scans everything: the virus is named (60 MB in one member was cut at
    the old MaxFileSize 25M without any alert)."""
    token = uuid.uuid4().hex
    result = submit(mail_stack, build(token))
    assert result.code == 554 and "Eicar-Test-Signature" in result.text, (what, result)
    not_delivered(mail_stack, token)


@pytest.mark.parametrize(
    ("what", "build"),
    [
        ("clean_5_zips_deep", lambda t: with_attachment(t, "a.zip", nested(5, unique()))),
        ("clean_20mb_of_zeros", lambda t: with_attachment(t, "a.zip", zeros_member(20 * MiB, unique()))),
        ("clean_3_members_of_24mb", lambda t: with_attachment(t, "a.zip", zeros_members(3, 24 * MiB, unique()))),
        ("clean_2000_files", lambda t: with_attachment(t, "a.zip", many_files(2000, unique()))),
        ("clean_forwarded_5_times", lambda t: forwarded(t, 5, unique())),
    ],
)
def test_ordinary_archives_within_the_limits_stay_clean(
    av: QuorumProcess, mail_stack: MailStack, what: str, build: Build
) -> None:
    """No false alarm: archives a real correspondent sends are scanned to the end and delivered."""
    token = uuid.uuid4().hex
    result = submit(mail_stack, build(token))
    assert result.accepted, (what, result)
    msg = delivered(mail_stack.sink, token)
    assert msg.header("X-Quorum-Verdict") == "clean", (what, msg.header("X-Quorum-Verdict"))
    assert engines_header(msg)["clamav"] == "clean"
