"""`[backscatter]`: BATV key, Message-ID record lifetime and the default action, validated at load.

Redis comes from the shared `[redis]` table (quorum.redisconn); per-domain actions will come from
the tenants table (`[domains."d"] backscatter = "reject" | "tag" | "quarantine" | "off"`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from quorum.config.fields import Table
from quorum.redisconn import RedisSettings, shared_redis

ACTIONS = ("reject", "tag", "quarantine", "off")
MIN_KEY_BYTES = 16


@dataclass(frozen=True)
class BackscatterSettings:
    redis: RedisSettings = field(default_factory=RedisSettings)
    batv_key: bytes | None = field(default=None, repr=False)
    batv_key_number: int = 0
    batv_validity_days: int = 7
    message_id_ttl: float = 14 * 86400.0
    action: str = "tag"
    key_prefix: str = "quorum:bs:mid:"
    backoff: float = 5.0
    max_bounce_size: int = 1 << 20

    @property
    def batv_keys(self) -> dict[int, bytes]:
        return {self.batv_key_number: self.batv_key} if self.batv_key else {}


def parse_settings(root: Table) -> BackscatterSettings | None:
    """None when `[backscatter]` is absent or `enabled = false`; problems are recorded on `root`."""
    if "backscatter" not in root.data:
        return None
    t = root.table("backscatter")
    if not t.bool("enabled", True):
        t.reject_unknown(t.data.keys())
        return None
    d = BackscatterSettings()
    redis = shared_redis(root) or RedisSettings()
    key_prefix = t.str("key_prefix", d.key_prefix)
    if "{" in key_prefix or "}" in key_prefix:
        t.problems.error(t.key("key_prefix"), "must not contain '{' or '}' (Redis Cluster hash tags); remove them")
    settings = BackscatterSettings(
        redis=redis,
        batv_key=_batv_key(t),
        batv_key_number=t.int("batv_key_number", d.batv_key_number, minimum=0, maximum=9),
        batv_validity_days=t.int("batv_validity_days", d.batv_validity_days, minimum=1, maximum=60),
        message_id_ttl=t.duration("message_id_ttl", d.message_id_ttl, minimum=3600.0),
        action=t.choice("action", d.action, ACTIONS),
        key_prefix=key_prefix,
        backoff=t.duration("backoff", d.backoff, minimum=0.1),
        max_bounce_size=t.size("max_bounce_size", d.max_bounce_size, minimum=4096),
    )
    t.reject_unknown()
    return settings


def _batv_key(t: Table) -> bytes | None:
    inline = t.opt_str("batv_key")
    path = t.opt_str("batv_key_file")
    if inline is not None and path is not None:
        t.problems.error(t.key("batv_key"), "set batv_key or batv_key_file, not both")
        return None
    if path is not None:
        try:
            key = Path(path).read_bytes().strip()
        except OSError as exc:
            t.problems.error(t.key("batv_key_file"), f"cannot read {path}: {exc.strerror or exc}; fix the path")
            return None
        name = "batv_key_file"
    elif inline is not None:
        key, name = inline.encode(), "batv_key"
    else:
        return None
    if len(key) < MIN_KEY_BYTES:
        t.problems.error(
            t.key(name),
            f"the key is {len(key)} bytes; use at least {MIN_KEY_BYTES} random bytes (e.g. openssl rand -hex 32)",
        )
        return None
    return key
