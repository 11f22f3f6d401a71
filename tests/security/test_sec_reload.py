"""Issue 17, items 9 and 10: `quorum reload` signals only a live `quorum run` of the same config,
the pid file is never written through a symlink, and a reload with a malformed file (an engine
`type` such as ":clamav", nan numbers) is a logged refusal: the supervisor and the running config
stay, EICAR is still refused through the real Postfix.

The pid-file cases run real processes: a recorder that writes down every SIGHUP it gets stands for
the innocent process a forged or stale pid file names."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.conftest import MailStack
from tests.harness.clamd import Clamd
from tests.harness.messages import EICAR, HAM, mail
from tests.harness.quorum import QuorumProcess, engine_table
from tests.harness.sink import delivered
from tests.harness.smtp_client import SendResult, send

RECORDER = """
import signal, sys, time
path = sys.argv[-1]
def hup(signum, frame):
    with open(path, "a") as f:
        f.write("HUP\\n")
signal.signal(signal.SIGHUP, hup)
open(path + ".ready", "w").close()
while True:
    time.sleep(0.05)
"""


class Recorder:
    """A process that records each SIGHUP in a file; `argv0` may make it look like `quorum`."""

    def __init__(self, workdir: Path, extra: list[str] | None = None, script_name: str = "recorder.py") -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.log = workdir / f"hups-{uuid.uuid4().hex[:8]}"
        script = workdir / script_name
        script.write_text(RECORDER)
        self.proc = subprocess.Popen([sys.executable, str(script), *(extra or []), str(self.log)], cwd=workdir)
        deadline = time.monotonic() + 15
        while not Path(f"{self.log}.ready").exists():
            assert time.monotonic() < deadline and self.proc.poll() is None, "recorder did not start"
            time.sleep(0.02)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def hups(self) -> int:
        time.sleep(0.3)  # a signal, if one was sent, has been handled by now
        return self.log.read_text().count("HUP") if self.log.exists() else 0

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(10)


@pytest.fixture
def recorder(tmp_path: Path) -> Iterator[Recorder]:
    r = Recorder(tmp_path / "recorder")
    yield r
    r.stop()


def write_config(tmp_path: Path, pid_file: Path) -> Path:
    config = tmp_path / "quorum.toml"
    config.write_text(f'[milter]\nsocket = "inet:9900@127.0.0.1"\npid_file = "{pid_file}"\n')
    return config


def reload_cli(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "quorum", "reload", "-c", str(config)], capture_output=True, text=True, timeout=60
    )


def refused(out: subprocess.CompletedProcess[str]) -> str:
    assert out.returncode == 1, (out.returncode, out.stdout, out.stderr)
    assert "Traceback" not in out.stderr and "sent SIGHUP" not in out.stdout
    assert "nothing was signalled" in out.stderr, out.stderr
    return out.stderr


# -- quorum reload against forged and stale pid files (item 9) ---------------------------------------


@pytest.mark.parametrize(
    ("content", "why"),
    [
        ("-1\n", "not a process id"),  # os.kill(-1, SIGHUP): every process root can signal
        ("0\n", "never a `quorum run`"),  # our own process group
        ("1\n", "not `quorum run`"),  # init
        ("-42\n", "not a process id"),  # a process group
        ("abc\n", "not a process id"),
        ("", "not a process id"),
        ("12 34\n", "not a process id"),
        ("99999999999999\n", "not a process id"),
        ("4194304\n", "not running"),  # above pid_max: no such process
    ],
)
def test_reload_refuses_a_pid_file_naming_no_quorum(tmp_path: Path, recorder: Recorder, content: str, why: str) -> None:
    pid_file = tmp_path / "quorum.pid"
    pid_file.write_text(content)
    out = refused(reload_cli(write_config(tmp_path, pid_file)))
    assert why in out, out
    assert recorder.hups() == 0


def test_reload_refuses_the_pid_of_another_program(tmp_path: Path, recorder: Recorder) -> None:
    """A stale pid file whose pid now belongs to another process: that process is not signalled."""
    pid_file = tmp_path / "quorum.pid"
    pid_file.write_text(f"{recorder.pid}\n")
    out = refused(reload_cli(write_config(tmp_path, pid_file)))
    assert f"names pid {recorder.pid}, which is not `quorum run`" in out
    assert recorder.hups() == 0


def test_reload_refuses_its_own_pid(tmp_path: Path) -> None:
    pid_file = tmp_path / "quorum.pid"
    config = write_config(tmp_path, pid_file)
    script = (
        "import os, sys\nfrom pathlib import Path\n"
        f"Path({str(pid_file)!r}).write_text(str(os.getpid()))\n"
        "from quorum.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, "reload", "-c", str(config)], capture_output=True, text=True, timeout=60
    )
    assert "never a `quorum run`" in refused(out)


def test_reload_refuses_a_pid_file_that_is_a_symlink(tmp_path: Path, recorder: Recorder) -> None:
    """Whoever can plant a link where the pid file goes could make `quorum reload` read any file."""
    target = tmp_path / "elsewhere"
    target.write_text(f"{recorder.pid}\n")
    pid_file = tmp_path / "quorum.pid"
    pid_file.symlink_to(target)
    out = refused(reload_cli(write_config(tmp_path, pid_file)))
    assert "symbolic link" in out
    assert recorder.hups() == 0


def test_reload_refuses_a_fifo_or_a_directory(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.pid"
    os.mkfifo(fifo)
    assert "not a regular file" in refused(reload_cli(write_config(tmp_path, fifo)))  # and does not block
    directory = tmp_path / "dir.pid"
    directory.mkdir()
    refused(reload_cli(write_config(tmp_path, directory)))


def test_reload_refuses_a_quorum_run_of_another_config(tmp_path: Path) -> None:
    """Two instances on one host: the pid file of one config must not reload the other."""
    other = tmp_path / "other.toml"
    other.write_text("")
    lookalike = Recorder(tmp_path / "bin", extra=["run", "-c", str(other)], script_name="quorum")
    try:
        pid_file = tmp_path / "quorum.pid"
        pid_file.write_text(f"{lookalike.pid}\n")
        out = refused(reload_cli(write_config(tmp_path, pid_file)))
        assert f"a `quorum run` of {other}" in out
        assert lookalike.hups() == 0
    finally:
        lookalike.stop()


def test_reload_signals_a_quorum_run_of_this_config(tmp_path: Path) -> None:
    """The check identifies the process by its command line: `quorum run -c THIS_FILE`, the path
    resolved in the process's own working directory."""
    pid_file = tmp_path / "quorum.pid"
    config = write_config(tmp_path, pid_file)
    (tmp_path / "bin").mkdir()
    relative = os.path.relpath(config, tmp_path / "bin")
    lookalike = Recorder(tmp_path / "bin", extra=["run", "--config", relative], script_name="quorum")
    try:
        pid_file.write_text(f"{lookalike.pid}\n")
        out = reload_cli(config)
        assert out.returncode == 0 and out.stdout.startswith(f"sent SIGHUP to {lookalike.pid}"), out
        assert lookalike.hups() == 1
    finally:
        lookalike.stop()


# -- through the real Postfix: the pid file at start, and reloads with malformed files (items 9, 10) --


def submit(stack: MailStack, body: bytes) -> tuple[str, SendResult]:
    token = uuid.uuid4().hex
    return token, send(stack.postfix.smtp_port, "alice@example.com", ["bob@example.org"], mail(token, body))


def assert_scanning(stack: MailStack) -> None:
    token, result = submit(stack, HAM)
    assert result.accepted, result
    assert delivered(stack.sink, token).header("X-Quorum-Verdict") == "clean"
    _, virus = submit(stack, EICAR)
    assert not virus.accepted and virus.code // 100 == 5 and "virus" in virus.text, virus


def wait_for_reload_outcome(quorum: QuorumProcess, before: int) -> str:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        lines = [line for line in quorum.log_text().splitlines() if "reload refused" in line or "reloaded " in line]
        if len(lines) > before:
            return lines[before]
        time.sleep(0.05)
    raise AssertionError(f"no reload outcome in the log:\n{quorum.log_text()[-3000:]}")


def outcomes(quorum: QuorumProcess) -> int:
    return sum(1 for line in quorum.log_text().splitlines() if "reload refused" in line or "reloaded " in line)


BROKEN = [  # (added to [milter], added after the engines, the key the refusal names)
    ("", '[engines.x]\ntype = ":clamav"\n', "engines.x.type"),
    ("", '[engines.x]\ntype = ".x:Y"\n', "engines.x.type"),
    ("", '[engines.x]\ntype = "os:path"\n', "engines.x.type"),
    ("", '[engines.x]\ntype = ""\n', "engines.x.type"),
    ("", '[engines.y]\ntype = "clamav"\nweight = nan\n', "engines.y.weight"),
    ("scan_deadline = nan", "", "milter.scan_deadline"),
    ('scan_deadline = "nan s"', "", "milter.scan_deadline"),
    ('socket_mode = "7777777"', "", "milter.socket_mode"),
    ("", "a = " + "[" * 3000 + "]" * 3000 + "\n", "nested too deeply"),
]


@pytest.mark.integration
@pytest.mark.parametrize("cli", [False, True], ids=["sighup", "quorum-reload"])
def test_reload_with_a_malformed_file_keeps_the_supervisor_and_the_config(
    mail_stack: MailStack, clamd: Clamd, cli: bool
) -> None:
    """Each broken file in turn: refused with the key named, the supervisor and its worker live on,
    EICAR is still refused and ham still scanned (the old config serves)."""
    body = '[policy]\non_virus = "reject"\n' + engine_table("clamav", "clamav", address=clamd.address)
    quorum = mail_stack.start(body)
    supervisor, workers = quorum.pid, quorum.worker_pids()
    assert_scanning(mail_stack)
    for milter_extra, broken, key in BROKEN:
        before = outcomes(quorum)
        quorum.milter_extra = milter_extra
        quorum.write_config(body + broken)
        if cli:
            out = subprocess.run(
                [sys.executable, "-m", "quorum", "reload", "-c", str(quorum.config_path)],
                capture_output=True,
                text=True,
                timeout=60,
            )
            # the broken file cannot be loaded by `quorum reload` either: it says so and signals nothing
            assert out.returncode == 2 and key in out.stderr and "Traceback" not in out.stderr, out
            quorum.service.signal(signal.SIGHUP)  # the operator then signals by hand
        else:
            quorum.service.signal(signal.SIGHUP)
        line = wait_for_reload_outcome(quorum, before)
        assert "reload refused, keeping the running config" in line and key in line, line
        assert quorum.service.running and quorum.pid == supervisor
        assert quorum.worker_pids() == workers
        assert_scanning(mail_stack)
    assert "Traceback" not in quorum.log_text()
    quorum.milter_extra = ""
    quorum.write_config(body)  # and a good file is taken again
    before = outcomes(quorum)
    quorum.service.signal(signal.SIGHUP)
    assert "reloaded " in wait_for_reload_outcome(quorum, before)
    assert_scanning(mail_stack)


@pytest.mark.integration
def test_quorum_run_replaces_a_pid_file_symlink_without_following_it(
    mail_stack: MailStack, clamd: Clamd, tmp_path: Path
) -> None:
    """A link planted where the pid file goes (to /etc/passwd, say) used to be written through."""
    victim = tmp_path / "victim"
    victim.write_text("root:x:0:0:root:/root:/bin/bash\n")
    body = '[policy]\non_virus = "reject"\n' + engine_table("clamav", "clamav", address=clamd.address)
    mail_stack.stop()
    quorum = QuorumProcess(tmp_path / "q", body)
    quorum.pid_file.symlink_to(victim)
    quorum.start()
    try:
        mail_stack.quorum = quorum
        mail_stack.postfix.set_milter(quorum.postfix_address)
        assert victim.read_text() == "root:x:0:0:root:/root:/bin/bash\n"
        assert not quorum.pid_file.is_symlink() and quorum.pid_file.read_text() == f"{quorum.pid}\n"
        out = subprocess.run(
            [sys.executable, "-m", "quorum", "reload", "-c", str(quorum.config_path)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0 and out.stdout.startswith(f"sent SIGHUP to {quorum.pid}"), out
        quorum.wait_for_log(r"reloaded \S+: engines clamav")
        assert_scanning(mail_stack)
    finally:
        mail_stack.stop()
    assert not quorum.pid_file.exists()  # removed at exit, the victim untouched
    assert victim.read_text() == "root:x:0:0:root:/root:/bin/bash\n"
