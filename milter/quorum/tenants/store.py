"""Tenant records in Redis: one string key per exact domain, `{key_prefix}{domain}`.

One key per domain puts each lookup on one hash slot, so the same code runs on a single Redis,
a Sentinel-managed master and a Cluster. The value is the domain's table as JSON (what
`quorum domain set` writes) or as TOML text (what an operator may write with redis-cli); both are
validated by the same schema as the file when read. The connection comes from `quorum.redisconn`
(no retries, short timeouts): a slow Redis costs one short timeout, then the resolver
backs off and keeps using what it knows.

Trust: a record is policy (engines, thresholds, actions: it can turn scanning off for a domain),
so write access to Redis is write access to the config. Records are not signed: protect Redis with
an ACL user and password and TLS (`[redis] password_file`, `rediss://` + `tls_ca_file`);
check-config warns when `[redis]` has no authentication.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Iterator, Mapping
from typing import Any

from quorum.redisconn import RedisSettings, connect


class RecordError(ValueError):
    """A record that is neither a JSON object nor a TOML table."""


class RedisTenantStore:
    def __init__(self, redis: RedisSettings, key_prefix: str = "quorum:tenant:") -> None:
        self.redis = redis
        self.key_prefix = key_prefix
        self._client: Any = None

    @property
    def client(self) -> Any:
        """redis.Redis or redis.cluster.RedisCluster; connected on first use (a Cluster reads its slot map)."""
        if self._client is None:
            self._client = connect(self.redis)
        return self._client

    @property
    def channel(self) -> str:
        """Pub/sub channel announcing changed domains (set/delete publish the domain name)."""
        return f"{self.key_prefix}changed"

    def key(self, domain: str) -> str:
        return self.key_prefix + domain

    def fetch(self, domain: str) -> bytes | None:
        """The raw record of a normalised domain, or None. Raises on a Redis error."""
        value = self.client.get(self.key(domain))
        return None if value is None else bytes(value)

    def put(self, domain: str, fragment: Mapping[str, Any]) -> None:
        self.client.set(self.key(domain), encode(fragment))
        self._announce(domain)

    def delete(self, domain: str) -> bool:
        removed = bool(self.client.delete(self.key(domain)))
        self._announce(domain)
        return removed

    def domains(self) -> Iterator[str]:
        """Every domain with a record (SCAN; on a Cluster, every master)."""
        for key in self.client.scan_iter(match=_glob_escape(self.key_prefix) + "*", count=1000):
            text = key.decode() if isinstance(key, bytes) else str(key)
            yield text[len(self.key_prefix) :]

    def _announce(self, domain: str) -> None:
        try:
            self.client.publish(self.channel, domain)
        except Exception:  # noqa: BLE001 - invalidation is an optimisation: refresh catches the change anyway
            pass

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


def encode(fragment: Mapping[str, Any]) -> bytes:
    return json.dumps(fragment, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def decode(raw: bytes) -> Any:
    """JSON when it starts with `{`, TOML text otherwise."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RecordError(f"not UTF-8 ({exc.reason})") from exc
    if text.lstrip().startswith("{"):
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise RecordError(f"not valid JSON ({exc})") from exc
        except RecursionError as exc:
            raise RecordError("nested too deeply; a domain record is a table of plain keys") from exc
        except ValueError as exc:  # e.g. an integer of more than 4300 digits
            raise RecordError(f"not valid JSON ({str(exc)[:120]})") from exc
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RecordError(f"neither a JSON object nor valid TOML ({exc})") from exc
    except RecursionError as exc:
        raise RecordError("nested too deeply; a domain record is a table of plain keys") from exc
    except ValueError as exc:
        raise RecordError(f"not valid TOML ({str(exc)[:120]})") from exc


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)
