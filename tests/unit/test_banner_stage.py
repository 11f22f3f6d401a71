"""The banner stage (quorum.banner.stage): which mail gets which banner, and what it leaves alone."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import pytest

from quorum.assembly import build_pipeline, load_config
from quorum.banner.settings import BannerSettings, BannerText, DomainBanner
from quorum.banner.stage import BannerStage
from quorum.config import ConfigError
from quorum.message import Envelope, Message
from quorum.pipeline import amend
from quorum.pipeline.amend import FinalMessage
from quorum.pipeline.output import Edits
from quorum.pipeline.stages import Action
from quorum.pipeline.transaction import Connection, Transaction

RAW = b"From: a@example.com\r\nTo: b@example.org\r\nSubject: hi\r\nContent-Type: text/plain\r\n\r\nbody\r\n"


class Tenant:
    def __init__(self, banner: DomainBanner | None) -> None:
        self.extensions = {"banner": banner} if banner is not None else {}


def stage(**kw: Any) -> BannerStage:
    base: dict[str, Any] = {"external_warning": BannerText(text="EXTERNAL"), "footer": BannerText(text="FOOTER")}
    return BannerStage(BannerSettings(**{**base, **kw}))


def deliver(s: BannerStage, ip: str = "192.0.2.1", login: str = "", tenant: Any = None, sender_tenant: Any = None,
            truncated: bool = False) -> tuple[bytes, list[str]]:  # fmt: skip
    env = Envelope(ip, "c.example", "c.example", "a@example.com", ["b@example.org"])
    if login:
        env.macros["{auth_authen}"] = login
    txn = Transaction(Connection(ip), env, policy_of=lambda _addr: sender_tenant)  # type: ignore[arg-type,return-value]
    txn.tenant = tenant
    msg = Message.from_bytes(RAW, env)
    msg.truncated = truncated
    out, notes = amend.run([s], txn, msg, Edits(Action.ACCEPT))
    return b"".join(FinalMessage(msg, out).chunks()), notes


def test_inbound_mail_gets_the_warning_on_top_and_outbound_the_footer_below() -> None:
    inbound, notes = deliver(stage())
    assert inbound.endswith(b"\r\n\r\nEXTERNAL\r\n\r\nbody\r\n") and notes == ["banner: added external_warning"]
    outbound, _ = deliver(stage(), login="alice")
    assert outbound.endswith(b"body\r\n\r\nFOOTER\r\n")


def test_a_client_in_networks_is_outbound_without_authentication() -> None:
    out, _ = deliver(stage(networks=(ipaddress.ip_network("198.18.0.0/16"),)), ip="198.18.0.5")
    assert b"FOOTER" in out and b"EXTERNAL" not in out


def test_domain_banners_replace_the_global_ones_and_can_switch_them_off() -> None:
    own = DomainBanner(external_warning=BannerText(text="OWN WARNING"))
    out, _ = deliver(stage(), tenant=Tenant(own))
    assert b"OWN WARNING" in out and b"EXTERNAL" not in out
    out, notes = deliver(stage(), tenant=Tenant(DomainBanner(enabled=False)))
    assert out == RAW and notes == []
    footer = DomainBanner(footer=BannerText(text="SENDER FOOTER"))
    out, _ = deliver(stage(), login="alice", sender_tenant=Tenant(footer))
    assert b"SENDER FOOTER" in out


def test_a_message_not_stored_whole_is_left_as_it_is() -> None:
    out, notes = deliver(stage(), truncated=True)
    assert out == RAW and notes == ["banner: external_warning not added: message too large"]


def test_no_banner_configured_for_the_direction_changes_nothing() -> None:
    out, notes = deliver(BannerStage(BannerSettings(footer=BannerText(text="F"))))
    assert out == RAW and notes == []


def test_the_html_version_defaults_to_the_escaped_text() -> None:
    assert BannerText(text="<script>x</script> & co").html == "<p>&lt;script&gt;x&lt;/script&gt; &amp; co</p>"


def test_an_empty_banner_is_an_error_at_its_key(tmp_path: Path) -> None:
    path = tmp_path / "q.toml"
    path.write_text('[banner]\nfooter = { text = "" }\n')
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert "banner.footer.text" in str(err.value)


def test_a_domain_banner_is_validated_and_the_stage_runs_before_signing(tmp_path: Path) -> None:
    path = tmp_path / "q.toml"
    path.write_text('[banner]\n[domains."x.example".banner]\nfooter = { text = "F", colour = "red" }\n')
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert 'domains."x.example".banner.footer.colour' in str(err.value) or "colour" in str(err.value)
    path.write_text('[banner]\n[domains."x.example".banner]\nfooter = { text = "F" }\n')
    pipeline = build_pipeline(load_config(path))
    assert [s.name for s in pipeline.amenders] == ["banner"]
    pipeline.close()
