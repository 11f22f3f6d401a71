"""MIME and header fuzzing of the rules engine (issue 9, Fuzzing (b)).

Random and mutated MIME trees and headers go through `Message.from_bytes` and `evaluate` with
rules on every place: nothing may raise, the limits must hold (parts, depth, decoded text
budget), and every example must finish (no timed assertion: hypothesis `deadline=None`; the
deadline given to `evaluate` is far away, so a hang would show as a stuck test). The example
budget is `QUORUM_MIME_FUZZ_EXAMPLES` per test (CI default 300); counts are printed at the end.
"""

from __future__ import annotations

import collections
import contextlib
import os
import time
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.fuzz.mime_strategies import messages, mime_trees

from quorum.config.fields import Problems
from quorum.message import Message
from quorum.rules import MimeLimits, RuleResult, evaluate, parse_rules
from quorum.rules.mime import extract

EXAMPLES = int(os.environ.get("QUORUM_MIME_FUZZ_EXAMPLES", "300"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    database=None,
)
RUN = collections.Counter[str]()

RULES = parse_rules(
    [
        {"name": "body", "where": "body", "pattern": "(?i)free|casino|Привет", "action": "reject"},
        {"name": "names", "where": "filename", "pattern": r"\.exe$|€", "action": "quarantine"},
        {"name": "subject", "where": "subject", "pattern": "free", "action": "tag"},
        {"name": "mailer", "where": "header:X-Mailer", "pattern": ".", "action": "score", "score": 1.0},
        {"name": "any", "where": "body", "pattern": ".", "action": "score", "score": 0.5},
    ],
    "rules",
    Problems(),
)
limits_strategy = st.one_of(
    st.just(MimeLimits()),
    st.builds(
        MimeLimits, max_parts=st.integers(1, 30), max_depth=st.integers(1, 6), body_max_bytes=st.integers(1, 4096)
    ),
)


def check(raw: bytes, limits: MimeLimits) -> RuleResult:
    message = Message.from_bytes(raw)
    try:
        result = evaluate(RULES, message, limits, time.monotonic() + 3600)
        text = extract(message, limits, time.monotonic() + 3600)
    finally:
        message.close()
    assert isinstance(result, RuleResult)
    assert result.parts <= limits.max_parts and text.parts <= limits.max_parts
    assert sum(len(t) for t in text.texts) <= limits.body_max_bytes
    assert result.limit_hit in (None, "max_parts", "max_depth", "unparsable")
    assert {h.name for h in result.hits} <= {r.name for r in RULES}
    assert all(len(h.excerpt) <= 130 and h.excerpt.isprintable() for h in result.hits)
    RUN["limit_hit"] += result.limit_hit is not None
    RUN["truncated"] += result.truncated
    RUN["with_hits"] += bool(result.hits)
    RUN["parts"] += result.parts
    return result


@FUZZ
@given(raw=messages(), limits=limits_strategy)
def test_mutated_mime_messages(raw: bytes, limits: MimeLimits) -> None:
    RUN["mutated messages"] += 1
    check(raw, limits)


@FUZZ
@given(tree=mime_trees, limits=limits_strategy)
def test_generated_mime_trees(tree: bytes, limits: MimeLimits) -> None:
    RUN["generated trees"] += 1
    check(b"Subject: fuzz\r\n" + tree, limits)


@FUZZ
@given(raw=st.binary(max_size=2000), limits=limits_strategy)
def test_arbitrary_bytes(raw: bytes, limits: MimeLimits) -> None:
    RUN["arbitrary bytes"] += 1
    check(raw, limits)


@FUZZ
@given(depth=st.integers(1, 400), fanout=st.integers(1, 40), rfc822=st.booleans())
def test_deep_and_wide_structures_respect_the_limits(depth: int, fanout: int, rfc822: bool) -> None:
    RUN["deep/wide structures"] += 1
    raw = b"Content-Type: text/plain\r\n\r\nfree"
    for level in range(depth):
        if rfc822:
            raw = b"Content-Type: message/rfc822\r\n\r\n" + raw
            continue
        b = b"b%d" % level
        siblings = (b"--" + b + b"\r\nContent-Type: text/plain\r\n\r\nfree\r\n") * fanout
        raw = b"Content-Type: multipart/mixed; boundary=" + b + b"\r\n\r\n--" + b + b"\r\n" + raw + b"\r\n"
        raw += siblings + b"--" + b + b"--\r\n"
    limits = MimeLimits(max_parts=100, max_depth=10)
    result = check(raw, limits)
    parts = depth + 1 if rfc822 else depth * (fanout + 1) + 1
    if depth > 10 or parts > 100:
        assert result.limit_hit in ("max_depth", "max_parts")
    else:
        assert result.limit_hit is None and result.parts == parts


@pytest.fixture(scope="module", autouse=True)
def report_counts(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    summary = ", ".join(f"{k}={v}" for k, v in sorted(RUN.items()))
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext():
        print(f"\nMIME fuzz examples run: {summary}")
