"""`quorum evaluate` against real clamd, rspamd and spamd, on a corpus nobody here wrote.

ham: SpamAssassin's sample non-spam, a real 1999 mail shipped in libreadline8's docs, two Usenet
articles shipped with vim. spam: SpamAssassin's sample spam and GTUBE in several encodings (one
mbox of two). virus: the Debian clamav-testfiles (the ClamAV test program, raw and in archives,
as attachments, plus the package's own mail and mbox files), detected by a hash signature of
clam.exe added to this module's clamd. The matrices are checked against a count made here by
asking each engine directly, without Quorum.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.harness.clamd import Clamd
from tests.harness.messages import GTUBE
from tests.harness.quorum import engine_table
from tests.harness.rspamd import Rspamd
from tests.harness.spamd import Spamd

pytestmark = pytest.mark.integration

SA_EXAMPLES = Path("/usr/share/doc/spamassassin/examples")
TESTFILES = Path("/usr/share/clamav-testfiles")
REAL_HAM = [
    SA_EXAMPLES / "sample-nonspam.txt",
    Path("/usr/share/doc/libreadline8/USAGE"),
    Path("/usr/share/vim/vim90/macros/maze/poster"),
    Path("/usr/share/vim/vim90/macros/hanoi/poster"),
]
ATTACHED = ["clam.exe", "clam.zip", "clam.7z", "clam.tar.gz", "clam.cab", "clam.arj", "clam.exe.bz2"]
RSPAMD_SPAM = {"reject", "add header", "rewrite subject", "discard", "quarantine"}


def gtube_variants() -> dict[str, bytes]:
    def message(subject: str) -> EmailMessage:
        m = EmailMessage()
        m["From"], m["To"], m["Subject"] = "promo@shop.example", "bob@example.org", subject
        m["Message-ID"] = f"<{hashlib.md5(subject.encode()).hexdigest()}@shop.example>"
        return m

    plain = message("plain")
    plain.set_content("Buy now.\n\n" + GTUBE.decode() + "\n")
    b64 = message("base64")
    b64.set_content("Buy now.\n\n" + GTUBE.decode() + "\n", cte="base64")
    qp = message("quoted-printable")
    qp.set_content("Buy now = cheap.\n\n" + GTUBE.decode() + "\n", cte="quoted-printable")
    alt = message("alternative")
    alt.set_content("Buy now.\n" + GTUBE.decode() + "\n")
    alt.add_alternative(f"<html><body><p>Buy now.</p><p>{GTUBE.decode()}</p></body></html>", subtype="html")
    return {
        "gtube-plain.eml": bytes(plain),
        "gtube-base64.eml": bytes(b64),
        "gtube-alternative.eml": bytes(alt),
        "gtube-qp.eml": bytes(qp),
    }


def attachment(name: str) -> bytes:
    m = EmailMessage()
    m["From"], m["To"], m["Subject"] = "sender@example.net", "bob@example.org", f"the file {name}"
    m.set_content("See the attached file.\n")
    m.add_attachment((TESTFILES / name).read_bytes(), maintype="application", subtype="octet-stream", filename=name)
    return bytes(m)


def build_corpus(root: Path) -> None:
    for label in ("ham", "spam", "virus"):
        (root / label).mkdir(parents=True)
    for path in REAL_HAM:
        (root / "ham" / f"{path.parent.name}-{path.name}").write_bytes(path.read_bytes())
    (root / "spam" / "sample-spam.txt").write_bytes((SA_EXAMPLES / "sample-spam.txt").read_bytes())
    variants = gtube_variants()
    for name in ("gtube-plain.eml", "gtube-base64.eml"):
        (root / "spam" / name).write_bytes(variants[name])
    mbox = b"".join(
        b"From promo@shop.example Mon Jan  1 00:00:00 2024\n" + variants[n].replace(b"\r\n", b"\n") + b"\n"
        for n in ("gtube-alternative.eml", "gtube-qp.eml")
    )
    (root / "spam" / "gtube.mbox").write_bytes(mbox)
    for name in ATTACHED:
        (root / "virus" / f"{name}.eml").write_bytes(attachment(name))
    (root / "virus" / "clam.mail").write_bytes((TESTFILES / "clam.mail").read_bytes())
    (root / "virus" / "clam.exe.mbox.base64").write_bytes((TESTFILES / "clam.exe.mbox.base64").read_bytes())


@pytest.fixture(scope="module")
def av(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Clamd]:
    """clamd with the local signatures plus an MD5 signature of the ClamAV test program."""
    server = Clamd(tmp_path_factory.mktemp("clamd-testfiles"))
    server.dbdir.mkdir(parents=True, exist_ok=True)
    exe = (TESTFILES / "clam.exe").read_bytes()
    (server.dbdir / "quorum-testfiles.hdb").write_text(f"{hashlib.md5(exe).hexdigest()}:{len(exe)}:Clam.TestFile\n")
    server.start()
    yield server
    server.stop()


# -- the independent count: each engine asked directly ---------------------------------------------
def wire(raw: bytes) -> bytes:
    """The message as a milter gets it from Postfix: CRLF line ends, no mbox "From " line."""
    if raw.startswith(b"From "):
        raw = raw.split(b"\n", 1)[1]
    return raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def clamd_positive(clamd: Clamd, raw: bytes) -> bool:
    return clamd.scan(raw) is not None


def spamd_positive(spamd: Spamd, raw: bytes) -> bool:
    head = spamd.request("CHECK", raw).split(b"\r\n\r\n", 1)[0].decode()
    [line] = [x for x in head.split("\r\n") if x.startswith("Spam:")]
    return line.split(":", 1)[1].split(";")[0].strip() == "True"


def rspamd_positive(rspamd: Rspamd, raw: bytes) -> bool:
    # the null sender, as Quorum reports an unknown envelope sender (evaluate has no envelope)
    reply = httpx.post(f"{rspamd.url}/checkv2", content=raw, headers={"From": "<>"}, timeout=30).json()
    if reply["action"] in RSPAMD_SPAM:
        return True
    if reply["action"] == "no action" or reply.get("required_score") is None:
        return False
    return bool(reply["score"] >= reply["required_score"])


def messages(root: Path) -> list[tuple[str, str, bytes]]:
    """(name, truth, raw) as the corpus reader should see them: mbox split by hand here."""
    out = []
    for label in ("ham", "spam", "virus"):
        for path in sorted((root / label).iterdir()):
            raw = path.read_bytes()
            if path.name == "gtube.mbox":
                parts = raw.split(b"From promo@shop.example Mon Jan  1 00:00:00 2024\n")[1:]
                out += [(f"{label}/{path.name}#{i}", label, wire(p)) for i, p in enumerate(parts, 1)]
            else:
                out.append((f"{label}/{path.name}", label, wire(raw)))
    return out


def expected_matrix(truths: list[str], predicted: list[bool]) -> dict[str, int]:
    m = {"tp": 0, "fn": 0, "fp": 0, "tn": 0, "virus_caught": 0, "virus_missed": 0}
    for truth, p in zip(truths, predicted, strict=True):
        key = {"ham": ("fp", "tn"), "spam": ("tp", "fn"), "virus": ("virus_caught", "virus_missed")}[truth]
        m[key[0] if p else key[1]] += 1
    return m


def test_evaluate_matches_an_independent_count(tmp_path: Path, av: Clamd, rspamd: Rspamd, spamd: Spamd) -> None:
    corpus = tmp_path / "corpus"
    build_corpus(corpus)
    config = tmp_path / "quorum.toml"
    config.write_text(
        '[milter]\nsocket = "inet:1@127.0.0.1"\n\n'
        + engine_table("clamav", "clamav", address=av.address)
        + engine_table("rspamd", "rspamd", url=rspamd.url)
        + engine_table("spamassassin", "spamassassin", address=spamd.address)
    )
    run = subprocess.run(
        [sys.executable, "-m", "quorum", "evaluate", "-c", str(config), str(corpus), "--json", "--jobs", "4"],
        capture_output=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr.decode()
    report: dict[str, Any] = json.loads(run.stdout)
    samples = messages(corpus)
    names = [n for n, _, _ in samples]
    truths = [t for _, t, _ in samples]
    assert [v["file"] for v in report["verdicts"]] == names
    assert report["messages"] == {"ham": 4, "spam": 5, "virus": 9}
    independent = {
        "clamav": [clamd_positive(av, raw) for _, _, raw in samples],
        "rspamd": [rspamd_positive(rspamd, raw) for _, _, raw in samples],
        "spamassassin": [spamd_positive(spamd, raw) for _, _, raw in samples],
    }
    systems = {s["system"]: s for s in report["systems"]}
    for engine, predicted in independent.items():
        s = systems[engine]
        assert s["errors"] == [], (engine, s["errors"])
        got = {k: s[k] for k in ("tp", "fn", "fp", "tn", "virus_caught", "virus_missed")}
        assert got == expected_matrix(truths, predicted), engine
        assert s["false_positives"] == [n for n, t, p in zip(names, truths, predicted, strict=True) if t == "ham" and p]
    any_ = [any(flags) for flags in zip(*independent.values(), strict=True)]
    all_spam = [c or (r and s) for c, r, s in zip(*independent.values(), strict=True)]  # a virus decides alone
    assert {k: systems["any"][k] for k in expected_matrix(truths, any_)} == expected_matrix(truths, any_)
    assert {k: systems["all"][k] for k in expected_matrix(truths, all_spam)} == expected_matrix(truths, all_spam)
    # what the material is known to be: every GTUBE and the sample spam caught by both spam engines,
    # the test program found by the hash signature in every container clamd unpacks
    assert systems["spamassassin"]["tp"] == systems["rspamd"]["tp"] == 5
    assert systems["clamav"]["virus_caught"] >= 7 and systems["clamav"]["fp"] == 0
    assert {s["system"] for s in report["systems"]} >= {"quorum:1", "quorum:2", "weighted", "max"}
    pair = {(p["a"], p["b"]): p for p in report["agreement"]}[("rspamd", "spamassassin")]
    assert pair["both_judged"] == len(samples)
    assert report["best"]["criterion"].startswith("highest recall")
    text = subprocess.run(
        [sys.executable, "-m", "quorum", "evaluate", "-c", str(config), str(corpus)], capture_output=True, timeout=300
    )
    assert (
        text.returncode == 0 and b"best combine mode:" in text.stdout and b"kappa rspamd / spamassassin" in text.stdout
    )
    print(text.stdout.decode())
