"""Notices about refused and held mail: per-domain audiences, loop guards, daily cap, sandboxed templates,
sent from a background queue to a relay listener that does not run the milter again."""

from quorum.notify.cap import DailyCap
from quorum.notify.facts import NoticeFacts
from quorum.notify.guards import GUARDS, guard
from quorum.notify.notifier import NoticeCounts, Notifier
from quorum.notify.settings import AUDIENCES, EVENTS, DomainNotify, NotifySettings, parse_domain_notify, parse_settings

__all__ = [
    "AUDIENCES",
    "EVENTS",
    "GUARDS",
    "DailyCap",
    "DomainNotify",
    "NoticeCounts",
    "NoticeFacts",
    "Notifier",
    "NotifySettings",
    "guard",
    "parse_domain_notify",
    "parse_settings",
]
