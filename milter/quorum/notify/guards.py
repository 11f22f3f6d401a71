"""Loop and abuse guards: when a notice must not be sent. Pure functions, one name per guard.

Only sender notices go to an address taken from the message itself, so the loop guards apply to
them; admin and recipient notices go to addresses the operator or the tenant configured.
The daily cap (stateful, see cap.py) applies to every audience.
"""

from __future__ import annotations

from quorum.notify.facts import NoticeFacts

GUARDS = (
    "null_sender",
    "system_sender",
    "auto_submitted",
    "precedence",
    "spf_fail",
    "dmarc_fail",
    "auth_unknown",
    "virus_sender",
    "daily_cap",
)
_SYSTEM_LOCALPARTS = frozenset(
    {"mailer-daemon", "postmaster", "noreply", "no-reply", "donotreply", "do-not-reply", "bounce", "bounces"}
)
_BULK = frozenset({"bulk", "list", "junk"})
_SPF_FORGED = frozenset({"fail", "softfail"})


def _system_sender(address: str) -> bool:
    """MAILER-DAEMON, postmaster and other robots, list owners (owner-x, x-request, x-owner) and bounce addresses."""
    local = address.rpartition("@")[0] if "@" in address else address
    local = local.lower()
    return (
        local in _SYSTEM_LOCALPARTS
        or local.startswith(("owner-", "bounce-", "bounces-", "mailer-daemon"))
        or local.endswith(("-request", "-owner", "-bounces"))
    )


def _word(value: str | None) -> str:
    """The first token of a header value, lowercased: "Auto-Generated (x)" -> "auto-generated"."""
    if value is None:
        return ""
    token = value.strip().split(None, 1)[0] if value.strip() else ""
    return token.split(";", 1)[0].split("(", 1)[0].lower()


def guard(event: str, audience: str, facts: NoticeFacts, *, sender_virus: bool = False) -> str | None:
    """The name of the guard that suppresses this notice, or None to send it.

    `sender_virus` is the tenant's explicit opt-in to sender notices for viruses.
    """
    if audience != "sender":
        return None
    sender = facts.sender.strip().strip("<>")
    if not sender:
        return "null_sender"
    if _system_sender(sender):
        return "system_sender"
    if facts.auto_submitted is not None and _word(facts.auto_submitted) != "no":
        return "auto_submitted"
    if _word(facts.precedence) in _BULK:
        return "precedence"
    if facts.spf.strip().lower() in _SPF_FORGED:
        return "spf_fail"
    if facts.dmarc.strip().lower() == "fail":
        return "dmarc_fail"
    if facts.auth_unknown:  # could be forged: a notice is not worth the risk of backscatter
        return "auth_unknown"
    if event == "virus" and not sender_virus:
        return "virus_sender"
    return None
