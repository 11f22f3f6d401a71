"""What one engine said about one message."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import StrEnum

# An antivirus verdict's `detail` when the engine stopped at one of its own limits (clamd's
# AlertExceedsMax: nesting, size, file count, scan time): the content was not scanned whole. The
# status is INFECTED, so it can never pass as clean; the policy words the refusal as unscannable.
LIMITS_EXCEEDED = "limits-exceeded"


class Category(StrEnum):
    ANTIVIRUS = "antivirus"
    ANTISPAM = "antispam"


class Status(StrEnum):
    CLEAN = "clean"
    INFECTED = "infected"
    SPAM = "spam"
    ERROR = "error"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"

    @property
    def answered(self) -> bool:
        """True when the engine gave a usable answer (it can vote)."""
        return self in (Status.CLEAN, Status.INFECTED, Status.SPAM)


@dataclass(frozen=True)
class Verdict:
    """One engine's result. `detail` is a short human note (virus name, `6.00/15.00`, `timeout`)."""

    engine: str
    category: Category
    status: Status
    names: tuple[str, ...] = ()
    score: float | None = None
    threshold: float | None = None
    elapsed: float = 0.0
    error: str | None = None
    detail: str | None = None
    extra: dict[str, str] = field(default_factory=dict)

    def with_(self, **changes: object) -> Verdict:
        return replace(self, **changes)  # type: ignore[arg-type]

    @property
    def normalised_score(self) -> float | None:
        """score/threshold clamped to [-2, 2], so one engine's 1000/5 cannot swamp the others."""
        if self.score is None or not self.threshold or self.threshold <= 0:
            return None
        return max(-2.0, min(self.score / self.threshold, 2.0))

    def label(self) -> str:
        """`status(detail)` as it appears in X-Quorum-Engines and logs."""
        detail = self.detail
        if detail is None and self.status is Status.ERROR:
            detail = self.error
        if detail is None and self.status is Status.INFECTED and self.names:
            detail = self.names[0]
        if detail is None and self.score is not None and self.threshold is not None:
            detail = f"{self.score:.2f}/{self.threshold:.2f}"
        return f"{self.status}({detail})" if detail else str(self.status)
