"""`quorum evaluate` scoring on constructed verdicts: matrices, modes, errors, the best mode, the corpus."""

from __future__ import annotations

from pathlib import Path

import pytest

from quorum.assembly import parse_config
from quorum.config import Config
from quorum.records.corpus import CorpusError, Sample, load
from quorum.records.evaluate import Judged, combine_modes, render, score
from quorum.verdict import Category, Status, Verdict

AV, SPAM = Category.ANTIVIRUS, Category.ANTISPAM


def config(weights: tuple[float, float] = (1.0, 1.0)) -> Config:
    return parse_config(
        {
            "engines": {
                "clamav": {"type": "clamav", "address": "127.0.0.1:3310"},
                "rspamd": {"type": "rspamd", "url": "http://127.0.0.1:11333", "weight": weights[0]},
                "sa": {"type": "spamassassin", "address": "127.0.0.1:783", "weight": weights[1]},
            }
        }
    )


def j(name: str, truth: str, clam: Status, rs: float | Status, sa: float | Status) -> Judged:
    verdicts = {"clamav": Verdict("clamav", AV, clam)}
    for engine, value, threshold in (("rspamd", rs, 15.0), ("sa", sa, 5.0)):
        if isinstance(value, Status):
            verdicts[engine] = Verdict(engine, SPAM, value, error="timeout" if value is Status.ERROR else None)
        else:
            status = Status.SPAM if value >= threshold else Status.CLEAN
            verdicts[engine] = Verdict(engine, SPAM, status, score=value, threshold=threshold)
    return Judged(Sample(name, truth, b""), verdicts)


C, INF, E = Status.CLEAN, Status.INFECTED, Status.ERROR

CASE = [
    j("ham/1", "ham", C, 1.0, 0.0),
    j("ham/2", "ham", C, 16.0, 1.0),  # rspamd false positive
    j("ham/3", "ham", C, 2.0, E),  # sa failed
    j("spam/1", "spam", C, 20.0, 9.0),  # both
    j("spam/2", "spam", C, 30.0, 1.0),  # rspamd only (normalised 2.0 + 0.2)
    j("spam/3", "spam", C, 5.0, 6.0),  # sa only (0.33 + 1.2)
    j("spam/4", "spam", C, 1.0, 1.0),  # neither
    j("virus/1", "virus", INF, 1.0, 1.0),
    j("virus/2", "virus", C, E, E),  # clamav missed it, spam engines failed
]


def systems(report: dict) -> dict[str, dict]:  # type: ignore[type-arg]
    return {s["system"]: s for s in report["systems"]}


def matrix(s: dict) -> tuple[int, ...]:  # type: ignore[type-arg]
    return (s["tp"], s["fn"], s["fp"], s["tn"], s["virus_caught"], s["virus_missed"], len(s["errors"]))


def test_every_engine_and_mode_on_known_verdicts() -> None:
    report = score(config(), CASE)
    s = systems(report)
    assert report["messages"] == {"ham": 3, "spam": 4, "virus": 2}
    assert list(s) == ["clamav", "rspamd", "sa", "any", "all", "quorum:1", "quorum:2", "weighted", "max"]
    #                      TP FN FP TN V+ V- err
    assert matrix(s["clamav"]) == (0, 4, 0, 3, 1, 1, 0)
    assert matrix(s["rspamd"]) == (2, 2, 1, 2, 0, 1, 1)
    assert matrix(s["sa"]) == (2, 2, 0, 2, 0, 1, 2)
    assert matrix(s["any"]) == (3, 1, 1, 2, 1, 1, 0)
    assert matrix(s["quorum:1"]) == matrix(s["any"])
    # all / quorum:2: ham/3 has only rspamd's clean answer; spam/1 is the only one both flag
    assert matrix(s["all"]) == (1, 3, 0, 3, 1, 1, 0)
    assert matrix(s["quorum:2"]) == (1, 3, 0, 3, 1, 1, 0)
    # weighted mean of normalised scores >= 1: spam/1 (1.33+1.8)/2, spam/2 (2+0.2)/2; ham/2 (1.07+0.2)/2 no
    assert matrix(s["weighted"]) == (2, 2, 0, 3, 1, 1, 0)
    # max: any normalised score >= 1: like any
    assert matrix(s["max"]) == (3, 1, 1, 2, 1, 1, 0)
    assert s["rspamd"]["false_positives"] == ["ham/2"] and s["sa"]["errors"] == ["ham/3", "virus/2"]
    assert s["any"]["precision"] == 0.75 and s["any"]["recall"] == 0.75 and s["any"]["f1"] == 0.75
    assert s["clamav"]["precision"] is None and s["clamav"]["virus_recall"] == 0.5
    # zero FP on ham: all, quorum:2 (detection 2/6), weighted (3/6) -> weighted
    assert report["best"]["system"] == "weighted" and "zero false positives" in report["best"]["criterion"]
    pair = {(p["a"], p["b"]): p for p in report["agreement"]}[("rspamd", "sa")]
    assert (pair["both_judged"], pair["agree"], pair["only_a"], pair["only_b"]) == (7, 4, 2, 1)
    text = render(report)
    assert "false positives of rspamd: ham/2" in text and "best combine mode: weighted" in text


def test_weights_change_the_weighted_mode() -> None:
    s = systems(score(config(weights=(1.0, 3.0)), CASE))
    # sa weighs 3: spam/3 (0.33 + 3*1.2)/4 = 0.98 -> no; spam/2 (2 + 3*0.2)/4 = 0.65 -> no
    assert matrix(s["weighted"]) == (1, 3, 0, 3, 1, 1, 0)


def test_quorum_runs_to_the_number_of_voting_spam_engines() -> None:
    names = [name for name, _ in combine_modes(config(), config().enabled_engines)]
    assert names == ["any", "all", "quorum:1", "quorum:2", "weighted", "max"]


def test_no_mode_without_false_positives() -> None:
    cases = [j("ham/1", "ham", INF, 20.0, 9.0), j("spam/1", "spam", C, 20.0, 9.0)]
    best = score(config(), cases)["best"]
    assert best["system"] is None and "no combine mode" in best["note"]


def test_corpus_files_and_mbox(tmp_path: Path) -> None:
    (tmp_path / "ham").mkdir()
    (tmp_path / "spam" / "deep").mkdir(parents=True)
    (tmp_path / "ham" / "a.eml").write_bytes(b"Subject: a\n\nhello\n")
    (tmp_path / "ham" / ".hidden").write_bytes(b"x")
    (tmp_path / "ham" / "one-from.txt").write_bytes(b"From x@y Mon Jan  1 00:00:00 2024\nSubject: b\n\nbody\n")
    mbox = b"".join(f"From s@x Mon Jan  1 00:00:00 2024\nSubject: m{i}\n\nbody {i}\n\n".encode() for i in range(3))
    (tmp_path / "spam" / "deep" / "box.mbox").write_bytes(mbox)
    samples = load(tmp_path)
    assert [(s.name, s.truth) for s in samples] == [
        ("ham/a.eml", "ham"),
        ("ham/one-from.txt", "ham"),
        ("spam/deep/box.mbox#1", "spam"),
        ("spam/deep/box.mbox#2", "spam"),
        ("spam/deep/box.mbox#3", "spam"),
    ]
    assert b"Subject: m1" in samples[3].raw
    with pytest.raises(CorpusError, match="none of the directories"):
        load(tmp_path / "ham")
