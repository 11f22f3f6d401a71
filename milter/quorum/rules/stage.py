"""The keyword/regex rules stage: global `[[rules]]` plus the transaction's tenant rules, run at
end-of-data in a worker thread, turned into findings the policy understands.

- `reject` → a final 554 5.7.1 with the tenant's `replies.rule` text; `quarantine` → hold;
  `tag` → flagged as spam; `score` → an antispam vote (score = the rule's score, threshold 1).
- A message whose MIME tree is past `[mime] max_parts` / `max_depth` is refused with 554 5.6.0:
  it cannot be examined, and such nesting is hostile. An unparsable or slow-to-parse message is
  named in the log and left to the engines (they scanned the raw message).
"""

from __future__ import annotations

from quorum.message import Message
from quorum.pipeline import replies
from quorum.pipeline.stages import Stage
from quorum.pipeline.transaction import Findings, Transaction
from quorum.rules.evaluate import evaluate
from quorum.rules.settings import RulesSettings
from quorum.tenants import effective
from quorum.verdict import Category, Status, Verdict

STRUCTURE_LIMITS = ("max_parts", "max_depth")


class RulesStage(Stage):
    name = "rules"

    def __init__(self, settings: RulesSettings, texts: replies.ReplyTexts) -> None:
        self.settings = settings
        self.texts = texts

    def wants(self, txn: Transaction) -> bool:
        tenant = effective(txn)
        return bool(self.settings.rules) or (tenant is not None and bool(tenant.rules))

    def examine(self, txn: Transaction, message: Message, deadline: float) -> Findings | None:
        tenant = effective(txn)
        tenant_rules = tuple(tenant.rules) if tenant is not None else ()
        rules = self.settings.rules + tenant_rules
        if not rules:
            return None
        result = evaluate(rules, message, self.settings.limits, deadline)
        found = Findings(self.name)
        found.results.put(result, by=self.name)
        if result.limit_hit is not None:
            found.log["mime_limit"] = result.limit_hit
            if result.limit_hit in STRUCTURE_LIMITS:
                found.decide(replies.MIME_TOO_COMPLEX, f"MIME structure over [mime] {result.limit_hit}")
        if not result.hits:
            return found
        found.log["rules"] = ",".join(f"{h.name}:{h.action}" for h in result.hits)
        texts = txn.tenant.replies if txn.tenant is not None else self.texts
        for hit in result.hits:
            if hit.action == "reject":
                found.decide(replies.rule(texts, hit.name), hit.reason())
                continue
            found.reasons.append(hit.reason())
            if hit.action == "quarantine":
                found.hold = True
            elif hit.action == "tag":
                found.spam_flag = True
            else:
                status = Status.SPAM if hit.score >= 1.0 else Status.CLEAN
                found.votes.append(
                    Verdict(
                        f"rule:{hit.name}", Category.ANTISPAM, status, score=hit.score, threshold=1.0, detail=hit.where
                    )
                )
        return found
