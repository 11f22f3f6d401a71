"""Keyword/regex rules on the subject, any header, the decoded body text and attachment file names.

`parse_rules` reads `[[rules]]` (and, with the same code, `[[domains."d".rules]]`); `evaluate`
runs them against a `Message` off the milter thread. The MIME walker behind it (`mime.extract`)
is bounded by `MimeLimits` (part count, nesting depth, decoded text budget) and a deadline, and
never raises on malformed input: what it could not examine is reported, not guessed.
"""

from quorum.rules.evaluate import RuleHit, RuleResult, evaluate
from quorum.rules.mime import MimeLimits
from quorum.rules.schema import ACTIONS, Rule, parse_rules

__all__ = ["ACTIONS", "MimeLimits", "Rule", "RuleHit", "RuleResult", "evaluate", "parse_rules"]
