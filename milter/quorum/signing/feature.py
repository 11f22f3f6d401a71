"""The signing feature: `[signing]` (see quorum.signing.settings) and its stage.

Registered after every other feature that amends the message (quorum.features), so the signature
is the last header field added and covers the message as it leaves.
"""

from __future__ import annotations

import os
import stat
from typing import TYPE_CHECKING, Any

from quorum.config.fields import Table
from quorum.signing.settings import SigningSettings

if TYPE_CHECKING:
    from quorum.pipeline.stages import Stage

TABLES: dict[str, Any] = {"signing": SigningSettings}


def parse(root: Table) -> SigningSettings | None:
    """None without a `[signing]` table."""
    if "signing" not in root.data:
        return None
    settings = root.model("signing", SigningSettings)
    problems = root.problems
    for i, entry in enumerate(settings.keys):
        try:
            mode = os.stat(entry.key.path).st_mode
        except OSError:
            continue
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            problems.warn(
                f"signing.keys[{i}].key",
                f"{entry.key.path!r} is mode {stat.S_IMODE(mode):04o}: other users can read (or change) the "
                "signing key; chmod 600 it (owned by the user Quorum runs as)",
            )
    for net in settings.networks:
        if net.prefixlen == 0:
            problems.warn(
                "signing.networks",
                f"{net} signs mail from every client as the From: domain's own: list only your relays",
            )
    if settings.sign == "off":
        problems.warn("signing.sign", '"off": the keys are checked but no message is signed')
    if settings.store == "redis":
        from quorum.redisconn import shared_redis

        redis = shared_redis(root)
        if redis is None:
            problems.error("signing.store", '"redis" needs a [redis] table (where the keys are kept)')
        settings._redis = redis
    return settings


def build(config: Any, settings: SigningSettings) -> list[Stage]:
    if settings.sign == "off":
        return []
    from quorum.signing.stage import SigningStage

    keys = None
    if settings.store == "redis" and settings._redis is not None:
        from quorum.signing.redis_keys import RedisKeys

        keys = RedisKeys.from_settings(settings._redis, settings.key_prefix, settings.refresh)
    return [SigningStage(settings, store=keys)]
