"""DKIM signing cost per message: CPU of the signing stage's post-decision hook (SigningStage.amend,
as the milter runs it: From: parsing, key choice, streamed body hash, header canonicalization, the
signature) for RSA-2048, Ed25519 and both (RFC 8463 dual signing), at several message sizes. Each
case is run twice, side by side: with Quorum's signature step (OpenSSL's RSA through `cryptography`,
PyNaCl's Ed25519) and with dkimpy's (`dkim.DKIM.gen_header`: its header canonicalization and its
pure-Python RSA, as Quorum signed before), everything else the same. Then dkimpy's own `dkim.sign`
on the whole message in memory, and the signature primitive alone (RSA-2048: OpenSSL vs dkimpy;
Ed25519: PyNaCl vs OpenSSL).

Prints the median and the spread (10th-90th percentile) of the thread's CPU time over N runs each.
The issue's target: signing adds at most 1 ms CPU per message with Ed25519.

    .venv/bin/python bench/signing.py [--runs 300] [--json]
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import json
import logging
import statistics
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "milter")]

import dkim  # noqa: E402
import nacl.signing  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa  # noqa: E402
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed  # noqa: E402
from dkim.canonicalization import CanonicalizationPolicy  # noqa: E402
from dkim.crypto import RSASSA_PKCS1_v1_5_sign, parse_pem_private_key  # noqa: E402

import quorum.signing.stage as stage_module  # noqa: E402
from quorum.assembly import parse_config  # noqa: E402
from quorum.message import Envelope, Message  # noqa: E402
from quorum.pipeline.amend import FinalMessage  # noqa: E402
from quorum.pipeline.output import Edits  # noqa: E402
from quorum.pipeline.stages import Action  # noqa: E402
from quorum.pipeline.transaction import Connection, Transaction  # noqa: E402
from quorum.signing import dkimsign  # noqa: E402
from quorum.signing.keys import generate, load_key, write_private  # noqa: E402
from quorum.signing.stage import SigningStage  # noqa: E402

HEAD = (
    b"From: Alice Example <alice@example.com>\r\nTo: Bob <bob@example.org>\r\nSubject: the quarterly numbers\r\n"
    b"Date: Mon, 01 Jan 2024 12:00:00 +0000\r\nMessage-ID: <bench@example.com>\r\nMIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n\r\n"
)
# Bodies: prose (single spaces: hashed as it is), base64 (an attachment: the same), and ragged
# text (a double space and a trailing tab on every line: every line is rewritten, the worst case).
LINES = {
    "prose": b"The numbers are in the attachment, as discussed on the phone yesterday.\r\n",
    "base64": b"TG9yZW0gaXBzdW0gZG9sb3Igc2l0IGFtZXQsIGNvbnNlY3RldHVyIGFkaXBpc2NpbmcgZWxpdC4=\r\n",
    "ragged": b"The numbers are in the attachment,  as discussed on the phone yesterday.\t\r\n",
}
SIZES = {"4 KB": 4 * 1024, "64 KB": 64 * 1024, "1 MB": 1024 * 1024}
CASES = {"RSA-2048": ["rsa"], "Ed25519": ["ed"], "RSA-2048 + Ed25519": ["rsa", "ed"]}
NEW, OLD = "quorum", "dkimpy step"
_quiet = logging.getLogger("bench.signing.dkimpy")
_quiet.setLevel(logging.ERROR)
_RELAXED = CanonicalizationPolicy.from_c_value(b"relaxed/relaxed")


def message(size: int, body: str) -> bytes:
    line = LINES[body]
    return HEAD + line * max(1, (size - len(HEAD)) // len(line))


def cpu_ms(fn: Any, runs: int) -> list[float]:
    fn()  # warm-up
    out = []
    for _ in range(runs):
        start = time.thread_time()
        fn()
        out.append((time.thread_time() - start) * 1000)
    return out


def summary(samples: list[float]) -> dict[str, float]:
    deciles = statistics.quantiles(samples, n=10)
    return {"median": statistics.median(samples), "p10": deciles[0], "p90": deciles[-1]}


def ed25519_seed(pem: bytes) -> bytes:
    """The raw 32-byte seed of an Ed25519 PEM key (what PyNaCl and dkimpy, in base64, take)."""
    key = serialization.load_pem_private_key(pem, None)
    assert isinstance(key, ed25519.Ed25519PrivateKey)
    return key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())


class DkimpySigner:
    """Quorum's signing as it was before the OpenSSL step (commit 07054e8): the same header list,
    tags and streamed body hash, the header hash and the signature by dkimpy (`DKIM.gen_header`
    with dkimpy's parsed RSA key or a PyNaCl key)."""

    def __init__(self, pems: dict[str, bytes]) -> None:
        self.keys: dict[str, Any] = {}
        for path, pem in pems.items():
            key = serialization.load_pem_private_key(pem, None)
            if isinstance(key, rsa.RSAPrivateKey):
                pkcs1 = key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.TraditionalOpenSSL,
                    serialization.NoEncryption(),
                )
                self.keys[path] = parse_pem_private_key(pkcs1)
            else:
                self.keys[path] = nacl.signing.SigningKey(ed25519_seed(pem))

    def sign(
        self,
        signers: Sequence[dkimsign.Signer],
        headers: Sequence[tuple[bytes, bytes]],
        body: Iterable[bytes],
        now: int | None = None,
    ) -> list[tuple[str, str]]:
        include = dkimsign.header_list(name.decode("utf-8", "surrogateescape") for name, _ in headers)
        bh = dkimsign.body_hash(body)
        parsed = [[name.rstrip(), value + b"\r\n"] for name, value in headers]
        names = tuple(name.encode("ascii") for name in include)
        out = []
        for s in signers:
            algorithm = s.key.algorithm.encode("ascii")
            d = dkim.DKIM(None, logger=_quiet, signature_algorithm=algorithm, linesep=b"\r\n")
            d.headers = parsed
            d.hasher = dkim.HASH_ALGORITHMS[algorithm]
            tags = dkimsign.tags(s, include, bh, now)
            value = d.gen_header(tags, names, _RELAXED, b"DKIM-Signature", self.keys[s.key.path])
            out.append(("DKIM-Signature", value.decode("ascii").rstrip("\r\n").replace("\r\n ", "\n\t")))
        return out


@contextlib.contextmanager
def signing_with(sign: Any) -> Iterator[None]:
    """The stage's signature step replaced for the duration (the stage calls stage.sign)."""
    saved = stage_module.sign
    stage_module.sign = sign
    try:
        yield
    finally:
        stage_module.sign = saved


def primitives(pems: dict[str, bytes], paths: dict[str, str], runs: int) -> list[dict[str, Any]]:
    """The signature alone, over one SHA-256 digest (what the header hash gives)."""
    digest = hashlib.sha256(b"the canonicalized header fields").digest()
    rsa_key = serialization.load_pem_private_key(pems[paths["rsa"]], None)
    ed_key = serialization.load_pem_private_key(pems[paths["ed"]], None)
    assert isinstance(rsa_key, rsa.RSAPrivateKey) and isinstance(ed_key, ed25519.Ed25519PrivateKey)
    dkimpy_rsa = DkimpySigner({paths["rsa"]: pems[paths["rsa"]]}).keys[paths["rsa"]]
    nacl_key = nacl.signing.SigningKey(ed25519_seed(pems[paths["ed"]]))
    pkcs1, sha256 = padding.PKCS1v15(), Prehashed(hashes.SHA256())
    fns = {
        ("RSA-2048", "OpenSSL (cryptography)"): lambda: rsa_key.sign(digest, pkcs1, sha256),
        ("RSA-2048", "dkimpy (pure Python)"): lambda: RSASSA_PKCS1_v1_5_sign(hashlib.sha256(b"x"), dkimpy_rsa),
        ("Ed25519", "PyNaCl (libsodium)"): lambda: nacl_key.sign(digest).signature,
        ("Ed25519", "OpenSSL (cryptography)"): lambda: ed_key.sign(digest),
    }
    assert fns["Ed25519", "PyNaCl (libsodium)"]() == fns["Ed25519", "OpenSSL (cryptography)"]()
    out = []
    for (case, how), fn in fns.items():
        n = runs if "dkimpy" in how else runs * 10
        out.append({"case": case, "how": how, "runs": n, **summary([ms * 1000 for ms in cpu_ms(fn, n)])})
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=300, help="runs per case (default 300)")
    ap.add_argument("--json", action="store_true", help="machine-readable output")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="quorum-bench-signing-"))
    pems: dict[str, bytes] = {}
    paths: dict[str, str] = {}
    for name, kind in (("rsa", "rsa"), ("ed", "ed25519")):
        pem, _ = generate(kind, 2048)  # type: ignore[arg-type]
        paths[name] = str(work / f"{name}.pem")
        write_private(paths[name], pem)
        pems[paths[name]] = pem
    old = DkimpySigner(pems)
    entries = {name: {"domain": "example.com", "selector": name, "key": path} for name, path in paths.items()}
    env = Envelope("192.0.2.1", "c", "c", "alice@example.com", ["bob@example.org"], {"{auth_authen}": "alice"})
    txn = Transaction(Connection("192.0.2.1"), env)
    stages = {
        case: SigningStage(parse_config({"signing": {"keys": [entries[n] for n in names]}}).feature("signing"))
        for case, names in CASES.items()
    }
    # Both steps make the same bytes (RSA PKCS#1 v1.5 and Ed25519 are deterministic).
    signers = [dkimsign.Signer("example.com", n, load_key(paths[n])) for n in ("rsa", "ed")]
    raw = message(4096, "ragged")
    head, body = raw.split(b"\r\n\r\n", 1)
    fields = [(line.split(b":", 1)[0], line.split(b":", 1)[1]) for line in head.split(b"\r\n")]
    assert dkimsign.sign(signers, fields, [body], now=1) == old.sign(signers, fields, [body], now=1)

    results: list[dict[str, Any]] = []
    for size_name, size in SIZES.items():
        for body_name in LINES:
            msg = Message.from_bytes(message(size, body_name), env, memory_limit=2 << 20)
            final = FinalMessage(msg, Edits(Action.ACCEPT))
            for case, stage in stages.items():
                for how, sign in ((NEW, dkimsign.sign), (OLD, old.sign)):
                    with signing_with(sign):
                        amendment = stage.amend(txn, final)
                        assert amendment is not None and len(amendment.headers) == len(CASES[case]), amendment
                        samples = cpu_ms(lambda s=stage, f=final: s.amend(txn, f), args.runs)
                    row = {"size": size_name, "body": body_name, "case": case, "how": how}
                    results.append({**row, **summary(samples)})
            msg.close()
        raw = message(size, "ragged")
        for case, name, algorithm in (("RSA-2048", "rsa", b"rsa-sha256"), ("Ed25519", "ed", b"ed25519-sha256")):
            key = pems[paths[name]]
            if name == "ed":  # dkimpy reads Ed25519 keys as raw base64 seeds only
                key = base64.b64encode(ed25519_seed(key))

            def whole(k: bytes = key, a: bytes = algorithm, raw: bytes = raw) -> None:
                dkim.sign(raw, b"s", b"example.com", k, canonicalize=(b"relaxed", b"relaxed"), signature_algorithm=a)

            samples = cpu_ms(whole, max(10, args.runs // 3))
            row = {"size": size_name, "body": "ragged", "case": case, "how": "dkim.sign (whole message)"}
            results.append({**row, **summary(samples)})
    alone = primitives(pems, paths, args.runs)
    if args.json:
        print(json.dumps({"per_message_ms": results, "signature_alone_us": alone}, indent=2))
        return 0

    def cell(r: dict[str, Any], digits: int = 3) -> str:
        return f"{r['median']:.{digits}f} [{r['p10']:.{digits}f}-{r['p90']:.{digits}f}]"

    by = {(r["size"], r["body"], r["case"], r["how"]): r for r in results}
    print(
        f"DKIM signing CPU per message in the hook (SigningStage.amend; thread CPU time, {args.runs} runs; "
        "median [p10-p90] ms)"
    )
    print(f"{'size':>6}  {'body':<7} {'keys':<19} {'Quorum (OpenSSL RSA)':<24} {'dkimpy signature step':<24} ratio")
    for size_name in SIZES:
        for body_name in LINES:
            for case in CASES:
                new, was = by[size_name, body_name, case, NEW], by[size_name, body_name, case, OLD]
                ratio = was["median"] / new["median"]
                print(f"{size_name:>6}  {body_name:<7} {case:<19} {cell(new):<24} {cell(was):<24} {ratio:.1f}x")
    print(f"\ndkimpy's dkim.sign on the whole message in memory (ragged body; {max(10, args.runs // 3)} runs; ms)")
    for size_name in SIZES:
        for case in ("RSA-2048", "Ed25519"):
            print(f"{size_name:>6}  {case:<19} {cell(by[size_name, 'ragged', case, 'dkim.sign (whole message)'])}")
    print("\nThe signature alone, over a SHA-256 digest (median [p10-p90] us)")
    for r in alone:
        print(f"  {r['case']:<9} {r['how']:<24} {cell(r, 1):<24} ({r['runs']} runs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
