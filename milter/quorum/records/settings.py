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

from typing import Literal

from pydantic import Field, field_validator

from quorum.config.fields import Table
from quorum.config.schema import Duration, Int, Settings
from quorum.redisconn import RedisSettings, shared_redis


class RecordsTable(Settings):
    """`[records]` as written."""

    enabled: bool = True
    stream: str = "quorum:records"
    max_len: Int = Field(100_000, ge=100)
    shard: Literal["auto", "none", "hour"] = "auto"
    retention: Duration = Field(7 * 86400.0, ge=3600.0)
    queue_size: Int = Field(10_000, ge=10, le=10_000_000)
    batch: Int = Field(200, ge=1, le=10_000)
    flush_interval: Duration = Field(0.2, ge=0.001)
    backoff: Duration = Field(1.0, ge=0.05)
    tenant_metrics: Int = Field(50, ge=0, le=10_000)

    @field_validator("stream")
    @classmethod
    def _plain_key(cls, stream: str) -> str:
        if not stream or any(c in stream for c in "{} \t\r\n"):
            raise ValueError(f"{stream!r}: use a plain key without spaces or braces, e.g. quorum:records")
        return stream


class RecordsSettings(RecordsTable):
    """What the writer runs with: `[records]` and the `[redis]` it writes to."""

    redis: RedisSettings = Field(default_factory=RedisSettings)

    @property
    def hourly(self) -> bool:
        """One key per hour (hash-tagged, so a Cluster spreads the hours over its masters)."""
        return self.shard == "hour" or (self.shard == "auto" and self.redis.cluster)


def parse_settings(root: Table) -> RecordsSettings | None:
    """None when `[records]` is absent or `enabled = false`; problems are recorded on `root`."""
    if "records" not in root.data:
        return None
    t = root.table("records")
    if t.data.get("enabled") is False:  # a table switched off is not checked
        return None
    redis = shared_redis(root) or RedisSettings()  # its problems first
    settings = RecordsSettings.model_construct(**dict(t.as_model(RecordsTable)), redis=redis)
    if "redis" not in root.data:
        t.problems.error("records", 'records go to a Redis Stream: add [redis] (e.g. url = "redis://127.0.0.1:6379/0")')
    return settings
