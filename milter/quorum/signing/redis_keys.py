"""DKIM keys kept in Redis (`[signing] store = "redis"`): one hash per domain,
`{key_prefix}{domain}` -> {selector: PEM private key}, `{key_prefix}*.{domain}` for its subdomains.

Who can read them: everyone who can read that Redis database (the ACL user Quorum connects as,
and any other user whose ACL allows the keys' prefix): give Quorum its own ACL user, restrict
others from `~quorum:dkim:*`, use rediss:// across a network (README, DKIM signing). The keys are
not encrypted at rest (a key Quorum can decrypt unattended would sit beside its secret anyway).

A domain's keys are read when its mail is signed and kept `refresh` seconds (cachetools' TTLCache,
bounded), a domain without keys too. A Redis failure or a stored PEM that is not a usable key
raises `KeysUnavailable`: the signing stage then follows `[signing] on_failure`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from cachetools import TTLCache

from quorum.redisconn import RedisHealth, RedisSettings, connect
from quorum.signing.keys import KeyProblem, PrivateKey, parse_key

log = logging.getLogger("quorum.signing")
MAX_CACHED = 10_000


class KeysUnavailable(Exception):
    """The domain's keys could not be read (Redis down, a stored key unusable)."""


def hash_name(prefix: str, domain: str, wildcard: bool = False) -> str:
    return f"{prefix}{'*.' if wildcard else ''}{domain}"


class RedisKeys:
    def __init__(self, client: Callable[[], Any], prefix: str, refresh: float) -> None:
        self._factory = client
        self._client: Any = None
        self.prefix = prefix
        self._cache: TTLCache[str, list[tuple[str, str, PrivateKey]]] = TTLCache(MAX_CACHED, refresh)
        self._lock = threading.Lock()
        self.health = RedisHealth(
            "signing", log, down="signing: Redis unavailable ({reason}); DKIM keys cannot be read"
        )

    @classmethod
    def from_settings(cls, settings: RedisSettings, prefix: str, refresh: float) -> RedisKeys:
        return cls(lambda: connect(settings), prefix, refresh)

    def client(self) -> Any:
        if self._client is None:
            self._client = self._factory()
        return self._client

    def keys(self, domain: str) -> list[tuple[str, str, PrivateKey]]:
        """(d=, selector, key) for mail from `domain`: its own hash, else the nearest `*.parent` one."""
        with self._lock:
            found = self._cache.get(domain)
        if found is not None:
            return found
        if not self.health.available():
            raise KeysUnavailable("Redis is being backed off after a failure")
        try:
            found = self._read(domain)
        except KeyProblem as exc:
            raise KeysUnavailable(str(exc)) from None
        except Exception as exc:  # noqa: BLE001 - redis-py's errors, a broken connection
            self.health.failed(exc)
            raise KeysUnavailable(f"{type(exc).__name__}: {exc}") from None
        self.health.ok()
        with self._lock:
            self._cache[domain] = found
        return found

    def _read(self, domain: str) -> list[tuple[str, str, PrivateKey]]:
        client = self.client()
        names = [(domain, hash_name(self.prefix, domain))]
        labels = domain.split(".")
        names += [
            (".".join(labels[i:]), hash_name(self.prefix, ".".join(labels[i:]), True))
            for i in range(1, len(labels) - 1)
        ]
        for signing_domain, name in names:
            stored = client.hgetall(name)
            if stored:
                return [
                    (signing_domain, _text(selector), parse_key(_bytes(pem), f"redis:{name}[{_text(selector)}]"))
                    for selector, pem in sorted(stored.items())
                ]
        return []

    def stored(self, domain: str | None = None) -> list[tuple[str, bool, str, PrivateKey]]:
        """(domain, wildcard, selector, key) of every key kept (or of `domain`'s and `*.domain`'s)."""
        client = self.client()
        if domain is not None:
            names = [hash_name(self.prefix, domain), hash_name(self.prefix, domain, True)]
        else:
            names = sorted(_text(n) for n in client.scan_iter(match=_glob(self.prefix) + "*", count=500))
        found = []
        for name in names:
            rest = name[len(self.prefix) :]
            wildcard = rest.startswith("*.")
            for selector, pem in sorted(client.hgetall(name).items()):
                key = parse_key(_bytes(pem), f"redis:{name}[{_text(selector)}]")
                found.append((rest.removeprefix("*."), wildcard, _text(selector), key))
        return found

    def put(self, domain: str, selector: str, pem: bytes, wildcard: bool = False) -> bool:
        """Store a new key (never overwriting one: False when the selector is taken)."""
        return bool(self.client().hsetnx(hash_name(self.prefix, domain, wildcard), selector, pem))

    def close(self) -> None:
        if self._client is not None:
            try:
                self._client.close()
            except Exception:  # noqa: BLE001
                pass


def _glob(prefix: str) -> str:
    """`prefix` as a literal in a SCAN MATCH pattern."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in prefix)


def _text(value: Any) -> str:
    return value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)


def _bytes(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode("ascii", "replace")
