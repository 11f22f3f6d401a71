"""The cost-aware cascade decides exactly like full fan-out, on a labelled corpus nobody here wrote,
through the real clamd, rspamd and spamd — alone and with the antivirus verdict cache in Redis.

Every message goes through `Pipeline.check` once per mode (configs differ only in `[policy]
cascade` and `[verdict_cache]`); decisions are compared message by message: action, verdict label
and reply. The engines' costs are measured on warm-up messages first and handed to every mode, as a
running Quorum's runners would have measured them. The scans SpamAssassin really received are
counted, so the test also shows that the cascade is not a no-op. A second pass of the corpus
through a fresh cascade+cache pipeline (empty local LRU) answers the antivirus question from
Redis and must still decide the same.

Combine modes: `any` (skips SpamAssassin when rspamd says spam) and `weighted` with rspamd weight 3,
judged at its add-header score 6, SpamAssassin weight 1 (skips it when rspamd is below 4 or at 12
and above); see tests/harness/cascade_corpus.py SPAM_ENGINES for the derivation.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.harness.cascade_corpus import (
    MODES,
    Mode,
    clamd_for_testfiles,
    compare,
    config_text,
    load_text,
    modes,
    table,
    totals,
    warmup_messages,
)
from tests.harness.clamd import Clamd
from tests.harness.labelled_corpus import build_corpus, messages
from tests.harness.redis_server import RedisAuth, RedisServer
from tests.harness.rspamd import Rspamd
from tests.harness.spamd import Spamd

pytestmark = pytest.mark.integration

Samples = list[tuple[str, str, bytes]]


@pytest.fixture(scope="module")
def av(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Clamd]:
    server = clamd_for_testfiles(tmp_path_factory.mktemp("clamd-cascade")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def cache_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis-cascade"), auth=RedisAuth()).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Samples:
    root = tmp_path_factory.mktemp("cascade-corpus") / "corpus"
    build_corpus(root)
    return messages(root)


@pytest.mark.parametrize("combine", ["any", "weighted"])
def test_cascade_and_cache_decide_like_full_fan_out(
    combine: str,
    tmp_path: Path,
    av: Clamd,
    rspamd: Rspamd,
    spamd: Spamd,
    cache_redis: RedisServer,
    corpus: Samples,
) -> None:
    with cache_redis.client() as client:
        client.flushall()  # each combine mode starts with a cold cache
    texts = {m: config_text(m, combine, av.address, rspamd.url, spamd.address, cache_redis.url) for m in MODES}
    with modes(texts, tmp_path) as built:
        rows, costs = compare(corpus, built, warmup_messages())
        deferred = built["cascade"].deferred()
    again = Mode("cascade+cache (Redis)", load_text(texts["cascade+cache"], tmp_path))
    try:
        second = [again.check(raw) for _, _, raw in corpus]
    finally:
        again.close()

    print(f"\nspam_combine = {combine!r}; measured costs (ms): { {k: round(v * 1000, 1) for k, v in costs.items()} }")
    print(table(rows, list(MODES)))
    t = totals(rows, list(MODES))
    for m in MODES:
        print(f"{m}: {t[m]}")
    assert {r.truth for r in rows} == {"ham", "spam", "virus"} and len(rows) == 18

    # the measured costs make SpamAssassin the cascade's second tier (it is ~10-30x rspamd here)
    assert deferred == ["spamassassin"], costs
    # the same decision, message by message: action, label and reply
    for mode in MODES[1:]:
        differing = [(r.name, str(r.outcomes["full"].decided), str(r.outcomes[mode].decided)) for r in rows]
        assert [d for d in differing if d[1] != d[2]] == [], mode
    assert [(n, str(o.decided)) for (n, _, _), o in zip(corpus, second, strict=True)] == [
        (r.name, str(r.outcomes["full"].decided)) for r in rows
    ]
    # ... and every message was judged: no engine failed, nothing was decided on a degraded scan
    for row in rows:
        for mode, outcome in row.outcomes.items():
            assert not any(v.status.value == "error" for v in outcome.verdicts.values()), (row.name, mode)
    # what the material is: both spam engines agree on spam, clamd finds every virus
    assert all(r.outcomes["full"].decided.label == "spam" for r in rows if r.truth == "spam")
    assert all(r.outcomes["full"].decided.label == "virus" for r in rows if r.truth == "virus")

    # not a no-op: SpamAssassin was asked less; on the spam part at least once less
    spam = [r for r in rows if r.truth == "spam"]
    for mode in MODES[1:]:
        asked = t[mode]["scans"]["spamassassin"]
        assert asked < t["full"]["scans"]["spamassassin"], (mode, t)
        assert sum(1 for r in spam if r.outcomes[mode].sa_asked) < len(spam), mode
        for r in rows:  # a skipped SpamAssassin shows as skipped(cascade), never as degraded
            o = r.outcomes[mode]
            if not o.sa_asked and r.truth != "virus":
                assert o.verdicts["spamassassin"].label() == "skipped(cascade)", (r.name, mode)
    print(
        "SpamAssassin scans: "
        + ", ".join(f"{m} {t[m]['scans']['spamassassin']}" for m in MODES)
        + f" of {len(rows)} messages; asked on spam: "
        + ", ".join(f"{m} {t[m]['sa_asked_by_label']['spam']}/{len(spam)}" for m in MODES)
    )

    # the verdict cache: the second pass (fresh pipeline, entries from Redis) spared clamd
    hits = sum(1 for o in second if o.cache in ("hit", "attachments"))
    cached = [(name, truth, o.cache) for (name, truth, _), o in zip(corpus, second, strict=True)]
    virus_hits = sum(1 for _, truth, cache in cached if truth == "virus" and cache == "hit")
    assert hits >= 15 and virus_hits >= 8, cached
    assert sum(o.scans["clamav"] for o in second) < len(corpus) // 2
    print(f"second pass from Redis: {hits} clamav cache hits, {sum(o.scans['clamav'] for o in second)} clamd scans")
