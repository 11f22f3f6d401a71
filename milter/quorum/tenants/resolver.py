"""`TenantPolicies.policy_for(recipient)`: the effective policy, at most one Redis GET per domain and refresh.

The file's entries are merged once, at construction. With `store = "redis"`, each recipient domain
has one cache entry (LRU, `cache_size`): the raw record (or "none", a negative entry), when to
look again, and the merged policy. A stale entry costs one GET; an unchanged record keeps its
merged policy. A Redis error leaves every entry in place (the last known records keep applying),
stops lookups for `backoff` seconds and logs one warning per `warn_interval`. A record that fails
validation is ignored (the domain gets its file/global policy) with one error naming the domain
and key, logged again only when the record changes. A pub/sub listener drops the entry of a
domain that `quorum domain set|delete` announces, so a change usually applies at once; the
refresh interval bounds it when a message is missed.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Protocol

from cachetools import LRUCache

from quorum.pipeline.replies import ReplyTexts
from quorum.redisconn import RedisHealth
from quorum.tenants.effective import FILE, REDIS, EffectivePolicy, GlobalLayer, Provenance, merge
from quorum.tenants.names import DomainMatcher, recipient_domain
from quorum.tenants.schema import DomainEntry, SchemaContext, parse_fragment
from quorum.tenants.settings import TenantSettings
from quorum.tenants.store import RecordError, RedisTenantStore, decode

log = logging.getLogger("quorum.tenants")


class RecordStore(Protocol):
    def fetch(self, domain: str) -> bytes | None: ...

    def close(self) -> None: ...


@dataclass
class _Cached:
    __slots__ = ("digest", "expires", "policy")
    digest: bytes | None  # of the raw record, to notice a change; None: no record
    expires: float
    policy: EffectivePolicy


@dataclass
class TenantStats:
    hits: int = 0  # answered from memory
    lookups: int = 0  # Redis GETs
    errors: int = 0  # GETs that failed
    invalid: int = 0  # records ignored because they failed validation
    skipped: int = 0  # lookups not tried during a back-off


class TenantPolicies:
    """Resolves recipients to `EffectivePolicy` objects; thread-safe, shared by all milter threads."""

    def __init__(
        self,
        config: Any,
        settings: TenantSettings | None = None,
        store: RecordStore | None = None,
        *,
        replies: ReplyTexts | None = None,
        clock: Callable[[], float] = time.monotonic,
        listen: bool = True,
    ) -> None:
        self.settings = settings or config.feature("tenants") or TenantSettings()
        self.ctx = SchemaContext.from_config(config)
        self.base = GlobalLayer(config, self.ctx, replies)
        self.matcher: DomainMatcher[DomainEntry] = DomainMatcher(self.settings.domains)
        if store is None and self.settings.store == "redis" and self.settings.redis is not None:
            store = RedisTenantStore(self.settings.redis, self.settings.key_prefix)
        self.store = store
        self.clock = clock
        self.stats = TenantStats()
        self._cache: LRUCache[str, _Cached] = LRUCache(maxsize=max(1, self.settings.cache_size))
        self._lock = threading.Lock()
        self._shared: dict[tuple[Any, ...], EffectivePolicy] = {}
        self._file = {name: self._intern(merge(self.base, [(FILE, e)])) for name, e in self.settings.domains.items()}
        redis = self.settings.redis
        self.health = RedisHealth(
            "tenants",
            log,
            backoff=self.settings.backoff,
            warn_interval=self.settings.warn_interval,
            clock=clock,
            where=f"Redis {redis.mode} {redis.url}" if redis is not None else "store",
            down="tenant store unreachable ({where}): {reason}; last known domain records keep applying, "
            "domains not in memory get the file/global policy; next try in {backoff:g}s",
            up="tenant store reachable again ({where}): domain records are read from it again",
        )
        self._closed = threading.Event()
        self._listener: threading.Thread | None = None
        if listen and isinstance(store, RedisTenantStore):
            self._listener = threading.Thread(target=self._listen, args=(store,), name="quorum-tenants", daemon=True)
            self._listener.start()

    @property
    def global_policy(self) -> EffectivePolicy:
        return self.base.policy

    # -- per recipient ---------------------------------------------------------------------------
    def policy_for(self, recipient: str) -> EffectivePolicy:
        """The effective policy of `user@domain` (`<...>` accepted); the global one if no domain matches."""
        domain = recipient_domain(recipient)
        return self.base.policy if domain is None else self.policy_for_domain(domain)

    def policy_for_domain(self, domain: str) -> EffectivePolicy:
        """`domain` normalised (see names.normalise_domain)."""
        if self.store is None:
            return self._file_policy(domain)
        now = self.clock()
        with self._lock:
            cached = self._cache.get(domain)  # marks it recently used
            if cached is not None:
                if now < cached.expires:
                    self.stats.hits += 1
                    return cached.policy
        if not self.health.available():
            self.stats.skipped += 1
            return cached.policy if cached is not None else self._file_policy(domain)
        try:
            self.stats.lookups += 1
            raw = self.store.fetch(domain)
        except Exception as exc:  # noqa: BLE001 - any Redis failure: keep what we know
            self.stats.errors += 1
            self.health.failed(exc)
            return cached.policy if cached is not None else self._file_policy(domain)
        self.health.ok()
        digest = None if raw is None else hashlib.blake2b(raw, digest_size=16).digest()
        if cached is not None and digest == cached.digest:
            policy = cached.policy
        else:
            policy = self._from_record(domain, raw)
        with self._lock:
            self._cache[domain] = _Cached(digest, now + self.settings.refresh, policy)  # evicts the LRU one
        return policy

    def invalidate(self, domain: str | None = None) -> None:
        """Forget one domain's entry (or all): the next transaction looks it up again."""
        with self._lock:
            if domain is None:
                self._cache.clear()
            else:
                self._cache.pop(domain, None)

    @property
    def cached_domains(self) -> int:
        return len(self._cache)

    def close(self) -> None:
        self._closed.set()
        if self.store is not None:
            self.store.close()

    # -- internals -------------------------------------------------------------------------------
    def _file_policy(self, domain: str) -> EffectivePolicy:
        hit = self.matcher.match(domain)
        return self._file[hit[0]] if hit is not None else self.base.policy

    def _from_record(self, domain: str, raw: bytes | None) -> EffectivePolicy:
        if raw is None:
            return self._file_policy(domain)
        try:
            data = decode(raw)
        except RecordError as exc:
            self.stats.invalid += 1
            log.error(
                'tenant record of %s ignored: domains."%s": %s; fix it with quorum domain set', domain, domain, exc
            )
            return self._file_policy(domain)
        entry, problems = parse_fragment(data, domain, self.ctx)
        if entry is None:
            self.stats.invalid += 1
            log.error(
                "tenant record of %s ignored (file/global policy applies): %s; fix it with quorum domain set",
                domain,
                "; ".join(problems.errors),
            )
            return self._file_policy(domain)
        hit = self.matcher.match(domain)
        layers = ([(FILE, hit[1])] if hit is not None else []) + [(REDIS, entry)]
        return self._intern(merge(self.base, layers))

    def _intern(self, policy: EffectivePolicy) -> EffectivePolicy:
        """Share the value and provenance mappings between domains whose records say the same."""
        pattern = policy.provenance.pattern if isinstance(policy.provenance, Provenance) else None
        key = (policy.fingerprint, pattern)
        with self._lock:
            shared = self._shared.get(key)
            if shared is None:
                if len(self._shared) >= self.settings.cache_size:
                    self._shared.clear()
                self._shared[key] = policy
                return policy
        return replace(shared, domain=policy.domain, sources=policy.sources)

    def _listen(self, store: RedisTenantStore) -> None:
        """Drop the cache entry of every domain announced on the store's channel; reconnect after errors."""
        while not self._closed.is_set():
            pubsub = None
            try:
                pubsub = store.client.pubsub()
                pubsub.subscribe(store.channel)
                while not self._closed.is_set():
                    message = pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if message and message.get("type") == "message":
                        data = message["data"]
                        self.invalidate(data.decode() if isinstance(data, bytes) else str(data))
            except Exception:  # noqa: BLE001 - Redis away: refresh still bounds staleness
                self._closed.wait(max(1.0, self.settings.backoff))
            finally:
                if pubsub is not None:
                    try:
                        pubsub.close()
                    except Exception:  # noqa: BLE001
                        pass
