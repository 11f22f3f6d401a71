"""Backscatter filter: config parsing and stage construction (registered in features.py by the lead)."""

from __future__ import annotations

from typing import Any

from quorum.backscatter.settings import BackscatterSettings, BackscatterTable, parse_settings
from quorum.backscatter.stage import BackscatterStage
from quorum.backscatter.store import MessageIdStore, redis_client_factory
from quorum.config.fields import Table

TABLES: dict[str, Any] = {"backscatter": BackscatterTable}


def parse(root: Table) -> BackscatterSettings | None:
    return parse_settings(root)


def build(config: Any, settings: BackscatterSettings) -> list[BackscatterStage]:
    auth = config.feature("auth") if config is not None else None
    trusted = tuple(getattr(getattr(auth, "auth", None), "trusted_networks", ()) or ())
    store = MessageIdStore(
        redis_client_factory(settings.redis), settings.message_id_ttl, settings.key_prefix, settings.backoff
    )
    return [BackscatterStage(settings, store, trusted)]
