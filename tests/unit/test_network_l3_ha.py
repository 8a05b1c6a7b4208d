"""HA routers' rules without a cloud: the keepalived configuration a router gets, and
the ha_state the API shows for agents that stopped reporting."""

from __future__ import annotations

from types import SimpleNamespace

from cumulo.network.dataplane.keepalived import config, ha_device, primary_vip
from cumulo.network.l3_ha import shown_states

ROUTER = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
HA_PORT = "9f8e7d6c-5b4a-4392-8170-fedcba987654"


def _router(**kw):
    return {
        "id": ROUTER,
        "ha": {"vr_id": 7, "port": {"port_id": HA_PORT}},
        "gateway": None,
        "routes": [],
        **kw,
    }


def test_every_host_starts_as_backup_and_the_primary_vip_names_the_active_one():
    text = config(_router(), {}, None)
    ha = ha_device(HA_PORT)
    assert ha == "ha-9f8e7d6c-5b"
    assert "state BACKUP" in text and "nopreempt" in text
    assert "virtual_router_id 7" in text and f"interface {ha}" in text
    assert f"{primary_vip(7)} dev {ha}" in text and primary_vip(7) == "169.254.0.7/24"
    # Nothing else to hold: no excluded addresses, no routes.
    assert "virtual_ipaddress_excluded" not in text and "virtual_routes" not in text


def test_the_routers_addresses_and_routes_are_keepalived_s_to_add_where_active():
    router = _router(
        gateway={"gateway_ip": "203.0.113.1"},
        routes=[
            {"destination": "10.99.0.0/16", "nexthop": "10.0.0.50"},
            {"destination": "fd00::/64", "nexthop": "fd01::1"},  # IPv6: not routed here
        ],
    )
    devices = {"qg-aaa": ["203.0.113.5/24", "203.0.113.9/32"], "qr-bbb": ["10.0.0.1/24"]}
    text = config(router, devices, "qg-aaa")
    excluded = text.split("virtual_ipaddress_excluded {")[1].split("}")[0].split()
    assert " ".join(excluded) == (
        "203.0.113.5/24 dev qg-aaa no_track 203.0.113.9/32 dev qg-aaa no_track "
        "10.0.0.1/24 dev qr-bbb no_track"
    )
    routes = text.split("virtual_routes {")[1].split("}")[0].strip().splitlines()
    assert [r.strip() for r in routes] == [
        "0.0.0.0/0 via 203.0.113.1 dev qg-aaa no_track",
        "10.99.0.0/16 via 10.0.0.50 no_track",
    ]


def _agent(agent_id: str):
    return SimpleNamespace(id=agent_id)


def test_a_silent_active_agent_is_shown_standby_or_unknown_when_all_are_silent():
    rows = [(_agent("a"), "active"), (_agent("b"), "standby")]
    assert shown_states(rows, {"a": True, "b": True}) == {"a": "active", "b": "standby"}
    assert shown_states(rows, {"a": False, "b": True}) == {"a": "standby", "b": "standby"}
    assert shown_states(rows, {"a": False, "b": False}) == {"a": "unknown", "b": "standby"}
