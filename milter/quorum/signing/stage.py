"""The signing stage: DKIM-signs the final message in the post-decision hook (Stage.amend).

Only mail Quorum delivers reaches the hook (refused, tempfailed and discarded mail never does);
of that, quarantined mail is not signed either (held mail is not on its way out). Signed is mail
from a trusted submitter only: an SMTP AUTH session (`{auth_authen}`) or a client in `[signing]
networks`; a message from anyone else is never signed, whatever its From: says. The From: must
hold exactly one address, whose domain picks the keys (the exact domain's entries, else the most
specific `*.parent` entry); every key of that domain adds one signature, the first entry on top.

The signature covers the message as it leaves: Quorum's own header fields are already in the
final header block (`FinalMessage`) but not in the signed list, so a receiver that strips or
adds X-Quorum-* / Authentication-Results still verifies it. The feature is registered after
every other feature that amends, so nothing is added after the signature.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from email.utils import getaddresses

from quorum.config.schema import IPNetwork
from quorum.message import Header, in_networks
from quorum.pipeline.amend import Amendment, FinalMessage
from quorum.pipeline.stages import Action, Reply, Stage
from quorum.pipeline.transaction import Transaction
from quorum.signing import metrics
from quorum.signing.dkimsign import Signer, sign
from quorum.signing.redis_keys import KeysUnavailable, RedisKeys
from quorum.signing.settings import DomainSigning, KeyEntry, SigningSettings, normalise_domain

log = logging.getLogger("quorum.signing")
NOT_SIGNED = Reply.tempfail("451", "4.7.0", "Message could not be signed, try again later")
MAX_REMEMBERED = 10_000  # domains whose "no key" line was logged recently


class KeyIndex:
    """The configured keys by From: domain: exact entries first, else the longest `*.` suffix."""

    def __init__(self, entries: Iterable[KeyEntry]) -> None:
        self.exact: dict[str, list[KeyEntry]] = {}
        self.wildcard: dict[str, list[KeyEntry]] = {}
        for entry in entries:
            table = self.wildcard if entry.wildcard else self.exact
            table.setdefault(entry.signing_domain, []).append(entry)
        self._suffixes = sorted(self.wildcard, key=len, reverse=True)

    def signers(self, domain: str) -> list[Signer]:
        entries = self.exact.get(domain)
        if entries is None:
            parent = next((s for s in self._suffixes if domain.endswith("." + s)), None)
            entries = self.wildcard[parent] if parent is not None else []
        return [Signer(e.signing_domain, e.selector, e.key) for e in entries]


def from_domain(headers: Sequence[Header]) -> tuple[str | None, str]:
    """(the From: domain, "") for a message with exactly one From: address; else (None, reason)."""
    fields = [h for h in headers if h.name.strip().lower() == "from"]
    if not fields:
        return None, "no_from"
    if len(fields) > 1:
        return None, "multiple_from"
    try:
        addresses = [addr for _, addr in getaddresses([fields[0].value]) if "@" in addr]
    except Exception:  # noqa: BLE001 - a From: the parser cannot read holds no address we could vouch for
        return None, "no_from"
    if not addresses:
        return None, "no_from"
    if len(addresses) > 1:
        return None, "multiple_from"
    domain = addresses[0].rpartition("@")[2].strip().strip("<>")
    try:
        return normalise_domain(domain), ""
    except Exception:  # noqa: BLE001 - an undecodable IDN: no key can match it
        return domain.lower(), ""


class OncePer:
    """Whether a line about `key` is due: once per `interval` seconds per key, bounded memory."""

    def __init__(self, interval: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self.clock = clock
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()

    def due(self, key: str) -> bool:
        now = self.clock()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self.interval:
                return False
            if len(self._last) >= MAX_REMEMBERED:
                self._last = {k: t for k, t in self._last.items() if now - t < self.interval}
                if len(self._last) >= MAX_REMEMBERED:
                    return False  # a flood of new domains: they are still counted, not logged
            self._last[key] = now
            return True


class SigningStage(Stage):
    name = "signing"

    def __init__(
        self, settings: SigningSettings, clock: Callable[[], float] = time.monotonic, store: RedisKeys | None = None
    ) -> None:
        self.settings = settings
        self.store = store  # [signing] store = "redis"
        self.index = KeyIndex(settings.keys)
        self.networks: tuple[IPNetwork, ...] = settings.networks
        self._no_key = OncePer(settings.log_interval, clock)

    def submitter(self, txn: Transaction) -> str:
        """Why this transaction's mail is ours to sign: "authenticated", "network", or "" (it is not)."""
        env = txn.envelope
        if env.auth_user:
            return "authenticated"
        if env.client_ip and in_networks(env.client_ip, self.networks):
            return "network"
        return ""

    def amend(self, txn: Transaction, final: FinalMessage) -> Amendment | None:
        if not self.submitter(txn):
            metrics.UNSIGNED.labels("untrusted").inc()
            return None  # inbound mail: nothing to say on every message's log line
        if final.action is Action.QUARANTINE:
            return _unsigned("quarantined", "not signed: held in quarantine")
        headers = final.headers
        domain, reason = from_domain(headers)
        if domain is None:
            text = "no From: address" if reason == "no_from" else "several From: addresses"
            log.info("qid=%s not signed: %s", txn.envelope.queue_id or "-", text)
            return _unsigned(reason, f"not signed: {text}")
        try:
            signers = self.signers(txn, domain)
        except KeysUnavailable as exc:
            return self._failed(txn, exc)
        if not signers:
            if self._no_key.due(domain):
                log.warning(
                    "no DKIM key for %s: its mail is delivered unsigned (add a [[signing.keys]] entry; this "
                    'line is logged once per %.0fs per domain, quorum_dkim_unsigned_total{reason="no_key"} '
                    "counts every message)",
                    domain,
                    self.settings.log_interval,
                )
            return _unsigned("no_key", f"not signed: no key for {domain}")
        return self._sign(txn, final, headers, signers)

    def signers(self, txn: Transaction, domain: str) -> list[Signer]:
        """The From: domain's keys: its tenant's own (`[domains."d".signing]`), else the file's
        `[[signing.keys]]`, else (store = "redis") the ones kept in Redis."""
        tenant = txn.policy_of(f"postmaster@{domain}") if txn.policy_of is not None else None
        own = tenant.extensions.get("signing") if tenant is not None and tenant.domain == domain else None
        if isinstance(own, DomainSigning):
            return [Signer(domain, k.selector, k.key) for k in own.keys]
        found = self.index.signers(domain)
        if not found and self.store is not None:
            found = [Signer(d, selector, key) for d, selector, key in self.store.keys(domain)]
        return found

    def _failed(self, txn: Transaction, exc: Exception, trace: bool = False) -> Amendment:
        metrics.UNSIGNED.labels("failed").inc()
        what = f"{type(exc).__name__}: {exc}"[:200]
        log.error("qid=%s DKIM signing failed: %s", txn.envelope.queue_id or "-", what, exc_info=trace)
        if self.settings.on_failure == "tempfail":
            return Amendment(refuse=NOT_SIGNED, note=f"signing failed ({what}): answered 451")
        return Amendment(note=f"signing failed ({what}): delivered unsigned (on_failure = accept)")

    def close(self) -> None:
        if self.store is not None:
            self.store.close()

    def _sign(self, txn: Transaction, final: FinalMessage, headers: list[Header], signers: list[Signer]) -> Amendment:
        start = time.perf_counter()
        try:
            fields = [(h.name.encode("utf-8", "surrogateescape"), h.raw_value) for h in headers]
            with final.body() as body:
                added = sign(signers, fields, iter(lambda: body.read(65536), b""))
        except Exception as exc:  # noqa: BLE001 - on_failure decides; never a silent unsigned 250 by default
            return self._failed(txn, exc, trace=True)
        metrics.SIGN_SECONDS.observe(time.perf_counter() - start)
        metrics.SIGNED.inc()
        for s in signers:
            metrics.SIGNATURES.labels(s.key.algorithm).inc()
        made = ", ".join(f"d={s.domain} s={s.selector} a={s.key.algorithm}" for s in signers)
        return Amendment(headers=tuple(added), note=f"signed {made}")


def _unsigned(reason: str, note: str) -> Amendment:
    metrics.UNSIGNED.labels(reason).inc()
    return Amendment(note=note)
