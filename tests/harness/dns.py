"""An authoritative DNS server (NSD) on loopback, serving zones given as text."""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

from .ports import free_port, port_open
from .procs import Service

_serials = itertools.count(int(time.time()) % 1_000_000_000)


def _group_alive(pgid: int) -> bool:
    """Whether a live (non-zombie) process is in process group `pgid`.

    Zombies are skipped: orphaned workers are reaped by init, which can take a second here.
    """
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat_file.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def stop_service(service: Service, timeout: float = 10.0) -> None:
    """`service.stop()`, then wait until every process of its group (forked workers) is gone.

    Shared by the engine harnesses; candidate for `procs.Service.stop` itself.
    """
    pgid = service.proc.pid if service.proc is not None else None
    service.stop(timeout)
    if pgid is None:
        return
    deadline = time.monotonic() + timeout
    while _group_alive(pgid):
        if time.monotonic() > deadline:
            try:
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            return
        time.sleep(0.05)


def txt_rdata(value: str) -> str:
    """A TXT rdata: `value` quoted and split into <=255-byte character-strings (DKIM keys)."""
    raw = value.encode()
    chunks = [raw[i : i + 255] for i in range(0, len(raw), 255)] or [b""]
    parts = []
    for chunk in chunks:
        text = chunk.decode(errors="surrogateescape")
        parts.append('"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"')
    return " ".join(parts)


def zone_text(
    origin: str,
    records: Iterable[tuple[str, str, str]],
    ttl: int = 300,
    serial: int | None = None,
) -> str:
    """Zone file text for `origin` with SOA/NS boilerplate plus `records` (name, type, rdata).

    Names are relative to the origin (`@` for the apex) or absolute with a trailing dot.
    TXT rdata is given unquoted and gets quoted/split here unless it already starts with `"`.
    """
    origin = origin.rstrip(".") + "."
    serial = next(_serials) if serial is None else serial
    lines = [
        f"$ORIGIN {origin}",
        f"$TTL {ttl}",
        f"@ IN SOA ns1.{origin} hostmaster.{origin} {serial} 3600 600 86400 60",
        f"@ IN NS ns1.{origin}",
    ]
    records = list(records)
    if not any(name == "ns1" and rtype.upper() in ("A", "AAAA") for name, rtype, _ in records):
        lines.append("ns1 IN A 127.0.0.1")
    for name, rtype, rdata in records:
        rtype = rtype.upper()
        if rtype in ("TXT", "SPF") and not rdata.startswith('"'):
            rdata = txt_rdata(rdata)
        lines.append(f"{name} IN {rtype} {rdata}")
    return "\n".join(lines) + "\n"


class DnsServer:
    """NSD authoritative for `zones` (zone name -> zone file text) on 127.0.0.1:port, UDP and TCP."""

    def __init__(self, workdir: Path, zones: Mapping[str, str], port: int | None = None) -> None:
        self.workdir = Path(workdir)
        self.zones = dict(zones)
        self.port = port or free_port()
        self.service = Service("nsd", self.workdir)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _write_config(self) -> Path:
        zdir = self.workdir / "zones"
        shutil.rmtree(zdir, ignore_errors=True)
        zdir.mkdir(parents=True)
        w = self.workdir
        conf = [
            "server:",
            f"    ip-address: 127.0.0.1@{self.port}",
            f"    port: {self.port}",
            "    do-ip6: no",
            '    username: ""',
            '    chroot: ""',
            '    database: ""',
            f'    zonesdir: "{zdir}"',
            f'    zonelistfile: "{w}/zone.list"',
            f'    xfrdfile: "{w}/xfrd.state"',
            f'    xfrdir: "{w}"',
            f'    pidfile: "{w}/nsd.pid"',
            "    server-count: 1",
            "    zonefiles-write: 0",
            "    hide-version: yes",
            "    verbosity: 1",
            "remote-control:",
            "    control-enable: no",
        ]
        for i, (name, text) in enumerate(sorted(self.zones.items())):
            fname = f"zone{i}.zone"
            (zdir / fname).write_text(text)
            conf += ["zone:", f"    name: {name.rstrip('.')}.", f"    zonefile: {fname}"]
        path = w / "nsd.conf"
        path.write_text("\n".join(conf) + "\n")
        return path

    def _ready(self) -> bool:
        import dns.message
        import dns.query

        if not port_open(self.port):
            return False
        for name in self.zones:
            q = dns.message.make_query(name.rstrip(".") + ".", "SOA")
            if not dns.query.udp(q, "127.0.0.1", port=self.port, timeout=0.5).answer:
                return False
        return True

    def start(self) -> DnsServer:
        conf = self._write_config()
        self.service.spawn(["nsd", "-d", "-c", str(conf)], ready=self._ready, timeout=30)
        return self

    def stop(self) -> None:
        stop_service(self.service)

    def restart_with(self, zones: Mapping[str, str]) -> None:
        """Serve `zones` instead, on the same port (NSD is restarted: ~0.3 s)."""
        self.stop()
        self.zones = dict(zones)
        self.start()

    def __enter__(self) -> DnsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# The zones rspamd needs so it never waits on an unreachable resolver (test domains, their MX, a PTR).
ENGINE_ZONES = {
    "example.com": zone_text(
        "example.com",
        [
            ("@", "A", "192.0.2.1"),
            ("@", "MX", "10 mail.example.com."),
            ("mail", "A", "192.0.2.1"),
            ("@", "TXT", "v=spf1 ip4:192.0.2.0/24 -all"),
        ],
    ),
    "example.org": zone_text("example.org", [("@", "MX", "10 mail.example.org."), ("mail", "A", "192.0.2.2")]),
    "2.0.192.in-addr.arpa": zone_text("2.0.192.in-addr.arpa", [("1", "PTR", "mail.example.com.")]),
}
