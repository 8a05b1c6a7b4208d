"""The `linuxbridge` driver: bridges, DHCP and routers in network namespaces, nftables.

Layout on a host (every name starts with `cmlo-<scope>-`, scope = a hash of the state
dir, so resync finds exactly what this deployment built and nothing else):

- `cmlo-<scope>-host`: one Linux bridge per network (`cmlo-b<network id>`); guests'
  taps join it (`tap<port id>`, the compute side's name; see `vif_details`), and so do
  the host ends of the DHCP and router legs. Its nftables ruleset does anti-spoofing
  and the security groups (see firewall.py). The host's own interfaces, addresses and
  routes are never touched.
- `cmlo-<scope>-dhcp-<network id>`: a veth leg `ns-<port>` into the bridge with the
  DHCP port's MAC and addresses (and 169.254.169.254/32: see Metadata), and dnsmasq
  serving the ports' static leases.
- `cmlo-<scope>-router-<router id>`: legs `qr-<port>` into each attached network's
  bridge and `qg-<port>` into the external network's (with the floating IPs as /32s),
  the default route to the external gateway, the extra routes, and nftables NAT. An HA
  router's namespace also has an `ha-<port>` leg into its project's HA network, and its
  addresses and routes are keepalived's to add where the router is active (see
  keepalived.py; IPv6 is off in it, so a standby router never speaks on its legs).

Metadata: a MetadataProxy given to the driver is started in each router namespace, and
the router's nftables redirects 169.254.169.254:80 arriving on its `qr-` legs to the
proxy's port (see MetadataProxy; the cloud gives it the one in metadata_proxy.py).
With `isolated_metadata` or `force_metadata` (Neutron's DHCP agent options), each DHCP
namespace also holds 169.254.169.254/32 on its leg with the proxy listening on
169.254.169.254:80, and dnsmasq routes guests there (dhcp.metadata_nexthops): on
subnets no router serves, or on all of them when forced. When a router is attached
later the route moves to the gateway but the proxy in the DHCP namespace stays: a
guest keeps the route it was given until it renews its lease, and the proxy answers
it the same as the router's would.

`apply` converges on the desired state: objects whose desired config did not change
since the last apply are skipped; after a restart everything is ensured again (each
step is idempotent) and anything with the prefix that is no longer wanted is removed,
processes in its namespace included.

`wire` is the ports' fast path (see the agent): the host namespace's side of a state
(bridges, physical, VXLAN and host legs, taps, firewall) under a lock that an apply
holds only for that same side and its removals, not while it makes DHCP servers and
routers, so a guest's port is wired while an apply of an older state is busy with other
networks' namespaces. Only a state newer than the last one wired is wired (an apply
skips its own wiring when a newer state's is done), and an apply's removals spare what
the newest wired state wants: an older state never undoes a newer one.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import json
import logging
import shutil
from pathlib import Path
from typing import Any, Protocol

from cumulo.network.dataplane import commands as cmd
from cumulo.network.dataplane.dhcp import (
    METADATA_CIDR,
    METADATA_IP,
    Dnsmasq,
    dhcp_subnets,
    metadata_nexthops,
)
from cumulo.network.dataplane.driver import NetworkDriver, Wired, bridge_name
from cumulo.network.dataplane.firewall import host_ruleset, router_ruleset
from cumulo.network.dataplane.keepalived import Keepalived, ha_device, ha_state, primary_vip
from cumulo.network.dataplane.keepalived import config as keepalived_config
from cumulo.network.dataplane.keepalived import tool_available as keepalived_installed

LOG = logging.getLogger(__name__)

PREFIX = "cmlo-"
TOOLS = ("ip", "nft", "dnsmasq", "sysctl")
# Which state dir each scope belongs to (tmpfs, like the namespaces: gone at reboot).
REGISTRY = Path("/run/cumulo-network")
EMPTY: dict[str, Any] = {"networks": [], "ports": [], "routers": []}  # a host with nothing


class MetadataProxy(Protocol):
    """The metadata hook: what serves 169.254.169.254 inside router and DHCP namespaces.

    `port` is where the proxy listens in a router namespace; the router's nftables
    redirects guests' requests to 169.254.169.254:80 there. `update` gives it every
    apply's whole desired state (to map a guest's source address to its port), `ensure`
    starts it in a namespace for the guests on `networks`, on `address` (a DHCP
    namespace's 169.254.169.254:80) or on `port` (called on every apply: cheap when it
    runs), `remove` stops it before its namespace is deleted.
    """

    port: int

    def update(self, state: dict[str, Any]) -> None: ...

    async def ensure(
        self, namespace: str, networks: set[str], address: tuple[str, int] | None = None
    ) -> None: ...

    async def remove(self, namespace: str) -> None: ...


def tools_available() -> bool:
    return all(shutil.which(tool) for tool in TOOLS)


def vxlan_name(network_id: str) -> str:
    return f"{PREFIX}v{_short(network_id, 9)}"


def vlan_name(network_id: str) -> str:
    """A VLAN network's 802.1Q subinterface of its physical network's host interface."""
    return f"{PREFIX}q{_short(network_id, 9)}"


async def _vlan_of(ns: str, device: str) -> tuple[int | None, str | None]:
    """(VLAN id, parent interface) of an existing VLAN device; (None, None) if absent."""
    out = await cmd.run("ip", "-n", ns, "-d", "-json", "link", "show", "dev", device, check=False)
    for link in json.loads(out or "[]"):
        return link.get("linkinfo", {}).get("info_data", {}).get("id"), link.get("link")
    return None, None


async def _vxlan_fdb(ns: str, device: str) -> set[tuple[str, str]]:
    """The (MAC, remote address) entries of a VXLAN device's forwarding table."""
    out = await cmd.bridge(ns, "-json", "fdb", "show", "dev", device)
    return {(e["mac"], e["dst"]) for e in json.loads(out or "[]") if e.get("dst")}


def scope_of(state_dir: Path) -> str:
    return hashlib.sha1(str(state_dir.resolve()).encode()).hexdigest()[:6]


def _short(uuid: str, n: int) -> str:
    return uuid.replace("-", "")[:n]


def _dhcp_leg(dhcp: dict[str, Any]) -> str:
    """The DHCP port's leg in its namespace."""
    return f"ns-{dhcp['port_id'][:11]}"


def tap_name(port_id: str) -> str:
    return f"tap{port_id[:11]}"  # the compute side's (and Nova's) name for a guest's tap


async def _host_networks(exclude: str) -> list[ipaddress.IPv4Network]:
    """The IPv4 networks of the host namespace's addresses, but those of `exclude`."""
    out = await cmd.run("ip", "-json", "-4", "addr", "show")
    return [
        ipaddress.ip_interface(f"{a['local']}/{a['prefixlen']}").network
        for link in json.loads(out or "[]")
        if link.get("ifname") != exclude
        for a in link.get("addr_info", [])
    ]


def _fingerprint(*parts: Any) -> str:
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


class LinuxBridgeDriver(NetworkDriver):
    name = "linuxbridge"

    def __init__(
        self, state_dir: Path, scope: str | None = None, metadata_proxy: MetadataProxy | None = None
    ) -> None:
        self.state_dir = state_dir
        self.scope = scope or scope_of(state_dir)
        self.prefix = f"{PREFIX}{self.scope}-"
        self.host_ns = f"{self.prefix}host"
        self.files = state_dir / "network" / "dhcp"
        self.metadata_proxy = metadata_proxy
        # Neutron's enable_isolated_metadata and force_metadata (set with the proxy).
        self.isolated_metadata = False
        self.force_metadata = False
        self.host_leg = False  # the external networks reach the host's namespace
        # Tenant networks over VXLAN to the other hosts: {"local_ip": "<address>/<prefix>",
        # "device": <the host interface carrying the tunnels>}; None: bridges stay local.
        self.vxlan: dict[str, str] | None = None
        # Provider networks (Neutron's physical_interface_mappings): physical network ->
        # the host interface carrying it, moved into the data plane's namespace.
        self.physical: dict[str, str] = {}
        self.applied: dict[str, str] = {}  # object -> fingerprint of what was applied
        self.ha_routers: dict[str, dict[str, Any]] = {}  # the HA routers applied, by id
        self._applying = asyncio.Lock()  # one full apply at a time
        # The host namespace's devices and the firewall: `wire` and an apply's wiring and
        # removals take turns; DHCP servers and routers are made without it.
        self._lock = asyncio.Lock()
        self._generation = 0  # the newest state's generation given so far
        # The newest state wired: its generation, its applied keys, the state.
        self._newest_wired: tuple[int, set[str], dict[str, Any]] = (0, set(), EMPTY)

    def dhcp_ns(self, network_id: str) -> str:
        return f"{self.prefix}dhcp-{network_id}"

    @property
    def dhcp_metadata(self) -> bool:
        """Whether the DHCP namespaces serve 169.254.169.254."""
        return self.metadata_proxy is not None and (self.isolated_metadata or self.force_metadata)

    def router_ns(self, router_id: str) -> str:
        return f"{self.prefix}router-{router_id}"

    def keepalived(self, router_id: str) -> Keepalived:
        return Keepalived(self.state_dir / "network" / "keepalived" / router_id,
                          self.router_ns(router_id))  # fmt: skip

    def configurations(self) -> dict[str, Any]:
        # How a compute host plugs a guest: its tap into the network's bridge in `netns`.
        vif = {"type": "bridge", "details": {"port_filter": True, "netns": self.host_ns}}
        reported: dict[str, Any] = {
            "driver": self.name,
            "agent_mode": self.agent_mode,
            "vif": {**vif, "bridge_per_network": True},
        }
        if self.physical:
            reported["interface_mappings"] = dict(self.physical)
        if self.vxlan is not None:
            # Neutron's linuxbridge agent reports its VTEP so: the others reach it there.
            reported |= {
                "tunneling_ip": self.vxlan["local_ip"].split("/")[0],
                "tunnel_types": ["vxlan"],
                "l2_population": True,
            }
        return reported

    # -- converging ------------------------------------------------------------------

    async def apply(
        self, state: dict[str, Any], wired: Wired | None = None, generation: int | None = None
    ) -> None:
        generation = self._numbered(generation)
        async with self._applying:
            await self._apply(state, wired, generation)

    async def wire(self, state: dict[str, Any], generation: int) -> bool:
        generation = self._numbered(generation)
        if not state["networks"]:
            return True  # no network, no port to wire (the full apply tears down)
        async with self._lock:
            if generation > self._newest_wired[0]:
                await self._wire(state, generation)
        return True

    def _numbered(self, generation: int | None) -> int:
        """The state's generation (None: newer than any so far)."""
        if generation is None:
            generation = self._generation + 1
        self._generation = max(self._generation, generation)
        return generation

    async def _apply(self, state: dict[str, Any], wired: Wired | None, generation: int) -> None:
        """The ports' wiring (unless a newer state's is done), then the DHCP servers and
        routers without the lock (`wire` goes on meanwhile), then the removals."""
        async with self._lock:
            if not state["networks"]:
                if generation >= self._newest_wired[0]:
                    await self.teardown_unlocked()  # nothing to build: no empty namespace
                    self._newest_wired = (generation, set(), EMPTY)
                return
            if generation > self._newest_wired[0]:
                await self._wire(state, generation)
                if wired is not None:
                    await wired()
        wanted, keep = await self._services(state)
        async with self._lock:
            await self._finish(state, wanted, keep)

    async def _wire(self, state: dict[str, Any], generation: int) -> None:
        """Under the lock: the host namespace, every network's bridge (and its physical,
        VXLAN and host legs), the guests' taps and the firewall, as `state` wants them.
        Adds and changes only: what is gone stays until `_finish` (an older state's apply
        may still be making DHCP and router legs on those bridges)."""
        existing = await cmd.namespaces()
        if self.host_ns not in existing:
            self.applied.clear()  # first run, or someone removed it: build everything
            await self._remove_orphans(existing)
            await self._host_namespace()
        if self.metadata_proxy is not None:
            self.metadata_proxy.update(state)
        keep: set[str] = {"host"}
        networks = {n["id"]: n for n in state["networks"]}
        for net in networks.values():
            keep.add(f"bridge:{net['id']}")
            await self._step(f"bridge:{net['id']}", (net["mtu"], net["admin_state_up"]),
                             self._bridge(net), existing, self.host_ns)  # fmt: skip
        for net in networks.values():
            segment = net.get("segment") or {}
            device = self.physical.get(segment.get("physical_network") or "")
            if device and segment.get("type") in ("flat", "vlan"):
                keep.add(f"physical:{net['id']}")
                await self._step(f"physical:{net['id']}", (device, segment, net["mtu"]),
                                 self._physical(net["id"], device, segment, net["mtu"]),
                                 existing, self.host_ns)  # fmt: skip
        tunnel = state.get("tunnel") if self.vxlan is not None else None
        if tunnel:
            keep.add("underlay")
            await self._step("underlay", self.vxlan, self._underlay(), existing, self.host_ns)
            for net_id, vni in tunnel["vni"].items():
                if net_id not in networks:
                    continue
                keep.add(f"vxlan:{net_id}")
                peers, macs = tunnel["peers"].get(net_id, []), tunnel["macs"].get(net_id, [])
                mtu = networks[net_id]["mtu"]
                await self._step(f"vxlan:{net_id}", (vni, mtu, peers, macs),
                                 self._vxlan(net_id, vni, mtu, peers, macs), existing,
                                 self.host_ns)  # fmt: skip
        legged = [n for n in networks.values() if n["external"] and self.host_leg]
        for net in legged[:1]:  # one leg per deployment (its name is the scope's)
            keep.add(f"host-leg:{net['id']}")
            await self._step(f"host-leg:{net['id']}", (net["subnets"], net["mtu"]),
                             self._host_leg(net), existing, self.host_ns)  # fmt: skip
        if not legged:
            await cmd.ip(None, "link", "del", self.host_leg_name, check=False)
        await self._taps(state["ports"])
        keep.add("ruleset")
        await self._firewall(state, existing)
        self._newest_wired = (generation, keep, state)

    async def _services(self, state: dict[str, Any]) -> tuple[set[str], set[str]]:
        """The DHCP servers and routers (their namespaces take most of an apply), then
        the namespaces no longer wanted removed: the namespaces wanted and the keys kept."""
        existing = await cmd.namespaces()
        networks = {n["id"]: n for n in state["networks"]}
        wanted = {self.host_ns}
        keep: set[str] = set()
        for net in networks.values():
            if dhcp_subnets(net):
                ns = self.dhcp_ns(net["id"])
                wanted.add(ns)
                keep |= {f"dhcp:{net['id']}", f"dnsmasq:{net['id']}"}
                hops = self._metadata_hops(net)
                # The namespace and its leg again only when they change (or are gone),
                # not for each guest's port that comes or goes: dnsmasq's leases do.
                await self._step(f"dhcp:{net['id']}",
                                 (net["dhcp"], net["mtu"], self.dhcp_metadata),
                                 self._dhcp(net, ns), existing, ns)  # fmt: skip
                await self._step(f"dnsmasq:{net['id']}", (net, hops, self.dhcp_metadata),
                                 self._dnsmasq(net, ns, hops), existing, ns)  # fmt: skip
                await self._dhcp_metadata_proxy(net, ns)
        for router in state["routers"]:
            if router["gateway"] is None and not router["interfaces"]:
                continue
            ns = self.router_ns(router["id"])
            wanted.add(ns)
            keep |= await self._router_steps(router, networks, existing)
            if self.metadata_proxy is not None:
                legs = {leg["network_id"] for leg in router["interfaces"]}
                await self.metadata_proxy.ensure(ns, legs)
        await self._remove_namespaces(wanted)
        self.ha_routers = {
            r["id"]: r
            for r in state["routers"]
            if r.get("ha") and self.router_ns(r["id"]) in wanted
        }
        return wanted, keep

    async def _finish(self, state: dict[str, Any], wanted: set[str], keep: set[str]) -> None:
        """Under the lock: the links and files neither `state` nor the newest wired state
        wants removed (a network the newest wiring made stays)."""
        _, wired_keep, wired_state = self._newest_wired
        networks = {n["id"] for n in (*state["networks"], *wired_state["networks"])}
        await self._remove_unwanted(wanted, networks, self._wanted_legs(state))
        self.applied = {k: v for k, v in self.applied.items() if k in keep | wired_keep}

    async def _firewall(self, state: dict[str, Any], existing: set[str]) -> None:
        """Anti-spoofing and the security groups of the guests' ports (nftables)."""
        ruleset = host_ruleset(state["networks"], state["ports"], bridge_name, tap_name)
        await self._step("ruleset", ruleset, cmd.nft_load(self.host_ns, ruleset), existing,
                         self.host_ns)  # fmt: skip

    async def _step(self, key: str, desired: Any, work: Any, existing: set[str], ns: str) -> None:
        """Run `work` unless this object's desired state was already applied as it is."""
        fingerprint = _fingerprint(desired)
        if self.applied.get(key) == fingerprint and ns in existing:
            work.close()  # an unawaited coroutine: nothing to do
            return
        self.applied.pop(key, None)
        await work
        self.applied[key] = fingerprint

    async def _remove_orphans(self, existing: set[str]) -> None:
        """Remove the data planes of deployments whose state dir is gone (test clouds)."""
        REGISTRY.mkdir(parents=True, exist_ok=True)
        (REGISTRY / self.scope).write_text(str(self.state_dir.resolve()))
        for entry in REGISTRY.iterdir():
            if entry.name == self.scope or Path(entry.read_text().strip()).exists():
                continue
            for ns in sorted(existing):
                if ns.startswith(f"{PREFIX}{entry.name}-"):
                    LOG.info("network: removing %s (its state dir is gone)", ns)
                    await cmd.delete_namespace(ns)
            entry.unlink(missing_ok=True)

    async def _host_namespace(self) -> None:
        await cmd.add_namespace(self.host_ns)
        # Bridged IP frames go through the inet hooks (conntrack for security groups).
        await cmd.sysctl(
            self.host_ns,
            "net.bridge.bridge-nf-call-iptables=1",
            "net.bridge.bridge-nf-call-ip6tables=1",
            "net.bridge.bridge-nf-call-arptables=0",
        )
        self.applied["host"] = "ready"

    async def _bridge(self, net: dict[str, Any]) -> None:
        name = bridge_name(net["id"])
        if name not in await cmd.links(self.host_ns):
            await cmd.ip(self.host_ns, "link", "add", name, "type", "bridge")
        state = "up" if net["admin_state_up"] else "down"
        await cmd.ip(self.host_ns, "link", "set", name, "mtu", str(net["mtu"]), state)

    async def _underlay(self) -> None:
        """The tunnels' host interface in the data plane's namespace, with this host's
        underlay address (moved in from the host's namespace the first time)."""
        assert self.vxlan is not None
        device, address = self.vxlan["device"], self.vxlan["local_ip"]
        if device not in await cmd.links(self.host_ns):
            await cmd.ip(None, "link", "set", device, "netns", self.host_ns)
        await cmd.ip(self.host_ns, "link", "set", device, "up")
        await self._addresses(self.host_ns, device, {address})

    async def _physical(
        self, network_id: str, device: str, segment: dict[str, Any], mtu: int
    ) -> None:
        """As Neutron's linuxbridge agent: a flat network's bridge takes the physical
        network's host interface itself, a VLAN network's an 802.1Q subinterface of it
        (the interface is moved in from the host's namespace the first time)."""
        if device not in await cmd.links(self.host_ns):
            await cmd.ip(None, "link", "set", device, "netns", self.host_ns)
        await cmd.ip(self.host_ns, "link", "set", device, "up")
        bridge = bridge_name(network_id)
        if segment["type"] == "flat":
            await cmd.ip(self.host_ns, "link", "set", device, "master", bridge)
            return
        name, vid = vlan_name(network_id), segment["segmentation_id"]
        have = await _vlan_of(self.host_ns, name)
        if have != (None, None) and have != (vid, device):
            await cmd.ip(self.host_ns, "link", "del", name)
            have = (None, None)
        if have == (None, None):
            try:
                await cmd.ip(self.host_ns, "link", "add", "link", device, "name", name,
                             "type", "vlan", "id", str(vid))  # fmt: skip
            except cmd.CommandError as exc:
                if "Unknown device type" not in exc.stderr:
                    raise
                # A kernel without 802.1Q (module 8021q): the network stays on this
                # host's bridge; said once per network, the rest of the apply goes on.
                LOG.error("network: VLAN network %s is not wired to %s: this kernel has "
                          "no 802.1Q VLAN devices (module 8021q)", network_id, device)  # fmt: skip
                return
        await cmd.ip(self.host_ns, "link", "set", name, "master", bridge, "mtu", str(mtu), "up")

    async def _vxlan(
        self, network_id: str, vni: int, mtu: int, peers: list[str], macs: list[list[str]]
    ) -> None:
        """The network's VXLAN device on its bridge: broadcasts replicated to each peer
        host with something on the network (all-zeros FDB entries), and each remote
        port's MAC pinned to its host (L2 population; learning stays on for the rest)."""
        assert self.vxlan is not None
        name, local = vxlan_name(network_id), self.vxlan["local_ip"].split("/")[0]
        link = (await cmd.links(self.host_ns)).get(name)
        if link is not None and (link.get("linkinfo", {}).get("info_data", {}).get("id") != vni):
            await cmd.ip(self.host_ns, "link", "del", name)
            link = None
        if link is None:
            device = self.vxlan["device"]
            await cmd.ip(self.host_ns, "link", "add", name, "type", "vxlan", "id", str(vni),
                         "local", local, "dev", device, "dstport", "4789")  # fmt: skip
        await cmd.ip(self.host_ns, "link", "set", name, "master", bridge_name(network_id),
                     "mtu", str(mtu), "up")  # fmt: skip
        wanted = {("00:00:00:00:00:00", peer) for peer in peers}
        wanted |= {(mac, peer) for mac, peer in macs}
        have = await _vxlan_fdb(self.host_ns, name)
        for mac, peer in have - wanted:
            await cmd.bridge(self.host_ns, "fdb", "del", mac, "dev", name, "dst", peer,
                             check=False)  # fmt: skip
        for mac, peer in sorted(wanted - have):
            await cmd.bridge(self.host_ns, "fdb", "append", mac, "dev", name, "dst", peer)

    @property
    def host_leg_name(self) -> str:
        return f"{PREFIX}x{self.scope[:9]}"

    async def _host_leg(self, net: dict[str, Any]) -> None:
        """A veth from the host's own namespace into the external network's bridge, with
        the subnets' gateway addresses: the routers' default route leads to the host, and
        the host reaches the floating IPs (gone with the host namespace at teardown)."""
        outer, inner = self.host_leg_name, f"{PREFIX}e{_short(net['id'], 9)}"
        if outer not in await cmd.links(None) or inner not in await cmd.links(self.host_ns):
            await cmd.ip(None, "link", "del", outer, check=False)
            await cmd.ip(self.host_ns, "link", "del", inner, check=False)
            await cmd.ip(None, "link", "add", outer, "type", "veth", "peer", "name", inner,
                         "netns", self.host_ns)  # fmt: skip
        await self._attach_host_leg(inner, net)
        await cmd.ip(None, "link", "set", outer, "mtu", str(net["mtu"]), "up")
        wanted = {
            f"{s['gateway_ip']}/{s['cidr'].split('/')[1]}"
            for s in net["subnets"]
            if s["ip_version"] == 4 and s["gateway_ip"]
        }
        taken = await _host_networks(exclude=outer)
        for address in sorted(wanted):
            network = ipaddress.ip_interface(address).network
            if any(network.overlaps(other) for other in taken):
                # Another cloud on this host (or the host itself) already routes it:
                # a second leg would take its traffic. Only this cloud loses the leg.
                LOG.warning(
                    "network: no host leg for %s: this host already has an address in %s",
                    address, network,
                )  # fmt: skip
                wanted.discard(address)
        await self._addresses(None, outer, wanted)

    async def _attach_host_leg(self, inner: str, net: dict[str, Any]) -> None:
        """The host leg's data-plane end joins the external network's bridge."""
        await self._attach(inner, net["id"], "", net["mtu"])

    async def _leg(
        self, ns: str, inner: str, outer: str, network_id: str, mac: str, mtu: int
    ) -> None:
        """A veth pair: `inner` in ns with the port's MAC, `outer` on the network's bridge."""
        inside, outside = await cmd.links(ns), await cmd.links(self.host_ns)
        if inner not in inside or outer not in outside:
            await cmd.ip(ns, "link", "del", inner, check=False)
            await cmd.ip(self.host_ns, "link", "del", outer, check=False)
            await cmd.ip(ns, "link", "add", inner, "type", "veth", "peer", "name", outer,
                         "netns", self.host_ns)  # fmt: skip
            await self._leg_made(ns, inner)
        await cmd.ip(ns, "link", "set", inner, "address", mac, "mtu", str(mtu), "up")
        await self._attach(outer, network_id, mac, mtu)

    async def _leg_made(self, ns: str, inner: str) -> None:
        """A new leg's namespace end, before it comes up (nothing to do on Linux bridges)."""

    async def _attach(self, outer: str, network_id: str, mac: str, mtu: int) -> None:
        """A leg's host end joins its network's bridge."""
        await cmd.ip(self.host_ns, "link", "set", outer, "master", bridge_name(network_id),
                     "mtu", str(mtu), "up")  # fmt: skip

    async def _addresses(
        self, ns: str | None, dev: str, wanted: set[str], have: set[str] | None = None
    ) -> None:
        """dev's addresses made `wanted` (`have`: what it holds, when already looked at)."""
        if have is None:
            have = await cmd.addresses(ns, dev)
        for a in have - wanted:
            await cmd.ip(ns, "addr", "del", a, "dev", dev, check=False)
        for a in sorted(wanted - have):
            extra = ("nodad",) if ":" in a else ()
            await cmd.ip(ns, "addr", "add", a, "dev", dev, *extra)

    def _metadata_hops(self, net: dict[str, Any]) -> dict[str, str]:
        if not self.dhcp_metadata:
            return {}
        return metadata_nexthops(net, self.isolated_metadata, self.force_metadata)

    async def _dhcp_metadata_proxy(self, net: dict[str, Any], ns: str) -> None:
        """The proxy on 169.254.169.254:80 in the DHCP namespace, for this network's guests."""
        if self.metadata_proxy is None:
            return
        if not self.dhcp_metadata:
            await self.metadata_proxy.remove(ns)
            return
        try:
            await self.metadata_proxy.ensure(ns, {net["id"]}, (METADATA_IP, 80))
        except OSError as exc:  # the next apply tries again; the network's DHCP still works
            LOG.warning("network: no metadata proxy in %s: %s", ns, exc)

    async def _dhcp(self, net: dict[str, Any], ns: str) -> None:
        """The DHCP namespace and its leg into the network's bridge."""
        dhcp = net["dhcp"]
        await cmd.add_namespace(ns)
        inner = _dhcp_leg(dhcp)
        await self._leg(ns, inner, f"{PREFIX}d{_short(dhcp['port_id'], 9)}", net["id"],
                        dhcp["mac"], net["mtu"])  # fmt: skip
        for name in await cmd.links(ns):
            if name not in (inner, "lo"):
                await cmd.ip(ns, "link", "del", name, check=False)
        addresses = {f"{a['ip']}/{a['prefixlen']}" for a in dhcp["addresses"]}
        if self.dhcp_metadata:
            addresses.add(METADATA_CIDR)  # where the proxy listens; Neutron's DHCP port too
        await self._addresses(ns, inner, addresses)

    async def _dnsmasq(self, net: dict[str, Any], ns: str, metadata_hops: dict[str, str]) -> None:
        """dnsmasq in the DHCP namespace serving the network's leases (reloaded or
        restarted as needed)."""
        await Dnsmasq(self.files / net["id"], ns).ensure(net, _dhcp_leg(net["dhcp"]), metadata_hops)

    async def _router_steps(
        self, router: dict[str, Any], networks: dict[str, Any], existing: set[str]
    ) -> set[str]:
        """A router: its namespace and legs, then its addresses, its NAT and its routes,
        each applied only when it changed: a floating IP that comes or goes is an
        address on the gateway leg and the NAT ruleset (three commands), not the whole
        namespace again (about twenty). An HA router is applied whole (keepalived holds
        its addresses and routes). The keys of what was applied."""
        rid, ns = router["id"], self.router_ns(router["id"])
        metadata_port = self.metadata_proxy.port if self.metadata_proxy else None
        if router.get("ha"):
            await self._step(f"router:{rid}", (router, metadata_port),
                             self._router(router, networks), existing, ns)  # fmt: skip
            return {f"router:{rid}"}
        legs, gw_dev = self._router_legs(router)
        keys = [f"{part}:{rid}" for part in ("router", "router-addresses", "router-nat",
                                             "router-routes")]  # fmt: skip
        layout = {
            name: (leg["port_id"], leg["mac"], leg["network_id"])
            + (networks[leg["network_id"]]["mtu"],)
            for name, (leg, _) in legs.items()
        }

        async def made() -> None:  # new legs have no address yet: the steps after it again
            for key in keys[1:]:
                self.applied.pop(key, None)
            await self._router_layout(router, legs, networks)

        await self._step(keys[0], ("legacy", layout), made(), existing, ns)
        addresses = {name: sorted(addrs) for name, (_, addrs) in legs.items()}
        await self._step(keys[1], addresses, self._router_addresses(ns, legs), existing, ns)
        ruleset = router_ruleset(router, gw_dev, metadata_port)
        await self._step(keys[2], ruleset, cmd.nft_load(ns, ruleset), existing, ns)
        routes = (gw_dev, (router["gateway"] or {}).get("gateway_ip"), router.get("routes"))
        await self._step(keys[3], routes, self._routes(ns, router, gw_dev), existing, ns)
        return set(keys)

    def _router_legs(
        self, router: dict[str, Any]
    ) -> tuple[dict[str, tuple[dict[str, Any], set[str]]], str | None]:
        """The router's legs (name -> its port, its addresses; the floating IPs are the
        gateway leg's) and the gateway leg's name."""
        legs: dict[str, tuple[dict[str, Any], set[str]]] = {}
        for leg in router["interfaces"]:
            addrs = {f"{a['ip']}/{a['prefixlen']}" for a in leg["addresses"]}
            legs[f"qr-{leg['port_id'][:11]}"] = (leg, addrs)
        gw = router["gateway"]
        gw_dev = f"qg-{gw['port_id'][:11]}" if gw else None
        if gw and gw_dev:
            addrs = {f"{a['ip']}/{a['prefixlen']}" for a in gw["addresses"]}
            addrs |= {f"{f['floating_ip']}/32" for f in router["floating_ips"]}
            legs[gw_dev] = (gw, addrs)
        ha = router.get("ha")
        if ha:
            legs[ha_device(ha["port"]["port_id"])] = (
                ha["port"],
                {f"{a['ip']}/{a['prefixlen']}" for a in ha["port"]["addresses"]},
            )
        return legs, gw_dev

    async def _router_layout(
        self,
        router: dict[str, Any],
        legs: dict[str, tuple[dict[str, Any], set[str]]],
        networks: dict[str, Any],
    ) -> None:
        """The router's namespace and its legs (no others), without their addresses."""
        ns = self.router_ns(router["id"])
        ha = router.get("ha")
        if not ha:  # (no longer HA: first, as it removes the addresses it added on exit)
            await self.keepalived(router["id"]).stop()
        await cmd.add_namespace(ns)
        await cmd.sysctl(ns, "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1")
        if ha:  # before its legs are made: they inherit it
            await cmd.sysctl(
                ns, "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"
            )
        for name in await cmd.links(ns):
            if name != "lo" and name not in legs:
                await cmd.ip(ns, "link", "del", name, check=False)
        for name, (leg, _) in legs.items():
            mtu = networks[leg["network_id"]]["mtu"]
            await self._leg(ns, name, self._router_leg(router, name, leg), leg["network_id"],
                            leg["mac"], mtu)  # fmt: skip

    async def _router_addresses(
        self, ns: str, legs: dict[str, tuple[dict[str, Any], set[str]]]
    ) -> None:
        """Each leg's addresses as wanted (one look at the namespace's)."""
        have = await cmd.addresses_by_device(ns)
        for name, (_, wanted) in legs.items():
            await self._addresses(ns, name, wanted, have.get(name, set()))

    async def _router(self, router: dict[str, Any], networks: dict[str, Any]) -> None:
        """An HA router, whole: its legs, the HA leg's address, NAT, keepalived (which
        adds the other addresses and the routes where the router is active)."""
        ns = self.router_ns(router["id"])
        ha = router["ha"]
        keepalived = self.keepalived(router["id"])
        legs, gw_dev = self._router_legs(router)
        await self._router_layout(router, legs, networks)
        ha_dev = ha_device(ha["port"]["port_id"])
        for name, (_, addrs) in legs.items():
            if name == ha_dev:  # keepalived's VIP stays where it is
                held = await cmd.addresses(ns, name)
                addrs |= held & {primary_vip(ha["vr_id"])}
                await self._addresses(ns, name, addrs)
            elif keepalived.pid is None:  # (made HA: keepalived adds them if elected)
                await self._addresses(ns, name, set())
        metadata_port = self.metadata_proxy.port if self.metadata_proxy else None
        await cmd.nft_load(ns, router_ruleset(router, gw_dev, metadata_port))
        if not keepalived_installed():
            # The rest of the host goes on; this router holds no address here.
            LOG.error("network: HA router %s not run: keepalived is not installed (Debian: "
                      "keepalived)", router["id"])  # fmt: skip
            return
        vips = {name: sorted(addrs) for name, (_, addrs) in legs.items() if name != ha_dev}
        await keepalived.ensure(keepalived_config(router, vips, gw_dev))

    def _router_leg(self, router: dict[str, Any], name: str, leg: dict[str, Any]) -> str:
        """The host end of a router's leg: g (gateway), h (HA), r (interfaces)."""
        kind = "r"
        if router["gateway"] and leg["port_id"] == router["gateway"]["port_id"]:
            kind = "g"
        elif name.startswith("ha-"):
            kind = "h"
        return f"{PREFIX}{kind}{_short(leg['port_id'], 9)}"

    async def ha_states(self) -> dict[str, str]:
        """Each HA router's role here (active where keepalived holds its primary VIP);
        a keepalived that stopped is started again (Neutron's process monitor)."""
        states = {}
        for router_id, router in list(self.ha_routers.items()):
            ns = self.router_ns(router_id)
            try:
                states[router_id] = await ha_state(ns, router)
            except cmd.CommandError:
                continue  # its namespace or leg is being made or removed
            keepalived = self.keepalived(router_id)
            if keepalived.pid is None and not self._applying.locked() and keepalived.conf.exists():
                LOG.warning("network: keepalived of router %s stopped; starting it", router_id)
                await keepalived.ensure(keepalived.conf.read_text())
        return states

    async def _routes(self, ns: str, router: dict[str, Any], gw_dev: str | None) -> None:
        """The default route to the external gateway and the extra routes (`proto static`)."""
        wanted: dict[str, tuple[str, ...]] = {}
        gateway_ip = (router["gateway"] or {}).get("gateway_ip")
        if gw_dev and gateway_ip and ":" not in gateway_ip:
            wanted["default"] = ("via", gateway_ip, "dev", gw_dev)
        for route in router.get("routes") or []:
            if ":" not in route["destination"]:
                wanted[route["destination"]] = ("via", route["nexthop"])
        for route in json.loads(
            await cmd.ip(ns, "-json", "route", "show", "proto", "static") or "[]"
        ):
            if route["dst"] not in wanted:
                await cmd.ip(ns, "route", "del", route["dst"], check=False)
        for dst, how in wanted.items():
            await cmd.ip(ns, "route", "replace", dst, *how, "proto", "static", check=False)

    async def _taps(self, ports: list[dict[str, Any]]) -> None:
        """Guests' taps present in the host namespace join their network's bridge."""
        present = await cmd.links(self.host_ns)
        for port in ports:
            tap = present.get(tap_name(port["id"]))
            bridge = bridge_name(port["network_id"])
            if tap is not None and tap.get("master") != bridge:
                await cmd.ip(self.host_ns, "link", "set", tap_name(port["id"]), "master", bridge,
                             "up")  # fmt: skip

    async def _remove_namespaces(self, wanted: set[str]) -> None:
        """The DHCP and router namespaces not wanted, processes in them included."""
        for ns in sorted(await cmd.namespaces()):
            if ns.startswith(self.prefix) and ns not in wanted:
                if self.metadata_proxy is not None:
                    await self.metadata_proxy.remove(ns)
                LOG.info("network: removing namespace %s", ns)
                await cmd.delete_namespace(ns)

    async def _remove_unwanted(self, wanted: set[str], networks: set[str], legs: set[str]) -> None:
        """Under the lock: bridges of networks not in `networks`, host ends of legs not in
        `legs`, DHCP files of namespaces not `wanted`."""
        bridges = {bridge_name(n) for n in networks} | {vxlan_name(n) for n in networks}
        bridges |= {vlan_name(n) for n in networks}
        for name in await cmd.links(self.host_ns):
            # Bridges of gone networks, and host ends of legs nothing wants any more (a
            # namespace deleted while something held it alive keeps its veths).
            if name.startswith((f"{PREFIX}b", f"{PREFIX}v", f"{PREFIX}q")) and name not in bridges:
                await cmd.ip(self.host_ns, "link", "del", name, check=False)
            elif name.startswith(tuple(f"{PREFIX}{k}" for k in "drgh")) and name not in legs:
                await cmd.ip(self.host_ns, "link", "del", name, check=False)
        if self.files.is_dir():
            for path in self.files.iterdir():
                if self.dhcp_ns(path.name) not in wanted:
                    shutil.rmtree(path, ignore_errors=True)
        keepalived = self.state_dir / "network" / "keepalived"
        if keepalived.is_dir():  # (the namespace's deletion stopped the process)
            for path in keepalived.iterdir():
                if self.router_ns(path.name) not in wanted:
                    shutil.rmtree(path, ignore_errors=True)

    def _wanted_legs(self, state: dict[str, Any]) -> set[str]:
        """Host ends of the DHCP servers' and routers' legs the state wants."""
        legs = {
            f"{PREFIX}d{_short(net['dhcp']['port_id'], 9)}"
            for net in state["networks"]
            if dhcp_subnets(net)
        }
        for router in state["routers"]:
            for leg in router["interfaces"]:
                legs.add(f"{PREFIX}r{_short(leg['port_id'], 9)}")
            if router["gateway"]:
                legs.add(f"{PREFIX}g{_short(router['gateway']['port_id'], 9)}")
            if router.get("ha"):
                legs.add(f"{PREFIX}h{_short(router['ha']['port']['port_id'], 9)}")
        return legs

    async def teardown(self) -> None:
        async with self._applying, self._lock:
            await self.teardown_unlocked()

    async def teardown_unlocked(self) -> None:
        for ns in sorted(await cmd.namespaces()):
            if ns.startswith(self.prefix):
                if self.metadata_proxy is not None:
                    await self.metadata_proxy.remove(ns)
                await cmd.delete_namespace(ns)
        shutil.rmtree(self.files, ignore_errors=True)
        shutil.rmtree(self.state_dir / "network" / "keepalived", ignore_errors=True)
        (REGISTRY / self.scope).unlink(missing_ok=True)
        self.applied.clear()
        self.ha_routers.clear()
