"""Flow control: `[flow]` (quorum.flow.settings) and its stage; needs `[redis]`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from quorum.config.fields import Table
from quorum.flow.settings import FlowSettings

if TYPE_CHECKING:
    from quorum.pipeline.stages import Stage

TABLES: dict[str, Any] = {"flow": FlowSettings}


def parse(root: Table) -> FlowSettings | None:
    if "flow" not in root.data:
        return None
    settings = root.model("flow", FlowSettings)
    if not settings.enabled:
        return None
    from quorum.redisconn import shared_redis

    redis = shared_redis(root)
    if redis is None:
        root.problems.error("flow", "needs a [redis] table: the slots are shared by every Quorum through Redis")
    settings._redis = redis
    return settings


def build(config: Any, settings: FlowSettings) -> list[Stage]:
    from quorum.flow.slots import Slots
    from quorum.flow.stage import FlowStage
    from quorum.redisconn import connect

    redis = settings._redis
    if redis is None:
        return []
    return [FlowStage(settings, Slots(lambda: connect(redis), settings.key_prefix, settings.lease))]
