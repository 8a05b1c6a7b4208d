"""The desired state of one host, built from the database by the server side.

Plain JSON (it travels over the bus): networks with their subnets and DHCP leases,
the ports bound to the host with their security group rules expanded (remote
groups become the member ports' addresses), and routers with interfaces, gateway,
extra routes and floating IPs.

Distributed routers (Neutron's DVR, agent mode `dvr_snat` on openvswitch): the host
their L3 agent is bound to runs them whole (SNAT, floating IPs, extra routes: north-
south, as Neutron's `dvr_no_external` compute hosts leave it to the central one); every
other tunnelling, non-legacy host with a guest's port on one of their networks runs
their interfaces only (`central` false), with the same addresses and MACs, and routes
between their subnets itself (see ovs_dvr for the flows, and `dvr`: this host's DVR MAC
and the other hosts').

HA routers (Neutron's l3-ha): every host their L3 agent is bound to runs them whole
with `ha` set (the VRRP id, this host's HA port on the project's HA network); the
host's keepalived decides where the addresses are. The other hosts send to the
router's MACs where the router is active (L2 population; everywhere it runs while no
host has said it is active yet; the host that last said so holds the router's
ports, as Neutron's port bindings).
"""

from __future__ import annotations

import ipaddress
from collections import defaultdict
from typing import Any

from sqlalchemy import String, cast, select
from sqlalchemy.orm import Session

from cumulo.common.db import utcnow
from cumulo.network.agents import AGENT_DOWN_TIME, DHCP_AGENT, L3_AGENT, served
from cumulo.network.binding import HostAgent, Segment, binds, host_agents, vif_binding
from cumulo.network.core import NetworkService
from cumulo.network.dataplane.ovs_firewall import segment_vni
from cumulo.network.dvr import DVR_MODES
from cumulo.network.models import (
    Agent,
    DvrHostMac,
    FloatingIp,
    IpAllocation,
    Network,
    NetworkDhcpAgent,
    Port,
    PortSecurityGroup,
    Router,
    RouterL3Agent,
    SecurityGroupRule,
    Subnet,
)
from cumulo.network.ports import DHCP, ROUTER_GATEWAY, ROUTER_HA_INTERFACE, ROUTER_INTERFACES

# The port columns the state needs: not the JSON ones (binding profile, extra DHCP
# options; address pairs are read for this host's ports only), decoding them for every
# port of the cloud each second was a tenth of the server's CPU while ports poured in.
_PORT_COLUMNS = [
    Port.__table__.c[name]
    for name in (
        "id", "network_id", "mac_address", "admin_state_up", "port_security_enabled",
        "host", "device_owner", "device_id", "project_id", "status",
    )
]  # fmt: skip


def _load(s: Session, host: str) -> dict[str, Any]:
    def rows(model, *where) -> list[Any]:
        return s.execute(select(model.__table__).where(*where)).all()

    port = Port.__table__.c
    return {
        "networks": rows(Network),
        "subnets": rows(Subnet),
        "ports": s.execute(select(*_PORT_COLUMNS)).all(),
        "pairs": s.execute(
            select(port.id, port.allowed_address_pairs).where(port.host == host)
        ).all(),
        # Only ports that have extra DHCP options (few): the empty list is stored as "[]".
        "dhcp_opts": s.execute(
            select(port.id, port.extra_dhcp_opts).where(
                cast(port.extra_dhcp_opts, String).not_in(["[]", "null"])
            )
        ).all(),
        "ips": rows(IpAllocation),
        "bindings": rows(PortSecurityGroup),
        "rules": rows(SecurityGroupRule),
        "routers": rows(Router),
        "dvr_macs": s.execute(select(DvrHostMac.host, DvrHostMac.mac_address)).all(),
        "fips": rows(FloatingIp, FloatingIp.__table__.c.port_id.is_not(None)),
        # What the schedulers gave this host: DHCP for these networks, these routers.
        "dhcp_networks": set(s.scalars(served(DHCP_AGENT, host))),
        "l3_routers": set(s.scalars(served(L3_AGENT, host))),
        # VXLAN between hosts: where each agent's end is, and who serves what where.
        "tunnels": s.execute(
            select(Agent.host, Agent.configurations, Agent.heartbeat_timestamp).where(
                Agent.agent_type == DHCP_AGENT
            )
        ).all(),
        "dhcp_hosts": s.execute(
            select(NetworkDhcpAgent.network_id, Agent.host).join(
                Agent, Agent.id == NetworkDhcpAgent.agent_id
            )
        ).all(),
        "l3_hosts": s.execute(
            select(RouterL3Agent.router_id, Agent.host, RouterL3Agent.ha_state).join(
                Agent, Agent.id == RouterL3Agent.agent_id
            )
        ).all(),
    }


def _tunnels(loaded: dict[str, Any], host: str) -> dict[str, Any] | None:
    """What this host's VXLAN devices need (None when its agent does not tunnel): each
    tenant network's VNI, the underlay addresses of the other hosts that have something
    on it (head-end replication of broadcasts), where each remote port's MAC is (L2
    population: unicast frames go straight to the right host) and the remote ports'
    IPv4 addresses with their MACs (the openvswitch agent's ARP responder)."""
    now = utcnow()
    ends = {
        h: conf["tunneling_ip"]
        for h, conf, heartbeat in loaded["tunnels"]
        if (conf or {}).get("tunneling_ip") and now - heartbeat < AGENT_DOWN_TIME
    }
    if host not in ends:
        return None
    # A port whose binding failed on its host is not there (ML2 left it unbound): its
    # MAC is not advertised (Neutron's l2pop only sends bound ports' entries).
    agents = {
        h: HostAgent(conf or {}, alive=now - heartbeat < AGENT_DOWN_TIME)
        for h, conf, heartbeat in loaded["tunnels"]
    }
    segments = {n.id: Segment(n.network_type, n.physical_network) for n in loaded["networks"]}
    dhcp_hosts: dict[str, set[str]] = defaultdict(set)
    for network_id, h in loaded["dhcp_hosts"]:
        dhcp_hosts[network_id].add(h)
    l3_hosts: dict[str, set[str]] = defaultdict(set)
    active: dict[str, set[str]] = defaultdict(set)
    for router_id, h, ha_state in loaded["l3_hosts"]:
        l3_hosts[router_id].add(h)
        if ha_state == "active":
            active[router_id].add(h)
    ha_routers = {r.id for r in loaded["routers"] if r.ha}
    addresses: dict[str, list[str]] = defaultdict(list)
    for a in loaded["ips"]:
        if ":" not in a.ip_address:
            addresses[a.port_id].append(a.ip_address)
    peers: dict[str, set[str]] = defaultdict(set)
    macs: dict[str, set[tuple[str, str]]] = defaultdict(set)
    arp: dict[str, set[tuple[str, str]]] = defaultdict(set)
    for p in loaded["ports"]:
        if p.device_owner == DHCP:
            where = dhcp_hosts[p.network_id]
        elif p.device_owner in (*ROUTER_INTERFACES, ROUTER_GATEWAY):
            where = l3_hosts[p.device_id]
            if p.device_id in ha_routers:  # where it was last active, else where it runs
                where = {p.host} if p.host in where else active[p.device_id] or where
        elif p.host and binds(agents.get(p.host), segments[p.network_id]):
            # Its active binding's host only: an inactive one (a live migration's
            # destination) has nothing wired yet.
            where = {p.host}
        else:
            where = set()
        for h in where - {host}:
            if h in ends:
                peers[p.network_id].add(ends[h])
                macs[p.network_id].add((p.mac_address, ends[h]))
                arp[p.network_id].update((ip, p.mac_address) for ip in addresses[p.id])
    vnis = {
        n.id: segment_vni(n.id, n.network_type, n.segmentation_id)
        for n in loaded["networks"]
        if not n.external
    }
    return {
        "local_ip": ends[host],
        "vni": vnis,
        "peers": {n: sorted(peers[n]) for n in vnis if peers[n]},
        "macs": {n: sorted(map(list, macs[n])) for n in vnis if macs[n]},
        "arp": {n: sorted(map(list, arp[n])) for n in vnis if arp[n]},
    }


async def desired_state(service: NetworkService, host: str) -> dict[str, Any]:
    # Plain rows (not ORM objects) in one database call: this runs once a second per
    # host while ports change, and reads every port of the cloud.
    loaded = await service.db.run_read(_load, host)
    networks, ports, routers, fips = (
        loaded["networks"],
        loaded["ports"],
        loaded["routers"],
        loaded["fips"],
    )
    subnets = {x.id: x for x in loaded["subnets"]}
    ips: dict[str, list[Any]] = defaultdict(list)
    for a in loaded["ips"]:
        ips[a.port_id].append(a)
    groups: dict[str, list[str]] = defaultdict(list)
    for b in loaded["bindings"]:
        groups[b.port_id].append(b.security_group_id)
    rules: dict[str, list[Any]] = defaultdict(list)
    for r in loaded["rules"]:
        rules[r.security_group_id].append(r)
    pairs = dict(loaded["pairs"])
    # IPv4 options only: dnsmasq here serves DHCPv4.
    dhcp_opts = {
        port_id: [o for o in opts if o.get("ip_version", 4) == 4]
        for port_id, opts in loaded["dhcp_opts"]
    }
    # Members' addresses only of the groups that this host's rules name as remote.
    remote = {
        r.remote_group_id
        for port_id in pairs
        for sg in groups[port_id]
        for r in rules[sg]
        if r.remote_group_id
    }
    members: dict[str, list[str]] = defaultdict(list)
    for b in loaded["bindings"]:
        if b.security_group_id in remote:
            members[b.security_group_id] += [a.ip_address for a in ips[b.port_id]]

    prefixlen = {x.id: ipaddress.ip_network(x.cidr).prefixlen for x in subnets.values()}

    def addresses(port: Port) -> list[dict[str, Any]]:
        return [
            {"ip": a.ip_address, "prefixlen": prefixlen[a.subnet_id], "subnet_id": a.subnet_id}
            for a in ips[port.id]
        ]

    by_version: dict[tuple[str, int], list[str]] = {}

    def member_addresses(group_id: str, version: int) -> list[str]:
        # Once per group and version, not per port of the group (quadratic in its size).
        key = (group_id, version)
        if key not in by_version:
            by_version[key] = [
                ip for ip in members[group_id] if (6 if ":" in ip else 4) == version
            ]  # fmt: skip
        return by_version[key]

    def expand(rule: SecurityGroupRule) -> dict[str, Any]:
        if rule.remote_group_id:
            version = 4 if rule.ethertype == "IPv4" else 6
            prefixes = member_addresses(rule.remote_group_id, version)
        else:
            prefixes = [rule.remote_ip_prefix] if rule.remote_ip_prefix else None
        return {
            "direction": rule.direction,
            "ethertype": rule.ethertype,
            "protocol": rule.protocol,
            "port_range_min": rule.port_range_min,
            "port_range_max": rule.port_range_max,
            "remote_group_id": rule.remote_group_id,
            "remote_prefixes": prefixes,
        }

    by_network: dict[str, list[Port]] = defaultdict(list)
    for p in ports:
        by_network[p.network_id].append(p)
    # Subnets a router serves: a router interface holds the gateway IP (Neutron's test
    # for "not isolated", which decides where guests are sent for metadata).
    routed = {
        a.subnet_id
        for p in ports
        if p.device_owner in ROUTER_INTERFACES
        for a in ips[p.id]
        if a.ip_address == subnets[a.subnet_id].gateway_ip
    }
    state_networks = []
    for n in networks:
        dhcp = next((p for p in by_network[n.id] if p.device_owner == DHCP), None)
        if n.id not in loaded["dhcp_networks"]:
            dhcp = None  # not scheduled to this host's DHCP agent
        state_networks.append(
            {
                "id": n.id,
                "mtu": n.mtu,
                "external": n.external,
                "admin_state_up": n.admin_state_up,
                # flat/vlan networks reach a host interface where the physical network
                # is mapped (the others, and unmapped ones, stay on this host's bridges).
                "segment": {
                    "type": n.network_type,
                    "physical_network": n.physical_network,
                    "segmentation_id": n.segmentation_id,
                },
                "subnets": [
                    {
                        "id": x.id,
                        "cidr": x.cidr,
                        "ip_version": x.ip_version,
                        "gateway_ip": x.gateway_ip,
                        "enable_dhcp": x.enable_dhcp,
                        "dns_nameservers": x.dns_nameservers,
                        "host_routes": x.host_routes,
                        "routed": x.id in routed,
                    }
                    for x in subnets.values()
                    if x.network_id == n.id
                ],
                "dhcp": None
                if dhcp is None
                else {"port_id": dhcp.id, "mac": dhcp.mac_address, "addresses": addresses(dhcp)},
                # Device and project: the metadata proxy's map of who owns an address.
                "leases": [
                    {
                        "port_id": p.id,
                        "mac": p.mac_address,
                        "ip": a.ip_address,
                        "device_id": p.device_id,
                        "device_owner": p.device_owner,
                        "project_id": p.project_id,
                        "dhcp_opts": dhcp_opts.get(p.id, []),
                    }
                    for p in by_network[n.id]
                    if not p.device_owner.startswith("network:")
                    for a in ips[p.id]
                ],
            }
        )
    # Each network's ports' binding:vif_type on this host, as ML2 binds them (a port
    # whose binding failed is not wired by the agent).
    agents = await host_agents(service, [host])
    vif_types = {
        n.id: vif_binding(agents, n.id, Segment(n.network_type, n.physical_network), host)[0]
        for n in networks
    }
    state_ports = [
        {
            "id": p.id,
            "status": p.status,  # the agent reports up only those not ACTIVE yet
            "vif_type": vif_types[p.network_id],
            "network_id": p.network_id,
            "mac": p.mac_address,
            "admin_state_up": p.admin_state_up,
            "addresses": addresses(p),
            "port_security_enabled": p.port_security_enabled,
            "allowed_address_pairs": pairs[p.id],
            "rules": [expand(r) for sg in groups[p.id] for r in rules[sg]],
        }
        for p in ports
        if p.host == host and not p.device_owner.startswith("network:")
    ]
    state_routers = []
    port_by_id = {p.id: p for p in ports}
    tunnel = _tunnels(loaded, host)
    dvr = _dvr(loaded, host) if tunnel is not None else None
    legs_of: dict[str, list[Any]] = defaultdict(list)
    ha_ports: dict[str, Any] = {}
    for p in ports:
        if p.device_owner in ROUTER_INTERFACES:
            legs_of[p.device_id].append(p)
        elif p.device_owner == ROUTER_HA_INTERFACE and p.host == host:
            ha_ports[p.device_id] = p
    # Networks with a guest's port bound here: where distributed routers route locally.
    guests_here = {p.network_id for p in ports if p.host == host and _is_guest(p)}
    for r in routers:
        central = r.id in loaded["l3_routers"]
        legs = legs_of[r.id]
        local = dvr is not None and r.distributed and any(p.network_id in guests_here for p in legs)
        if not (central or local):
            continue  # not scheduled to this host's L3 agent, nor distributed here
        gw = port_by_id.get(r.gw_port_id or "")
        gateway = None
        if central and gw is not None and gw.device_owner == ROUTER_GATEWAY:
            gw_subnet = subnets[ips[gw.id][0].subnet_id] if ips[gw.id] else None
            gateway = {
                "port_id": gw.id,
                "network_id": gw.network_id,
                "mac": gw.mac_address,
                "addresses": addresses(gw),
                "gateway_ip": gw_subnet.gateway_ip if gw_subnet else None,
            }
        ha_port = ha_ports.get(r.id)
        ha = None
        if central and r.ha and ha_port is not None and r.ha_vr_id:
            ha = {
                "vr_id": r.ha_vr_id,
                "port": {
                    "port_id": ha_port.id,
                    "network_id": ha_port.network_id,
                    "mac": ha_port.mac_address,
                    "addresses": addresses(ha_port),
                },
            }
        state_routers.append(
            {
                "id": r.id,
                "admin_state_up": r.admin_state_up,
                "distributed": r.distributed,
                "ha": ha,
                "central": central,
                "enable_snat": r.enable_snat,
                "routes": r.routes if central else [],
                "gateway": gateway,
                "interfaces": [
                    {
                        "port_id": p.id,
                        "network_id": p.network_id,
                        "mac": p.mac_address,
                        "addresses": addresses(p),
                    }
                    for p in legs
                ],
                "floating_ips": [
                    {"floating_ip": f.floating_ip_address, "fixed_ip": f.fixed_ip_address}
                    for f in fips
                    if central and f.router_id == r.id
                ],
            }
        )
    return {
        "host": host,
        "networks": state_networks,
        "ports": state_ports,
        "routers": state_routers,
        "tunnel": tunnel,
        "dvr": dvr,
    }


def _is_guest(port: Any) -> bool:
    """A port a guest holds (Neutron's DVR-serviceable compute ports), not the cloud's own."""
    return not port.device_owner.startswith("network:")


def _dvr(loaded: dict[str, Any], host: str) -> dict[str, Any] | None:
    """This host's DVR MAC and those of the other tunnelling hosts (None when this
    host's agent does not route distributed routers: a legacy agent, or no MAC yet)."""
    confs = {h: conf or {} for h, conf, _ in loaded["tunnels"]}
    macs = dict(loaded["dvr_macs"])
    if confs.get(host, {}).get("agent_mode") not in DVR_MODES or host not in macs:
        return None
    peers = sorted(m for h, m in macs.items() if h != host and confs.get(h, {}).get("tunneling_ip"))
    return {"mac": macs[host], "peers": peers}
