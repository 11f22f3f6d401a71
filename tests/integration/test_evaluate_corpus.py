"""`quorum evaluate` against real clamd, rspamd and spamd, on a corpus nobody here wrote.

ham: SpamAssassin's sample non-spam, a real 1999 mail shipped in libreadline8's docs, two Usenet
articles shipped with vim. spam: SpamAssassin's sample spam and GTUBE in several encodings (one
mbox of two). virus: the Debian clamav-testfiles (the ClamAV test program, raw and in archives,
as attachments, plus the package's own mail and mbox files), detected by a hash signature of
clam.exe added to this module's clamd. The matrices are checked against a count made here by
asking each engine directly, without Quorum.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.harness.cascade_corpus import clamd_for_testfiles
from tests.harness.clamd import Clamd
from tests.harness.labelled_corpus import build_corpus, messages
from tests.harness.quorum import engine_table
from tests.harness.rspamd import Rspamd
from tests.harness.spamd import Spamd

pytestmark = pytest.mark.integration

RSPAMD_SPAM = {"reject", "add header", "rewrite subject", "discard", "quarantine"}


@pytest.fixture(scope="module")
def av(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Clamd]:
    """clamd with the local signatures plus an MD5 signature of the ClamAV test program."""
    server = clamd_for_testfiles(tmp_path_factory.mktemp("clamd-testfiles")).start()
    yield server
    server.stop()


# -- the independent count: each engine asked directly ---------------------------------------------
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
