"""Each loop and abuse guard of sender notices, by name."""

from __future__ import annotations

from dataclasses import replace

import pytest

from quorum.notify.facts import NoticeFacts
from quorum.notify.guards import GUARDS, guard

CLEAN = NoticeFacts(
    sender="alice@example.org",
    recipients=("bob@example.com",),
    spf="pass",
    dmarc="pass",
    auto_submitted=None,
    precedence=None,
)


def test_a_clean_sender_notice_passes_every_guard() -> None:
    assert guard("rule", "sender", CLEAN) is None
    assert guard("spam_reject", "sender", replace(CLEAN, spf="", dmarc="")) is None


@pytest.mark.parametrize("sender", ["", "<>", "  "])
def test_null_sender(sender: str) -> None:
    assert guard("rule", "sender", replace(CLEAN, sender=sender)) == "null_sender"


@pytest.mark.parametrize(
    "sender",
    [
        "MAILER-DAEMON@example.org",
        "mailer-daemon@mx.example.org",
        "postmaster@example.org",
        "Postmaster@EXAMPLE.ORG",
        "owner-list@example.org",
        "list-request@example.org",
        "list-bounces@example.org",
        "noreply@example.org",
        "MAILER-DAEMON",
    ],
)
def test_system_senders(sender: str) -> None:
    assert guard("rule", "sender", replace(CLEAN, sender=sender)) == "system_sender"


@pytest.mark.parametrize("value", ["auto-generated", "auto-replied", "Auto-Notified (x)", "", "yes; foo"])
def test_auto_submitted_other_than_no(value: str) -> None:
    assert guard("rule", "sender", replace(CLEAN, auto_submitted=value)) == "auto_submitted"


@pytest.mark.parametrize("value", ["no", "No", " no (comment)"])
def test_auto_submitted_no_is_a_person(value: str) -> None:
    assert guard("rule", "sender", replace(CLEAN, auto_submitted=value)) is None


@pytest.mark.parametrize("value", ["bulk", "list", "junk", "Bulk", " junk "])
def test_precedence_bulk_list_junk(value: str) -> None:
    assert guard("rule", "sender", replace(CLEAN, precedence=value)) == "precedence"


def test_precedence_first_class_is_fine() -> None:
    assert guard("rule", "sender", replace(CLEAN, precedence="first-class")) is None


@pytest.mark.parametrize("spf", ["fail", "FAIL", "softfail"])
def test_spf_failed_means_forged(spf: str) -> None:
    assert guard("rule", "sender", replace(CLEAN, spf=spf)) == "spf_fail"


@pytest.mark.parametrize("spf", ["pass", "neutral", "none", "temperror", ""])
def test_spf_other_results_do_not_suppress(spf: str) -> None:
    assert guard("rule", "sender", replace(CLEAN, spf=spf)) is None


def test_dmarc_failed_means_forged() -> None:
    assert guard("rule", "sender", replace(CLEAN, dmarc="fail")) == "dmarc_fail"
    assert guard("rule", "sender", replace(CLEAN, dmarc="none")) is None


def test_no_sender_notice_for_viruses_unless_opted_in() -> None:
    assert guard("virus", "sender", CLEAN) == "virus_sender"
    assert guard("virus", "sender", CLEAN, sender_virus=True) is None
    assert guard("quarantine", "sender", CLEAN) is None


def test_opt_in_does_not_lift_the_loop_guards() -> None:
    assert guard("virus", "sender", replace(CLEAN, sender=""), sender_virus=True) == "null_sender"
    assert guard("virus", "sender", replace(CLEAN, spf="fail"), sender_virus=True) == "spf_fail"


@pytest.mark.parametrize("audience", ["admin", "recipient"])
def test_admin_and_recipient_notices_follow_the_configuration(audience: str) -> None:
    forged_bulk_bounce = replace(CLEAN, sender="", spf="fail", dmarc="fail", precedence="bulk", auto_submitted="x")
    assert guard("virus", audience, forged_bulk_bounce) is None


def test_guard_names_are_listed() -> None:
    names = {
        guard("rule", "sender", replace(CLEAN, **change))  # type: ignore[arg-type]
        for change in (
            {"sender": ""},
            {"sender": "postmaster@x.org"},
            {"auto_submitted": "auto-generated"},
            {"precedence": "bulk"},
            {"spf": "fail"},
            {"dmarc": "fail"},
        )
    }
    names.add(guard("virus", "sender", CLEAN))
    assert names <= set(GUARDS)
