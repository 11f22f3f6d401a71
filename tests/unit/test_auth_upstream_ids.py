"""Issue 17, item 16: `[auth] trusted_upstream_authserv_ids` - the ids of milters placed before Quorum.

Their headers are kept; an id equal to Quorum's own is refused at load, because an inbound forged copy
of it cannot be told from the upstream milter's header (Quorum removes every header with its own id).
"""

from __future__ import annotations

from typing import Any

from quorum.auth.feature import parse
from quorum.auth.results import claims_our_id
from quorum.config.fields import Problems, Table


def load(data: dict[str, Any]) -> tuple[Any, Problems]:
    problems = Problems()
    return parse(Table(data, "", problems)), problems


def test_upstream_ids_are_parsed_and_kept() -> None:
    settings, problems = load(
        {"milter": {"authserv_id": "mx.example"}, "auth": {"trusted_upstream_authserv_ids": ["DKIM.mx.example"]}}
    )
    assert not problems.errors
    assert settings.auth.trusted_upstream_authserv_ids == ("dkim.mx.example",)
    assert not claims_our_id("mx.example")(b" dkim.mx.example; dkim=pass header.d=a.test")  # type: ignore[operator]


def test_our_own_id_is_refused_with_the_fix() -> None:
    for own, listed in (("mx.example", "MX.example."), ("quorum", "quorum")):
        data: dict[str, Any] = {"auth": {"trusted_upstream_authserv_ids": [listed]}}
        if own != "quorum":
            data["milter"] = {"authserv_id": own}
        _, problems = load(data)
        (error,) = problems.errors
        assert error.startswith("auth.trusted_upstream_authserv_ids[0]: ") and "AuthservID" in error


def test_a_disguised_id_is_refused() -> None:
    _, problems = load({"auth": {"trusted_upstream_authserv_ids": ["", "two words"]}})
    assert len(problems.errors) == 2


def test_sender_table_without_auth_is_warned(tmp_path: Any) -> None:
    (tmp_path / "sender").write_text("partner.test OK\n")
    _, problems = load({"access": {"sender": str(tmp_path / "sender")}})
    assert any(w.startswith("access.sender: ") for w in problems.warnings)
