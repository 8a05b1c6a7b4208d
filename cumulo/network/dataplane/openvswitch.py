"""The `openvswitch` driver: Open vSwitch as Neutron's ML2/OVS agent lays it out.

The namespaces are linuxbridge's (this driver is its subclass: DHCP, routers, the
metadata proxy, resync and cleanup are the same code); what differs is the switch:

- The deployment's own ovsdb-server and ovs-vswitchd (see ovsdb.OvsDaemons), run dir
  `<state dir>/network/ovs`, ovs-vswitchd inside `cmlo-<scope>-host`: parallel clouds
  never share a switch. The kernel datapath where the host has the module, else the
  userspace one (`datapath_type=netdev`, with userspace TSO so the veths' partial
  checksums are completed; it cannot tunnel such frames, so there the DHCP and router
  legs checksum in their namespace and QEMU guests in the guest); the agent reports
  which (`network agent show`).
- `br-int`: every port of every network, each tagged with its network's local VLAN
  (kept in `local_vlans.json` so a restarted agent keeps them): the guests' taps
  (`tap<port id>`, plugged by the compute side with `external_ids:iface-id`, as
  os-vif does), the DHCP legs and the routers' `qr-`/`qg-` legs (veth host ends).
  Its flows are the conntrack firewall of ovs_firewall.py.
- `br-ex`: the external network, joined to br-int by the patch ports `int-br-ex` /
  `phy-br-ex`; its VLAN is stripped on the way out. Add a host interface to br-ex to
  reach the outside (as `ovs-vsctl add-port br-ex eth1` in Neutron's guides). With
  `host_leg`, a veth from the host's own namespace joins br-ex with the external
  subnet's gateway address (linuxbridge's host leg, on br-ex as DevStack's).
- Provider networks (`physical_interface_mappings`, Neutron's `bridge_mappings`): each
  mapped physical network has a bridge `br-<physnet>` (physical_bridge), patched to
  br-int (`int-br-<physnet>` / `phy-br-<physnet>`); the host interface joins it when
  a flat or VLAN network of that physical network is wired here. A VLAN network's local
  VLAN becomes its provider VLAN on the way out and back on the way in (OVS does the
  802.1Q itself: no kernel module needed), a flat network's is stripped and pushed.
  A mapping removed (or changed), its interface leaves the bridge for the agent's
  own namespace again.
- `br-tun` (with `ovs_tunnel_local_ip`): a VXLAN port per peer host, and Neutron's
  L2 population (learnt from the ports' bindings and the agents' reports): each remote
  port's MAC pinned to the tunnel to its host, its IPv4 address answered by br-tun's
  ARP responder, each tenant network flooded only to the hosts that have something on
  it (`ovs_tunnel_peers` overrides the flood lists); its VNI its
  `provider:segmentation_id` when it has one. The tunnels' host interface is moved
  onto `br-phy`, which holds the local address.
- Distributed routers (agent mode `dvr_snat`): routed between their subnets on every
  host with a guest on them, each host's DVR MAC on what its routers send into the
  tunnels, north-south on the router's own host (ovs_dvr).

`ovs-vsctl --db=unix:<run dir>/db.sock show` and `OVS_RUNDIR=<run dir> ovs-ofctl
dump-flows br-int` tell an operator what is wired.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any

from cumulo.network.dataplane import commands as cmd
from cumulo.network.dataplane.linuxbridge import PREFIX, LinuxBridgeDriver, tap_name
from cumulo.network.dataplane.ovs_dvr import gateway_legs, integration_dvr_flows, tunnel_dvr_flows
from cumulo.network.dataplane.ovs_firewall import (
    COOKIE,
    DROP_ALL,
    external_flows,
    integration_flows,
    physical_flows,
    provider_ingress_flows,
    segment_vni,
    tunnel_flows,
    tunnel_ingress_flows,
)
from cumulo.network.dataplane.ovsdb import OvsDaemons, Ovsdb, datapath_type

LOG = logging.getLogger(__name__)

TOOLS = ("ovsdb-server", "ovsdb-tool", "ovs-vswitchd", "ovs-ofctl", "ethtool")
INTEGRATION = "br-int"
EXTERNAL = "br-ex"
INT_TO_EX, EX_TO_INT = "int-br-ex", "phy-br-ex"
TUNNEL, UNDERLAY = "br-tun", "br-phy"
INT_TO_TUN, TUN_TO_INT = "patch-tun", "patch-int"
PROTOCOLS = ["OpenFlow10", "OpenFlow13"]
WATCH_INTERVAL = 0.5
LEG_OFPORT_WAIT = 60  # seconds an apply waits for its new legs to get OpenFlow ports
PROVIDER_TYPES = ("flat", "vlan")  # carried by a physical network, never tunnelled


def tools_available() -> bool:
    return all(shutil.which(tool) for tool in TOOLS)


class OpenvSwitchDriver(LinuxBridgeDriver):
    name = "openvswitch"
    vif_type = "ovs"
    agent_mode = "dvr_snat"  # hosts distributed routers; see the DVR flows below

    def __init__(self, state_dir: Path, scope: str | None = None, metadata_proxy: Any = None):
        super().__init__(state_dir, scope, metadata_proxy)
        self.run_dir = state_dir / "network" / "ovs"
        self.daemons = OvsDaemons(self.run_dir, self.host_ns)
        self.datapath = datapath_type()
        self.db: Ovsdb | None = None
        self.vlans: dict[str, int] = {}
        self._wired: object = None  # what br-int's ports were when the flows were made
        self._flows: dict[str, set[str]] = {}  # bridge -> flows last written there
        # VXLAN to other hosts: {"local_ip": "<address>/<prefix>", "device": <the host
        # interface carrying the tunnels, moved onto br-phy>, "peers": [addresses]: when
        # given, these rather than the peers learnt from the agents' reports}.
        self.tunnel: dict[str, Any] | None = None
        self._tunnel_peers: set[str] | None = None  # the VXLAN ports br-tun has

    def physical_bridges(self) -> dict[str, str]:
        """Physical network -> its bridge (Neutron's bridge_mappings)."""
        return {physnet: physical_bridge(physnet) for physnet in sorted(self.physical)}

    def configurations(self) -> dict[str, Any]:
        # Neutron's OVS vif_details, and where this deployment's switch is: the compute
        # side adds the tap to `bridge_name` through `ovsdb` (in `netns`).
        details = {
            "port_filter": True,
            "bridge_name": INTEGRATION,
            "datapath_type": self.datapath,
            "ovs_hybrid_plug": False,
            "netns": self.host_ns,
            "ovsdb": self.daemons.remote,
        }
        return {
            "driver": self.name,
            "agent_mode": self.agent_mode,
            "datapath_type": self.datapath,
            "integration_bridge": INTEGRATION,
            "bridge_mappings": {"public": EXTERNAL, **self.physical_bridges()},
            "ovs_hybrid_plug": False,
            "firewall_driver": "openvswitch",
            "tunnel_types": ["vxlan"] if self.tunnel else [],
            # Neutron's OVS agent option: it routes distributed routers (see ovs_dvr).
            "enable_distributed_routing": True,
            # Where the other agents reach this one (they learn their peers from it).
            **({"tunneling_ip": self.tunnel["local_ip"].split("/")[0]} if self.tunnel else {}),
            "vif": {"type": self.vif_type, "details": details},
        }

    # -- the switch --------------------------------------------------------------------

    async def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        assert self.db is not None
        return await asyncio.to_thread(getattr(self.db, method), *args, **kwargs)

    async def _switch(self) -> None:
        """The daemons running, the bridges and patch ports there (idempotent)."""
        first = not self.daemons.db_file.exists()
        self._flows.clear()  # the switch may have restarted: reconcile with what it has
        self._tunnel_peers = None
        await self.daemons.ensure()
        if self.db is None:
            self.db = await asyncio.to_thread(Ovsdb, self.daemons.remote)
        if first and self.datapath == "netdev":
            # veth and tap frames carry partial checksums: the userspace datapath
            # completes them only with its TSO support on (read at start: restart).
            await self._call("set_other_config", {"userspace-tso-enable": "true"})
            await self.daemons.restart_switch()
        for bridge in (INTEGRATION, EXTERNAL):
            await self._call("ensure_bridge", bridge, self.datapath, PROTOCOLS)
        await self._call("ensure_port", INTEGRATION, INT_TO_EX, type="patch",
                         options={"peer": EX_TO_INT})  # fmt: skip
        await self._call("ensure_port", EXTERNAL, EX_TO_INT, type="patch",
                         options={"peer": INT_TO_EX})  # fmt: skip
        if self.tunnel is not None:
            await self._tunnel_bridges()
        for physnet, bridge in self.physical_bridges().items():
            await self._call("ensure_bridge", bridge, self.datapath, PROTOCOLS)
            await self._give_back(bridge, keep={self.physical[physnet]})  # a mapping changed
            await self._call("ensure_port", INTEGRATION, f"int-{bridge}", type="patch",
                             options={"peer": f"phy-{bridge}"})  # fmt: skip
            await self._call("ensure_port", bridge, f"phy-{bridge}", type="patch",
                             options={"peer": f"int-{bridge}"})  # fmt: skip
        stale = [b for b in await self._call("bridge_names")
                 if b.startswith("br-") and b not in self._bridges()]  # fmt: skip
        for bridge in stale:  # a mapping (or the tunnels) no longer configured
            await self._give_back(bridge, keep=set())
            await self._call("delete_bridge", bridge)
            patch = INT_TO_TUN if bridge == TUNNEL else f"int-{bridge}"
            await self._call("delete_ports", INTEGRATION, [patch])
        for bridge in self._bridges():
            await self._wait_bridge(bridge)
            await cmd.ip(self.host_ns, "link", "set", bridge, "up", check=False)
        self._load_vlans()

    def _bridges(self) -> tuple[str, ...]:
        tunnels = (TUNNEL, UNDERLAY) if self.tunnel is not None else ()
        return (INTEGRATION, EXTERNAL, *tunnels, *self.physical_bridges().values())

    async def _wait_bridge(self, bridge: str) -> None:
        """Until ovs-vswitchd has made the bridge (its OpenFlow socket, its port)."""
        for _ in range(100):
            if (self.run_dir / f"{bridge}.mgmt").exists():
                if bridge in await cmd.links(self.host_ns):
                    return
            await asyncio.sleep(0.05)

    async def _tunnel_bridges(self) -> None:
        """br-tun (patched to br-int; its VXLAN ports: _tunnel_ports) and br-phy: the
        userspace datapath sends tunnels from an address on a bridge's own port, so
        the host interface joins br-phy and the local address moves onto br-phy."""
        assert self.tunnel is not None
        for bridge in (TUNNEL, UNDERLAY):
            await self._call("ensure_bridge", bridge, self.datapath, PROTOCOLS)
        await self._call("ensure_port", INTEGRATION, INT_TO_TUN, type="patch",
                         options={"peer": TUN_TO_INT})  # fmt: skip
        await self._call("ensure_port", TUNNEL, TUN_TO_INT, type="patch",
                         options={"peer": INT_TO_TUN})  # fmt: skip
        await self._give_back(UNDERLAY, keep={self.tunnel["device"]})
        if await self._host_interface(self.tunnel["device"]):
            await self._call("ensure_port", UNDERLAY, self.tunnel["device"])
        await self._wait_bridge(UNDERLAY)
        await cmd.ip(self.host_ns, "link", "set", UNDERLAY, "up")
        have = await cmd.addresses(self.host_ns, UNDERLAY)
        if self.tunnel["local_ip"] not in have:
            await cmd.ip(self.host_ns, "addr", "add", self.tunnel["local_ip"], "dev", UNDERLAY)

    async def _tunnel_ports(self, peers: set[str]) -> dict[str, dict[str, Any]]:
        """A VXLAN port on br-tun to each peer host, and none to any other: br-tun's
        ports, once ovs-vswitchd has given the new ones their OpenFlow port (their
        flows are written in this apply: nothing on br-tun would ask for another)."""
        assert self.tunnel is not None
        if peers != self._tunnel_peers:
            local = self.tunnel["local_ip"].split("/")[0]
            wanted = {
                vxlan_port(peer): {"type": "vxlan", "options": {
                    "remote_ip": peer, "local_ip": local, "key": "flow"}}
                for peer in sorted(peers)
            }  # fmt: skip
            have = await self._call("ports", TUNNEL)
            gone = [n for n in have if n.startswith("vxlan-") and n not in wanted]
            await self._call("delete_ports", TUNNEL, gone)
            await self._call("ensure_ports", TUNNEL, wanted)
            self._tunnel_peers = set(peers)
        for _ in range(100):
            ports = await self._call("ports", TUNNEL)
            if all(p["ofport"] > 0 or p["error"] for p in ports.values()):
                break
            await asyncio.sleep(0.05)
        return ports

    def _remote_ports(
        self, state: dict[str, Any], networks: set[str], tunnels: dict[str, int]
    ) -> tuple[dict[str, dict[str, int]], dict[str, dict[str, str]]]:
        """L2 population, from the desired state (the ports' bindings and the agents'
        reported tunnel addresses): each tunnelled network -> {MAC of a port bound to
        another host: the OpenFlow port of the tunnel to that host}, and -> {IPv4
        address of such a port: its MAC} (the ARP responder's answers)."""
        tunnel = state.get("tunnel") or {}
        pinned: dict[str, dict[str, int]] = {}
        for net_id, entries in (tunnel.get("macs") or {}).items():
            for mac, peer in entries if net_id in networks else []:
                ofport = tunnels.get(vxlan_port(peer))
                if ofport is not None:
                    pinned.setdefault(net_id, {})[mac.lower()] = ofport
        arp: dict[str, dict[str, str]] = {}
        for net_id, entries in (tunnel.get("arp") or {}).items():
            for ip, mac in entries:
                if mac.lower() in pinned.get(net_id, {}):
                    arp.setdefault(net_id, {})[ip] = mac.lower()
        return pinned, arp

    def _flood_lists(self, state: dict[str, Any]) -> dict[str, list[str]]:
        """Each tunnelled network -> the peers its broadcasts go to: the configured
        peers, else those the desired state learnt from the agents' reports (the hosts
        with something on the network)."""
        learnt = (state.get("tunnel") or {}).get("peers") or {}
        configured = list(self.tunnel["peers"]) if self.tunnel else []
        return {
            n["id"]: configured or list(learnt.get(n["id"], []))
            for n in state["networks"]
            if not n.get("external") and n["id"] in self.vlans
            and (n.get("segment") or {}).get("type") not in PROVIDER_TYPES
        }  # fmt: skip

    async def _host_namespace(self) -> None:
        await cmd.add_namespace(self.host_ns)
        await self._switch()
        self.applied["host"] = "ready"

    async def _wire(self, state: dict[str, Any], generation: int) -> None:
        if self.db is None or not self.daemons.running():
            if self.host_ns in await cmd.namespaces():
                self.applied.clear()  # a switch restarted from its database: check all
                await self._switch()
        await super()._wire(state, generation)

    async def _services(self, state: dict[str, Any]) -> tuple[set[str], set[str]]:
        found = await super()._services(state)
        await self._legs_opened()
        return found

    async def _finish(self, state: dict[str, Any], wanted: set[str], keep: set[str]) -> None:
        await super()._finish(state, wanted, keep)
        # The guests' flows were written before this apply made its DHCP and router legs
        # (ports are wired first): the legs' flows now, in this apply, not when the watch
        # next looks (a router interface would not route until). With the newest wired
        # state's ports: an older state's would undo a newer wiring's flows.
        await self._firewall(self._newest_wired[2], {self.host_ns})

    # -- local VLANs ---------------------------------------------------------------------

    @property
    def _vlans_file(self) -> Path:
        return self.run_dir / "local_vlans.json"

    def _load_vlans(self) -> None:
        try:
            self.vlans = json.loads(self._vlans_file.read_text())
        except (OSError, ValueError):
            self.vlans = {}

    def _vlan(self, network_id: str) -> int:
        if network_id not in self.vlans:
            used = set(self.vlans.values())
            self.vlans[network_id] = next(v for v in range(1, 4095) if v not in used)
            self._vlans_file.write_text(json.dumps(self.vlans))
        return self.vlans[network_id]

    # -- what linuxbridge does with Linux bridges ----------------------------------------

    async def _bridge(self, net: dict[str, Any]) -> None:
        self._vlan(net["id"])  # a network is its local VLAN on br-int

    async def _leg_made(self, ns: str, inner: str) -> None:
        if self.datapath == "netdev":
            # The userspace datapath drops frames whose checksum was left to the device
            # when it tunnels them (VXLAN): the namespace's kernel completes them.
            await cmd.run(*cmd.netns_exec(ns, "ethtool", "-K", inner, "tx", "off"))

    async def _attach(self, outer: str, network_id: str, mac: str, mtu: int) -> None:
        await cmd.ip(self.host_ns, "link", "set", outer, "mtu", str(mtu), "up")
        ids = {"attached-mac": mac, "cumulo-network": network_id}
        await self._plug(outer, self._vlan(network_id), ids)

    async def _attach_host_leg(self, inner: str, net: dict[str, Any]) -> None:
        """The host leg on br-ex, untagged (as DevStack's br-ex address)."""
        await cmd.ip(self.host_ns, "link", "set", inner, "mtu", str(net["mtu"]), "up")
        await self._plug(inner, None, {"cumulo-network": net["id"]}, EXTERNAL)

    async def _physical(
        self, network_id: str, device: str, segment: dict[str, Any], mtu: int
    ) -> None:
        """The physical network's host interface on its bridge (moved in from the host's
        namespace the first time); the VLANs are the flows' (see _firewall)."""
        if await self._host_interface(device):
            await self._call("ensure_port", physical_bridge(segment["physical_network"]), device)

    async def _host_interface(self, device: str) -> bool:
        """A host interface in the data plane's namespace, up (moved in from the agent's
        own namespace the first time); False, said in the log, when there is none."""
        if device not in await cmd.links(self.host_ns):
            try:
                await cmd.ip(None, "link", "set", device, "netns", self.host_ns)
            except cmd.CommandError as exc:
                LOG.error("network: the host interface %s is not wired: %s", device,
                          exc.stderr.strip())  # fmt: skip
                return False
        await cmd.ip(self.host_ns, "link", "set", device, "up")
        return True

    async def _give_back(self, bridge: str, keep: set[str]) -> None:
        """The host interfaces on `bridge` other than `keep` (a mapping or the tunnels'
        device removed or changed) leave it and go back to the agent's own namespace,
        where the operator had them (down, without the data plane's addresses)."""
        ports = await self._call("ports", bridge)
        present = await cmd.links(self.host_ns)
        # A plain interface (not the bridge's own port, a patch or a tunnel); the legs
        # of DHCP and routers are on br-int and br-ex only, never given back.
        given = [
            name for name, port in ports.items()
            if port["type"] in ("", "system") and name != bridge and name in present
        ]  # fmt: skip
        await self._call("delete_ports", bridge, given)
        for device in given:
            LOG.info("network: %s leaves %s for the host's namespace", device, bridge)
            await cmd.ip(self.host_ns, "link", "set", device, "down")
            try:
                await cmd.ip(self.host_ns, "link", "set", device, "netns", str(os.getpid()))
            except cmd.CommandError as exc:  # its name taken there meanwhile: it stays
                LOG.error("network: %s stays in %s: %s", device, self.host_ns,
                          exc.stderr.strip())  # fmt: skip

    async def _plug(
        self, device: str, tag: int | None, ids: dict[str, str], bridge: str = INTEGRATION
    ) -> None:
        """One device on a bridge with its tag (see _plug_all)."""
        present = await cmd.links(self.host_ns)
        on_bridge = await self._call("ports", bridge)
        await self._plug_all({device: (tag, ids)}, present, on_bridge, bridge)

    async def _plug_all(
        self,
        wanted: dict[str, tuple[int | None, dict[str, str]]],
        present: dict[str, Any],
        on_bridge: dict[str, Any],
        bridge: str = INTEGRATION,
    ) -> None:
        """Devices on a bridge with their tags, in one transaction (ports already as
        wanted cost nothing). A device made again under the same name (a leg whose namespace
        was lost, a guest's new tap) is a new port: ovs-vswitchd would keep reading the
        old one, so its row is replaced (the ifindex tells)."""
        replace: list[str] = []
        specs: dict[str, dict[str, Any]] = {}
        for device, (tag, ids) in wanted.items():
            ids = {**ids, "cumulo-ifindex": str(present[device]["ifindex"])}
            known = on_bridge.get(device)
            if known is not None:
                if known["tag"] == tag and known["external_ids"] == ids:
                    continue
                if (
                    known["external_ids"].get("cumulo-ifindex", ids["cumulo-ifindex"])
                    != ids["cumulo-ifindex"]
                ):
                    replace.append(device)
            specs[device] = {"tag": tag, "external_ids": ids}
        await self._call("delete_ports", bridge, replace)
        await self._call("ensure_ports", bridge, specs)

    async def _taps(self, ports: list[dict[str, Any]]) -> None:
        """Guests' taps on br-int with their network's tag; taps whose device is gone, or
        whose Neutron port is, leave br-int (a deleted port's guest is cut off at once)."""
        on_bridge = await self._call("ports", INTEGRATION)  # before the devices: see below
        present = await cmd.links(self.host_ns)
        wanted = {tap_name(p["id"]): p for p in ports}
        gone = [name for name in on_bridge if name.startswith("tap")
                and (name not in present or name not in wanted)]  # fmt: skip
        await self._call("delete_ports", INTEGRATION, gone)
        plugs = {
            name: (self._vlan(port["network_id"]),
                   {"iface-id": port["id"], "attached-mac": port["mac"], "iface-status": "active"})
            for name, port in wanted.items() if name in present
        }  # fmt: skip
        await self._plug_all(plugs, present, on_bridge)

    async def _firewall(self, state: dict[str, Any], existing: set[str]) -> None:
        """The bridges' flows, each replaced as a whole (only differences change)."""
        ofports, local, patch = await self._ofports(state)
        external = next((n["id"] for n in sorted(state["networks"], key=lambda n: n["id"])
                         if n.get("external")), None)  # fmt: skip
        ext_vlan = self.vlans.get(external) if external else None
        flows = integration_flows(
            state["ports"], ofports, local, self.vlans,
            (patch, ext_vlan) if patch is not None and ext_vlan is not None else None,
        )  # fmt: skip
        ex_patch = (await self._call("ports", EXTERNAL)).get(EX_TO_INT, {}).get("ofport")
        bridges = {EXTERNAL: external_flows(ex_patch if (ex_patch or -1) > 0 else None, ext_vlan)}
        on_int = await self._call("ports", INTEGRATION)
        provider = self._provider_segments(state)
        for physnet, bridge in self.physical_bridges().items():
            segments = provider.get(physnet, {})
            int_patch = on_int.get(f"int-{bridge}", {}).get("ofport", -1)
            flows += "".join(f"{f}\n" for f in provider_ingress_flows(int_patch, segments))
            phy_patch = (await self._call("ports", bridge)).get(f"phy-{bridge}", {})
            # Until the patch has its OpenFlow port nothing passes: NORMAL alone would
            # put every network's frames on the wire with their local VLANs.
            bridges[bridge] = (physical_flows(phy_patch["ofport"], segments)
                               if phy_patch.get("ofport", -1) > 0 else DROP_ALL)  # fmt: skip
        if self.tunnel is not None:
            flood = self._flood_lists(state)
            tun_ports = await self._tunnel_ports({p for peers in flood.values() for p in peers})
            tunnels = {name: p["ofport"] for name, p in tun_ports.items()
                       if name.startswith("vxlan-") and p["ofport"] > 0}  # fmt: skip
            nets = {n["id"]: n for n in state["networks"]}
            networks = {
                net_id: (self.vlans[net_id], network_vni(nets[net_id]),
                         [tunnels[vxlan_port(a)] for a in peers if vxlan_port(a) in tunnels])
                for net_id, peers in flood.items()
            }  # fmt: skip
            pinned, arp = self._remote_ports(state, set(flood), tunnels)
            patch_int = tun_ports.get(TUN_TO_INT, {}).get("ofport", -1)
            patch_tun = on_int.get(INT_TO_TUN, {}).get("ofport", -1)
            vlans = {net_id: vlan for net_id, (vlan, _, _) in networks.items()}
            flows += "".join(f"{f}\n" for f in tunnel_ingress_flows(patch_tun, vlans))
            bridges[TUNNEL] = tunnel_flows(patch_int, list(tunnels.values()), networks, pinned, arp)
            dvr = state.get("dvr")
            if dvr:  # distributed routers routed here (ovs_dvr)
                legs = gateway_legs(state["routers"], vlans)
                flows += "".join(
                    f"{f}\n" for f in integration_dvr_flows(patch_tun, legs, dvr["peers"])
                )
                bridges[TUNNEL] += "".join(
                    f"{f}\n" for f in tunnel_dvr_flows(patch_int, legs, dvr["mac"])
                )
            bridges[UNDERLAY] = f"cookie={COOKIE},table=0,priority=0,actions=NORMAL\n"
        work = self._replace_flows({INTEGRATION: flows, **bridges})
        pids = self.daemons.pids()
        await self._step("ruleset", (flows, bridges, pids), work, existing, self.host_ns)

    def _provider_segments(self, state: dict[str, Any]) -> dict[str, dict[int, int | None]]:
        """Mapped physical network -> {local VLAN: provider VLAN id (None: flat)} of its
        networks here (those of an unmapped physical network stay on br-int)."""
        found: dict[str, dict[int, int | None]] = {}
        for net in state["networks"]:
            segment = net.get("segment") or {}
            physnet = segment.get("physical_network")
            if segment.get("type") in PROVIDER_TYPES and physnet in self.physical:
                vid = segment["segmentation_id"] if segment["type"] == "vlan" else None
                found.setdefault(physnet, {})[self._vlan(net["id"])] = vid
        return found

    async def _replace_flows(self, flows: dict[str, str]) -> None:
        for bridge, bridge_flows in flows.items():
            await self._flows_of(bridge, bridge_flows)

    async def _flows_of(self, bridge: str, flows: str) -> None:
        """The bridge's flows made `flows`. The first time (a new or restarted agent):
        `replace-flows`, which reads the switch's flows and changes the differences;
        then only what changed since the last apply, in one `add-flows` (reading
        thousands of flows back on every apply would be the agent's main cost)."""
        wanted = set(flows.splitlines())
        last = self._flows.pop(bridge, None)
        if last is None:
            await self.daemons.ofctl("--bundle", "replace-flows", bridge, "-", stdin=flows)
        else:
            matches = {_match(f) for f in wanted}
            lines = [f"delete_strict {_match(f)}" for f in sorted(last - wanted)
                     if _match(f) not in matches]  # fmt: skip
            lines += [f"add {f}" for f in sorted(wanted - last)]
            if lines:
                # One bundle (atomic, and one commit for the switch rather than one
                # per flow: 20 times faster with thousands of flows).
                changes = "\n".join(lines) + "\n"
                await self.daemons.ofctl("--bundle", "add-flows", bridge, "-", stdin=changes)
        self._flows[bridge] = wanted

    async def _legs_opened(self) -> None:
        """Until ovs-vswitchd has opened the DHCP and router legs on br-int (their
        OpenFlow ports: an apply writes their flows next, not the apply after). The
        userspace datapath opens a port in seconds on a loaded host (CI saw over 10 s)."""
        deadline = asyncio.get_running_loop().time() + LEG_OFPORT_WAIT
        while True:
            ports = await self._call("ports", INTEGRATION)
            waiting = [
                name
                for name, p in ports.items()
                if name.startswith(PREFIX) and p["ofport"] <= 0 and not p["error"]
            ]
            if not waiting:
                return
            if asyncio.get_running_loop().time() > deadline:
                LOG.warning(
                    "network: %s have no OpenFlow port after %d s; their flows come with "
                    "a later apply",
                    ", ".join(waiting),
                    LEG_OFPORT_WAIT,
                )
                return
            await asyncio.sleep(0.05)

    async def _ofports(
        self, state: dict[str, Any]
    ) -> tuple[dict[str, int], dict[int, int], int | None]:
        """OpenFlow ports on br-int: of each guest port, of every other port (-> its VLAN),
        and of the patch to br-ex. A port ovs-vswitchd has not opened yet has none: a
        guest's flows come with the apply that `watch` asks for once it has one."""
        ids = {p["id"] for p in state["ports"]}
        ports = await self._call("ports", INTEGRATION)
        self._wired = _wiring(ports)
        guests: dict[str, int] = {}
        local: dict[int, int] = {}
        for name, info in ports.items():
            if info["ofport"] <= 0 or info["tag"] is None:
                continue
            iface_id = info["external_ids"].get("iface-id")
            if name.startswith("tap") and iface_id in ids:
                guests[iface_id] = info["ofport"]
            elif name.startswith(PREFIX):
                local[info["ofport"]] = info["tag"]
        patch = ports.get(INT_TO_EX, {}).get("ofport")
        return guests, local, patch if (patch or -1) > 0 else None

    async def watch(self, changed: Any) -> None:
        """ovsdb-monitor's job in Neutron's agent: a port added to (or gone from) br-int
        by someone else (the compute side plugging a guest) makes the agent converge."""
        seen = -1
        while True:
            await asyncio.sleep(WATCH_INTERVAL)
            if self.db is None or self._wired is None:
                continue
            try:
                seqno = await self._call("seqno")
                if seqno == seen:
                    continue  # nothing changed in the database since the last look
                seen = seqno
                wiring = _wiring(await self._call("ports", INTEGRATION))
            except Exception:  # noqa: BLE001 - the switch restarting: the next round sees
                continue
            if wiring != self._wired:
                self._wired = wiring
                await changed()

    # -- cleanup ---------------------------------------------------------------------------

    async def _remove_unwanted(self, wanted: set[str], networks: set[str], legs: set[str]) -> None:
        await super()._remove_unwanted(wanted, networks, legs)
        # Legs whose namespace went took their devices with them: their rows go too.
        # The rows first, then the devices: a row is added after its device is made, so
        # one made meanwhile (by another apply) is never taken for gone.
        on_bridge = await self._call("ports", INTEGRATION)
        present = await cmd.links(self.host_ns)
        legs = [n for n in on_bridge if n.startswith(PREFIX) and n not in present]
        await self._call("delete_ports", INTEGRATION, legs)
        on_ex = await self._call("ports", EXTERNAL)  # the host leg, once it is gone
        gone = [n for n in on_ex if n.startswith(PREFIX) and n not in present]
        await self._call("delete_ports", EXTERNAL, gone)
        stale = [n for n in self.vlans if n not in networks]
        if stale:
            for n in stale:
                del self.vlans[n]
            self._vlans_file.write_text(json.dumps(self.vlans))

    async def teardown_unlocked(self) -> None:
        if self.db is not None:
            await asyncio.to_thread(self.db.close)
            self.db = None
        await self.daemons.stop()
        self._wired = None
        # The host leg's veth: not left to the namespace's deletion (which the kernel
        # finishes later, once ovs-vswitchd's sockets on it are closed).
        await cmd.ip(None, "link", "del", self.host_leg_name, check=False)
        await super().teardown_unlocked()
        shutil.rmtree(self.run_dir, ignore_errors=True)


def tunnel_settings(network: Any) -> dict[str, Any] | None:
    """The driver's `tunnel` from the [network] section (None: no br-tun)."""
    if not network.ovs_tunnel_local_ip:
        return None
    return {
        "local_ip": network.ovs_tunnel_local_ip,
        "device": network.ovs_tunnel_device,
        "peers": list(network.ovs_tunnel_peers),
    }


def physical_bridge(physnet: str) -> str:
    """A physical network's bridge: `br-<physnet>` for a short plain name, else a hash
    (an interface name has 15 characters at most, and `int-br-…`/`phy-br-…` must fit)."""
    reserved = (INTEGRATION, EXTERNAL, TUNNEL, UNDERLAY)
    if re.fullmatch(r"[A-Za-z0-9_]{1,8}", physnet) and f"br-{physnet}" not in reserved:
        return f"br-{physnet}"
    return "br-" + hashlib.sha1(physnet.encode()).hexdigest()[:8]


def network_vni(net: dict[str, Any]) -> int:
    segment = net.get("segment") or {}
    return segment_vni(net["id"], segment.get("type"), segment.get("segmentation_id"))


def vxlan_port(peer: str) -> str:
    return "vxlan-" + "".join(f"{int(o):02x}" for o in peer.split("."))  # Neutron's names


def _match(flow: str) -> str:
    """A flow's table, priority and match: what `delete_strict` names it by."""
    return flow.split(",", 1)[1].rsplit(",actions=", 1)[0]


def _wiring(ports: dict[str, dict[str, Any]]) -> object:
    return sorted((n, p["ofport"], p["external_ids"].get("iface-id")) for n, p in ports.items())


_plug_connections: dict[str, Ovsdb] = {}


async def plug(remote: str, bridge: str, device: str, port_id: str, mac: str) -> None:
    """The compute side's half (os-vif's): the guest's tap on the bridge, named for its
    port, so the agent tags it and writes its flows. One IDL connection per switch is
    kept (a connection's first sync reads every row: too slow per tap)."""

    def work() -> None:
        ids = {"iface-id": port_id, "attached-mac": mac, "iface-status": "active"}
        for attempt in range(2):
            db = _plug_connections.get(remote)
            try:
                if db is None:
                    db = _plug_connections[remote] = Ovsdb(remote)
                db.ensure_port(bridge, device, external_ids=ids)
                return
            except Exception:  # a switch restarted or gone: connect again once
                stale = _plug_connections.pop(remote, None)
                if stale is not None:
                    stale.close()
                if attempt:
                    raise

    await asyncio.to_thread(work)
