"""One decision per message from all verdicts, under the operator's `[policy]`.

Precedence: virus, then failed antivirus scanning, then a stage's final answer (access list,
DMARC), then spam (or failed spam scanning), then clean. Every step leaves a reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from quorum.config.model import EngineSettings, PolicySettings, ReplyTexts
from quorum.pipeline import replies
from quorum.pipeline.answer import Action, Reply
from quorum.pipeline.transaction import Scan
from quorum.verdict import LIMITS_EXCEEDED, Category, Status, Verdict


@dataclass
class Decision:
    action: Action
    label: str  # clean | virus | unchecked | spam
    reply: Reply | None = None
    score: float | None = None
    verdicts: list[Verdict] = field(default_factory=list)
    degraded: list[str] = field(default_factory=list)
    left_out: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    quarantine_reason: str | None = None


@dataclass(frozen=True)
class Vote:
    verdict: Verdict
    weight: float
    voting: bool


class Policy:
    """The decision rules of one effective policy (global, or a tenant's). Cheap to build.

    Engine thresholds and weights are applied here, not in the adapters: an adapter reports the
    engine's own score and required score; `[engines.X] threshold` re-judges that score.
    """

    def __init__(
        self,
        policy: PolicySettings,
        engines: Mapping[str, EngineSettings],
        texts: ReplyTexts | None = None,
        on_oversize: str = "reject",
    ) -> None:
        self.settings = policy
        self.engines = engines
        self.texts = texts or ReplyTexts()
        self.on_oversize = on_oversize  # [milter] on_oversize: also for a message too large for every AV engine

    def judged(self, v: Verdict) -> Verdict:
        """`v` re-judged against the configured `threshold` of its engine, if any."""
        s = self.engines.get(v.engine)
        if s is None or s.threshold is None or v.score is None or v.category is not Category.ANTISPAM:
            return v
        if v.status not in (Status.SPAM, Status.CLEAN):
            return v
        status = Status.SPAM if v.score >= s.threshold else Status.CLEAN
        return v.with_(status=status, threshold=s.threshold, detail=f"{v.score:.2f}/{s.threshold:.2f}")

    def _vote(self, v: Verdict) -> Vote:
        s = self.engines.get(v.engine)
        if s is None:  # an extra vote from a stage (e.g. a DNSBL listing)
            return Vote(v, float(v.extra.get("weight", 1.0)), True)
        return Vote(v, s.weight, s.mode == "vote")

    def settled(self, verdicts: list[Verdict], scan: Scan) -> bool:
        """True once the remaining scans cannot change the answer (early exit)."""
        if self.settings.on_virus != "tag":
            for v in verdicts:
                if v.status is Status.INFECTED and self._vote(v).voting:
                    return True
        return scan.final

    def decide(self, verdicts: list[Verdict], scan: Scan) -> Decision:
        p = self.settings
        verdicts = [self.judged(v) for v in verdicts]
        votes = [self._vote(v) for v in verdicts + scan.votes]
        voting = [x.verdict for x in votes if x.voting]
        d = Decision(Action.ACCEPT, "clean", verdicts=verdicts + scan.votes)
        # degraded: an engine that should have answered and did not (a size skip is not a failure)
        d.degraded = [v.engine for v in voting if v.status is Status.ERROR or v.detail == "circuit-open"]
        d.left_out = [
            f"{x.verdict.engine}:{'shadow' if not x.voting else x.verdict.status}"
            for x in votes
            if not x.voting or not x.verdict.status.answered
        ]
        d.reasons.extend(scan.reasons)
        av = [v for v in voting if v.category is Category.ANTIVIRUS]
        spam = [v for v in voting if v.category is Category.ANTISPAM]

        infected = [v for v in av if v.status is Status.INFECTED]
        viruses = [v for v in infected if v.detail != LIMITS_EXCEEDED]
        if viruses:
            return self._virus(d, viruses)
        if infected:  # only limit alerts: content no engine could scan whole, never "clean"
            return self._unscannable(d, infected)
        if not av:
            # Nothing that looks for viruses was asked (engines = [], antivirus disabled or shadow
            # for this policy): whatever the spam engines say, the message is not "clean".
            d.label = "unchecked"
            d.reasons.append("no antivirus engine votes under this policy")
        elif not any(v.status.answered for v in av):
            d.label = "unchecked"
            failed = [v for v in av if _failed(v, scan)]
            if failed:
                d.reasons.append(
                    "no antivirus engine answered: " + ", ".join(f"{v.engine}={v.label()}" for v in failed)
                )
                if p.on_engine_failure == "tempfail":
                    return self._finish(d, Action.TEMPFAIL, "unchecked", replies.AV_UNAVAILABLE)
            # Too large for an engine that would otherwise have scanned it: on_oversize, also when
            # the others failed and failures are accepted (the stricter of the two choices wins).
            if any(v.detail == "too-large" for v in av) and scan.reply is None:
                d.reasons.append("too large for the antivirus engines: not scanned")
                if self.on_oversize == "reject":
                    return self._finish(d, Action.REJECT, "unchecked", replies.TOO_BIG)
                if self.on_oversize == "tempfail":
                    return self._finish(d, Action.TEMPFAIL, "unchecked", replies.TOO_BIG_NOW)
                d.reasons.append('passed unscanned (on_oversize = "accept")')
        if scan.unfinished and not scan.final:
            # A check that could have refused it (DMARC, a content rule) did not finish: like an
            # engine failure, never a silent pass.
            d.reasons.append("checks not finished before the deadline: " + ", ".join(scan.unfinished))
            d.label = "unchecked"
            if p.on_engine_failure == "tempfail":
                return self._finish(d, Action.TEMPFAIL, "unchecked", replies.CHECKS_UNAVAILABLE)
        if scan.reply is not None:
            return self._finish(d, scan.reply.action, d.label, scan.reply)
        return self._spam(d, spam, scan)

    def _virus(self, d: Decision, infected: list[Verdict]) -> Decision:
        names = ", ".join(dict.fromkeys(n for v in infected for n in (v.names or ("unknown",))))
        engines = ",".join(v.engine for v in infected)
        d.reasons.append(f"virus {names} found by {engines}")
        action = self.settings.on_virus
        if action == "reject":
            return self._finish(d, Action.REJECT, "virus", replies.virus(self.texts, names))
        if action == "quarantine":
            d.quarantine_reason = f"virus {names} found by {engines}"
            return self._finish(d, Action.QUARANTINE, "virus")
        if action == "discard":
            return self._finish(d, Action.DISCARD, "virus")
        return self._finish(d, Action.TAG, "virus")

    def _unscannable(self, d: Decision, alerts: list[Verdict]) -> Decision:
        limits = ", ".join(dict.fromkeys(v.extra.get("limit") or (v.names or ("limit",))[0] for v in alerts))
        found = ", ".join(f"{v.engine}: {n}" for v in alerts for n in v.names or ("limit",))
        d.reasons.append(f"could not be scanned completely ({found})")
        action = self.settings.on_virus  # the same choice as for a virus: the content may hide one
        if action == "reject" and all(v.extra.get("limit") == "MaxScanTime" for v in alerts):
            return self._finish(d, Action.TEMPFAIL, "unchecked", replies.unscannable_now(limits))
        if action == "reject":
            return self._finish(d, Action.REJECT, "unchecked", replies.unscannable(limits))
        if action == "quarantine":
            d.quarantine_reason = f"could not be scanned completely ({limits})"
            return self._finish(d, Action.QUARANTINE, "unchecked")
        if action == "discard":
            return self._finish(d, Action.DISCARD, "unchecked")
        return self._finish(d, Action.TAG, "unchecked")

    def _spam(self, d: Decision, spam: list[Verdict], scan: Scan) -> Decision:
        p = self.settings
        engine_votes = [v for v in spam if v.engine in self.engines]
        answered = [v for v in spam if v.status.answered]
        if scan.skip_spam:
            d.reasons.append("access list OK: spam verdicts ignored")
            return self._finish(d, Action.QUARANTINE if scan.hold else Action.ACCEPT, d.label)
        # An engine that chose not to judge (rspamd `is_skipped`) is no failure; errors, open
        # circuits and messages too large for every spam engine are.
        unanswered = [v for v in engine_votes if not v.status.answered and not _own_choice(v)]
        if unanswered and not any(v.status.answered for v in engine_votes):
            d.reasons.append("no antispam engine answered")
            if p.on_spam_engine_failure == "tempfail":
                return self._finish(d, Action.TEMPFAIL, d.label, replies.SPAM_UNAVAILABLE)
        is_spam, score = self.combine(answered)
        d.score = score
        if scan.spam_flag and not is_spam:
            is_spam = True
            d.reasons.append("a stage flagged it as spam")
        if not is_spam:
            if answered:
                d.reasons.append(f"not spam by {p.spam_combine} of {len(answered)} vote(s)")
            if scan.hold:
                d.quarantine_reason = "; ".join(scan.reasons) or "held by policy"
                return self._finish(d, Action.QUARANTINE, d.label)
            return self._finish(d, Action.ACCEPT, d.label)
        d.reasons.append(f"spam by {p.spam_combine} of {len(answered)} vote(s), score {score:.2f}")
        action = p.on_spam
        if action != "reject" and p.spam_reject_score is not None and score >= p.spam_reject_score:
            d.reasons.append(f"score {score:.2f} >= spam_reject_score {p.spam_reject_score:.2f}")
            action = "reject"
        if action == "reject":
            return self._finish(d, Action.REJECT, "spam", replies.spam(self.texts))
        if action == "quarantine" or scan.hold:
            d.quarantine_reason = f"spam score {score:.2f}"
            return self._finish(d, Action.QUARANTINE, "spam")
        return self._finish(d, Action.TAG, "spam")

    def can_change(self, verdicts: list[Verdict], scan: Scan, unasked: list[EngineSettings]) -> bool:
        """Cascade: could the `unasked` (expensive, antispam) engines still change the decision?

        Exact bracket: each unasked engine is assumed at both ends of what it could say (clean at
        normalised score -2, spam at +2, the clamp bounds); if the decision (action, label, reply)
        is the same at both ends and every combination in between, asking it is pointless. The
        combine modes are monotone in each vote, so the two ends bound everything between them.
        The margin that follows, e.g. `weighted` with weights w (cheap) and u (unasked): skipped
        while the cheap mean is below (w + u - 2u) / w, i.e. below 0 for equal weights.

        `cascade_clean_below` (a deliberate trust, 0 disables it): when every cheap antispam
        engine answered with a normalised score below it (rspamd far under its own threshold),
        the unasked ones are taken to agree, i.e. bracketed at the cheap engines' top score.
        """
        names = [e.name for e in unasked if e.mode == "vote"]
        if not names:
            return False
        answered = [self.judged(v) for v in verdicts if v.status.answered and v.category is Category.ANTISPAM]
        trust = self.settings.cascade_clean_below
        if trust > 0 and answered and all(_normalised(v) < trust for v in answered):
            top = max(_normalised(v) for v in answered)
            ends = [(Status.CLEAN, min(-2.0, top)), (Status.CLEAN, top)]
        else:
            ends = [(Status.CLEAN, -2.0), (Status.SPAM, 2.0)]
        outcomes = set()
        for status, n in ends:
            assumed = [Verdict(name, Category.ANTISPAM, status, score=n, threshold=1.0) for name in names]
            d = self.decide(verdicts + assumed, scan)
            outcomes.add((d.action, d.label, d.reply))
        return len(outcomes) > 1

    def combine(self, answered: list[Verdict]) -> tuple[bool, float]:
        """(is spam, combined normalised score) under `spam_combine`."""
        if not answered:
            return False, 0.0
        weights = {v.engine: self._vote(v).weight for v in answered}
        flags = [v.status is Status.SPAM for v in answered]
        norm = [_normalised(v) for v in answered]
        total_w = sum(weights[v.engine] for v in answered) or 1.0
        mean = sum(weights[v.engine] * n for v, n in zip(answered, norm, strict=True)) / total_w
        mode = self.settings.spam_combine
        if mode == "max":
            top = max(norm)
            return top >= 1.0, top
        if mode == "weighted":
            return mean >= 1.0, mean
        if mode == "all":
            return all(flags), mean
        if mode == "quorum":
            return sum(flags) >= self.settings.spam_quorum, mean
        return any(flags), mean

    @staticmethod
    def _finish(d: Decision, action: Action, label: str, reply: Reply | None = None) -> Decision:
        d.action, d.label, d.reply = action, label, reply
        return d


def _failed(v: Verdict, scan: Scan) -> bool:
    """An antivirus scan that should have answered and did not. `cancelled` is a failure too unless
    a stage's final refusal decided the message without it: a scan that never ran (no free slot,
    queued past its deadline) must never pass as "unchecked" and be delivered."""
    if v.status is Status.ERROR or v.detail == "circuit-open":
        return True
    return v.status is Status.CANCELLED and not scan.final


def _own_choice(v: Verdict) -> bool:
    """The engine itself declined to judge (e.g. rspamd `is_skipped`): not a scanning failure."""
    return v.status is Status.SKIPPED and v.detail not in ("too-large", "circuit-open")


def _normalised(v: Verdict) -> float:
    n = v.normalised_score
    if n is None:
        return 1.0 if v.status is Status.SPAM else 0.0
    return n
