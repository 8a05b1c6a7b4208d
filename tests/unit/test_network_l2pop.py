"""L2 population (the VXLAN part of a host's desired state), without a cloud: a port is
advertised to the other hosts only where its active binding is, and only when that
binding did not fail there; an HA router's ports where it was last active."""

from __future__ import annotations

from types import SimpleNamespace

from cumulo.common.db import utcnow
from cumulo.network.dataplane.state import _tunnels

HERE, THERE, YONDER = "host-a", "host-b", "host-c"
LB_MAPPING_PHYSNET2 = {"driver": "linuxbridge", "interface_mappings": {"physnet2": "eth2"}}


def _agent(host: str, ip: str) -> tuple[str, dict, object]:
    return (host, {**LB_MAPPING_PHYSNET2, "tunneling_ip": ip}, utcnow())


def _network(net_id: str, network_type: str, physnet: str | None) -> SimpleNamespace:
    return SimpleNamespace(
        id=net_id,
        network_type=network_type,
        physical_network=physnet,
        segmentation_id=None,
        external=False,
    )


def _port(port_id: str, net_id: str, mac: str, host: str) -> SimpleNamespace:
    return SimpleNamespace(
        id=port_id, network_id=net_id, mac_address=mac, host=host, device_owner="compute:nova",
        device_id="vm",
    )  # fmt: skip


def _loaded(ports: list[SimpleNamespace], **more) -> dict:
    return {
        "tunnels": [_agent(HERE, "192.0.2.1"), _agent(THERE, "192.0.2.2"),
                    _agent(YONDER, "192.0.2.3")],
        "networks": [_network("vx", "vxlan", None), _network("flat1", "flat", "physnet1")],
        "ports": ports,
        "ips": [SimpleNamespace(port_id=p.id, ip_address=f"10.0.0.{i}") for i, p in
                enumerate(ports, 2)],
        "dhcp_hosts": [],
        "l3_hosts": [],
        "routers": [],
        **more,
    }  # fmt: skip


def test_a_port_bound_on_another_host_is_advertised_there():
    tunnel = _tunnels(_loaded([_port("p1", "vx", "fa:16:3e:00:00:01", THERE)]), HERE)
    assert tunnel is not None
    assert tunnel["macs"]["vx"] == [["fa:16:3e:00:00:01", "192.0.2.2"]]
    assert tunnel["peers"]["vx"] == ["192.0.2.2"]
    assert tunnel["arp"]["vx"] == [["10.0.0.2", "fa:16:3e:00:00:01"]]


def test_a_port_whose_binding_failed_on_its_host_is_not_advertised():
    # host-b's agent does not map physnet1: the flat network's port is not bound there.
    failed = _port("p2", "flat1", "fa:16:3e:00:00:02", THERE)
    tunnel = _tunnels(_loaded([failed]), HERE)
    assert tunnel is not None
    assert "flat1" not in tunnel["macs"] and "flat1" not in tunnel["peers"]
    assert "flat1" not in tunnel["arp"]
    # The tenant network's port on the same host still is.
    both = _tunnels(_loaded([failed, _port("p1", "vx", "fa:16:3e:00:00:01", THERE)]), HERE)
    assert both is not None and set(both["macs"]) == {"vx"}


def test_a_port_whose_host_agent_died_is_not_advertised_and_unbound_ports_never_are():
    loaded = _loaded(
        [_port("p1", "vx", "fa:16:3e:00:00:01", THERE), _port("p3", "vx", "fa:16:3e:00:00:03", "")]
    )
    tunnel = _tunnels(loaded, HERE)
    assert tunnel is not None and tunnel["macs"]["vx"] == [["fa:16:3e:00:00:01", "192.0.2.2"]]
    host, conf, _ = loaded["tunnels"][1]
    loaded["tunnels"][1] = (host, conf, utcnow().replace(year=2000))
    tunnel = _tunnels(loaded, HERE)
    assert tunnel is not None and tunnel["macs"] == {}


def test_an_ha_routers_interface_is_advertised_where_the_router_was_last_active():
    leg = SimpleNamespace(
        id="leg", network_id="vx", mac_address="fa:16:3e:00:00:0a", host="",
        device_owner="network:ha_router_replicated_interface", device_id="r1",
    )  # fmt: skip
    routers = [SimpleNamespace(id="r1", ha=True)]
    hosting = [("r1", THERE, "standby"), ("r1", YONDER, "standby")]

    def macs(**more) -> list:
        tunnel = _tunnels(_loaded([leg], routers=routers, **more), HERE)
        assert tunnel is not None
        return tunnel["macs"]["vx"]

    # No host said it is active yet: every host it runs on.
    assert macs(l3_hosts=hosting) == [
        ["fa:16:3e:00:00:0a", "192.0.2.2"], ["fa:16:3e:00:00:0a", "192.0.2.3"]
    ]  # fmt: skip
    # One did: there only.
    assert macs(l3_hosts=[("r1", THERE, "standby"), ("r1", YONDER, "active")]) == [
        ["fa:16:3e:00:00:0a", "192.0.2.3"]
    ]
    # Two say so (one died while active): where the router's ports were bound last.
    leg.host = THERE
    assert macs(l3_hosts=[("r1", THERE, "active"), ("r1", YONDER, "active")]) == [
        ["fa:16:3e:00:00:0a", "192.0.2.2"]
    ]
