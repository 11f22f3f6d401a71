"""`[flow]` (quorum.flow.settings): limits per kind, per-domain and per-network overrides, errors."""

from __future__ import annotations

from typing import Any

import pytest

from quorum.assembly import parse_config
from quorum.config import ConfigError
from quorum.flow.settings import FlowSettings


def flow(**table: Any) -> FlowSettings:
    found = parse_config({"redis": {"url": "redis://127.0.0.1:6379/0"}, "flow": table}).feature("flow")
    assert isinstance(found, FlowSettings)
    return found


def test_limits_by_kind_with_domain_and_network_overrides() -> None:
    s = flow(
        concurrency={"auth_user": 5, "sender_domain": 20, "client_ip": 10, "recipient_domain": 50},
        domains={"Big.Example.": {"sender_domain": 200}, "tiny.example": {"recipient_domain": 2}},
        networks={"10.0.0.0/8": {"client_ip": 100}, "10.1.0.0/16": {"client_ip": 0}},
    )
    assert s.limit("auth_user", "x@y") == 5
    assert s.limit("sender_domain", "big.example") == 200 and s.limit("sender_domain", "other.example") == 20
    assert s.limit("recipient_domain", "tiny.example") == 2 and s.limit("recipient_domain", "big.example") == 50
    assert s.limit("client_ip", "10.2.3.4") == 100 and s.limit("client_ip", "10.1.2.3") == 0  # most specific wins
    assert s.limit("client_ip", "192.0.2.1") == 10


def test_flow_needs_redis_and_valid_values() -> None:
    with pytest.raises(ConfigError) as err:
        parse_config({"flow": {"concurrency": {"auth_user": 5}}})
    assert "flow: needs a [redis] table" in str(err.value)
    with pytest.raises(ConfigError) as err:
        parse_config({"redis": {}, "flow": {"concurrency": {"auth_usr": 5}, "networks": {"nonsense": {}}}})
    text = str(err.value)
    assert "flow.concurrency.auth_usr" in text and "auth_user" in text and "flow.networks" in text
    with pytest.raises(ConfigError):
        parse_config({"redis": {}, "flow": {"lease": "0s"}})


def test_disabled_flow_builds_nothing() -> None:
    assert parse_config({"flow": {"enabled": False}}).feature("flow") is None
