"""SPF, DKIM, DMARC and DNSBL against a real authoritative DNS server (NSD) on loopback."""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Iterator

import pytest
from tests.harness.dns import DnsServer
from tests.harness.ports import free_port, port_open
from tests.zones import auth as z

from quorum.access.dnsbl import DnsblList, check
from quorum.auth.dkim import verify_dkim
from quorum.auth.dmarc import evaluate
from quorum.auth.resolver import DnsTempError, Resolver
from quorum.auth.settings import DnsSettings
from quorum.auth.spf import SpfResult, check_spf
from quorum.message import Message

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def keys() -> dict[str, z.DkimKey]:
    return z.make_keys()


@pytest.fixture(scope="module")
def nsd(tmp_path_factory: pytest.TempPathFactory, keys: dict[str, z.DkimKey]) -> Iterator[DnsServer]:
    with DnsServer(tmp_path_factory.mktemp("nsd"), z.zones(keys)) as server:
        yield server


class _PartlyBrokenDns(DnsServer):
    """NSD with a zone that fails to load on purpose: ready when the zones that load answer."""

    def _ready(self) -> bool:
        import dns.message
        import dns.query

        if not port_open(self.port):
            return False
        for name, text in self.zones.items():
            if text != z.BROKEN_ZONE:
                q = dns.message.make_query(name + ".", "SOA")
                if not dns.query.udp(q, "127.0.0.1", port=self.port, timeout=0.5).answer:
                    return False
        return True


@pytest.fixture(scope="module")
def uncooperative(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Resolver]:
    with _PartlyBrokenDns(tmp_path_factory.mktemp("nsd-uncoop"), z.uncooperative_zones()) as server:
        yield Resolver(DnsSettings(nameservers=("127.0.0.1",), port=server.port, timeout=2.0, cache_size=0))


@pytest.fixture()
def resolver(nsd: DnsServer) -> Resolver:
    return Resolver(DnsSettings(nameservers=("127.0.0.1",), port=nsd.port, timeout=2.0, cache_size=0))


def soon() -> float:
    return time.monotonic() + 10


def test_resolver_answers_from_the_configured_server_only(resolver: Resolver) -> None:
    assert resolver.txt("spf-pass.test") == [b"v=spf1 ip4:192.0.2.0/24 -all"]
    assert resolver.query("nothing-here.test", "A") == []  # NXDOMAIN
    assert resolver.query("spf-pass.test", "MX") == []  # NODATA
    long_key = resolver.txt("sel1._domainkey.aligned.test")[0]
    assert long_key.startswith(b"v=DKIM1; k=rsa; p=") and len(long_key) > 255  # split strings joined
    with pytest.raises(DnsTempError):
        resolver.query("example.com", "A")  # NSD refuses what it does not serve: no fallback anywhere


def test_server_down_is_a_temporary_error() -> None:
    dead = Resolver(DnsSettings(nameservers=("127.0.0.1",), port=free_port(), timeout=0.3, cache_size=0))
    start = time.monotonic()
    with pytest.raises(DnsTempError):
        dead.query("spf-pass.test", "TXT")
    assert time.monotonic() - start < 2


def test_cache_serves_repeats(nsd: DnsServer) -> None:
    cached = Resolver(DnsSettings(nameservers=("127.0.0.1",), port=nsd.port, timeout=2.0, cache_size=100))
    assert cached.txt("spf-pass.test") == cached.txt("spf-pass.test")


@pytest.mark.parametrize(
    ("domain", "expected"),
    [
        ("spf-pass", "pass"),
        ("spf-fail", "fail"),
        ("spf-soft", "softfail"),
        ("spf-neutral", "neutral"),
        ("spf-none", "none"),
        ("spf-include", "pass"),
        ("spf-mx", "pass"),
        ("spf-loop", "permerror"),
        ("spf-many", "permerror"),
        ("spf-void", "permerror"),
        ("spf-syntax", "permerror"),
    ],
)
def test_spf(resolver: Resolver, domain: str, expected: str) -> None:
    assert check_spf(resolver, z.CLIENT_GOOD, f"a@{domain}.test", "helo.test", soon()).result == expected


def test_spf_helo_identity_and_temperror(resolver: Resolver) -> None:
    result = check_spf(resolver, z.CLIENT_GOOD, "", "helo.spf-pass.test", soon())
    assert (result.result, result.identity) == ("pass", "helo")
    dead = Resolver(DnsSettings(nameservers=("127.0.0.1",), port=free_port(), timeout=0.3, cache_size=0))
    assert check_spf(dead, z.CLIENT_GOOD, "a@spf-temp.test", "h.test", soon()).result == "temperror"


def _dkim(resolver: Resolver, raw: bytes) -> list[str]:
    msg = Message.from_bytes(raw)
    return [f"{r.result}:{r.domain}" for r in verify_dkim(msg.raw(), msg.headers, resolver, soon(), 5, 1024)]


def test_dkim_with_2048_bit_keys(resolver: Resolver, keys: dict[str, z.DkimKey]) -> None:
    key = keys["aligned.test"]
    body = "Grüße \u2013 8-bit\r\n".encode()
    raw = key.sign(z.message("a@aligned.test", subject="folded\r\n\tsubject", body=body), (b"simple", b"simple"))
    assert _dkim(resolver, raw) == ["pass:aligned.test"]
    assert _dkim(resolver, raw.replace("Grüße".encode(), b"Gruesse")) == ["fail:aligned.test"]
    assert _dkim(resolver, raw.replace(b"s=sel1;", b"s=revoked;")) == ["permerror:aligned.test"]
    assert _dkim(resolver, raw.replace(b"s=sel1;", b"s=nokey;")) == ["permerror:aligned.test"]


def _dmarc(
    resolver: Resolver, author: str, ip: str, mailfrom: str, keys: dict[str, z.DkimKey], signer: str = ""
) -> tuple[str, str, str]:
    raw = z.message(f"a@{author}")
    if signer:
        raw = keys[signer].sign(raw)
    msg = Message.from_bytes(raw)
    spf = check_spf(resolver, ip, f"b@{mailfrom}", "h.test", soon())
    dkim = verify_dkim(msg.raw(), msg.headers, resolver, soon(), 5, 1024)
    result = evaluate(msg.headers, spf, dkim, resolver, soon())
    return result.result, result.policy_tag, result.policy


def test_dmarc(resolver: Resolver, keys: dict[str, z.DkimKey]) -> None:
    bad, good = z.CLIENT_BAD, z.CLIENT_GOOD
    assert _dmarc(resolver, "aligned.test", good, "bounce.aligned.test", keys) == ("pass", "p", "reject")
    assert _dmarc(resolver, "dkimonly.test", bad, "elsewhere.test", keys, "dkimonly.test") == ("pass", "p", "reject")
    assert _dmarc(resolver, "reject.test", bad, "reject.test", keys) == ("fail", "p", "reject")
    assert _dmarc(resolver, "none.test", bad, "none.test", keys) == ("fail", "p", "none")
    assert _dmarc(resolver, "sub.org.test", bad, "sub.org.test", keys) == ("fail", "sp", "reject")
    assert _dmarc(resolver, "ghost.org.test", bad, "ghost.org.test", keys) == ("fail", "np", "quarantine")
    assert _dmarc(resolver, "a.b.c.d.e.org.test", bad, "x.test", keys) == ("fail", "sp", "reject")
    assert _dmarc(resolver, "own.org.test", good, "org.test", keys) == ("pass", "p", "reject")
    assert _dmarc(resolver, "shop.psd.test", good, "other.psd.test", keys) == ("fail", "p", "reject")
    assert _dmarc(resolver, "mail.shop.psd.test", good, "shop.psd.test", keys)[0] == "fail"  # no SPF there
    assert _dmarc(resolver, "nodmarc.test", bad, "x.test", keys) == ("none", "", "")
    assert _dmarc(resolver, "multi.test", bad, "x.test", keys) == ("none", "", "")
    assert _dmarc(resolver, "strict.test", good, "mail.strict.test", keys) == ("fail", "p", "reject")
    # a third-party signature does not align
    assert _dmarc(resolver, "reject.test", bad, "x.test", keys, "thirdparty.test") == ("fail", "p", "reject")


@pytest.mark.parametrize("tld", z.UNCOOPERATIVE_TLDS)
def test_dmarc_survives_a_tld_that_does_not_answer(uncooperative: Resolver, tld: str) -> None:
    """`_dmarc.<tld>` answered SERVFAIL or REFUSED: the Author Domain's own p=reject still decides (defect 4)."""
    with pytest.raises(DnsTempError):
        uncooperative.txt(f"_dmarc.{tld}")

    def dmarc(ip: str, mailfrom: str) -> tuple[SpfResult, str, str]:
        msg = Message.from_bytes(z.message(f"ceo@bank.{tld}"))
        spf = check_spf(uncooperative, ip, f"b@{mailfrom}", "h.test", soon())
        result = evaluate(msg.headers, spf, [], uncooperative, soon())
        return spf, result.result, result.policy

    spf, result, policy = dmarc(z.CLIENT_BAD, f"evil.{tld}")  # a spoof, SPF-authorised for its own domain
    assert (spf.result, result, policy) == ("pass", "fail", "reject")
    spf, result, policy = dmarc(z.CLIENT_GOOD, f"mail.bank.{tld}")  # relaxed alignment still found
    assert (spf.result, result, policy) == ("pass", "pass", "reject")


def test_dnsbl(resolver: Resolver) -> None:
    lists = [
        DnsblList(zone="reject.bl.test", action="reject", weight=1.0, codes=(ipaddress.IPv4Network("127.0.0.2/32"),)),
        DnsblList(zone="score.bl.test", action="score", weight=0.5),
    ]
    listed = check(resolver, lists, z.CLIENT_LISTED, soon())
    assert [(x.zone, x.codes) for x in listed.listings] == [
        ("reject.bl.test", ("127.0.0.2",)),
        ("score.bl.test", ("127.0.0.4",)),
    ]
    refused = check(resolver, lists, z.CLIENT_REFUSED, soon())
    assert refused.listings == () and refused.errors == ("reject.bl.test: refused (127.255.255.254)",)
    assert check(resolver, lists, z.CLIENT_OTHER_CODE, soon()).listings == ()
    assert check(resolver, lists, z.CLIENT_GOOD, soon()).listings == ()
    dead = Resolver(DnsSettings(nameservers=("127.0.0.1",), port=free_port(), timeout=0.3, cache_size=0))
    down = check(dead, lists, z.CLIENT_LISTED, soon())
    assert down.listings == () and len(down.errors) == 2
