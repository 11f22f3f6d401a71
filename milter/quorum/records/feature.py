"""`[records]` as a feature: parsed at config load; builds the records stage and its writer."""

from __future__ import annotations

from typing import Any

from quorum.config.fields import Table
from quorum.records.settings import RecordsSettings, RecordsTable, parse_settings
from quorum.records.stage import RecordsStage, reserve_tenant_series
from quorum.records.writer import RecordWriter

TABLES: dict[str, Any] = {"records": RecordsTable}


def parse(root: Table) -> RecordsSettings | None:
    return parse_settings(root)


def client_factory(settings: RecordsSettings) -> Any:
    """A redis-py client (single, Sentinel master, or Cluster) from `[redis]` (quorum.redisconn.connect)."""

    def factory() -> Any:
        from quorum.redisconn import connect

        return connect(settings.redis)  # imports redis-py: only when the feature is on

    return factory


def build(config: Any, settings: RecordsSettings) -> list[RecordsStage]:
    reserve_tenant_series(config, settings.tenant_metrics)
    return [RecordsStage(RecordWriter(settings, client_factory(settings)))]
