"""`quorum evaluate`: every enabled engine judges every message of a labelled corpus once; then each
engine alone and each combine mode is scored on those same verdicts.

Prediction of an engine alone: positive when it says spam or infected (after its configured
`threshold`). Prediction of a combine mode: positive when a voting antivirus engine says infected,
or the voting antispam engines combined under that mode (the policy's own `combine`) say spam.
A message an engine (or every voting engine, for a mode) did not answer is counted under `errors`
and left out of that system's matrix: reported, not guessed. Virus messages are scored apart
from spam: `virus_caught`/`virus_missed`.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any

from quorum.config.model import Config, EngineSettings
from quorum.engines import adapter_class, build_engine
from quorum.engines.base import ScanCall
from quorum.message import Envelope, Message
from quorum.pipeline.policy import Policy
from quorum.pipeline.runner import EngineRunner
from quorum.records.agreement import pairwise
from quorum.records.corpus import Sample
from quorum.verdict import Category, Status, Verdict

CRITERION = "highest recall on spam and virus messages together with zero false positives on ham (ties: fewer errors)"


@dataclass
class Judged:
    sample: Sample
    verdicts: dict[str, Verdict]


def judge(
    config: Config, samples: Sequence[Sample], jobs: int, progress: Callable[[int, int], None] | None = None
) -> list[Judged]:
    """Run every enabled engine once on every sample, at most `jobs` scans at a time."""
    # No circuit breaker here: a failure is recorded on its message, never turned into skips of others.
    runners = [
        EngineRunner(build_engine(s.model_copy(update={"breaker_failures": 1 << 30}))) for s in config.enabled_engines
    ]
    results = [Judged(s, {}) for s in samples]
    lock = threading.Lock()
    total = len(samples) * len(runners)
    done = 0

    def scan(index: int, runner: EngineRunner) -> tuple[int, str, Verdict]:
        sample = samples[index]
        message = Message.from_bytes(sample.raw, Envelope(), config.milter.body_memory_limit)
        try:
            call = ScanCall(time.monotonic() + runner.settings.timeout)
            return index, runner.name, runner.run(message, call)
        finally:
            message.close()

    try:
        with ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="quorum-evaluate") as pool:
            futures = [pool.submit(scan, i, r) for i in range(len(samples)) for r in runners]
            for fut in as_completed(futures):
                index, name, verdict = fut.result()
                with lock:
                    results[index].verdicts[name] = verdict
                    done += 1
                if progress is not None:
                    progress(done, total)
    finally:
        for runner in runners:
            runner.close()
    return results


def score(config: Config, judged: Sequence[Judged]) -> dict[str, Any]:
    engines = {s.name: s for s in config.engines}
    enabled = list(config.enabled_engines)
    policy = Policy(config.policy, engines, config.replies, config.milter.on_oversize)
    rejudged = [{name: policy.judged(v) for name, v in j.verdicts.items()} for j in judged]
    systems: list[dict[str, Any]] = []
    for s in enabled:
        predictions = [_engine_prediction(verdicts.get(s.name)) for verdicts in rejudged]
        systems.append(_system(s.name, "engine", judged, predictions))
    for mode, settings in combine_modes(config, enabled):
        mode_policy = Policy(settings, engines, config.replies, config.milter.on_oversize)
        predictions = [_mode_prediction(mode_policy, enabled, verdicts) for verdicts in rejudged]
        systems.append(_system(mode, "combine", judged, predictions))
    counts = {label: sum(1 for j in judged if j.sample.truth == label) for label in ("ham", "spam", "virus")}
    judgements = [
        {name: v.status in (Status.SPAM, Status.INFECTED) for name, v in verdicts.items() if v.status.answered}
        for verdicts in rejudged
    ]
    return {
        "messages": counts,
        "engines": [s.name for s in enabled],
        "systems": systems,
        "agreement": pairwise(judgements, [s.name for s in enabled]),
        "best": best(systems),
        "verdicts": [
            {
                "file": j.sample.name,
                "truth": j.sample.truth,
                "engines": {name: v.label() for name, v in sorted(verdicts.items())},
            }
            for j, verdicts in zip(judged, rejudged, strict=True)
        ],
    }


def combine_modes(config: Config, enabled: Sequence[EngineSettings]) -> list[tuple[str, Any]]:
    """Every combine mode with the configured weights: any, all, quorum:K for each K, weighted, max."""
    spam_voters = sum(1 for s in enabled if s.mode == "vote" and _category(s) is Category.ANTISPAM)
    p = config.policy
    modes = [(m, p.model_copy(update={"spam_combine": m})) for m in ("any", "all")]
    modes += [
        (f"quorum:{k}", p.model_copy(update={"spam_combine": "quorum", "spam_quorum": k}))
        for k in range(1, max(spam_voters, 1) + 1)
    ]
    modes += [(m, p.model_copy(update={"spam_combine": m})) for m in ("weighted", "max")]
    return modes


def _category(s: EngineSettings) -> Category:
    try:
        return adapter_class(s.type).category
    except LookupError:
        return Category.ANTISPAM


def _engine_prediction(v: Verdict | None) -> bool | None:
    if v is None or not v.status.answered:
        return None
    return v.status in (Status.SPAM, Status.INFECTED)


def _mode_prediction(policy: Policy, enabled: Sequence[EngineSettings], verdicts: dict[str, Verdict]) -> bool | None:
    voting = [verdicts[s.name] for s in enabled if s.mode == "vote" and s.name in verdicts]
    answered = [v for v in voting if v.status.answered]
    if not answered:
        return None
    if any(v.status is Status.INFECTED and v.category is Category.ANTIVIRUS for v in answered):
        return True
    is_spam, _score = policy.combine([v for v in answered if v.category is Category.ANTISPAM])
    return is_spam


def _system(name: str, kind: str, judged: Sequence[Judged], predictions: Sequence[bool | None]) -> dict[str, Any]:
    m = {"tp": 0, "fn": 0, "fp": 0, "tn": 0, "virus_caught": 0, "virus_missed": 0}
    false_positives: list[str] = []
    missed: list[str] = []
    errors: list[str] = []
    for j, predicted in zip(judged, predictions, strict=True):
        truth, file = j.sample.truth, j.sample.name
        if predicted is None:
            errors.append(file)
        elif truth == "ham":
            m["fp" if predicted else "tn"] += 1
            if predicted:
                false_positives.append(file)
        elif truth == "spam":
            m["tp" if predicted else "fn"] += 1
        else:
            m["virus_caught" if predicted else "virus_missed"] += 1
        if predicted is False and truth != "ham":
            missed.append(file)
    precision = _ratio(m["tp"], m["tp"] + m["fp"])
    recall = _ratio(m["tp"], m["tp"] + m["fn"])
    f1 = None
    if precision is not None and recall is not None and precision + recall > 0:
        f1 = round(2 * precision * recall / (precision + recall), 4)
    caught = m["tp"] + m["virus_caught"]
    return {
        "system": name,
        "kind": kind,
        **m,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "virus_recall": _ratio(m["virus_caught"], m["virus_caught"] + m["virus_missed"]),
        "detection": _ratio(caught, caught + m["fn"] + m["virus_missed"]),
        "false_positives": false_positives,
        "missed": missed,
        "errors": errors,
    }


def best(systems: Sequence[dict[str, Any]]) -> dict[str, Any]:
    modes = [s for s in systems if s["kind"] == "combine"]
    clean = [s for s in modes if s["fp"] == 0 and s["detection"] is not None]
    if not clean:
        return {"system": None, "criterion": CRITERION, "note": "no combine mode has zero false positives on ham"}
    top = min(clean, key=lambda s: (-s["detection"], len(s["errors"])))
    return {"system": top["system"], "criterion": CRITERION, "detection": top["detection"]}


def _ratio(a: int, b: int) -> float | None:
    return round(a / b, 4) if b else None


def render(report: dict[str, Any]) -> str:
    c = report["messages"]
    lines = [f"{c['ham']} ham, {c['spam']} spam, {c['virus']} virus; engines: {', '.join(report['engines'])}", ""]
    lines.append(
        f"{'system':<14} {'kind':<8} {'TP':>4} {'FN':>4} {'FP':>4} {'TN':>4} {'V+':>4} {'V-':>4} {'err':>4}"
        f" {'prec':>6} {'recall':>6} {'F1':>6} {'virus':>6}"
    )
    for s in report["systems"]:
        lines.append(
            f"{s['system']:<14} {s['kind']:<8} {s['tp']:>4} {s['fn']:>4} {s['fp']:>4} {s['tn']:>4}"
            f" {s['virus_caught']:>4} {s['virus_missed']:>4} {len(s['errors']):>4} {_f(s['precision']):>6}"
            f" {_f(s['recall']):>6} {_f(s['f1']):>6} {_f(s['virus_recall']):>6}"
        )
    for s in report["systems"]:
        if s["false_positives"]:
            lines.append(f"false positives of {s['system']}: {', '.join(s['false_positives'])}")
        if s["errors"] and s["kind"] == "engine":
            lines.append(f"not judged by {s['system']} (error): {', '.join(s['errors'])}")
    if report["agreement"]:
        lines.append("")
        for p in report["agreement"]:
            kappa = "n/a" if p["kappa"] is None else f"{p['kappa']:.3f}"
            lines.append(f"kappa {p['a']} / {p['b']}: {kappa} ({p['agree']} of {p['both_judged']} agree)")
    b = report["best"]
    lines.append("")
    if b["system"]:
        lines.append(f"best combine mode: {b['system']} (detection {_f(b['detection'])}; {b['criterion']})")
    else:
        lines.append(f"best combine mode: none ({b['note']}; criterion: {b['criterion']})")
    return "\n".join(lines)


def _f(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def tty_progress(stream: Any = sys.stderr) -> Callable[[int, int], None] | None:
    """A one-line progress bar on a terminal; None (no output) otherwise."""
    if not stream.isatty():
        return None
    lock = threading.Lock()

    def show(done: int, total: int) -> None:
        with lock:
            width = 30
            filled = width * done // max(total, 1)
            stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} scans")
            if done == total:
                stream.write("\n")
            stream.flush()

    return show
