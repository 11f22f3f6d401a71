"""Message parsing (`Message.from_bytes`) and the body spool (memory, then a private temp file)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from quorum.message import BodySpool, Envelope, Header, Message, crlf_value, printable

RAW = (
    b"From: Alice <alice@example.com>\n"
    b"To: Bob <bob@example.org>\n"
    b"Subject: a folded\n"
    b"\tsubject line\n"
    b"X-Empty:\n"
    b"\n"
    b"Body line one\n"
    b"\n"
    b"Body after a blank line\n"
)


def spool_files(tmp_path: Path) -> list[Path]:
    return sorted(tmp_path.glob("quorum-body-*"))


# --- Message.from_bytes -----------------------------------------------------------------------


def test_from_bytes_keeps_raw_header_values_and_uses_crlf() -> None:
    msg = Message.from_bytes(RAW)
    assert [h.name for h in msg.headers] == ["From", "To", "Subject", "X-Empty"]
    assert msg.headers[0].raw_value == b" Alice <alice@example.com>"
    assert msg.headers[2].raw_value == b" a folded\r\n\tsubject line"
    assert msg.headers[2].value == "a folded\tsubject line"  # RFC 5322 unfolding removes only the CRLF
    assert msg.headers[3].raw_value == b""
    assert msg.raw() == RAW.replace(b"\n", b"\r\n")
    assert msg.size == len(msg.raw())
    assert msg.body.size == len(b"Body line one\r\n\r\nBody after a blank line\r\n")


def test_crlf_input_is_unchanged() -> None:
    raw = RAW.replace(b"\n", b"\r\n")
    msg = Message.from_bytes(raw)
    assert msg.raw() == raw
    assert b"".join(msg.chunks(7)) == raw
    assert msg.header_bytes().endswith(b"subject line\r\nX-Empty:\r\n\r\n")


def test_header_value_unfolds_for_display() -> None:
    h = Header("Subject", b" one\r\n two\r\n\tthree")
    assert h.value == "one two\tthree"
    assert h.to_bytes() == b"Subject: one\r\n two\r\n\tthree\r\n"


def test_non_utf8_header_bytes_never_raise() -> None:
    raw = b"Subject: Caf\xe9 \xff\r\nX-Folded: caf\xe9\r\n cr\xe8me\r\n\r\nbody \x80\r\n"
    msg = Message.from_bytes(raw)
    subject = msg.get_headers("subject")[0]
    assert subject.raw_value == b" Caf\xe9 \xff"
    assert "Caf" in subject.value  # surrogate-escaped, not an exception
    assert printable(subject.value).isascii()
    assert msg.get_headers("x-folded")[0].value.startswith("caf")
    assert msg.raw() == raw  # a byte-exact round trip


def test_8bit_header_name_is_not_a_header_like_postfix() -> None:
    """Postfix's is_header() takes only ASCII non-control names; such a line starts the body."""
    msg = Message.from_bytes(b"Subject: hi\r\nX-\xe4: v\r\n\r\nbody\r\n")
    assert [h.name for h in msg.headers] == ["Subject"]


def test_headers_only_and_body_only() -> None:
    headers_only = Message.from_bytes(b"Subject: hi\r\nTo: x@example.org\r\n")
    assert [h.name for h in headers_only.headers] == ["Subject", "To"]
    assert headers_only.body.size == 0
    body_only = Message.from_bytes(b"just text, no header\r\nsecond line\r\n")
    assert body_only.headers == []
    assert body_only.raw().endswith(b"just text, no header\r\nsecond line\r\n")


def test_first_non_header_line_starts_the_body() -> None:
    msg = Message.from_bytes(b"Subject: hi\r\nthis is not a header\r\nX: y\r\n\r\nbody\r\n")
    assert [h.name for h in msg.headers] == ["Subject"]
    with msg.body.reader() as f:
        assert f.read() == b"this is not a header\r\nX: y\r\n\r\nbody\r\n"


def test_mbox_from_line_is_skipped() -> None:
    msg = Message.from_bytes(b"From alice@example.com Thu Jan  1 00:00:00 2026\nSubject: hi\n\nbody\n")
    assert [h.name for h in msg.headers] == ["Subject"]
    assert msg.raw() == b"Subject: hi\r\n\r\nbody\r\n"


def test_get_headers_is_case_insensitive() -> None:
    msg = Message.from_bytes(b"X-A: 1\r\nx-a: 2\r\nX-B: 3\r\n\r\n")
    assert [h.raw_value for h in msg.get_headers("X-a")] == [b" 1", b" 2"]


def test_crlf_value_restores_wire_folding() -> None:
    assert crlf_value(b" a\n\tb") == b" a\r\n\tb"
    assert crlf_value(b" a\r\n\tb") == b" a\r\n\tb"


def test_envelope_properties() -> None:
    env = Envelope(sender="Alice@Example.COM.", macros={"i": "4XyZ", "{auth_authen}": "alice"})
    assert env.queue_id == "4XyZ"
    assert env.auth_user == "alice"
    assert env.sender_domain == "example.com"
    assert Envelope(sender="").sender_domain == ""


def test_printable_is_log_safe() -> None:
    assert printable("a\r\nb\x00c") == "a??b?c"
    assert printable(b"caf\xe9".decode("utf-8", "surrogateescape")).isascii()


# --- BodySpool ---------------------------------------------------------------------------------


def test_spool_stays_in_memory_below_the_limit(tmp_path: Path) -> None:
    spool = BodySpool(memory_limit=100, tmpdir=str(tmp_path))
    spool.write(b"x" * 60)
    spool.write(b"y" * 40)
    assert not spool.on_disk and spool.size == 100
    assert spool_files(tmp_path) == []
    with spool.reader() as f:
        assert f.read() == b"x" * 60 + b"y" * 40
    spool.close()


def test_spool_moves_to_an_unnamed_temp_file_past_the_limit(tmp_path: Path) -> None:
    """Issue 17 item 11: the body file has no name from the start, so a killed worker leaves none."""
    spool = BodySpool(memory_limit=100, tmpdir=str(tmp_path))
    spool.write(b"a" * 80)
    spool.write(b"b" * 80)  # crosses the limit: everything so far goes to disk
    spool.write(b"c" * 10)
    assert spool.on_disk and spool.size == 170
    assert list(tmp_path.iterdir()) == []  # nothing to find, open or leave behind
    assert spool._file is not None
    st = os.fstat(spool._file.fileno())
    assert st.st_nlink == 0 and oct(st.st_mode & 0o777) == oct(0o600)  # private: mail content
    assert st.st_dev == tmp_path.stat().st_dev  # in the configured tmpdir
    with spool.reader() as f:
        assert f.read() == b"a" * 80 + b"b" * 80 + b"c" * 10
    spool.close()
    spool.close()  # idempotent


def test_spool_without_o_tmpfile_unlinks_the_named_file_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where the file system cannot make an unnamed file (EOPNOTSUPP), mkstemp + unlink: same result."""
    import errno

    real_open = os.open

    def no_tmpfile(path: object, flags: int, *args: object, **kwargs: object) -> int:
        if flags & getattr(os, "O_TMPFILE", 0) == getattr(os, "O_TMPFILE", -1):
            raise OSError(errno.EOPNOTSUPP, "Operation not supported")
        return real_open(path, flags, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", no_tmpfile)
    spool = BodySpool(memory_limit=10, tmpdir=str(tmp_path))
    spool.write(b"z" * 100)
    assert spool.on_disk and list(tmp_path.iterdir()) == []
    assert spool._file is not None and os.fstat(spool._file.fileno()).st_nlink == 0
    with spool.reader() as f:
        assert f.read() == b"z" * 100
    spool.close()


def test_spool_uses_the_system_temp_dir_by_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # what $TMPDIR sets
    spool = BodySpool(memory_limit=0)
    spool.write(b"q" * 10)
    assert spool._file is not None and os.fstat(spool._file.fileno()).st_dev == tmp_path.stat().st_dev
    assert list(tmp_path.iterdir()) == []
    spool.close()


def test_a_spool_in_a_missing_directory_raises_oserror(tmp_path: Path) -> None:
    spool = BodySpool(memory_limit=0, tmpdir=str(tmp_path / "gone"))
    with pytest.raises(OSError):
        spool.write(b"x")
    spool.close()


def test_a_reader_outlives_the_spool_close(tmp_path: Path) -> None:
    spool = BodySpool(memory_limit=0, tmpdir=str(tmp_path))
    spool.write(b"0123456789" * 1000)
    reader = spool.reader()
    assert reader.read(5) == b"01234"
    spool.close()
    assert reader.read() == (b"0123456789" * 1000)[5:]
    reader.close()


def test_spool_readers_are_independent(tmp_path: Path) -> None:
    data = os.urandom(50_000)
    spool = BodySpool(memory_limit=1000, tmpdir=str(tmp_path))
    for i in range(0, len(data), 4096):
        spool.write(data[i : i + 4096])
    first, second = spool.reader(), spool.reader()
    got1, got2 = bytearray(), bytearray()
    while True:  # interleaved reads of different sizes
        a, b = first.read(1000), second.read(3000)
        got1 += a
        got2 += b
        if not a and not b:
            break
    first.close()
    second.close()
    assert bytes(got1) == data and bytes(got2) == data
    spool.close()


def test_message_readers_are_independent_and_leave_no_file(tmp_path: Path) -> None:
    spool = BodySpool(memory_limit=10, tmpdir=str(tmp_path))
    spool.write(b"a long body that will not fit in ten bytes\r\n")
    msg = Message(Envelope(), [Header("Subject", b" hi")], spool)
    one, two = msg.open(), msg.open()
    assert one.read(5) == b"Subje"
    assert two.read() == b"Subject: hi\r\n\r\na long body that will not fit in ten bytes\r\n"
    assert one.read() == b"ct: hi\r\n\r\na long body that will not fit in ten bytes\r\n"
    one.close()
    two.close()
    assert msg.body.on_disk and spool_files(tmp_path) == []
    msg.close()
    assert spool_files(tmp_path) == []


@pytest.mark.parametrize("limit", [0, 1, 1 << 20])
def test_from_bytes_spools_to_disk_past_the_memory_limit(limit: int) -> None:
    raw = b"Subject: big\r\n\r\n" + b"0123456789" * 1000
    msg = Message.from_bytes(raw, memory_limit=limit)
    try:
        assert msg.body.on_disk == (limit < 10_000)
        assert msg.raw() == raw
    finally:
        msg.close()


def test_stale_named_spool_files_are_swept_fresh_and_foreign_ones_kept(tmp_path: Path) -> None:
    """Bodies of older releases (named `quorum-body-*` files) left by a killed worker are removed
    at worker start; a fresh one (a fallback file in its instant between mkstemp and unlink) and
    files of other names are kept."""
    import os
    import time

    from quorum.message import SPOOL_PREFIX, sweep_stale_spools

    old = tmp_path / f"{SPOOL_PREFIX}abc"
    old.write_bytes(b"body")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    fresh = tmp_path / f"{SPOOL_PREFIX}def"
    fresh.write_bytes(b"body")
    other = tmp_path / "other-file"
    other.write_bytes(b"x")
    os.utime(other, (time.time() - 7200, time.time() - 7200))
    assert sweep_stale_spools(str(tmp_path)) == 1
    assert not old.exists() and fresh.exists() and other.exists()
    assert sweep_stale_spools(str(tmp_path / "missing")) == 0
