"""Shared fixtures: real services on 127.0.0.1, started once per test session.

Module-level tests build their own Quorum configs on top (see `mail_stack`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.harness.clamd import Clamd
from tests.harness.dns import ENGINE_ZONES, DnsServer
from tests.harness.postfix import PostfixInstance
from tests.harness.quorum import QuorumProcess
from tests.harness.redis_server import RedisAuth, RedisCluster, RedisServer
from tests.harness.rspamd import Rspamd
from tests.harness.sink import Sink
from tests.harness.spamd import Spamd


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Compose tests need podman/docker and minutes of image builds: run them only when asked."""
    if os.environ.get("QUORUM_COMPOSE_TESTS") == "1":
        return
    skip = pytest.mark.skip(reason="compose stack tests run via compose/test-stack.sh (QUORUM_COMPOSE_TESTS=1)")
    for item in items:
        if "compose" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def clamd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Clamd]:
    server = Clamd(tmp_path_factory.mktemp("clamd")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def engines_dns(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DnsServer]:
    """An authoritative server for the test domains, so rspamd never waits on an unreachable resolver."""
    server = DnsServer(tmp_path_factory.mktemp("engines-dns"), ENGINE_ZONES).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def rspamd(tmp_path_factory: pytest.TempPathFactory, engines_dns: DnsServer) -> Iterator[Rspamd]:
    server = Rspamd(tmp_path_factory.mktemp("rspamd"), engines_dns.port).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def spamd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Spamd]:
    server = Spamd(tmp_path_factory.mktemp("spamd")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def redis_single(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A single Redis for one test module (the Redis-backed features test single and Cluster alike).

    It requires an ACL user and password (the `default` user is off, so a client without them gets
    NOAUTH): use `server.url` (it carries them), `server.client()` or `server.cli_args()`."""
    with RedisServer(tmp_path_factory.mktemp("redis"), auth=RedisAuth()) as server:
        yield server


@pytest.fixture(scope="module")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    """A 3-master Redis Cluster for one test module, with an ACL user and password like `redis_single`
    (`cl.urls`, `node.client()`, `cl.client_kwargs()` for a cluster client)."""
    with RedisCluster(tmp_path_factory.mktemp("cluster"), auth=RedisAuth()) as cl:
        yield cl


@pytest.fixture(scope="module")
def sink(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sink]:
    server = Sink(tmp_path_factory.mktemp("sink"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def postfix(tmp_path_factory: pytest.TempPathFactory, sink: Sink) -> Iterator[PostfixInstance]:
    instance = PostfixInstance(tmp_path_factory.mktemp("postfix"), sink.port)
    instance.start()
    yield instance
    instance.stop()


class MailStack:
    """Postfix -> Quorum (with the given config body) -> sink, for one test module."""

    def __init__(self, workdir: Path, postfix: PostfixInstance, sink: Sink) -> None:
        self.workdir = workdir
        self.postfix = postfix
        self.sink = sink
        self.quorum: QuorumProcess | None = None

    def start(self, body: str, unix: bool = False, milter_extra: str = "") -> QuorumProcess:
        self.stop()
        n = len(list(self.workdir.glob("quorum-*")))
        self.quorum = QuorumProcess(self.workdir / f"quorum-{n}", body, unix=unix, milter_extra=milter_extra).start()
        self.postfix.set_milter(self.quorum.postfix_address)
        self.sink.clear()
        return self.quorum

    def stop(self) -> None:
        if self.quorum is not None:
            self.quorum.stop()
            self.quorum = None


@pytest.fixture(scope="module")
def mail_stack(tmp_path_factory: pytest.TempPathFactory, postfix: PostfixInstance, sink: Sink) -> Iterator[MailStack]:
    stack = MailStack(tmp_path_factory.mktemp("stack"), postfix, sink)
    yield stack
    stack.stop()


_skipped_integration: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and "integration" in report.keywords:
        _skipped_integration.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """With QUORUM_REQUIRE_INTEGRATION=1 (./run.sh test, CI) a skipped integration test fails the run."""
    if os.environ.get("QUORUM_REQUIRE_INTEGRATION") == "1" and _skipped_integration:
        print(f"\nFAILED: {len(_skipped_integration)} integration test(s) were skipped:")
        for nodeid in _skipped_integration:
            print(f"  {nodeid}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
