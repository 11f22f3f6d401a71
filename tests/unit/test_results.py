"""Typed result slots: one writer per result type, read by type, merged in stage order."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from quorum.pipeline.results import Results, SlotTaken
from quorum.pipeline.transaction import Findings, Scan


@dataclass(frozen=True)
class Spf:
    result: str

    def record_fields(self) -> dict[str, str]:
        return {"spf": self.result}


@dataclass(frozen=True)
class Listing:
    zone: str


def test_a_slot_has_one_writer() -> None:
    r = Results()
    r.put(Spf("pass"), by="auth")
    r.put(Spf("fail"), by="auth")  # the owner may replace its own result
    assert r.get(Spf) == Spf("fail") and r.owner(Spf) == "auth"
    with pytest.raises(SlotTaken, match="ratelimit wrote Spf, which auth owns"):
        r.put(Spf("pass"), by="ratelimit")
    with pytest.raises(SlotTaken):
        r.pop(Spf, by="ratelimit")
    assert r.pop(Spf, by="auth") == Spf("fail") and r.get(Spf) is None
    assert r.get(Listing) is None


def test_findings_merge_keeps_ownership_and_record_fields() -> None:
    a, b = Findings("auth"), Findings("access")
    a.results.put(Spf("pass"), by="auth")
    b.results.put(Listing("bl.test"), by="access")
    scan = Scan.merge([a, b])
    assert scan.results.get(Spf) == Spf("pass") and scan.results.get(Listing) == Listing("bl.test")
    assert scan.results.record_fields() == {"spf": "pass"}  # Listing has no record_fields
    forged = Findings("rules")
    forged.results.put(Spf("fail"), by="rules")
    with pytest.raises(SlotTaken):
        Scan.merge([a, forged])  # a bug the pipeline answers with 451, never a silent overwrite
