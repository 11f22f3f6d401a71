"""Postfix-style access tables: syntax, lookup order, errors naming file and line, reloading."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from quorum.access.tables import AddressTable, ClientTable, TableError, TableFile

CLIENTS = """\
# comment
192.0.2.7        OK
192.0.2.0/24     REJECT Your network sends spam
198.51.100       REJECT
2001:db8::/32    REJECT  IPv6 block
203.0.113.5      DUNNO
203.0.113.0/24   REJECT
"""


def test_client_table_most_specific_match_wins() -> None:
    table = ClientTable.parse(CLIENTS, "clients")
    assert table.lookup("192.0.2.7").action == "OK"  # type: ignore[union-attr]
    rule = table.lookup("192.0.2.8")
    assert rule is not None and (rule.action, rule.text, rule.source) == (
        "REJECT",
        "Your network sends spam",
        "clients:3",
    )
    assert table.lookup("198.51.100.99").action == "REJECT"  # type: ignore[union-attr]
    assert table.lookup("2001:db8::1").text == "IPv6 block"  # type: ignore[union-attr]
    assert table.lookup("::ffff:192.0.2.7").action == "OK"  # type: ignore[union-attr]
    assert table.lookup("203.0.113.5").action == "DUNNO"  # type: ignore[union-attr]
    assert table.lookup("10.0.0.1") is None
    assert table.lookup("not-an-ip") is None


ADDRESSES = """\
boss@example.com      OK
example.com           REJECT We do not talk to example.com
.example.com          REJECT
friend@sub.example.com OK
abuse@                OK
<>                    REJECT
partner.test          ok
continued.test        REJECT text that goes
  on to the next line
"""


@pytest.mark.parametrize(
    ("address", "action"),
    [
        ("boss@example.com", "OK"),
        ("Boss@Example.COM", "OK"),
        ("<other@example.com>", "REJECT"),
        ("x@sub.example.com", "REJECT"),
        ("friend@sub.example.com", "OK"),
        ("abuse@anything.test", "OK"),
        ("", "REJECT"),
        ("<>", "REJECT"),
        ("x@partner.test", "OK"),
        ("x@example.org", None),
        ("x@notexample.com", None),
    ],
)
def test_address_lookup_order(address: str, action: str | None) -> None:
    rule = AddressTable.parse(ADDRESSES, "senders").lookup(address)
    assert (rule.action if rule else None) == action


def test_continuation_lines_are_joined() -> None:
    rule = AddressTable.parse(ADDRESSES, "senders").lookup("a@continued.test")
    assert rule is not None and rule.text == "text that goes on to the next line"


@pytest.mark.parametrize(
    ("kind", "text", "message"),
    [
        (ClientTable, "192.0.2.300 OK\n", "t:1: '192.0.2.300' is not an IP address"),
        (ClientTable, "\n192.0.2.1/24 OK\n", "t:2: '192.0.2.1/24' is not an IP address or network (host bits set?)"),
        (ClientTable, "192.0.2.1\n", "t:1: '192.0.2.1' has no action"),
        (ClientTable, "192.0.2.1 ACCEPT\n", "t:1: unknown action 'ACCEPT'"),
        (ClientTable, "192.0.2.1 OK please\n", "t:1: OK takes no text"),
        (AddressTable, "  indented OK\n", "t:1: continuation line without a line before it"),
        (AddressTable, "a@b@c OK\n", "t:1: 'a@b@c' is not an address"),
    ],
)
def test_errors_name_file_and_line(kind: type[ClientTable] | type[AddressTable], text: str, message: str) -> None:
    with pytest.raises(TableError) as exc:
        kind.parse(text, "t")
    assert str(exc.value).startswith(message)


def test_table_file_reloads_changes_and_keeps_the_old_version_on_errors(tmp_path: Path) -> None:
    path = tmp_path / "clients"
    path.write_text("192.0.2.1 REJECT\n")
    tf = TableFile(str(path), ClientTable.parse, interval=0.01)
    assert tf.get().lookup("192.0.2.1").action == "REJECT"  # type: ignore[union-attr]
    path.write_text("192.0.2.1 OK\n")
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
    time.sleep(0.02)
    assert tf.get().lookup("192.0.2.1").action == "OK"  # type: ignore[union-attr]
    path.write_text("192.0.2.1 MAYBE\n")
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 2 * 10**9))
    time.sleep(0.02)
    assert tf.get().lookup("192.0.2.1").action == "OK"  # type: ignore[union-attr]


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(TableError, match="no such file"):
        TableFile(str(tmp_path / "absent"), ClientTable.parse)
