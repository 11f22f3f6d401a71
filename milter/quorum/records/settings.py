"""`[records]`: where session records go, validated at load.

```toml
[records]
stream = "quorum:records"   # the Stream key (with shard = "hour": the prefix of one key per hour)
max_len = 100000            # approximate cap per stream key (XADD MAXLEN ~)
shard = "auto"              # "none": one stream; "hour": one hash-tagged key per hour; auto: hour on a Cluster
retention = "7d"            # hourly keys expire after this
queue_size = 10000          # records waiting for the writer; more are dropped and counted
batch = 200                 # records per pipelined round trip
tenant_metrics = 50         # per-tenant Prometheus series for at most this many tenant domains
```
Needs `[redis]` (quorum.redisconn: single, Sentinel or Cluster).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from quorum.config.fields import Table
from quorum.redisconn import RedisSettings, shared_redis

SHARDS = ("auto", "none", "hour")


@dataclass(frozen=True)
class RecordsSettings:
    redis: RedisSettings = field(default_factory=RedisSettings)
    stream: str = "quorum:records"
    max_len: int = 100_000
    shard: str = "auto"
    retention: float = 7 * 86400.0
    queue_size: int = 10_000
    batch: int = 200
    flush_interval: float = 0.2
    backoff: float = 1.0
    tenant_metrics: int = 50

    @property
    def hourly(self) -> bool:
        """One key per hour (hash-tagged, so a Cluster spreads the hours over its masters)."""
        return self.shard == "hour" or (self.shard == "auto" and self.redis.cluster)


def parse_settings(root: Table) -> RecordsSettings | None:
    """None when `[records]` is absent or `enabled = false`; problems are recorded on `root`."""
    if "records" not in root.data:
        return None
    t = root.table("records")
    if not t.bool("enabled", True):
        t.reject_unknown(allowed_extra=[k for k in t.data if k != "enabled"])
        return None
    d = RecordsSettings()
    stream = t.str("stream", d.stream)
    if not stream or any(c in stream for c in "{} \t\r\n"):
        t.problems.error(t.key("stream"), f"{stream!r}: use a plain key without spaces or braces, e.g. quorum:records")
        stream = d.stream
    settings = RecordsSettings(
        redis=shared_redis(root) or RedisSettings(),
        stream=stream,
        max_len=t.int("max_len", d.max_len, minimum=100),
        shard=t.choice("shard", d.shard, SHARDS),
        retention=t.duration("retention", d.retention, minimum=3600.0),
        queue_size=t.int("queue_size", d.queue_size, minimum=10, maximum=10_000_000),
        batch=t.int("batch", d.batch, minimum=1, maximum=10_000),
        flush_interval=t.duration("flush_interval", d.flush_interval, minimum=0.001),
        backoff=t.duration("backoff", d.backoff, minimum=0.05),
        tenant_metrics=t.int("tenant_metrics", d.tenant_metrics, minimum=0, maximum=10_000),
    )
    t.reject_unknown()
    if "redis" not in root.data:
        t.problems.error("records", 'records go to a Redis Stream: add [redis] (e.g. url = "redis://127.0.0.1:6379/0")')
    return settings
