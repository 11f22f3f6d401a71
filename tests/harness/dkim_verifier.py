"""Perl's Mail::DKIM as an independent verifier (tests/harness/dkim_verify.pl), asking the test NSD."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

SCRIPT = Path(__file__).with_name("dkim_verify.pl")


@dataclass(frozen=True)
class Signature:
    result: str  # pass | fail | invalid | temperror | ...
    domain: str
    selector: str
    algorithm: str  # rsa-sha256 | ed25519-sha256
    detail: str


@dataclass(frozen=True)
class Verdict:
    signatures: list[Signature]
    overall: str
    detail: str

    def results(self) -> list[tuple[str, str, str]]:
        return [(s.result, s.selector, s.algorithm) for s in self.signatures]


def mail_dkim(raw: bytes, dns_port: int, dns_host: str = "127.0.0.1") -> Verdict:
    perl = shutil.which("perl")
    if perl is None:
        raise RuntimeError("perl missing: install Debian's libmail-dkim-perl and libcryptx-perl (run.sh)")
    done = subprocess.run(
        [perl, str(SCRIPT), dns_host, str(dns_port)], input=raw, capture_output=True, timeout=60, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"dkim_verify.pl failed ({done.returncode}): {done.stderr.decode(errors='replace')}")
    sigs: list[Signature] = []
    overall, detail = "", ""
    for line in done.stdout.decode(errors="replace").splitlines():
        parts = line.split("\t")
        if parts[0] == "overall":
            overall, detail = parts[1], parts[2] if len(parts) > 2 else ""
        elif len(parts) == 5:
            sigs.append(Signature(*parts))
    return Verdict(sigs, overall, detail)


RSPAMD_RESULTS = {"R_DKIM_ALLOW": "pass", "R_DKIM_REJECT": "fail", "R_DKIM_TEMPFAIL": "temperror",
                  "R_DKIM_PERMFAIL": "permerror"}  # fmt: skip


def rspamd_dkim(url: str, raw: bytes, client_ip: str = "198.51.100.20") -> dict[str, str]:
    """rspamd's DKIM result per signature ("domain:s=selector" -> pass | fail | ...), from /checkv2
    (rspamd verifies Ed25519 too). The client is a remote one: rspamd skips DKIM for local and
    authenticated senders."""
    import json
    import urllib.request

    request = urllib.request.Request(f"{url}/checkv2", data=raw, headers={"IP": client_ip, "Pass": "all"})
    with urllib.request.urlopen(request, timeout=60) as response:
        symbols = json.load(response).get("symbols", {})
    found: dict[str, str] = {}
    for symbol, result in RSPAMD_RESULTS.items():
        for option in symbols.get(symbol, {}).get("options", []):
            found[option] = result
    return found


ARC_SCRIPT = Path(__file__).with_name("arc_verify.pl")


@dataclass(frozen=True)
class ArcVerdict:
    result: str  # pass | fail | none
    detail: str
    seals: list[tuple[int, str, str, str]]  # (instance, cv, d=, that seal's result)


def mail_arc(raw: bytes, dns_port: int, dns_host: str = "127.0.0.1") -> ArcVerdict:
    """Mail::DKIM::ARC::Verifier's judgement of the chain (tests/harness/arc_verify.pl)."""
    perl = shutil.which("perl")
    if perl is None:
        raise RuntimeError("perl missing: install Debian's libmail-dkim-perl (run.sh)")
    done = subprocess.run(
        [perl, str(ARC_SCRIPT), dns_host, str(dns_port)], input=raw, capture_output=True, timeout=60, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"arc_verify.pl failed ({done.returncode}): {done.stderr.decode(errors='replace')}")
    lines = done.stdout.decode(errors="replace").splitlines()
    result, _, detail = lines[0].partition("\t")
    seals = []
    for line in lines[1:]:
        parts = line.split("\t")
        if parts[0] == "seal" and len(parts) == 5:
            seals.append((int(parts[1] or 0), parts[2], parts[3], parts[4]))
    return ArcVerdict(result, detail, sorted(seals))
