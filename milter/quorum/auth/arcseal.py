"""ARC sealing (RFC 8617 5.1): one ARC set over the message as it leaves, in the post-decision
hook's last phase (after banners and DKIM signatures, which the seal then covers).

The set, i = the incoming chain's latest instance + 1:
- ARC-Authentication-Results: `i=N; ` + Quorum's own Authentication-Results (spf, dkim, dmarc, arc);
- ARC-Message-Signature: a DKIM signature with i= instead of v= (relaxed/relaxed, the DKIM signing
  feature's header list, never ARC or Authentication-Results fields);
- ARC-Seal: i=, cv= (none for the first set, pass or fail as the auth stage judged the incoming
  chain), signed over every ARC set in instance order, then the new AAR and AMS, then itself with b=
  empty (relaxed header canonicalization); over a failed chain only the new set is covered, and a
  chain whose latest seal already says cv=fail is not extended (RFC 8617 5.1.2).
The hashing and signing are the DKIM signing feature's (quorum.signing.dkimsign: OpenSSL RSA with
the GIL released); tests/unit/test_arc_seal.py checks every set against dkimpy's verifier, the
integration test against Mail::DKIM's.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterable, Sequence

from quorum.auth import metrics
from quorum.auth.arc import ARC_HEADERS, RFC_MAX_SETS, _instance
from quorum.auth.authserv import normalise_id
from quorum.auth.findings import AuthFindings
from quorum.auth.settings import ArcSettings
from quorum.message import Header
from quorum.pipeline.amend import SEAL, Amendment, FinalMessage
from quorum.pipeline.headers import sanitise_header
from quorum.pipeline.stages import Action, Stage
from quorum.pipeline.transaction import Transaction
from quorum.signing.dkimsign import body_hash, field_value, header_list, milter_value, relaxed_value, signed_headers
from quorum.signing.keys import PrivateKey

log = logging.getLogger("quorum.auth")

AAR, AMS, AS = "ARC-Authentication-Results", "ARC-Message-Signature", "ARC-Seal"
_CV = re.compile(rb"(?:^|;)\s*cv\s*=\s*([a-z]+)", re.IGNORECASE)
_ORDER = {name: i for i, name in enumerate(ARC_HEADERS)}  # aar, ams, as: the order a seal hashes a set in


def _raw(value: str) -> bytes:
    """A value as the MTA writes it from addheader (leading space, CRLF folds)."""
    return (" " + value).encode("utf-8", "surrogateescape").replace(b"\n", b"\r\n")


def _canonical(name: str, raw: bytes) -> bytes:
    return name.lower().encode("ascii") + b":" + relaxed_value(raw) + b"\r\n"


def chain(headers: Sequence[Header]) -> dict[int, dict[str, Header]]:
    """The ARC fields by instance and lower-case name (the auth stage checked the structure)."""
    sets: dict[int, dict[str, Header]] = {}
    for h in headers:
        name = h.name.strip().lower()
        if name in ARC_HEADERS and (instance := _instance(h.raw_value)) is not None:
            sets.setdefault(instance, {}).setdefault(name, h)
    return sets


def latest_cv(headers: Sequence[Header]) -> str:
    """The cv= of the incoming chain's latest ARC-Seal ("" without one)."""
    sets = chain(headers)
    seal = sets[max(sets)].get("arc-seal") if sets else None
    match = _CV.search(seal.raw_value.replace(b"\r\n", b"")) if seal is not None else None
    return match.group(1).decode("ascii").lower() if match else ""


def seal(
    key: PrivateKey,
    domain: str,
    selector: str,
    headers: Sequence[Header],
    body: Iterable[bytes],
    results: str,
    cv: str,
    instance: int,
    now: int | None = None,
) -> list[tuple[str, str]]:
    """The new ARC set as (name, value) top-down (ARC-Seal, ARC-Message-Signature, AAR) over the
    final `headers` and `body`; `results` is Quorum's Authentication-Results value."""
    stamp = str(int(time.time()) if now is None else now).encode("ascii")
    d, s, i = domain.encode("ascii"), selector.encode("ascii"), str(instance).encode("ascii")
    aar = sanitise_header(f"i={instance}; {results}")  # exactly what the milter will add (folds kept)
    fields = [(h.name.encode("utf-8", "surrogateescape"), h.raw_value) for h in headers]
    include = header_list([h.name for h in headers])
    ams_tags = [
        (b"i", i),
        (b"a", b"rsa-sha256"),
        (b"c", b"relaxed/relaxed"),
        (b"d", d),
        (b"s", s),
        (b"t", stamp),
        (b"h", b" : ".join(n.encode("ascii") for n in include)),
        (b"bh", body_hash(body)),
        (b"b", b""),
    ]
    ams = milter_value(field_value(key, signed_headers(fields, include), ams_tags, AMS.encode("ascii")))
    covered: list[bytes] = []
    if cv != "fail":
        for n, found in sorted(chain(headers).items()):
            if n < instance:
                covered += [_canonical(name, h.raw_value) for name, h in sorted(found.items(), key=_by_order)]
    covered += [_canonical(AAR, _raw(aar)), _canonical(AMS, _raw(ams))]
    as_tags = [(b"i", i), (b"cv", cv.encode("ascii")), (b"a", b"rsa-sha256"), (b"d", d), (b"s", s), (b"t", stamp)]
    as_tags.append((b"b", b""))
    arc_seal = milter_value(field_value(key, b"".join(covered), as_tags, AS.encode("ascii")))
    return [(AS, arc_seal), (AMS, ams), (AAR, aar)]


def _by_order(item: tuple[str, Header]) -> int:
    return _ORDER[item[0]]


def own_results(headers: Sequence[Header], authserv_id: str) -> str | None:
    """The value of the topmost Authentication-Results with our authserv-id (the one we added), its
    folds as LF+TAB (a long one unfolded would be cut by the milter's line limit)."""
    for h in headers:
        if h.name.strip().lower() == "authentication-results":
            if normalise_id(h.value.split(";", 1)[0]) == normalise_id(authserv_id):
                raw = h.raw_value.decode("utf-8", "surrogateescape").replace("\r\n", "\n").strip()
                return re.sub(r"\n[ \t]+", "\n\t", raw)
    return None


class ArcSealStage(Stage):
    name = "arc_seal"
    amend_phase = SEAL

    def __init__(self, settings: ArcSettings, authserv_id: str) -> None:
        assert settings.key is not None  # ArcSettings requires it with seal = true
        self.settings = settings
        self.key = settings.key
        self.authserv_id = authserv_id

    def amend(self, txn: Transaction, final: FinalMessage) -> Amendment | None:
        if txn.envelope.auth_user:
            return None  # our own users' mail: DKIM signing's, not a hop to record
        if final.action is Action.QUARANTINE:
            return _unsealed("quarantined", "not sealed: held in quarantine")
        auth = final.results.get(AuthFindings)
        arc = auth.arc if auth is not None else None
        headers = final.headers
        if arc is None or arc.result == "temperror":
            return _unsealed("unverified", "not sealed: the incoming ARC chain was not verified")
        if arc.result == "none":
            cv, instance = "none", 1
        elif arc.result == "pass":
            cv, instance = "pass", arc.sets + 1
        else:
            if not arc.sets or latest_cv(headers) == "fail":
                return _unsealed("chain_failed", "not sealed: the incoming ARC chain ended in a failure")
            cv, instance = "fail", arc.sets + 1
        if instance > RFC_MAX_SETS:
            return _unsealed("too_long", f"not sealed: {arc.sets} ARC sets already")
        results = own_results(headers, self.authserv_id)
        if results is None:
            return _unsealed("no_results", "not sealed: no Authentication-Results of Quorum's")
        s = self.settings
        try:
            with final.body() as body:
                added = seal(
                    self.key, s.domain, s.selector, headers, iter(lambda: body.read(65536), b""), results, cv, instance
                )
        except Exception as exc:  # noqa: BLE001 - an unsealed hop is delivered; its mail is not ours to hold back
            log.exception("qid=%s ARC sealing failed", txn.envelope.queue_id or "-")
            return _unsealed("failed", f"not sealed: {type(exc).__name__}: {exc}"[:200])
        metrics.SEALED.labels(cv).inc()
        return Amendment(headers=tuple(added), note=f"sealed i={instance} cv={cv} d={s.domain} s={s.selector}")


def _unsealed(reason: str, note: str) -> Amendment:
    metrics.UNSEALED.labels(reason).inc()
    return Amendment(note=note)
