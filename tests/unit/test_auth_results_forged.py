"""Issue 17, item 13: forged Authentication-Results that claim our authserv-id in a disguise are
still recognised (and so removed): RFC 5322 quoted strings with quoted-pairs, NBSP and other
invisible characters, encoded-words, compatibility forms, case and a trailing dot."""

from __future__ import annotations

import pytest

from quorum.auth.results import claimed_authserv_id, claims_our_id

OURS = "mx.example.net"

FORGED = [
    b' "mx.example.net"; spf=pass',
    b' "mx\\.example\\.net"; spf=pass',  # quoted-pairs
    b' "m\\x\\.\\e\\x\\a\\m\\p\\l\\e\\.\\n\\e\\t"; spf=pass',
    b' "mx.example.net ; dkim=pass',  # unterminated quoted string
    b' "mx.example.net\r\n "; dkim=pass',  # folded inside the quotes
    b" mx.example.net\xc2\xa0; dmarc=pass",  # trailing NBSP (UTF-8)
    b" mx.example.net\xa0; dmarc=pass",  # trailing NBSP (Latin-1 byte)
    b" \xc2\xa0mx.example.net; dmarc=pass",  # leading NBSP
    b" mx.example.net\xc2\xa01; dmarc=pass",  # NBSP before the version
    b" mx.example.net\xe2\x80\x8b; dmarc=pass",  # zero-width space
    b" mx.example.net\xef\xbb\xbf; dmarc=pass",  # BOM / zero-width no-break space
    b" mx.example.net\xe2\x80\x83; dmarc=pass",  # em space
    b" mx.example.net\xe3\x80\x80; dmarc=pass",  # ideographic space
    b" \xef\xbd\x8d\xef\xbd\x98.example.net; dmarc=pass",  # fullwidth letters (NFKC)
    b" =?utf-8?q?mx.example.net?=; spf=pass",  # encoded-word
    b" =?utf-8?b?bXguZXhhbXBsZS5uZXQ=?=; spf=pass",
    b' "MX.EXAMPLE.NET."; spf=pass',
    b' (comment) "mx.example.net" (another); spf=pass',
    b"\r\n\tmx.example.net.\t;spf=pass",
]

KEPT = [
    b" other.example; spf=pass",
    b' "other.example"; spf=pass',
    b" mx.example.net.evil; spf=pass",
    b" evil.mx.example.net; spf=pass",
    b' "mx.example.nett"; spf=pass',
    b" xmx.example.net; spf=pass",
]


@pytest.mark.parametrize("raw", FORGED)
def test_disguised_copies_of_our_id_are_recognised(raw: bytes) -> None:
    assert claimed_authserv_id(raw) == OURS
    assert claims_our_id("MX.Example.NET")(raw)  # type: ignore[operator]


@pytest.mark.parametrize("raw", KEPT)
def test_other_ids_are_kept(raw: bytes) -> None:
    assert not claims_our_id(OURS)(raw)  # type: ignore[operator]


@pytest.mark.parametrize("raw", [b"", b" ", b" ;", b' ""; spf=pass', b" \xff\xfe; x", b" =?bogus?q?x?=; x"])
def test_junk_never_raises(raw: bytes) -> None:
    claimed_authserv_id(raw)
