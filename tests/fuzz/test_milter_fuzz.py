"""A time-bounded slice of the milter-socket fuzzing (bench/fuzz_milter.py runs the long one).

A real `quorum run` with the real clamd gets random and mutated milter command sequences; then a
clean message and EICAR on a fresh connection must still be answered right, the worker must not
have restarted, no traceback may be in its log, and its memory must stay bounded.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest
from tests.fuzz import milter_fuzz as fz
from tests.harness import milter_client as mc
from tests.harness.clamd import Clamd
from tests.harness.quorum import QuorumProcess, engine_table

pytestmark = pytest.mark.integration

SEQUENCES = int(os.environ.get("QUORUM_FUZZ_SEQUENCES", "2000"))
SECONDS = float(os.environ.get("QUORUM_FUZZ_SECONDS", "60"))


@pytest.fixture(scope="module")
def quorum(tmp_path_factory: pytest.TempPathFactory, clamd: Clamd) -> Iterator[QuorumProcess]:
    body = "[policy]\n" + engine_table("clamav", "clamav", address=clamd.address)
    with QuorumProcess(tmp_path_factory.mktemp("fuzz"), body) as process:
        yield process


def test_out_of_sequence_commands_get_a_clean_451(quorum: QuorumProcess) -> None:
    """HELO or MAIL before CONNECT: libmilter calls back without a session object."""
    for early in (mc.helo(b"early.example"), mc.mail(b"<a@example.com>")):
        with mc.Connection(quorum.socket, timeout=10) as conn:
            conn.negotiate()
            reply = conn.step(early)
            assert reply is not None and reply.smtp_code == "451", reply
    assert "Traceback" not in quorum.log_text()


def test_non_utf8_helo_gets_a_clean_451(quorum: QuorumProcess) -> None:
    """pymilter decodes the HELO name as strict UTF-8 before Quorum sees it: one log line, a 451."""
    with mc.Connection(quorum.socket, timeout=10) as conn:
        conn.negotiate()
        assert conn.step(mc.connect(b"mail.example.com", b"192.0.2.1")) == mc.Reply(mc.CONTINUE, b"")
        reply = conn.step(mc.helo(b"h\xffst"))
        assert reply is not None and reply.smtp_code == "451", reply
    assert "non-UTF-8 argument" in quorum.log_text()
    assert "Traceback" not in quorum.log_text()


def test_fuzzed_sequences_leave_the_worker_healthy(quorum: QuorumProcess) -> None:
    pid = fz.wait_settled(quorum)
    assert fz.clean_and_virus(quorum.socket) == ("accepted clean", "refused 554")
    rss_before = fz.rss_kb(pid)

    stats = fz.fuzz(quorum.socket, SEQUENCES, SECONDS, seed=int(time.time()) % 10_000, threads=4)

    assert stats.sequences >= min(SEQUENCES, 200), stats
    assert fz.wait_settled(quorum) == pid, "the worker restarted"
    assert fz.clean_and_virus(quorum.socket) == ("accepted clean", "refused 554")
    report = fz.read_log(quorum.log_text())
    print(f"{stats.sequences} sequences in {stats.seconds:.0f}s {dict(stats.kinds)}; answers {dict(stats.answers)}")
    print(f"RSS {rss_before} -> {fz.rss_kb(pid)} KiB; abuse answered in one line: {dict(report.clean_warnings)}")
    assert report.restarts == 0
    assert report.tracebacks == 0 and report.bare_exceptions == 0, report.distinct
    assert fz.rss_kb(pid) < rss_before + 150 * 1024, "worker memory grew by more than 150 MiB"


def test_sequence_generator_keeps_macro_lists_paired() -> None:
    """With odd_macros=0 no macro frame libmilter will read has an odd number of strings."""
    import random

    from tests.fuzz.milter_sequences import generate, odd_macro_frames

    rng = random.Random(7)
    for _ in range(3000):
        assert not odd_macro_frames(generate(rng).data)
    assert odd_macro_frames(generate(random.Random(1), odd_macros=1.0).data)


def test_codec_round_trip() -> None:
    frame = mc.header(b"Subject", b" hi")
    assert frame == b"\x00\x00\x00\x0dLSubject\x00 hi\x00"
    assert mc.Reply(mc.ADDHEADER, b"X-A\x00 v\x00").header_edit() == (-1, b"X-A", b" v")
    assert mc.Reply(mc.CHGHEADER, b"\x00\x00\x00\x02X-A\x00\x00").header_edit() == (2, b"X-A", b"")
    assert mc.Reply(mc.REPLYCODE, b"451 4.3.0 try later\x00").smtp_code == "451"
