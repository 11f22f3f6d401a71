"""What Quorum answers the MTA: an `Action` and, for a refusal, an SMTP `Reply` (a leaf module:
stages, policy, replies and the transaction all speak it)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

HeaderPredicate = Callable[[bytes], bool]  # which inbound header fields a stage removes (Stage.removals)


class Action(StrEnum):
    ACCEPT = "accept"
    TAG = "tag"
    QUARANTINE = "quarantine"
    REJECT = "reject"
    DISCARD = "discard"
    TEMPFAIL = "tempfail"


@dataclass(frozen=True)
class Reply:
    """An SMTP answer: `Reply.reject("554", "5.7.1", "...")`. Text is sanitised when sent."""

    action: Action
    code: str = ""
    xcode: str = ""
    text: str = ""

    @classmethod
    def reject(cls, code: str, xcode: str, text: str) -> Reply:
        return cls(Action.REJECT, code, xcode, text)

    @classmethod
    def tempfail(cls, code: str, xcode: str, text: str) -> Reply:
        return cls(Action.TEMPFAIL, code, xcode, text)

    def __str__(self) -> str:
        return f"{self.code} {self.xcode} {self.text}".strip() if self.code else str(self.action)
