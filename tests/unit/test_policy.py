"""Policy combination: every `spam_combine` mode, weights, thresholds, shadow engines, left-out
engines, the spam actions, engine-failure actions and the early-exit rule (fake verdicts)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from quorum.config.model import EngineSettings, PolicySettings
from quorum.engines.rspamd import Rspamd, parse_reply
from quorum.pipeline.headers import headers_to_add, sanitise_header, verdict_value
from quorum.pipeline.policy import Decision, Policy
from quorum.pipeline.stages import Action, Reply
from quorum.pipeline.transaction import Scan as ScanContext
from quorum.verdict import Category, Status, Verdict

SPAM_TYPES = {"rspamd", "spamassassin", "spam3"}


def engines(*specs: str | tuple[str, dict[str, Any]]) -> dict[str, EngineSettings]:
    """`"rspamd"` or `("rspamd", {"weight": 2})`; the type is the name (clamav2 -> clamav)."""
    out = {}
    for spec in specs:
        name, kw = (spec, {}) if isinstance(spec, str) else spec
        type_ = "clamav" if name.startswith("clamav") else "rspamd" if name.startswith("rspamd") else "spamassassin"
        out[name] = EngineSettings(name, type_, **kw)
    return out


def policy(engine_map: dict[str, EngineSettings], **kw: Any) -> Policy:
    return Policy(PolicySettings(**kw), engine_map)


def sp(engine: str, score: float, threshold: float = 5.0, status: Status | None = None) -> Verdict:
    """An antispam verdict deciding like an engine does (spam iff score >= threshold)."""
    if status is None:
        status = Status.SPAM if score >= threshold else Status.CLEAN
    return Verdict(engine, Category.ANTISPAM, status, score=score, threshold=threshold)


def failed(engine: str, category: Category = Category.ANTISPAM, detail: str | None = None) -> Verdict:
    if detail is not None:
        return Verdict(engine, category, Status.SKIPPED, detail=detail)
    return Verdict(engine, category, Status.ERROR, error="cannot connect")


def av(engine: str, status: Status = Status.CLEAN, *names: str) -> Verdict:
    return Verdict(engine, Category.ANTIVIRUS, status, names=names)


def decide(p: Policy, *verdicts: Verdict, ctx: ScanContext | None = None, no_av: bool = False) -> Decision:
    """The decision; a clean antivirus verdict is added when the test gives none (a message no
    antivirus engine looked at is "unchecked", see test_no_antivirus_engine_is_unchecked_not_clean)."""
    given = list(verdicts)
    if not no_av and not any(v.category is Category.ANTIVIRUS for v in given):
        given.append(av("clamav"))
    return p.decide(given, ctx or ScanContext())


ALL3 = engines("clamav", "rspamd", "spamassassin")


# --- spam_combine modes -----------------------------------------------------------------------


def test_any_one_spam_vote_is_enough() -> None:
    p = policy(ALL3, spam_combine="any")
    assert decide(p, av("clamav"), sp("rspamd", 1.0), sp("spamassassin", 6.0)).label == "spam"
    assert decide(p, av("clamav"), sp("rspamd", 1.0), sp("spamassassin", 4.0)).label == "clean"


def test_all_needs_every_answering_engine() -> None:
    p = policy(ALL3, spam_combine="all")
    assert decide(p, av("clamav"), sp("rspamd", 1.0), sp("spamassassin", 6.0)).label == "clean"
    assert decide(p, av("clamav"), sp("rspamd", 16.0, 15.0), sp("spamassassin", 6.0)).label == "spam"
    # an engine in error is left out, so the one that answered decides alone
    d = decide(p, av("clamav"), failed("rspamd"), sp("spamassassin", 6.0))
    assert d.label == "spam" and d.degraded == ["rspamd"] and "rspamd:error" in d.left_out


@pytest.mark.parametrize(
    ("scores", "k", "label"),
    [
        ((6.0, 6.0, 1.0), 2, "spam"),
        ((6.0, 1.0, 1.0), 2, "clean"),
        ((6.0, 6.0, 1.0), 3, "clean"),
        ((6.0, 6.0, 6.0), 3, "spam"),
    ],
)
def test_quorum_k_of_n(scores: tuple[float, float, float], k: int, label: str) -> None:
    p = policy(engines("rspamd", "spamassassin", "spam3"), spam_combine="quorum", spam_quorum=k)
    assert (
        decide(p, *(sp(n, s) for n, s in zip(("rspamd", "spamassassin", "spam3"), scores, strict=True))).label == label
    )


def test_quorum_counts_only_engines_that_answered() -> None:
    p = policy(engines("rspamd", "spamassassin", "spam3"), spam_combine="quorum", spam_quorum=2)
    d = decide(p, sp("rspamd", 9.0), failed("spamassassin"), failed("spam3", detail="circuit-open"))
    assert d.label == "clean"  # one spam vote cannot make a quorum of two
    assert d.degraded == ["spamassassin", "spam3"]
    assert d.left_out == ["spamassassin:error", "spam3:skipped"]


def test_weighted_mean_of_normalised_scores() -> None:
    p = policy(engines("rspamd", "spamassassin"), spam_combine="weighted")
    # 0.4 and 2.0 (clamped from 30/15): mean 1.2 -> spam although only one engine said spam
    d = decide(p, sp("rspamd", 2.0, 5.0), sp("spamassassin", 30.0, 15.0))
    assert d.label == "spam" and d.score == pytest.approx(1.2)
    # 0.8 and 1.1: mean 0.95 -> not spam although one engine said spam
    d = decide(p, sp("rspamd", 4.0, 5.0), sp("spamassassin", 5.5, 5.0))
    assert d.label == "clean" and d.score == pytest.approx(0.95)


def test_weighted_clamps_so_gtube_cannot_swamp_the_others() -> None:
    p = policy(engines("rspamd", "spamassassin"), spam_combine="weighted")
    d = decide(p, sp("rspamd", -1.0, 5.0), sp("spamassassin", 1000.0, 5.0))  # 1000/5 counts as 2.0
    assert d.label == "clean" and d.score == pytest.approx(0.9)


def test_weights_shift_the_weighted_mean() -> None:
    verdicts = (sp("rspamd", 2.0, 5.0), sp("spamassassin", 10.0, 5.0))  # 0.4 and 2.0
    even = policy(engines("rspamd", "spamassassin"), spam_combine="weighted")
    assert decide(even, *verdicts).score == pytest.approx(1.2)
    heavy = policy(engines(("rspamd", {"weight": 3.0}), "spamassassin"), spam_combine="weighted")
    d = decide(heavy, *verdicts)  # (3 * 0.4 + 2.0) / 4
    assert d.label == "clean" and d.score == pytest.approx(0.8)
    muted = policy(engines(("rspamd", {"weight": 0.0}), "spamassassin"), spam_combine="weighted")
    d = decide(muted, *verdicts)
    assert d.label == "spam" and d.score == pytest.approx(2.0)


def test_weighted_leaves_failed_engines_out_of_the_mean() -> None:
    p = policy(engines("rspamd", "spamassassin"), spam_combine="weighted")
    d = decide(p, failed("rspamd"), sp("spamassassin", 6.0, 5.0))
    assert d.label == "spam" and d.score == pytest.approx(1.2) and d.degraded == ["rspamd"]


def test_max_takes_the_highest_normalised_score() -> None:
    p = policy(engines("rspamd", "spamassassin"), spam_combine="max")
    d = decide(p, sp("rspamd", 0.0, 15.0), sp("spamassassin", 5.5, 5.0))
    assert d.label == "spam" and d.score == pytest.approx(1.1)
    d = decide(p, sp("rspamd", 14.0, 15.0), sp("spamassassin", 4.9, 5.0))
    assert d.label == "clean"


def test_a_verdict_without_a_score_votes_by_its_status() -> None:
    p = policy(engines("rspamd", "spamassassin"), spam_combine="weighted")
    d = decide(p, Verdict("rspamd", Category.ANTISPAM, Status.SPAM), sp("spamassassin", 0.0, 5.0))
    assert d.score == pytest.approx(0.5) and d.label == "clean"  # spam without score = 1.0, clean = 0.0


def test_engine_threshold_override_is_applied_by_the_policy() -> None:
    """Adapters report the engine's own score and required score; `[engines.X] threshold` is the
    policy's: it re-judges the score and normalises by the configured threshold."""
    reply = parse_reply(json.dumps({"action": "no action", "score": 4.5, "required_score": 15.0}).encode())
    engine = Rspamd(EngineSettings("rspamd", "rspamd", options={"url": "http://127.0.0.1:1"}))
    try:
        verdict = engine.verdict_from(reply)
        assert verdict.status is Status.CLEAN and verdict.threshold == 15.0
        d = decide(policy(engines(("rspamd", {"threshold": 3.0})), spam_combine="max"), verdict)
        assert d.label == "spam" and d.score == pytest.approx(1.5)
        assert d.verdicts[0].threshold == 3.0 and d.verdicts[0].detail == "4.50/3.00"
        d = decide(policy(engines("rspamd"), spam_combine="max"), verdict)
        assert d.label == "clean" and d.score == pytest.approx(0.3)
    finally:
        engine.close()


# --- shadow engines ------------------------------------------------------------------------------


def test_shadow_engine_is_reported_but_never_decides() -> None:
    eng = engines("clamav", "rspamd", ("spamassassin", {"mode": "shadow"}))
    for mode in ("any", "max", "weighted"):
        p = policy(eng, spam_combine=mode)
        d = decide(p, av("clamav"), sp("rspamd", 1.0), sp("spamassassin", 1000.0))
        assert d.label == "clean" and d.action is Action.ACCEPT, mode
        assert d.left_out == ["spamassassin:shadow"] and d.degraded == []
        assert any(v.engine == "spamassassin" for v in d.verdicts)  # still in X-Quorum-Engines
    # and a shadow engine cannot rescue a spam decision either
    d = decide(policy(eng, spam_combine="all"), av("clamav"), sp("rspamd", 9.0), sp("spamassassin", 0.0))
    assert d.label == "spam"


def test_shadow_antivirus_finding_does_not_reject() -> None:
    p = policy(engines("clamav", ("clamav2", {"mode": "shadow"})))
    d = decide(p, av("clamav"), av("clamav2", Status.INFECTED, "Eicar-Test-Signature"))
    assert d.label == "clean" and d.action is Action.ACCEPT
    assert not p.settled([av("clamav2", Status.INFECTED, "x")], ScanContext())


def test_failed_shadow_engine_is_not_degraded() -> None:
    p = policy(engines("rspamd", ("spamassassin", {"mode": "shadow"})))
    d = decide(p, sp("rspamd", 1.0), failed("spamassassin"))
    assert d.degraded == [] and d.left_out == ["spamassassin:shadow"]


# --- left out engines in the header ----------------------------------------------------------------


def test_error_and_skipped_are_left_out_and_the_headers_say_so() -> None:
    p = policy(ALL3, spam_combine="any")
    d = decide(p, av("clamav"), sp("rspamd", 16.0, 15.0), failed("spamassassin", detail="circuit-open"))
    assert d.label == "spam" and d.action is Action.TAG
    headers = dict(headers_to_add(d, ScanContext()))
    assert headers["X-Quorum-Verdict"] == "spam; score=1.07; degraded=spamassassin"
    assert headers["X-Quorum-Engines"] == "clamav=clean, rspamd=spam(16.00/15.00), spamassassin=skipped(circuit-open)"
    assert headers["X-Spam-Flag"] == "YES"


def test_too_large_for_the_spam_engine_is_skipped_not_failed() -> None:
    p = policy(ALL3, on_spam_engine_failure="tempfail")
    d = decide(p, av("clamav"), failed("rspamd", detail="too-large"), failed("spamassassin", detail="too-large"))
    assert d.action is Action.TEMPFAIL  # no antispam engine answered at all
    p = policy(ALL3, on_spam_engine_failure="accept")
    d = decide(p, av("clamav"), failed("rspamd", detail="too-large"), sp("spamassassin", 1.0))
    assert d.action is Action.ACCEPT and d.left_out == ["rspamd:skipped"]


# --- on_spam and spam_reject_score ----------------------------------------------------------------


def test_tagged_spam_headers() -> None:
    p = policy(ALL3, on_spam="tag")
    d = decide(p, av("clamav"), sp("rspamd", 18.3, 10.0), sp("spamassassin", 9.15, 5.0))
    assert (d.action, d.label, d.reply) == (Action.TAG, "spam", None)
    assert verdict_value(d) == "spam; score=1.83"
    headers = headers_to_add(d, ScanContext())
    assert ("X-Spam-Flag", "YES") in headers and ("X-Quorum-Verdict", "spam; score=1.83") in headers


def test_quarantined_spam() -> None:
    p = policy(ALL3, on_spam="quarantine")
    d = decide(p, av("clamav"), sp("rspamd", 18.3, 10.0), sp("spamassassin", 9.15, 5.0))
    assert d.action is Action.QUARANTINE and d.quarantine_reason == "spam score 1.83"
    assert ("X-Quorum-Quarantine", "spam score 1.83") in headers_to_add(d, ScanContext())


def test_rejected_spam() -> None:
    p = policy(ALL3, on_spam="reject")
    d = decide(p, av("clamav"), sp("rspamd", 18.3, 10.0), sp("spamassassin", 9.15, 5.0))
    assert d.action is Action.REJECT and d.reply == Reply.reject("550", "5.7.1", "message classified as spam")
    assert headers_to_add(d, ScanContext()) == []


@pytest.mark.parametrize(
    ("on_spam", "score", "action"),
    [
        ("tag", 9.0, Action.REJECT),  # 1.8 >= 1.8
        ("tag", 8.9, Action.TAG),
        ("quarantine", 9.5, Action.REJECT),
        ("quarantine", 6.0, Action.QUARANTINE),
    ],
)
def test_spam_reject_score(on_spam: str, score: float, action: Action) -> None:
    p = policy(engines("spamassassin"), on_spam=on_spam, spam_reject_score=1.8)
    d = decide(p, sp("spamassassin", score, 5.0))
    assert d.action is action
    if action is Action.REJECT:
        assert d.reply is not None and (d.reply.code, d.reply.xcode) == ("550", "5.7.1")
        assert any("spam_reject_score" in r for r in d.reasons)


def test_spam_reject_score_needs_a_spam_decision() -> None:
    """A high mean that the combination rule still calls ham is not rejected."""
    p = policy(engines("rspamd", "spamassassin"), spam_combine="all", spam_reject_score=1.0)
    d = decide(p, sp("rspamd", 0.0, 5.0), sp("spamassassin", 1000.0, 5.0))
    assert d.action is Action.ACCEPT and d.label == "clean"


# --- on_spam_engine_failure --------------------------------------------------------------------------


def test_every_spam_engine_failed_accept() -> None:
    p = policy(ALL3, on_spam_engine_failure="accept")
    d = decide(p, av("clamav"), failed("rspamd"), failed("spamassassin", detail="circuit-open"))
    assert d.action is Action.ACCEPT and d.label == "clean"
    assert d.degraded == ["rspamd", "spamassassin"]
    assert verdict_value(d) == "clean; degraded=rspamd,spamassassin"
    assert "no antispam engine answered" in d.reasons


def test_every_spam_engine_failed_tempfail() -> None:
    p = policy(ALL3, on_spam_engine_failure="tempfail")
    d = decide(p, av("clamav"), failed("rspamd"), failed("spamassassin"))
    assert d.action is Action.TEMPFAIL and d.reply is not None and d.reply.code == "451"


def test_one_spam_engine_failed_is_not_an_engine_failure() -> None:
    p = policy(ALL3, on_spam_engine_failure="tempfail")
    d = decide(p, av("clamav"), failed("rspamd"), sp("spamassassin", 1000.0))
    assert d.action is Action.TAG and verdict_value(d) == "spam; score=2.00; degraded=rspamd"


# --- antivirus ----------------------------------------------------------------------------------------


def test_virus_wins_whatever_the_spam_engines_say() -> None:
    p = policy(ALL3, on_virus="reject", on_spam="tag")
    d = decide(p, av("clamav", Status.INFECTED, "Eicar-Test-Signature"), sp("rspamd", -5.0), sp("spamassassin", 0.0))
    assert d.action is Action.REJECT and d.label == "virus"
    assert str(d.reply) == "554 5.7.1 message contains a virus (Eicar-Test-Signature)"


def test_any_antivirus_engine_is_enough() -> None:
    p = policy(engines("clamav", "clamav2"))
    d = decide(p, av("clamav"), av("clamav2", Status.INFECTED, "Win.Test"))
    assert d.label == "virus" and "virus Win.Test found by clamav2" in d.reasons


@pytest.mark.parametrize(
    ("on_virus", "action"),
    [
        ("quarantine", Action.QUARANTINE),
        ("discard", Action.DISCARD),
        ("tag", Action.TAG),
    ],
)
def test_other_virus_actions(on_virus: str, action: Action) -> None:
    d = decide(policy(ALL3, on_virus=on_virus), av("clamav", Status.INFECTED, "X"), sp("rspamd", 0.0))
    assert d.action is action and d.label == "virus"


def test_failed_antivirus_tempfails_or_passes_unchecked() -> None:
    verdicts = (failed("clamav", Category.ANTIVIRUS), sp("rspamd", 0.0))
    d = decide(policy(ALL3, on_engine_failure="tempfail"), *verdicts)
    assert d.action is Action.TEMPFAIL and d.reply is not None and str(d.reply).startswith("451 4.7.1")
    d = decide(policy(ALL3, on_engine_failure="accept"), *verdicts)
    assert d.action is Action.ACCEPT and d.label == "unchecked" and d.degraded == ["clamav"]
    d = decide(policy(ALL3, on_engine_failure="tempfail"), failed("clamav", Category.ANTIVIRUS, "circuit-open"))
    assert d.action is Action.TEMPFAIL


def test_too_large_for_antivirus_follows_on_oversize() -> None:
    """Too large for every antivirus engine is not scanned: refused by default (552, like a message
    over max_message_size), 452 under "tempfail", delivered "unchecked" only under "accept"."""
    too_large = failed("clamav", Category.ANTIVIRUS, "too-large")
    d = decide(policy(ALL3, on_engine_failure="tempfail"), too_large)
    assert (d.action, d.label, str(d.reply)[:9]) == (Action.REJECT, "unchecked", "552 5.3.4")
    d = Policy(PolicySettings(), ALL3, on_oversize="tempfail").decide([too_large], ScanContext())
    assert (d.action, str(d.reply)[:9]) == (Action.TEMPFAIL, "452 4.3.4")
    d = Policy(PolicySettings(), ALL3, on_oversize="accept").decide([too_large], ScanContext())
    assert d.action is Action.ACCEPT and d.label == "unchecked"


def test_antivirus_cancelled_without_a_final_refusal_is_a_failure() -> None:
    """Issue 17 item 1: `cancelled` is fine only when a stage's refusal decided the message; on its
    own (the scan never ran) it must not pass as "unchecked"."""
    cancelled = Verdict("clamav", Category.ANTIVIRUS, Status.CANCELLED)
    d = decide(policy(ALL3), cancelled, sp("rspamd", 0.0))
    assert d.action is Action.TEMPFAIL and d.label == "unchecked"
    d = decide(policy(ALL3, on_engine_failure="accept"), cancelled, sp("rspamd", 0.0))
    assert d.action is Action.ACCEPT and d.label == "unchecked" and "no antivirus engine answered" in d.reasons[0]


def test_no_antivirus_engine_is_unchecked_not_clean() -> None:
    """Issue 17 item 6: a policy under which no antivirus engine votes (engines = [], clamav disabled
    or in shadow for the domain) never labels a message "clean"."""
    for verdicts in ([], [sp("rspamd", 0.0)], [Verdict("clamav", Category.ANTIVIRUS, Status.CLEAN)]):
        engine_map = ALL3 if verdicts and verdicts[0].category is Category.ANTISPAM else {}
        if verdicts and verdicts[0].category is Category.ANTIVIRUS:
            engine_map = engines(("clamav", {"mode": "shadow"}))
        d = decide(policy(engine_map), *verdicts, no_av=True)
        assert d.action is Action.ACCEPT and d.label == "unchecked", (verdicts, d)
        assert "no antivirus engine votes under this policy" in d.reasons
    d = decide(policy(ALL3), sp("rspamd", 100.0), no_av=True)
    assert d.label == "spam"  # a spam verdict still says what it is


# --- early exit -----------------------------------------------------------------------------------------


def test_settled_by_a_virus_unless_it_is_only_tagged() -> None:
    infected = [av("clamav", Status.INFECTED, "Eicar")]
    for on_virus in ("reject", "quarantine", "discard"):
        assert policy(ALL3, on_virus=on_virus).settled(infected, ScanContext())
    assert not policy(ALL3, on_virus="tag").settled(infected, ScanContext())
    assert not policy(ALL3).settled([av("clamav"), sp("rspamd", 100.0)], ScanContext())


def test_settled_by_a_stage_reply() -> None:
    p = policy(ALL3)
    ctx = ScanContext()
    assert not p.settled([], ctx)
    ctx.decide(Reply.reject("550", "5.7.1", "DMARC policy"), "dmarc reject")
    assert p.settled([], ctx)


def test_decision_after_an_early_exit() -> None:
    p = policy(ALL3, on_virus="reject")
    cancelled = [Verdict(n, Category.ANTISPAM, Status.CANCELLED) for n in ("rspamd", "spamassassin")]
    d = decide(p, av("clamav", Status.INFECTED, "Eicar"), *cancelled)
    assert d.action is Action.REJECT and d.label == "virus"
    assert d.degraded == []  # cancelled on purpose: not a degraded scan
    assert d.left_out == ["rspamd:cancelled", "spamassassin:cancelled"]


def test_stage_reply_with_antivirus_cancelled_gives_an_honest_reason() -> None:
    p = policy(ALL3)
    ctx = ScanContext()
    ctx.decide(Reply.reject("550", "5.7.1", "DMARC policy reject"), "dmarc=fail, p=reject")
    cancelled = [
        Verdict(n, c, Status.CANCELLED) for n, c in (("clamav", Category.ANTIVIRUS), ("rspamd", Category.ANTISPAM))
    ]
    d = decide(p, *cancelled, ctx=ctx)
    assert d.action is Action.REJECT and d.reply is not None and d.reply.code == "550"
    assert not any("too large" in r for r in d.reasons), d.reasons
    assert d.reasons[0] == "dmarc=fail, p=reject"


# --- stage facts ------------------------------------------------------------------------------------------


def test_stage_vote_is_weighted_like_an_engine() -> None:
    ctx = ScanContext()
    ctx.votes.append(
        Verdict("dnsbl:bl.example", Category.ANTISPAM, Status.SPAM, score=0.5, threshold=1.0, extra={"weight": "2.0"})
    )
    p = policy(engines("rspamd"), spam_combine="weighted")
    d = decide(p, sp("rspamd", 7.5, 5.0), ctx=ctx)  # (1.5 + 2 * 0.5) / 3
    assert d.score == pytest.approx(2.5 / 3) and d.label == "clean"


def test_skip_spam_keeps_virus_scanning() -> None:
    ctx = ScanContext(skip_spam=True)
    p = policy(ALL3)
    assert decide(p, av("clamav"), sp("rspamd", 100.0), ctx=ctx).action is Action.ACCEPT
    assert decide(p, av("clamav", Status.INFECTED, "X"), sp("rspamd", 100.0), ctx=ctx).action is Action.REJECT


def test_spam_flag_from_a_stage() -> None:
    ctx = ScanContext(spam_flag=True)
    d = decide(policy(ALL3), av("clamav"), sp("rspamd", 0.0), ctx=ctx)
    assert d.action is Action.TAG and d.label == "spam"


def test_a_long_engine_list_is_folded_not_cut() -> None:
    """Twelve engines with long error details: every item survives the per-line cap of 400."""
    failures = [Verdict(f"engine{i}", Category.ANTISPAM, Status.ERROR, error="x" * 70 + f" #{i}") for i in range(12)]
    p = policy(engines("rspamd"))
    d = decide(p, sp("rspamd", 1.0), *failures, no_av=True)
    value = dict(headers_to_add(d, ScanContext()))["X-Quorum-Engines"]
    lines = sanitise_header(value).split("\n\t")
    assert len(lines) > 1 and all(len(line) <= 200 for line in lines)
    items = [item.strip() for item in " ".join(lines).split(",")]
    assert items[0] == "rspamd=clean(1.00/5.00)"
    assert items[1:] == [f"engine{i}=error({'x' * 70} #{i})" for i in range(12)]
    # a short list stays on one line
    d = decide(p, sp("rspamd", 1.0), failures[0], no_av=True)
    assert "\n" not in dict(headers_to_add(d, ScanContext()))["X-Quorum-Engines"]


# --- cascade: an expensive engine is skipped only when it cannot change the decision ---------------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=400, deadline=None)
@given(
    mode=st.sampled_from(["any", "all", "quorum", "weighted", "max"]),
    quorum=st.integers(1, 3),
    reject_score=st.one_of(st.none(), st.floats(0.5, 2.0)),
    on_spam=st.sampled_from(["tag", "quarantine", "reject"]),
    cheap=st.floats(-5.0, 20.0),
    cheap_w=st.floats(0.1, 3.0),
    exp=st.floats(-5.0, 20.0),
    exp_w=st.floats(0.1, 3.0),
    virus=st.booleans(),
    dnsbl=st.one_of(st.none(), st.floats(0.0, 2.0)),
)
def test_cascade_skip_never_changes_the_decision(
    mode: str,
    quorum: int,
    reject_score: float | None,
    on_spam: str,
    cheap: float,
    cheap_w: float,
    exp: float,
    exp_w: float,
    virus: bool,
    dnsbl: float | None,
) -> None:
    """Whatever the expensive engine would have said: if `can_change` says it cannot change the
    decision, the decision without it (skipped(cascade)) equals the full fan-out's."""
    eng = engines("clamav", ("rspamd", {"weight": cheap_w}), ("spamassassin", {"weight": exp_w}))
    p = policy(
        eng, spam_combine=mode, spam_quorum=quorum, spam_reject_score=reject_score, on_spam=on_spam, on_virus="tag"
    )
    scan = ScanContext()
    if dnsbl is not None:
        scan.votes.append(
            Verdict(
                "dnsbl:x", Category.ANTISPAM, Status.SPAM if dnsbl >= 1 else Status.CLEAN, score=dnsbl, threshold=1.0
            )
        )
    first = [av("clamav", Status.INFECTED if virus else Status.CLEAN, "V"), sp("rspamd", cheap, 5.0)]
    if p.can_change(first, scan, [eng["spamassassin"]]):
        return
    skipped = Verdict("spamassassin", Category.ANTISPAM, Status.SKIPPED, detail="cascade")
    full = p.decide([*first, sp("spamassassin", exp, 5.0)], scan)
    cascaded = p.decide([*first, skipped], scan)
    assert (cascaded.action, cascaded.label, cascaded.reply) == (full.action, full.label, full.reply)


def test_cascade_margins_per_combine_mode() -> None:
    eng = engines("clamav", "rspamd", "spamassassin")
    unasked = [eng["spamassassin"]]
    clean_low = [av("clamav"), sp("rspamd", -1.0, 5.0)]  # normalised -0.2
    spam = [av("clamav"), sp("rspamd", 9.0, 5.0)]
    assert policy(eng, spam_combine="any").can_change(clean_low, ScanContext(), unasked)  # SA alone could flag it
    assert not policy(eng, spam_combine="any").can_change(spam, ScanContext(), unasked)  # already spam, tagged
    assert policy(eng, spam_combine="any", spam_reject_score=1.5).can_change(spam, ScanContext(), unasked)
    assert not policy(eng, spam_combine="weighted").can_change(clean_low, ScanContext(), unasked)  # (-0.2 + 2) / 2 < 1
    assert not policy(eng, spam_combine="all").can_change(clean_low, ScanContext(), unasked)
    assert policy(eng, spam_combine="max").can_change(clean_low, ScanContext(), unasked)
    trusting = policy(eng, spam_combine="any", cascade_clean_below=0.3)
    assert not trusting.can_change([av("clamav"), sp("rspamd", 1.0, 5.0)], ScanContext(), unasked)  # 0.2 < 0.3
    assert trusting.can_change([av("clamav"), sp("rspamd", 2.0, 5.0)], ScanContext(), unasked)  # 0.4: ask


def test_a_limit_alert_is_refused_as_unscannable_and_a_real_virus_still_wins() -> None:
    """Issue 17 item 4: clamd stopped at a limit (AlertExceedsMax): never clean, refused under
    on_virus with an honest reply; a named virus from any engine still decides as a virus."""
    alert = Verdict(
        "clamav",
        Category.ANTIVIRUS,
        Status.INFECTED,
        names=("Heuristics.Limits.Exceeded.MaxRecursion",),
        detail="limits-exceeded",
        extra={"limit": "MaxRecursion"},
    )
    d = decide(policy(ALL3), alert, sp("rspamd", 0.0))
    assert (d.action, d.label, str(d.reply)) == (
        Action.REJECT,
        "unchecked",
        "554 5.7.1 message could not be scanned completely (MaxRecursion)",
    )
    d = decide(policy(ALL3, on_virus="quarantine"), alert)
    assert d.action is Action.QUARANTINE and d.quarantine_reason == "could not be scanned completely (MaxRecursion)"
    two = engines("clamav", "clamav2", "rspamd")
    d = decide(policy(two), alert, av("clamav2", Status.INFECTED, "Eicar-Signature"))
    assert d.label == "virus" and "Eicar-Signature" in str(d.reply)


def test_an_unfinished_enforcing_check_is_an_engine_failure() -> None:
    """Issue 17 item 1 (stage checks): a check that could refuse (DMARC enforcement, a rule) and
    did not finish is not a pass: 451 under a fail-closed policy, "unchecked" otherwise, and
    nothing to say when a stage's own refusal already decided."""
    ctx = ScanContext(unfinished=["auth"])
    d = decide(policy(ALL3), av("clamav"), sp("rspamd", 0.0), ctx=ctx)
    assert (d.action, d.label, str(d.reply)[:9]) == (Action.TEMPFAIL, "unchecked", "451 4.7.1")
    d = decide(policy(ALL3, on_engine_failure="accept"), av("clamav"), sp("rspamd", 0.0), ctx=ctx)
    assert (d.action, d.label) == (Action.ACCEPT, "unchecked")
    ctx.decide(Reply.reject("554", "5.7.1", "header rule"), "header rule")
    assert decide(policy(ALL3), av("clamav"), ctx=ctx).reply == Reply.reject("554", "5.7.1", "header rule")


def test_too_large_for_one_engine_while_another_failed_takes_the_stricter_choice() -> None:
    """on_engine_failure = "accept" must not lift on_oversize = "reject" for a message one
    antivirus engine skipped by size while the other failed."""
    two = engines("clamav", "clamav2")
    too_large = failed("clamav", Category.ANTIVIRUS, "too-large")
    broken = failed("clamav2", Category.ANTIVIRUS)
    d = decide(policy(two, on_engine_failure="accept"), too_large, broken)
    assert (d.action, str(d.reply)[:9]) == (Action.REJECT, "552 5.3.4")


def test_a_scan_time_limit_alone_is_a_tempfail() -> None:
    """MaxScanTime depends on load: try again later rather than refuse for good."""
    alert = Verdict(
        "clamav",
        Category.ANTIVIRUS,
        Status.INFECTED,
        names=("Heuristics.Limits.Exceeded.MaxScanTime",),
        detail="limits-exceeded",
        extra={"limit": "MaxScanTime"},
    )
    d = decide(policy(ALL3), alert)
    assert (d.action, d.label, str(d.reply)[:9]) == (Action.TEMPFAIL, "unchecked", "451 4.7.1")
