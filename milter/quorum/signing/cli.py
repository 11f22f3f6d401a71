"""`quorum dkim keygen` (a new key and the TXT record to publish) and `quorum dkim check` (is each
configured key's record published, and does it match the key).

A rotation: `keygen` a key under a new selector, publish its record, `dkim check` until it says
match, add the entry (both keys sign for a while), then remove the old entry and, once mail
signed with it is delivered (a few days), its record.
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from quorum.signing.keys import KeyProblem, PrivateKey, generate, parse_record, write_private, zone_line

COMMAND = "dkim"


def add_cli(subparsers: Any, with_config: Callable[[argparse.ArgumentParser], argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(COMMAND, help="DKIM signing keys: make one, check the published records")
    actions = p.add_subparsers(dest="dkim_command", required=True)
    gen = with_config(actions.add_parser("keygen", help="write a new private key and print its DNS TXT record"))
    gen.add_argument("--domain", required=True, help="the From: domain it signs for (d=)")
    gen.add_argument("--selector", required=True, help="the selector (s=): the record is S._domainkey.D")
    gen.add_argument("--type", choices=("rsa", "ed25519"), default="rsa", help="key type (default rsa)")
    gen.add_argument("--bits", type=int, default=2048, help="RSA key size, 1024 to 8192 (default 2048)")
    where = gen.add_mutually_exclusive_group()
    where.add_argument("--out", default=".", help="directory to write DOMAIN.SELECTOR.pem into (default .)")
    where.add_argument(
        "--store", choices=("redis",), help='keep the key in Redis instead ([signing] store = "redis", [redis])'
    )
    check = with_config(actions.add_parser("check", help="look up each configured key's record: match or not"))
    check.add_argument("--domain", help="only the keys of this domain")
    check.add_argument("--selector", help="with --key: the selector of a key not configured yet")
    check.add_argument(
        "--key", help="check this key file (with --domain and --selector) instead of the configured keys"
    )
    check.add_argument("--json", action="store_true", help="machine-readable output")


def handles(command: str) -> bool:
    return command == COMMAND


def run_cli(args: argparse.Namespace, config: Any) -> int:
    if args.dkim_command == "keygen":
        return keygen(args, config)
    return check(args, config)


# -- keygen -----------------------------------------------------------------------------------
def keygen(args: argparse.Namespace, config: Any) -> int:
    from quorum.signing.settings import domain_name, selector_name

    try:
        wildcard_ok = args.store == "redis"  # a file key's wildcard is its [[signing.keys]] entry's
        domain, selector = domain_name(args.domain, wildcard=wildcard_ok), selector_name(args.selector)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.type == "rsa" and not 1024 <= args.bits <= 8192:
        print(f"error: --bits {args.bits}: use 1024 to 8192 (2048 is usual)", file=sys.stderr)
        return 2
    if args.store == "redis":
        return _keygen_redis(args, config, domain, selector)
    path = Path(args.out) / f"{domain}.{selector}.pem"
    try:
        pem, key = generate(args.type, args.bits)
        write_private(str(path), pem, _owner(config))
    except FileExistsError:
        print(f"error: {path} exists; a key is never overwritten (pick a new selector, or remove it)", file=sys.stderr)
        return 1
    except (OSError, KeyProblem) as exc:
        print(f"error: cannot write {path}: {getattr(exc, 'strerror', None) or exc}", file=sys.stderr)
        return 1
    size = f"{key.bits}-bit RSA" if key.type == "rsa" else "Ed25519"
    print(f"wrote {path} ({size}, mode 0600)")
    print("\npublish this record (strings of at most 255 bytes; a DNS UI may want them joined):\n")
    print(zone_line(selector, domain, key.record()))
    print("\nthen, once `quorum dkim check` says match, add to [signing]:\n")
    print(f'[[signing.keys]]\ndomain = "{domain}"\nselector = "{selector}"\nkey = "{path.resolve()}"')
    return 0


def _keygen_redis(args: argparse.Namespace, config: Any, domain: str, selector: str) -> int:
    from quorum.signing.redis_keys import RedisKeys, hash_name
    from quorum.signing.settings import SigningSettings

    settings = config.feature("signing")
    if not isinstance(settings, SigningSettings) or settings.store != "redis" or settings._redis is None:
        print('error: --store redis needs [signing] store = "redis" and a [redis] table in the config', file=sys.stderr)
        return 2
    wildcard = args.domain.strip().startswith("*.")
    name = hash_name(settings.key_prefix, domain.removeprefix("*."), wildcard)
    store = RedisKeys.from_settings(settings._redis, settings.key_prefix, settings.refresh)
    try:
        pem, key = generate(args.type, args.bits)
        if not store.put(domain.removeprefix("*."), selector, pem, wildcard):
            print(f"error: {name} already holds selector {selector!r}; a key is never overwritten", file=sys.stderr)
            return 1
    except Exception as exc:  # noqa: BLE001 - Redis down, refused by ACL: said, exit 1
        print(f"error: cannot store the key in Redis ({type(exc).__name__}: {exc})", file=sys.stderr)
        return 1
    finally:
        store.close()
    size = f"{key.bits}-bit RSA" if key.type == "rsa" else "Ed25519"
    print(f"stored {size} key in Redis: {name} field {selector}")
    print("\npublish this record (strings of at most 255 bytes; a DNS UI may want them joined):\n")
    print(zone_line(selector, domain.removeprefix("*."), key.record()))
    print("\nmail from the domain is signed with it from the next lookup (at most [signing] refresh later)")
    return 0


def _owner(config: Any) -> tuple[int, int] | None:
    """Run as root with `[milter] user`: the key belongs to that user (Quorum reads it after the drop)."""
    user = getattr(getattr(config, "milter", None), "user", None)
    if os.geteuid() != 0 or not user:
        return None
    entry = pwd.getpwnam(user)
    return entry.pw_uid, entry.pw_gid


# -- check ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Finding:
    domain: str
    selector: str
    name: str
    key: PrivateKey
    status: str  # match | mismatch | missing | revoked | error
    detail: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "domain": self.domain,
            "selector": self.selector,
            "record": self.name,
            "key": self.key.path,
            "type": self.key.type,
            "status": self.status,
            "detail": self.detail,
        }


def compare(key: PrivateKey, records: Iterable[str]) -> tuple[str, str]:
    """(status, detail) of the published key records (TXT texts) against `key`."""
    found = [parse_record(r) for r in records]
    found = [tags for tags in found if "p" in tags and tags.get("v", "DKIM1") == "DKIM1"]
    if not found:
        return "missing", "no DKIM key record (v=DKIM1; ...; p=...) at this name"
    if len(found) > 1:
        return "mismatch", f"{len(found)} key records at one name: receivers take any one; publish exactly one"
    tags = found[0]
    if not tags["p"]:
        return "revoked", "p= is empty: the key is revoked, signatures with it fail"
    published_type = tags.get("k", "rsa").lower()
    if published_type != key.type:
        return "mismatch", f"k={published_type} is published, the key is {key.type}"
    if tags["p"] != key.public:
        return "mismatch", "p= is another public key: the published record does not belong to this key"
    return "match", ""


def lookup(name: str, resolver: Any) -> list[str]:
    """The TXT texts at `name` (each record's strings joined); [] when there is none."""
    import dns.resolver

    try:
        answer = resolver.resolve(name, "TXT", search=False)
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return []
    return [b"".join(r.strings).decode("ascii", "replace") for r in answer]


def make_resolver(config: Any) -> Any:
    """dnspython's resolver: `[dns] nameservers`/`port`/`timeout` when set, else the system's."""
    import dns.resolver

    nameservers, port, timeout = _dns_settings(config)
    resolver = dns.resolver.Resolver(configure=not nameservers)
    if nameservers:
        resolver.nameservers = list(nameservers)
    resolver.port = port
    resolver.timeout = resolver.lifetime = timeout
    return resolver


def _dns_settings(config: Any) -> tuple[list[str], int, float]:
    dns = getattr(config.feature("auth"), "dns", None)
    if dns is None and config.path:  # no [auth]/[dnsbl]/[access]: [dns] as written (it was validated)
        from quorum.config.loader import read_toml

        table = read_toml(config.path).get("dns", {})
        return list(table.get("nameservers", [])), int(table.get("port", 53)), float(table.get("timeout", 3.0))
    if dns is None:
        return [], 53, 3.0
    return list(getattr(dns, "nameservers", ())), int(getattr(dns, "port", 53)), float(getattr(dns, "timeout", 3.0))


def _first_error(exc: Exception) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        first = errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"])
        return f"--{where}: {str(first['msg']).removeprefix('Value error, ')}"
    return str(exc)


def _tenant_keys(config: Any) -> list[Any]:
    """The keys of the file's domain tables (`[domains."d".signing]`)."""
    from quorum.signing.settings import DomainSigning, KeyEntry

    tenants = config.feature("tenants")
    found = []
    for name, entry in sorted(getattr(tenants, "domains", {}).items()):
        own = entry.values.get("signing")
        if isinstance(own, DomainSigning) and not name.startswith("*."):
            found += [KeyEntry(domain=name, selector=k.selector, key=k.key) for k in own.keys]
    return found


def _redis_keys(settings: Any, domain: str | None) -> list[Any]:
    """The keys kept in Redis (store = "redis"): the domain's, or every domain's (SCAN)."""
    from quorum.signing.redis_keys import RedisKeys
    from quorum.signing.settings import KeyEntry

    if settings.store != "redis" or settings._redis is None:
        return []
    store = RedisKeys.from_settings(settings._redis, settings.key_prefix, settings.refresh)
    try:
        return [
            KeyEntry(domain=f"*.{d}" if wildcard else d, selector=selector, key=key)
            for d, wildcard, selector, key in store.stored(domain)
        ]
    finally:
        store.close()


def check(args: argparse.Namespace, config: Any) -> int:
    from quorum.signing.settings import KeyEntry, SigningSettings, normalise_domain

    entries: list[Any]
    if args.key:
        if not (args.domain and args.selector):
            print("error: --key needs --domain and --selector", file=sys.stderr)
            return 2
        try:
            entries = [KeyEntry(domain=args.domain, selector=args.selector, key=args.key)]
        except ValueError as exc:  # pydantic's ValidationError: the key file or the names
            print(f"error: {_first_error(exc)}", file=sys.stderr)
            return 2
    else:
        settings = config.feature("signing")
        if not isinstance(settings, SigningSettings):
            print(f"error: no [signing] in {config.path or 'the config'}", file=sys.stderr)
            return 2
        wanted = normalise_domain(args.domain) if args.domain else None
        try:
            configured = [*settings.keys, *_tenant_keys(config), *_redis_keys(settings, wanted)]
        except Exception as exc:  # noqa: BLE001 - Redis down, an unusable stored key: said, exit 2
            print(f"error: cannot read the keys kept in Redis ({type(exc).__name__}: {exc})", file=sys.stderr)
            return 2
        entries = [e for e in configured if wanted is None or wanted in (e.domain, e.signing_domain)]
        entries = [e for e in entries if args.selector is None or e.selector == args.selector.lower()]
        if not entries:
            print(f"error: no key configured for {args.domain or ''} {args.selector or ''}".rstrip(), file=sys.stderr)
            return 2
    resolver = make_resolver(config)
    results: list[Finding] = []
    for e in entries:
        name = e.record_name()
        try:
            status, detail = compare(e.key, lookup(name, resolver))
        except Exception as exc:  # noqa: BLE001 - timeouts, SERVFAIL: said, and the exit status says not all match
            status, detail = "error", f"lookup failed: {type(exc).__name__}: {exc}"
        results.append(Finding(e.domain, e.selector, name, e.key, status, detail))
    if args.json:
        print(json.dumps([r.as_dict() for r in results], indent=2))
    else:
        for r in results:
            size = f"rsa-{r.key.bits}" if r.key.type == "rsa" else "ed25519"
            line = f"{r.domain} s={r.selector} ({size}, {r.key.path}): {r.status}  [{r.name} TXT]"
            print(line + (f"\n    {r.detail}" if r.detail else ""))
    return 0 if all(r.status == "match" for r in results) else 1
