"""`[notify]` as a feature: parsed and validated at config load; its stage submits notices at the
end of each transaction and owns the notifier's life (closed with the pipeline, also on reload)."""

from __future__ import annotations

from typing import Any

from quorum.notify.cap import DailyCap
from quorum.notify.notifier import Notifier
from quorum.notify.settings import NotifySettings, NotifyTable, parse_settings

TABLES: dict[str, Any] = {"notify": NotifyTable}  # [redis]: quorum.redisconn (declared by ratelimit)
parse = parse_settings  # None when [notify] is absent or `enabled = false`


def build(config: Any, settings: NotifySettings) -> list[Any]:
    from quorum.notify.stage import NotifyStage

    return [NotifyStage(make_notifier(settings), auth_checks(config))]


def auth_checks(config: Any) -> Any:
    """Which of SPF/DMARC the auth feature runs (none without `[auth]`)."""
    from quorum.notify.stage import AuthChecks

    feature = config.feature("auth") if config is not None else None
    if feature is None or not getattr(feature, "auth_enabled", False):
        return AuthChecks()
    auth = feature.auth
    return AuthChecks(spf=bool(auth.spf), dmarc=bool(auth.dmarc))


def make_cap(settings: NotifySettings) -> DailyCap:
    factory = None
    if settings.redis is not None:
        redis_settings = settings.redis

        def factory() -> Any:
            from quorum.redisconn import connect

            return connect(redis_settings)

    return DailyCap(settings.daily_cap, factory, settings.key_prefix, settings.redis_retry)


def make_notifier(settings: NotifySettings, start: bool = True) -> Notifier:
    return Notifier(settings, cap=make_cap(settings), start=start)
