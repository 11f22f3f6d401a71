"""`[backscatter]`: BATV key, Message-ID record lifetime and the default action, validated at load.

Redis comes from the shared `[redis]` table (quorum.redisconn); per-domain actions come from the
tenants table (`[domains."d"] backscatter = "reject" | "tag" | "quarantine" | "off"`).
"""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from quorum.config.fields import Table
from quorum.config.schema import Duration, Int, Settings, Size
from quorum.redisconn import KeyPrefix, RedisSettings, shared_redis

Action = Literal["reject", "tag", "quarantine", "off"]
ACTIONS: tuple[str, ...] = typing.get_args(Action)
MIN_KEY_BYTES = 16
SHORT_KEY = f"the key is {{}} bytes; use at least {MIN_KEY_BYTES} random bytes (e.g. openssl rand -hex 32)"


def _encoded(value: Any) -> Any:
    """`batv_key` is written as text and used as bytes (code passes bytes)."""
    if not isinstance(value, str | bytes | None):
        raise PydanticCustomError("quorum_type", "expected a string")
    return value.encode() if isinstance(value, str) else value


class BackscatterTable(Settings):
    """`[backscatter]` as written."""

    enabled: bool = True
    batv_key_file: str | None = None  # read by parse_settings
    batv_key: Annotated[bytes | None, BeforeValidator(_encoded, json_schema_input_type=str)] = Field(None, repr=False)
    batv_key_number: Int = Field(0, ge=0, le=9)
    batv_validity_days: Int = Field(7, ge=1, le=60)
    message_id_ttl: Duration = Field(14 * 86400.0, ge=3600.0)
    action: Action = "tag"
    key_prefix: KeyPrefix = "quorum:bs:mid:"
    backoff: Duration = Field(5.0, ge=0.1)
    max_bounce_size: Size = Field(1 << 20, ge=4096)

    @field_validator("batv_key")
    @classmethod
    def _one_key(cls, key: bytes | None, info: ValidationInfo) -> bytes | None:
        """A field's check, so it is reported with the other keys' problems (batv_key_file comes first)."""
        if key is not None and info.data.get("batv_key_file") is not None:
            raise ValueError("set batv_key or batv_key_file, not both")
        if key is not None and len(key) < MIN_KEY_BYTES:
            raise ValueError(SHORT_KEY.format(len(key)))
        return key


class BackscatterSettings(BackscatterTable):
    """What the stage runs with: `[backscatter]`, the key `batv_key_file` holds, and the shared `[redis]`."""

    redis: RedisSettings = Field(default_factory=RedisSettings)

    @property
    def batv_keys(self) -> dict[int, bytes]:
        return {self.batv_key_number: self.batv_key} if self.batv_key else {}


def parse_settings(root: Table) -> BackscatterSettings | None:
    """None when `[backscatter]` is absent or `enabled = false`; problems are recorded on `root`."""
    if "backscatter" not in root.data:
        return None
    t = root.table("backscatter")
    if t.data.get("enabled") is False:  # a table switched off is not checked
        return None
    table = dict(t.as_model(BackscatterTable), redis=shared_redis(root) or RedisSettings())
    path = t.data.get("batv_key_file")
    if isinstance(path, str) and "batv_key" not in t.data:  # read even when another key is wrong
        table["batv_key"] = _read_key(t, path)
    return BackscatterSettings.model_construct(**table)


def _read_key(t: Table, path: str) -> bytes | None:
    try:
        key = Path(path).read_bytes().strip()
    except (OSError, ValueError) as exc:  # ValueError: a NUL in the path
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        t.problems.error(t.key("batv_key_file"), f"cannot read {path}: {reason}; fix the path")
        return None
    if len(key) < MIN_KEY_BYTES:
        t.problems.error(t.key("batv_key_file"), SHORT_KEY.format(len(key)))
        return None
    return key
