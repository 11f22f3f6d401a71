"""What the auth stage found at end of data, in its slot of the findings (`results.get(AuthFindings)`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from quorum.auth.arc import ArcResult
from quorum.auth.dkim import DkimResult
from quorum.auth.dmarc import DmarcResult
from quorum.auth.spf import SpfResult
from quorum.pipeline.transaction import Findings, Transaction


@dataclass(frozen=True)
class AuthFindings:
    spf: SpfResult | None = None
    dkim: tuple[DkimResult, ...] | None = None
    dmarc: DmarcResult | None = None
    arc: ArcResult | None = None

    def record_fields(self) -> dict[str, Any]:
        fields = {
            "spf": self.spf.result if self.spf is not None else None,
            "dkim": [f"{r.result}:{r.domain}" if r.domain else r.result for r in self.dkim or ()],
            "dmarc": self.dmarc.result if self.dmarc is not None else None,
            "arc": self.arc.result if self.arc is not None else None,
        }
        if self.dmarc is not None and self.dmarc.override:
            fields["dmarc_override"] = self.dmarc.override
        return fields


def spf_of(txn: Transaction, found: Findings | None = None) -> SpfResult | None:
    """A message's SPF result: from the end-of-data findings, else the one evaluated at MAIL FROM."""
    auth = found.results.get(AuthFindings) if found is not None else None
    if auth is not None and auth.spf is not None:
        return auth.spf
    return txn.results.get(SpfResult)
