"""Redis on loopback: a single server, a 3-master cluster, and a Sentinel setup (engines/redis).

Each can require an ACL user and password (`auth=RedisAuth()`: the `default` user is switched off,
so a client without the password gets NOAUTH) and speak TLS only (`tls=make_tls(dir)`: a CA and a
server certificate for 127.0.0.1 made at test time; the plain port is closed). `url` then carries
the user and password (`redis://quorum:PASS@127.0.0.1:PORT/0`, `rediss://...` with TLS) and
`client()` authenticates, so tests use either without knowing which.
"""

from __future__ import annotations

import datetime
import ipaddress
import secrets
import signal
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import redis
from redis.cluster import ClusterNode
from redis.cluster import RedisCluster as ClusterClient

from .dns import stop_service
from .ports import free_port, wait_for_port_closed
from .procs import Service

ENGINE_DIR = Path(__file__).resolve().parents[2] / "engines" / "redis"


@dataclass(frozen=True)
class RedisAuth:
    """An ACL user with every right; `default` is switched off (no unauthenticated access)."""

    username: str = "quorum"
    password: str = field(default_factory=lambda: secrets.token_urlsafe(18), repr=False)

    def acl_lines(self) -> list[str]:
        return ["user default off", f"user {self.username} on >{self.password} ~* &* +@all"]

    def write_password(self, path: Path) -> Path:
        """The password in a file, as `[redis] password_file` reads it."""
        path.write_text(self.password + "\n")
        path.chmod(0o600)
        return path


@dataclass(frozen=True)
class RedisTLS:
    ca_file: Path
    cert_file: Path
    key_file: Path

    def client_kwargs(self) -> dict[str, Any]:
        return {"ssl": True, "ssl_ca_certs": str(self.ca_file)}

    def conf_lines(self) -> list[str]:
        return [
            f"tls-cert-file {self.cert_file}",
            f"tls-key-file {self.key_file}",
            f"tls-ca-cert-file {self.ca_file}",
            "tls-auth-clients optional",
        ]


def make_tls(workdir: Path, hosts: tuple[str, ...] = ("127.0.0.1", "localhost")) -> RedisTLS:
    """A throw-away CA and a server certificate (and key) for `hosts`, signed by it."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Quorum test Redis CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH, x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    tls = RedisTLS(workdir / "ca.crt", workdir / "redis.crt", workdir / "redis.key")
    tls.ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    tls.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    tls.key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    tls.key_file.chmod(0o600)
    return tls


def _render(
    template: str, values: Mapping[str, str], extra: Mapping[str, str] | None = None, lines: list[str] | None = None
) -> str:
    text = (ENGINE_DIR / template).read_text()
    for key, value in values.items():
        text = text.replace(f"@{key}@", value)
    return (
        text
        + "".join(f"{key} {value}\n" for key, value in (extra or {}).items())
        + "".join(line + "\n" for line in lines or ())
    )


def _userinfo(auth: RedisAuth | None) -> str:
    from urllib.parse import quote

    return f"{quote(auth.username, safe='')}:{quote(auth.password, safe='')}@" if auth else ""


def _cli_args(auth: RedisAuth | None, tls: RedisTLS | None) -> list[str]:
    out = ["--user", auth.username, "--pass", auth.password, "--no-auth-warning"] if auth else []
    return out + (["--tls", "--cacert", str(tls.ca_file)] if tls else [])


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

    def __init__(
        self,
        workdir: Path,
        port: int | None = None,
        extra_conf: Mapping[str, str] | None = None,
        auth: RedisAuth | None = None,
        tls: RedisTLS | None = None,
        extra_lines: list[str] | None = None,
    ) -> None:
        self.workdir = Path(workdir)
        self.port = port or free_port()
        self.extra_conf = dict(extra_conf or {})
        self.extra_lines = list(extra_lines or [])
        self.auth = auth
        self.tls = tls
        self.service = Service("redis", self.workdir)

    @property
    def url(self) -> str:
        """With credentials when the server requires them (`redis://quorum:PASS@...`)."""
        return f"{'rediss' if self.tls else 'redis'}://{_userinfo(self.auth)}127.0.0.1:{self.port}/0"

    @property
    def bare_url(self) -> str:
        """Without credentials: for `[redis] password_file` (and for tests of a missing password)."""
        user = f"{self.auth.username}@" if self.auth else ""
        return f"{'rediss' if self.tls else 'redis'}://{user}127.0.0.1:{self.port}/0"

    def client_kwargs(self) -> dict[str, Any]:
        out: dict[str, Any] = self.tls.client_kwargs() if self.tls else {}
        if self.auth:
            out.update(username=self.auth.username, password=self.auth.password)
        return out

    def client(self, **kwargs: Any) -> redis.Redis:
        """A client that authenticates (and speaks TLS) as this server requires; `kwargs` add to it."""
        options: dict[str, Any] = {"socket_timeout": 5, **self.client_kwargs(), **kwargs}
        return redis.Redis(host="127.0.0.1", port=self.port, **options)

    def cli_args(self) -> list[str]:
        """`redis-cli` arguments reaching this server (address, user, password, TLS)."""
        return ["-h", "127.0.0.1", "-p", str(self.port), *_cli_args(self.auth, self.tls)]

    def _ping(self) -> bool:
        with self.client() as c:
            return bool(c.ping())

    def start(self, attempts: int = 3) -> RedisServer:
        """Start; a port taken meanwhile (free_port() only says it was free a moment ago) is
        replaced by a fresh one, for the node's port and its cluster bus port alike."""
        for attempt in range(attempts):
            conf = self.workdir / "redis.conf"
            # With TLS the plain port is closed (port 0) and the server listens on tls-port only.
            values = {"BIND": "127.0.0.1", "PORT": "0" if self.tls else str(self.port), "DIR": str(self.workdir)}
            lines = list(self.extra_lines)
            if self.auth:
                lines += self.auth.acl_lines()
            if self.tls:
                lines += [f"tls-port {self.port}", *self.tls.conf_lines()]
            conf.write_text(_render("redis.conf", values, self.extra_conf, lines))
            conf.chmod(0o600)
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

    def __init__(
        self, workdir: Path, masters: int = 3, auth: RedisAuth | None = None, tls: RedisTLS | None = None
    ) -> None:
        self.workdir = Path(workdir)
        self.auth = auth
        self.tls = tls
        self.nodes = [
            RedisServer(
                self.workdir / f"node{i}",
                extra_conf={
                    "cluster-enabled": "yes",
                    "cluster-config-file": "nodes.conf",
                    "cluster-node-timeout": "2000",
                    "cluster-port": str(free_port()),  # bus port; the default port+10000 may be taken
                    **({"tls-cluster": "yes"} if tls else {}),
                },
                auth=auth,
                tls=tls,
            )
            for i in range(masters)
        ]

    @property
    def startup_nodes(self) -> list[tuple[str, int]]:
        return [("127.0.0.1", n.port) for n in self.nodes]

    @property
    def urls(self) -> list[str]:
        return [f"{'rediss' if self.tls else 'redis'}://{_userinfo(self.auth)}127.0.0.1:{n.port}" for n in self.nodes]

    @property
    def node_list(self) -> list[str]:
        """`[redis] cluster_nodes` for this cluster (`127.0.0.1:PORT` each)."""
        return [f"127.0.0.1:{n.port}" for n in self.nodes]

    def client_kwargs(self) -> dict[str, Any]:
        """Credentials (and TLS) for a client of any node; every node has the same ones."""
        return self.nodes[0].client_kwargs()

    def client(self, **kwargs: Any) -> ClusterClient:
        """A Cluster client (slot-aware) that authenticates like `RedisServer.client()`."""
        options: dict[str, Any] = {"socket_timeout": 5, **self.client_kwargs(), **kwargs}
        return ClusterClient(startup_nodes=[ClusterNode(h, p) for h, p in self.startup_nodes], **options)

    def cli_args(self) -> list[str]:
        """`redis-cli -c` arguments reaching this cluster through its first node."""
        return self.nodes[0].cli_args()

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
                [
                    "redis-cli",
                    *_cli_args(self.auth, self.tls),
                    "--cluster",
                    "create",
                    *hosts,
                    "--cluster-replicas",
                    "0",
                    "--cluster-yes",
                ],
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

    def __init__(
        self,
        workdir: Path,
        sentinels: int = 1,
        replica: bool = True,
        service_name: str = "quorum",
        auth: RedisAuth | None = None,
        tls: RedisTLS | None = None,
    ) -> None:
        """With `auth`, the sentinels require the same password (`requirepass`) and the replica
        and the sentinels log in to the master as that user; with `tls`, everything is TLS."""
        self.workdir = Path(workdir)
        self.service_name = service_name
        self.auth = auth
        self.tls = tls
        links = {"masteruser": auth.username, "masterauth": auth.password} if auth else {}
        tls_links = {"tls-replication": "yes"} if tls else {}
        # No 5 s wait for more replicas before the initial (diskless) sync.
        self.master = RedisServer(
            self.workdir / "master",
            extra_conf={"repl-diskless-sync-delay": "0", **links, **tls_links},
            auth=auth,
            tls=tls,
        )
        self.replica = (
            RedisServer(
                self.workdir / "replica",
                extra_conf={"replicaof": f"127.0.0.1 {self.master.port}", **links, **tls_links},
                auth=auth,
                tls=tls,
            )
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
        with redis.Redis(
            host="127.0.0.1", port=port, socket_timeout=5, decode_responses=True, **self.sentinel_kwargs()
        ) as c:
            addr = c.execute_command("SENTINEL", "get-master-addr-by-name", self.service_name)
        return (str(addr[0]), int(addr[1])) if addr else None

    def sentinel_kwargs(self) -> dict[str, Any]:
        """What a client needs for the sentinels themselves (password, TLS)."""
        out: dict[str, Any] = self.tls.client_kwargs() if self.tls else {}
        if self.auth:
            out["password"] = self.auth.password
        return out

    def master_client(self) -> redis.Redis:
        """A client of the current master (as the sentinels name it)."""
        addr = self.master_address()
        assert addr is not None
        return redis.Redis(host=addr[0], port=addr[1], socket_timeout=5, **self.master.client_kwargs())

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
                lines: list[str] = []
                if self.auth:
                    lines += [
                        f"sentinel auth-user {self.service_name} {self.auth.username}",
                        f"sentinel auth-pass {self.service_name} {self.auth.password}",
                        f"requirepass {self.auth.password}",
                        f"sentinel sentinel-pass {self.auth.password}",
                    ]
                if self.tls:
                    values["PORT"] = "0"
                    lines += [f"tls-port {port}", *self.tls.conf_lines(), "tls-replication yes"]
                conf.write_text(_render("sentinel.conf", values, lines=lines))
                conf.chmod(0o600)
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
