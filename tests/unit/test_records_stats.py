"""`quorum stats` arithmetic on constructed records with answers worked out by hand."""

from __future__ import annotations

from typing import Any

import pytest

from quorum.records.agreement import cohen_kappa, pairwise
from quorum.records.stats import compute, matches_domain, percentile, render


def v(engine: str, status: str, ms: float = 10.0, **extra: Any) -> dict[str, Any]:
    category = "antivirus" if engine == "clamav" else "antispam"
    return {"engine": engine, "category": category, "status": status, "elapsed_ms": ms, **extra}


def rec(verdict: str, action: str, engines: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    base = {"verdict": verdict, "action": action, "engines": engines, "sender_domain": "a.example"}
    base.update({"recipient_domains": ["b.example"], "client_ip": "192.0.2.1"})
    base.update(extra)
    return base


def test_kappa_known_answer() -> None:
    # 10 messages: both positive 4, both negative 3, only A 2, only B 1.
    pairs = [(True, True)] * 4 + [(False, False)] * 3 + [(True, False)] * 2 + [(False, True)]
    # p_o = 0.7; p_e = 0.6*0.5 + 0.4*0.5 = 0.5; kappa = (0.7 - 0.5) / 0.5 = 0.4
    assert cohen_kappa(pairs) == pytest.approx(0.4)
    assert cohen_kappa([(True, True), (False, False)]) == pytest.approx(1.0)
    assert cohen_kappa([(True, False), (False, True)]) == pytest.approx(-1.0)
    assert cohen_kappa([(True, True)] * 5) is None  # chance agreement 1: undefined
    assert cohen_kappa([]) is None


def test_pairwise_counts_only_messages_both_answered() -> None:
    rows = [{"a": True, "b": True}, {"a": True}, {"a": False, "b": True}, {"b": False}]
    [p] = pairwise(rows, ["b", "a"])
    assert (p["a"], p["b"], p["both_judged"], p["agree"], p["only_a"], p["only_b"]) == ("a", "b", 2, 1, 0, 1)


def constructed() -> list[dict[str, Any]]:
    """rspamd and spamassassin on 10 spam-or-ham messages with the kappa case above; clamav on all."""
    records = []
    layout = [("spam", "spam")] * 4 + [("clean", "clean")] * 3 + [("spam", "clean")] * 2 + [("clean", "spam")]
    for i, (r, s) in enumerate(layout):
        verdict = "spam" if "spam" in (r, s) else "clean"
        records.append(
            rec(
                verdict,
                "tag" if verdict == "spam" else "accept",
                [v("clamav", "clean", 5), v("rspamd", r, 10 + i), v("spamassassin", s, 100 + i)],
            )
        )
    # a virus only clamav caught; spamassassin timed out there, rspamd was cancelled (early exit)
    records.append(
        rec(
            "virus",
            "reject",
            [v("clamav", "infected", 7), v("rspamd", "cancelled"), v("spamassassin", "error", 0, error="timeout")],
            client_ip="198.51.100.9",
            sender_domain="bad.example",
        )
    )
    # rspamd's circuit open, spamassassin failed with an error
    records.append(
        rec(
            "clean",
            "accept",
            [
                v("clamav", "clean", 5),
                v("rspamd", "skipped", 0, detail="circuit-open"),
                v("spamassassin", "error", 0, error="connection refused"),
            ],
        )
    )
    # a rate-limit refusal at DATA: no engine ran
    records.append(
        rec("refused", "tempfail", [], ratelimit={"refused": "sender_domain"}, client_ip="198.51.100.9", stage="data")
    )
    return records


def test_stats_on_a_constructed_case() -> None:
    s = compute(constructed())
    assert s["records"] == 13
    assert s["totals"]["verdict"] == {"spam": 7, "clean": 4, "virus": 1, "refused": 1}
    assert s["totals"]["action"] == {"tag": 7, "accept": 4, "reject": 1, "tempfail": 1}
    assert s["detected_by_any"] == 8  # 7 spam + 1 virus
    e = s["engines"]
    assert (e["rspamd"]["detections"], e["rspamd"]["only_by"]) == (6, 2)
    assert (e["spamassassin"]["detections"], e["spamassassin"]["only_by"]) == (5, 1)
    assert (e["clamav"]["detections"], e["clamav"]["only_by"]) == (1, 1)
    assert e["rspamd"]["detection_share"] == 0.75
    assert e["clamav"]["detection_share"] == 0.125
    # rspamd: 11 trials (the cancelled one is not a trial), one circuit-open skip
    assert e["rspamd"]["judged"] == 11
    assert e["rspamd"]["statuses"] == {"spam": 6, "clean": 4, "cancelled": 1, "skipped": 1}
    assert e["rspamd"]["circuit_open_rate"] == round(1 / 11, 4)
    assert e["spamassassin"]["timeout_rate"] == e["spamassassin"]["error_rate"] == round(1 / 12, 4)
    assert e["clamav"]["error_rate"] == 0.0
    # latencies: rspamd answered in 10..19 ms -> p50 = 14 (nearest rank 5 of 10), p99 = 19
    assert (e["rspamd"]["p50_ms"], e["rspamd"]["p99_ms"]) == (14.0, 19.0)
    pairs = {(p["a"], p["b"]): p for p in s["agreement"]}
    rs = pairs[("rspamd", "spamassassin")]
    assert (rs["both_judged"], rs["agree"], rs["only_a"], rs["only_b"]) == (10, 7, 2, 1)
    assert rs["kappa"] == pytest.approx(0.4)
    cr = pairs[("clamav", "rspamd")]  # clamav said clean on all 10 rspamd answered: kappa defined, 0
    assert cr["both_judged"] == 10 and cr["kappa"] == 0.0
    assert s["ratelimit_refused"] == {"sender_domain": 1}
    clients = {r["name"]: r for r in s["top"]["clients"]}
    assert clients["198.51.100.9"] == {"name": "198.51.100.9", "messages": 2, "refused": 2, "refusal_rate": 1.0}
    assert s["top"]["clients"][0]["name"] == "192.0.2.1"
    text = render(s)
    assert "kappa 0.400" in text and "sender_domain 1" in text


def test_percentile_and_domain_filter() -> None:
    assert percentile([], 50) is None
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile([float(i) for i in range(1, 101)], 99) == 99.0
    r = rec("clean", "accept", [], tenant="t.example")
    assert matches_domain(r, "A.example") and matches_domain(r, "b.example") and matches_domain(r, "t.example")
    assert not matches_domain(r, "c.example")
