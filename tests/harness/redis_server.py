"""Redis on loopback: a single server, a 3-master cluster, and a Sentinel setup (engines/redis)."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path

import redis

from .dns import stop_service
from .ports import free_port, wait_for_port_closed
from .procs import Service

ENGINE_DIR = Path(__file__).resolve().parents[2] / "engines" / "redis"


def _render(template: str, values: Mapping[str, str], extra: Mapping[str, str] | None = None) -> str:
    text = (ENGINE_DIR / template).read_text()
    for key, value in values.items():
        text = text.replace(f"@{key}@", value)
    return text + "".join(f"{key} {value}\n" for key, value in (extra or {}).items())


def _wait(predicate: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except (redis.RedisError, OSError):
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{what} after {timeout:.0f}s")


class RedisServer:
    """redis-server on 127.0.0.1:port from engines/redis/redis.conf plus `extra_conf` directives."""

    def __init__(self, workdir: Path, port: int | None = None, extra_conf: Mapping[str, str] | None = None) -> None:
        self.workdir = Path(workdir)
        self.port = port or free_port()
        self.extra_conf = dict(extra_conf or {})
        self.service = Service("redis", self.workdir)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)

    def _ping(self) -> bool:
        with self.client() as c:
            return bool(c.ping())

    def start(self, attempts: int = 3) -> RedisServer:
        """Start; a port taken meanwhile (free_port() only says it was free a moment ago) is
        replaced by a fresh one, for the node's port and its cluster bus port alike."""
        for attempt in range(attempts):
            conf = self.workdir / "redis.conf"
            values = {"BIND": "127.0.0.1", "PORT": str(self.port), "DIR": str(self.workdir)}
            conf.write_text(_render("redis.conf", values, self.extra_conf))
            try:
                self.service.spawn(["redis-server", str(conf)], ready=self._ping, timeout=30)
                return self
            except RuntimeError as exc:
                if attempt + 1 == attempts or "Address already in use" not in self.service.log_tail():
                    raise
                print(f"redis on {self.port}: {exc.__class__.__name__}, retrying on a fresh port")
                (self.workdir / "nodes.conf").unlink(missing_ok=True)
                self.port = free_port()
                if "cluster-port" in self.extra_conf:
                    self.extra_conf["cluster-port"] = str(free_port())
        return self

    def stop(self) -> None:
        stop_service(self.service)

    def kill(self) -> None:
        """SIGKILL (fault tests); the port is closed when this returns."""
        self.service.signal(signal.SIGKILL)
        stop_service(self.service)
        wait_for_port_closed(self.port)

    def restart(self) -> None:
        """Stop and start again on the same port (data is lost unless persistence is configured)."""
        self.stop()
        wait_for_port_closed(self.port)
        self.start()

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class RedisCluster:
    """`masters` cluster-enabled nodes joined with `redis-cli --cluster create` (no replicas)."""

    def __init__(self, workdir: Path, masters: int = 3) -> None:
        self.workdir = Path(workdir)
        self.nodes = [
            RedisServer(
                self.workdir / f"node{i}",
                extra_conf={
                    "cluster-enabled": "yes",
                    "cluster-config-file": "nodes.conf",
                    "cluster-node-timeout": "2000",
                    "cluster-port": str(free_port()),  # bus port; the default port+10000 may be taken
                },
            )
            for i in range(masters)
        ]

    @property
    def startup_nodes(self) -> list[tuple[str, int]]:
        return [("127.0.0.1", n.port) for n in self.nodes]

    @property
    def urls(self) -> list[str]:
        return [f"redis://127.0.0.1:{n.port}" for n in self.nodes]

    def _state_ok(self) -> bool:
        for node in self.nodes:
            with node.client() as c:
                info = c.execute_command("CLUSTER", "INFO")
                text = info.decode() if isinstance(info, bytes) else str(info)
                if "cluster_state:ok" not in text:
                    return False
        return True

    def start(self) -> RedisCluster:
        try:
            for node in self.nodes:
                node.start()
            hosts = [f"127.0.0.1:{n.port}" for n in self.nodes]
            subprocess.run(
                ["redis-cli", "--cluster", "create", *hosts, "--cluster-replicas", "0", "--cluster-yes"],
                check=True,
                capture_output=True,
                timeout=60,
            )
            _wait(self._state_ok, "redis cluster_state is not ok")
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> RedisCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class RedisSentinel:
    """A master, optionally one replica, and `sentinels` redis-sentinel processes monitoring it (quorum 1)."""

    def __init__(self, workdir: Path, sentinels: int = 1, replica: bool = True, service_name: str = "quorum") -> None:
        self.workdir = Path(workdir)
        self.service_name = service_name
        # No 5 s wait for more replicas before the initial (diskless) sync.
        self.master = RedisServer(self.workdir / "master", extra_conf={"repl-diskless-sync-delay": "0"})
        self.replica = (
            RedisServer(self.workdir / "replica", extra_conf={"replicaof": f"127.0.0.1 {self.master.port}"})
            if replica
            else None
        )
        self.sentinel_ports = [free_port() for _ in range(sentinels)]
        self._sentinel_services = [Service("sentinel", self.workdir / f"sentinel{i}") for i in range(sentinels)]

    @property
    def sentinels(self) -> list[tuple[str, int]]:
        return [("127.0.0.1", port) for port in self.sentinel_ports]

    def master_address(self, sentinel_port: int | None = None) -> tuple[str, int] | None:
        """What a sentinel reports for the service (`SENTINEL get-master-addr-by-name`)."""
        port = sentinel_port or self.sentinel_ports[0]
        with redis.Redis(host="127.0.0.1", port=port, socket_timeout=5, decode_responses=True) as c:
            addr = c.execute_command("SENTINEL", "get-master-addr-by-name", self.service_name)
        return (str(addr[0]), int(addr[1])) if addr else None

    def _replica_linked(self) -> bool:
        assert self.replica is not None
        with self.replica.client() as c:
            return c.info("replication").get("master_link_status") == "up"

    def _monitoring(self, sentinel_port: int) -> bool:
        return self.master_address(sentinel_port) == ("127.0.0.1", self.master.port)

    def start(self) -> RedisSentinel:
        try:
            self.master.start()
            if self.replica is not None:
                self.replica.start()
                _wait(self._replica_linked, "redis replica not linked to its master")
            for port, svc in zip(self.sentinel_ports, self._sentinel_services, strict=True):
                conf = svc.workdir / "sentinel.conf"
                values = {
                    "BIND": "127.0.0.1",
                    "PORT": str(port),
                    "DIR": str(svc.workdir),
                    "SERVICE": self.service_name,
                    "MASTER_HOST": "127.0.0.1",
                    "MASTER_PORT": str(self.master.port),
                    "QUORUM": "1",
                }
                conf.write_text(_render("sentinel.conf", values))
                svc.spawn(["redis-server", str(conf), "--sentinel"], ready=partial(self._monitoring, port), timeout=30)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for svc in self._sentinel_services:
            stop_service(svc)
        if self.replica is not None:
            self.replica.stop()
        self.master.stop()

    def __enter__(self) -> RedisSentinel:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
