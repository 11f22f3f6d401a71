"""`quorum domain set|show|list|delete`: tenant records in Redis, and what applies to a domain.

quorum domain set example.com --file example.toml -c CFG   # refuses an invalid table, naming the key
quorum domain show example.com [--json] -c CFG             # effective policy, and where each value comes from
quorum domain list [--json] -c CFG                         # file entries and Redis records
quorum domain delete example.com -c CFG
"""

from __future__ import annotations

import argparse
import json
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from quorum.tenants.effective import FILE, REDIS, merge, no_antivirus_warning, to_plain
from quorum.tenants.names import DomainNameError, normalise_pattern, recipient_domain
from quorum.tenants.resolver import TenantPolicies
from quorum.tenants.schema import SchemaContext, parse_fragment, unwrap
from quorum.tenants.settings import TenantSettings
from quorum.tenants.store import RecordError, RedisTenantStore, decode

COMMAND = "domain"
ACTIONS = ("set", "show", "list", "delete")


def add_cli(subparsers: Any, with_config: Callable[[argparse.ArgumentParser], argparse.ArgumentParser]) -> None:
    p = with_config(subparsers.add_parser(COMMAND, help="per-domain policy: set, show, list or delete records"))
    p.add_argument("action", choices=ACTIONS)
    p.add_argument("domain", nargs="?", help="the domain (show also takes user@domain)")
    p.add_argument("--file", help='set: the domain\'s table as TOML (the keys of [domains."DOMAIN"])')
    p.add_argument("--json", action="store_true", help="machine-readable output (show, list)")


def handles(command: str) -> bool:
    return command == COMMAND


def _err(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)


def run_cli(args: argparse.Namespace, config: Any) -> int:
    settings = config.feature("tenants") or TenantSettings()
    if args.action != "list" and not args.domain:
        _err(f"quorum domain {args.action} needs a DOMAIN")
        return 2
    if args.action == "set" and not args.file:
        _err("quorum domain set needs --file FRAGMENT.toml")
        return 2
    store = RedisTenantStore(settings.redis, settings.key_prefix) if settings.redis is not None else None
    if store is None and args.action in ("set", "delete"):
        _err(f'[tenants] store is not "redis" in {config.path or "the config"}; set store = "redis" and [redis]')
        return 2
    try:
        if args.action == "set":
            assert store is not None
            return _set(store, config, args.domain, Path(args.file))
        if args.action == "delete":
            assert store is not None
            return _delete(store, args.domain)
        if args.action == "list":
            return _list(store, settings, args.json)
        return _show(store, config, settings, args.domain, args.json)
    except Exception as exc:  # redis errors, timeouts, a Cluster without any reachable node
        redis = settings.redis
        where = f"Redis ({redis.mode}, {redis.url})" if redis is not None else "tenant store"
        _err(f"{where}: {type(exc).__name__}: {exc}")
        return 1
    finally:
        if store is not None:
            store.close()


def _name(domain: str) -> str | None:
    try:
        return normalise_pattern(domain)
    except DomainNameError as exc:
        _err(f"{domain!r}: {exc}")
        return None


def _set(store: RedisTenantStore, config: Any, domain: str, path: Path) -> int:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        _err(f"{path}: cannot read the file: {exc.strerror or exc}")
        return 2
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        _err(f"{path}: not a UTF-8 TOML file: {exc}")
        return 2
    entry, problems = parse_fragment(data, domain, SchemaContext.from_config(config))
    for warning in problems.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if entry is None:
        for error in problems.errors:
            _err(error)
        print(f"refused: {len(problems.errors)} problem(s) in {path}; nothing was stored", file=sys.stderr)
        return 2
    store.put(entry.name, unwrap(data, entry.name))
    print(f"stored {entry.name} ({store.key(entry.name)}): {len(entry.values)} key(s)")
    policies = TenantPolicies(config, store=_Fetched(None), listen=False)
    hit = policies.matcher.match(entry.name)
    layers = ([(FILE, hit[1])] if hit is not None else []) + [(REDIS, entry)]
    gap = no_antivirus_warning(merge(policies.base, layers), config.engines)
    if gap is not None:
        print(f'warning: domains."{entry.name}": {gap}', file=sys.stderr)
    return 0


def _delete(store: RedisTenantStore, domain: str) -> int:
    name = _name(domain)
    if name is None:
        return 2
    if store.delete(name):
        print(f"deleted {name}")
        return 0
    print(f"no record for {name}", file=sys.stderr)
    return 1


def _list(store: RedisTenantStore | None, settings: TenantSettings, as_json: bool) -> int:
    rows = [{"domain": name, "source": "file"} for name in settings.domains]
    if store is not None:
        rows += [{"domain": name, "source": "redis"} for name in store.domains()]
    rows.sort(key=lambda r: (r["domain"], r["source"]))
    if as_json:
        print(json.dumps(rows, indent=2))
    else:
        for r in rows:
            print(f"{r['domain']}\t{r['source']}")
    return 0


def _show(store: RedisTenantStore | None, config: Any, settings: TenantSettings, target: str, as_json: bool) -> int:
    if "@" in target:
        domain = recipient_domain(target)
        if domain is None:
            _err(f"{target!r}: no valid domain")
            return 2
    else:
        name = _name(target)
        if name is None:
            return 2
        domain = name
    record: dict[str, Any] = {"state": "none"}
    raw = None
    if store is not None and not domain.startswith("*."):
        raw = store.fetch(domain)
        if raw is not None:
            record = _record_state(raw, domain, config)
    policies = TenantPolicies(config, settings, store=_Fetched(raw), listen=False)
    policy = None if domain.startswith("*.") else policies.policy_for_domain(domain)
    if policy is None:  # a wildcard: show the file entry itself
        entry = settings.domains.get(domain)
        if entry is None:
            _err(f'{domain} is not in the config file ([domains."{domain}"])')
            return 1
        from quorum.tenants.effective import FILE, merge

        policy = merge(policies.base, [(FILE, entry)])
    out: dict[str, Any] = {
        "domain": domain,
        "matched": list(policy.sources) or ["global"],
        "fingerprint": policy.fingerprint,
        "record": record,
        "values": policy.explain(),
    }
    if as_json:
        print(json.dumps(out, indent=2, ensure_ascii=False))
        return 0
    print(f"domain {domain}: {', '.join(out['matched'])}")
    print(f"fingerprint {policy.fingerprint}")
    if record["state"] == "invalid":
        print("redis record IGNORED (invalid):")
        for problem in record["errors"]:
            print(f"  {problem}")
    width = max(len(v["key"]) for v in out["values"])
    for v in out["values"]:
        value = json.dumps(to_plain(v["value"]), ensure_ascii=False)
        print(f"  {v['key']:<{width}} = {value}  ({v['source']})")
    return 0


def _record_state(raw: bytes, domain: str, config: Any) -> dict[str, Any]:
    try:
        data = decode(raw)
    except RecordError as exc:
        return {"state": "invalid", "errors": [f'domains."{domain}": {exc}']}
    entry, problems = parse_fragment(data, domain, SchemaContext.from_config(config))
    if entry is None:
        return {"state": "invalid", "errors": problems.errors}
    return {"state": "valid", "keys": len(entry.values)}


class _Fetched:
    """The record `show` already read, handed to the resolver (no second round trip)."""

    def __init__(self, raw: bytes | None) -> None:
        self.raw = raw

    def fetch(self, domain: str) -> bytes | None:
        return self.raw

    def close(self) -> None:
        pass
