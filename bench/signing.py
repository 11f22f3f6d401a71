"""DKIM signing cost per message: CPU of the signing stage's post-decision hook (SigningStage.amend,
as the milter runs it: From: parsing, key choice, streamed body hash, dkimpy's signature) for
RSA-2048, Ed25519 and both (RFC 8463 dual signing), at several message sizes; and, for comparison,
dkimpy's own `dkim.sign` on the whole message in memory.

Prints the median and the spread (10th-90th percentile) of the thread's CPU time over N runs each.
The issue's target: signing adds at most 1 ms CPU per message with Ed25519.

    .venv/bin/python bench/signing.py [--runs 300] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "milter")]

import dkim  # noqa: E402

from quorum.assembly import parse_config  # noqa: E402
from quorum.message import Envelope, Message  # noqa: E402
from quorum.pipeline.amend import FinalMessage  # noqa: E402
from quorum.pipeline.output import Edits  # noqa: E402
from quorum.pipeline.stages import Action  # noqa: E402
from quorum.pipeline.transaction import Connection, Transaction  # noqa: E402
from quorum.signing.keys import generate, write_private  # noqa: E402
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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=300, help="runs per case (default 300)")
    ap.add_argument("--json", action="store_true", help="machine-readable output")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="quorum-bench-signing-"))
    pems = {}
    for name, kind in (("rsa", "rsa"), ("ed", "ed25519")):
        pem, _ = generate(kind, 2048)  # type: ignore[arg-type]
        write_private(str(work / f"{name}.pem"), pem)
        pems[name] = pem
    entries = {
        "rsa": {"domain": "example.com", "selector": "rsa", "key": str(work / "rsa.pem")},
        "ed": {"domain": "example.com", "selector": "ed", "key": str(work / "ed.pem")},
    }
    cases = {"RSA-2048": ["rsa"], "Ed25519": ["ed"], "RSA-2048 + Ed25519": ["rsa", "ed"]}
    env = Envelope("192.0.2.1", "c", "c", "alice@example.com", ["bob@example.org"], {"{auth_authen}": "alice"})
    txn = Transaction(Connection("192.0.2.1"), env)
    results: list[dict[str, Any]] = []
    stages = {
        case: SigningStage(parse_config({"signing": {"keys": [entries[n] for n in names]}}).feature("signing"))
        for case, names in cases.items()
    }
    for size_name, size in SIZES.items():
        for body in LINES:
            msg = Message.from_bytes(message(size, body), env, memory_limit=2 << 20)
            final = FinalMessage(msg, Edits(Action.ACCEPT))
            for case, stage in stages.items():
                amendment = stage.amend(txn, final)
                assert amendment is not None and len(amendment.headers) == len(cases[case]), amendment
                samples = cpu_ms(lambda s=stage, f=final: s.amend(txn, f), args.runs)
                results.append({"size": size_name, "body": body, "case": case, "how": "quorum", **summary(samples)})
            msg.close()
        raw = message(size, "ragged")
        for case, name, algorithm in (("RSA-2048", "rsa", b"rsa-sha256"), ("Ed25519", "ed", b"ed25519-sha256")):
            key = pems[name]
            if name == "ed":  # dkimpy reads Ed25519 keys as raw base64 seeds only
                from cryptography.hazmat.primitives import serialization

                seed = serialization.load_pem_private_key(key, None).private_bytes(  # type: ignore[union-attr]
                    serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
                )
                import base64

                key = base64.b64encode(seed)

            def whole(k: bytes = key, a: bytes = algorithm, raw: bytes = raw) -> None:
                dkim.sign(raw, b"s", b"example.com", k, canonicalize=(b"relaxed", b"relaxed"), signature_algorithm=a)

            samples = cpu_ms(whole, max(10, args.runs // 3))
            row = {"size": size_name, "body": "ragged", "case": case, "how": "dkim.sign (whole message)"}
            results.append({**row, **summary(samples)})
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(f"DKIM signing CPU per message (thread CPU time, {args.runs} runs; median [p10-p90] ms)")
    print(f"{'size':>6}  {'body':<7} {'keys':<20} {'how':<26} {'median':>8}   spread")
    for r in results:
        spread = f"[{r['p10']:.3f}-{r['p90']:.3f}]"
        print(f"{r['size']:>6}  {r['body']:<7} {r['case']:<20} {r['how']:<26} {r['median']:>8.3f}   {spread}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
