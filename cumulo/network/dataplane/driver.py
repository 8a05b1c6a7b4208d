"""The data plane driver interface, and choosing a driver for this host."""

from __future__ import annotations

import abc
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

LOG = logging.getLogger(__name__)

CAP_NET_ADMIN = 12
Wired = Callable[[], Awaitable[None]]


class NetworkDriver(abc.ABC):
    """Converges one host on a desired state (see cumulo.network.dataplane.state)."""

    name = "abstract"
    vif_type = "bridge"  # a bound port's binding:vif_type
    # Neutron's L3 agent_mode: `legacy` agents are never given distributed routers;
    # `dvr_snat` ones host them whole, and route their subnets' east-west traffic where
    # they have ports of them.
    agent_mode = "legacy"

    def configurations(self) -> dict[str, Any]:
        """What the agent reports about this driver (the agents API's configurations)."""
        return {"driver": self.name, "agent_mode": self.agent_mode}

    async def watch(self, changed: Callable[[], Awaitable[None]]) -> None:
        """Run for the agent's life, awaiting `changed()` when the host changed by
        itself (a guest's port plugged): nothing to watch by default."""
        return None

    async def ha_states(self) -> dict[str, str]:
        """The role (active, standby) of each HA router this host runs: what its
        keepalived decided (none by default)."""
        return {}

    @abc.abstractmethod
    async def apply(
        self, state: dict[str, Any], wired: Wired | None = None, generation: int | None = None
    ) -> None:
        """Make the host match `state`: create what is missing, remove what is not wanted.
        `wired`, when given, may be awaited once the guests' ports are wired (L2 and their
        security groups), before DHCP servers and routers: when they may go ACTIVE (as
        Neutron's L2 agent reports them, apart from the DHCP and L3 agents). `generation`
        numbers the states in the order they were read (see `wire`); None: the newest."""

    async def wire(self, state: dict[str, Any], generation: int) -> bool:
        """The fast path for ports, run while an `apply` of an older state may be busy
        with DHCP servers and routers: the state's networks' bridges and its guests'
        ports wired (L2 and their security groups), nothing removed. True when they are
        wired (they may go ACTIVE); False when this driver has no fast path (its ports
        are wired by `apply`). A state older than one already wired changes nothing:
        the newer one's wiring stands, and the next `apply` removes what is gone."""
        return False

    @abc.abstractmethod
    async def teardown(self) -> None:
        """Remove everything this driver built on the host."""

    def vif_details(self, network_id: str) -> dict[str, Any]:
        """A bound port's binding:vif_details: what the compute side plugs its tap into."""
        return vif_binding(self.configurations(), network_id)[1]


def vif_binding(configurations: dict[str, Any], network_id: str) -> tuple[str, dict[str, Any]]:
    """A port's binding:vif_type and binding:vif_details on a host whose agent reports
    `configurations` (its `vif`: the type, the fixed details, and whether each network
    has a bridge of its own), so that an API process on another host can answer them."""
    vif = configurations.get("vif")
    if not vif:
        return "bridge", {"port_filter": True}
    details = dict(vif["details"])
    if vif.get("bridge_per_network"):
        details["bridge_name"] = bridge_name(network_id)
    return vif["type"], details


def bridge_name(network_id: str) -> str:
    """A network's Linux bridge on every host (15 characters: IFNAMSIZ)."""
    return f"cmlo-b{network_id.replace('-', '')[:9]}"


def has_net_admin() -> bool:
    try:
        with open(f"/proc/{os.getpid()}/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> CAP_NET_ADMIN & 1)
    except OSError:
        pass
    return False


def select_driver(name: str, state_dir: Path) -> NetworkDriver:
    """ "linuxbridge", "openvswitch", "noop", or "auto": linuxbridge with CAP_NET_ADMIN
    and the tools."""
    from cumulo.network.dataplane.linuxbridge import LinuxBridgeDriver, tools_available
    from cumulo.network.dataplane.noop import NoopDriver

    if name == "openvswitch":
        from cumulo.network.dataplane import openvswitch

        if not (has_net_admin() and tools_available() and openvswitch.tools_available()):
            raise RuntimeError(
                "network driver 'openvswitch' needs CAP_NET_ADMIN and ip, nft, dnsmasq, "
                "sysctl, ovsdb-server, ovs-vswitchd, ovs-ofctl (Debian: openvswitch-switch)"
            )
        return openvswitch.OpenvSwitchDriver(state_dir)

    if name == "linuxbridge":
        if not (has_net_admin() and tools_available()):
            raise RuntimeError(
                "network driver 'linuxbridge' needs CAP_NET_ADMIN and ip, nft, dnsmasq, sysctl"
            )
        return LinuxBridgeDriver(state_dir)
    if name == "auto" and has_net_admin() and tools_available():
        LOG.info("network data plane: linuxbridge")
        return LinuxBridgeDriver(state_dir)
    return NoopDriver()
