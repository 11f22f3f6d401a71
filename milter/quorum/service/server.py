"""Run libmilter in this process (the worker). Control commands arrive on a pipe from the
supervising parent, because libmilter's own signal thread owns SIGHUP/SIGTERM/SIGINT."""

from __future__ import annotations

import grp
import logging
import os
import pwd
import signal
import socket
import stat
import sys
import threading
from pathlib import Path
from typing import Any, BinaryIO

import Milter

from quorum import metrics
from quorum.service.app import App, Composer
from quorum.service.pool import NUDGER
from quorum.service.privileges import PrivilegeError, check_identity, drop_privileges
from quorum.service.session import ACTIONS, QuorumMilter
from quorum.service.supervisor import EXIT_BIND

log = logging.getLogger("quorum.service")
# pymilter's C module, reached through Milter: a bare `import milter` would resolve to this
# repository's source root for type checkers.
milter: Any = Milter.milter


def socket_spec(spec: str) -> tuple[str, str]:
    """('inet'|'inet6'|'unix', rest) from a libmilter socket spec."""
    kind, _, rest = spec.partition(":")
    return ("unix" if kind == "local" else kind), rest


def tcp_port(spec: str) -> int | None:
    kind, rest = socket_spec(spec)
    return int(rest.split("@", 1)[0]) if kind in ("inet", "inet6") else None


def _register() -> None:
    """Flags and callbacks; `callbacks` guards each one against out-of-sequence or undecodable commands."""
    from quorum.service import callbacks

    milter.set_flags(ACTIONS)
    callbacks.install(milter)


def set_listener_nodelay(port: int) -> int:
    """Set TCP_NODELAY on libmilter's listening socket; accepted sockets inherit it on Linux.

    libmilter leaves Nagle on: Postfix's small milter commands then wait on delayed ACKs
    (~80 ms per message). Returns how many listening sockets were changed.
    """
    changed = 0
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        try:
            if not stat.S_ISSOCK(os.fstat(fd).st_mode):
                continue
            dup = socket.socket(fileno=os.dup(fd))
        except OSError:
            continue
        with dup:
            if dup.family not in (socket.AF_INET, socket.AF_INET6) or dup.type != socket.SOCK_STREAM:
                continue
            try:
                listening = dup.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
                bound_port = dup.getsockname()[1]
            except OSError:
                continue
            if listening and bound_port == port:
                dup.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                changed += 1
    return changed


def _secure_unix(path: str, app: App) -> None:
    """Mode and group of the socket so Postfix's smtpd can reach it; owned by the worker's user,
    which must still connect to it after dropping root (see `_stop_listener`)."""
    m = app.config.milter
    uid = pwd.getpwnam(m.user).pw_uid if m.user and os.geteuid() == 0 else -1
    gid = grp.getgrnam(m.socket_group).gr_gid if m.socket_group else -1
    if uid != -1 or gid != -1:
        os.chown(path, uid, gid)
    os.chmod(path, m.socket_mode if m.socket_mode is not None else 0o660)


def serve(app: App, control: BinaryIO | None = None) -> int:
    """Listen and serve until told to stop; then wait (bounded) for sessions in flight."""
    m = app.config.milter
    QuorumMilter.app = app
    Milter.factory = QuorumMilter
    _register()
    kind, rest = socket_spec(m.socket)
    if kind == "unix":
        Path(rest).parent.mkdir(parents=True, exist_ok=True)
    milter.setconn(m.socket)
    milter.setbacklog(256)
    from quorum.service import callbacks

    milter.register(m.name, data=callbacks.data, negotiate=Milter.negotiate_callback)
    try:
        milter.opensocket(True)
    except milter.error as exc:
        log.error("cannot listen on %s: %s", m.socket, exc)
        return EXIT_BIND
    port = tcp_port(m.socket)
    if port is not None and set_listener_nodelay(port) == 0:
        log.warning("could not set TCP_NODELAY on the milter socket; expect ~80 ms per message")
    try:
        if kind == "unix":
            _secure_unix(rest, app)
        if m.metrics_listen:
            metrics.serve(m.metrics_listen)
        drop_privileges(m.user)  # everything that needs root is bound by now
    except (OSError, KeyError, PrivilegeError) as exc:
        log.error("cannot secure the socket, open the metrics listener or drop privileges: %s", exc)
        return 2
    if control is not None and not die_with_parent():
        log.error("the supervising quorum process is gone; exiting")
        return 1
    if control is not None:
        threading.Thread(target=_control_loop, args=(app, control), name="quorum-control", daemon=True).start()
    log.info("listening on %s; engines: %s", m.socket, ", ".join(r.name for r in app.pipeline.runners) or "none")
    # A long callback (end of message on a slow engine) must not leave another session unserved
    # in libmilter's pool of workers: see quorum.service.pool.
    NUDGER.start(lambda: _connect_once(m.socket))
    try:
        milter.main()
    finally:
        NUDGER.stop()
        app.close()
    log.info("stopped")
    return 0


def die_with_parent() -> bool:
    """Ask the kernel to SIGKILL this worker if its supervisor dies (a SIGKILLed `quorum run` must
    not leave an orphan holding the socket: the next `quorum run` could not bind, and Postfix's
    `default_action = tempfail` answers 4xx for the sessions cut). Set after the privilege drop,
    which clears it. False if the parent is already gone."""
    parent = os.getppid()
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        log.warning("cannot tie the worker's life to the supervisor (prctl unavailable)")
    return parent != 1 and os.getppid() == parent


def _control_loop(app: App, control: BinaryIO) -> None:
    """Commands from the supervisor: `reload`, `stop`. EOF (parent gone) means stop."""
    for raw in control:
        command = raw.decode("ascii", "replace").strip()
        if command == "reload":
            app.reload()
        elif command == "stop":
            break
        elif command:
            log.warning("unknown control command %r", command)
    timeout = app.config.milter.stop_timeout
    log.info("stopping: no new connections, waiting up to %.0fs for sessions in flight", timeout)
    if not app.drain(timeout):
        log.warning("stopping with %d session(s) still in flight", app.active_sessions)
    # Only now: Debian's libmilter (workers pool) stops reading open connections on smfi_stop().
    _stop_listener(app.config.milter.socket)


def _stop_listener(spec: str) -> None:
    """`milter.stop()` waits for libmilter's listener, which holds its lock in a select() that
    times out only every 5 s (MI_CHK_TIME) unless a connection arrives. Poke the socket while
    stop() waits, so a stop (and every restart) takes milliseconds instead of up to 5 s."""
    done = threading.Event()

    def poke() -> None:
        while not done.wait(0.05):
            _connect_once(spec)

    threading.Thread(target=poke, name="quorum-stop-poke", daemon=True).start()
    try:
        milter.stop()
    finally:
        done.set()


def _connect_once(spec: str) -> None:
    kind, rest = socket_spec(spec)
    try:
        if kind == "unix":
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(1.0)
                s.connect(rest)
            return
        port, _, host = rest.partition("@")
        host = host.strip("[]")
        if host in ("", "0.0.0.0", "::"):
            host = "::1" if kind == "inet6" else "127.0.0.1"
        with socket.create_connection((host, int(port)), timeout=1.0):
            pass
    except (OSError, ValueError):
        pass  # the listener then notices the stop within 5 s on its own


def main_worker(config_path: str | None, composer: Composer) -> int:
    """The worker process (`python -m quorum.worker [CONFIG]`): load, drop privileges, serve."""
    from quorum.config import ConfigError
    from quorum.config.loader import DEFAULT_CONFIG
    from quorum.logs import setup_logging
    from quorum.message import sweep_stale_spools

    try:
        config = composer.load_config(config_path or DEFAULT_CONFIG)
    except ConfigError as exc:
        for p in exc.problems:
            print(f"quorum: {p}", file=sys.stderr)
        return 2
    setup_logging(config.milter.log_level)
    try:
        check_identity(config.milter.user)
    except PrivilegeError as exc:
        print(f"quorum: {exc}", file=sys.stderr)
        return 2
    for w in config.warnings:
        log.warning("config: %s", w)
    swept = sweep_stale_spools(config.milter.tmpdir)
    if swept:
        log.info("removed %d stale message body file(s) from the spool directory", swept)
    app = App(config, composer)
    return serve(app, sys.stdin.buffer)
