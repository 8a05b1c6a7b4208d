"""The QEMU run's other compute hosts: a `cumulo compute` and a `cumulo network-agent`
process for each, beside the cloud's own host on this machine, with a state dir of its
own (a copy of the cloud's cumulo.toml naming the host), over the cloud's RabbitMQ bus.

Their data planes are joined to the cloud's host's by VXLAN (a bridge of the run's is
the underlay, each host's tunnel interface a veth on it): a guest reaches its network
wherever it runs, and keeps it when it moves. The other hosts are compute nodes: their
agents' DHCP and L3 halves are disabled (as an admin does, `openstack network agent set
--disable`), so DHCP servers and routers stay on the cloud's own host, the one whose
external network reaches this machine (its host leg: Tempest's SSH to floating IPs).
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from cumulo.testing.cluster import add_underlay, host_state_dir, remove_underlay

if TYPE_CHECKING:
    from cumulo.testing.tempest.accounts import AdminSession
    from cumulo.testing.tempest.cloud import CloudSpec

# The hosts' tunnel addresses: only inside their data planes' namespaces, on the run's
# own bridge, so runs side by side may use the same ones.
UNDERLAY = ipaddress.ip_network("192.168.250.0/24")
# The agent halves a compute node does not run (Neutron's compute nodes run the L2 agent).
NETWORK_NODE_AGENTS = ("DHCP agent", "L3 agent")


@dataclass
class Underlay:
    """The bridge joining the hosts' data planes, and each host's interface on it."""

    bridge: str
    devices: list[str]

    @classmethod
    def of(cls, spec: CloudSpec) -> Underlay:
        tag = spec.name[-4:]
        return cls(f"cmlo-u{tag}", [f"cmlo-u{i}{tag}" for i in range(spec.qemu_hosts)])

    def network(self, index: int) -> dict[str, str]:
        """Host `index`'s [network] tunnel settings."""
        address = UNDERLAY[index + 1]
        return {
            "tunnel_local_ip": f"{address}/{UNDERLAY.prefixlen}",
            "tunnel_device": self.devices[index],
        }

    def add(self) -> None:
        self.remove()  # what a killed run on the same ports left
        add_underlay(self.bridge, self.devices)

    def remove(self) -> None:
        remove_underlay(self.bridge, self.devices)


@dataclass
class ComputeHost:
    """One more QEMU compute host: its name, state dir and processes."""

    name: str
    state_dir: Path
    procs: list[subprocess.Popen] = field(default_factory=list)

    def start(self, cumulo: Path, worktree: Path, env: dict, log: Path) -> None:
        with log.open("ab") as out:
            for role in ("compute", "network-agent"):
                self.procs.append(
                    subprocess.Popen(
                        [str(cumulo), "-v", role, "--state-dir", str(self.state_dir)],
                        stdout=out, stderr=subprocess.STDOUT, cwd=worktree, env=env,
                        start_new_session=True,
                    )
                )  # fmt: skip

    def exited(self) -> bool:
        return any(proc.poll() is not None for proc in self.procs)

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def teardown(self) -> None:
        """Its data plane's namespaces and bridges (its guests are deleted before)."""
        from cumulo.network.dataplane.linuxbridge import LinuxBridgeDriver

        asyncio.run(LinuxBridgeDriver(self.state_dir).teardown())


def start_hosts(spec: CloudSpec, underlay: Underlay, env: dict, log_dir: Path) -> list[ComputeHost]:
    """Host 2 and on: their state dirs made from the cloud's, their processes started."""
    hosts = []
    for index in range(1, spec.qemu_hosts):
        name = f"{spec.name}-{index + 1}"
        state_dir = host_state_dir(
            spec.state_dir,
            spec.state_dir.with_name(f"{spec.state_dir.name}-{name}"),
            compute={"host": name},
            # Its external bridges (none: no router here) stay off the machine's namespace.
            network={"agent_host": name, "host_leg": False, **underlay.network(index)},
        )
        host = ComputeHost(name, state_dir)
        hosts.append(host)
        host.start(spec.worktree / ".venv" / "bin" / "cumulo", spec.worktree, env,
                   log_dir / f"{name}.log")  # fmt: skip
    return hosts


def join(session: AdminSession, hosts: list[ComputeHost], deadline: float) -> None:
    """Wait until every host's compute service is up and its network agent alive, then
    disable the agent's DHCP and L3 halves (before any network or router is made)."""
    for host in hosts:
        while True:
            if host.exited():
                raise SystemExit(f"compute host {host.name} exited; see its log")
            services = session.call(
                "GET", "compute", "/os-services", params={"binary": "nova-compute"}
            )["services"]
            up = any(s["host"] == host.name and s["state"] == "up" for s in services)
            agents = session.call("GET", "network", "/v2.0/agents", params={"host": host.name})
            alive = {a["agent_type"]: a for a in agents["agents"] if a["alive"]}
            if up and all(kind in alive for kind in NETWORK_NODE_AGENTS):
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"compute host {host.name} did not join the cloud")
            time.sleep(1)
        for kind in NETWORK_NODE_AGENTS:
            session.call(
                "PUT", "network", f"/v2.0/agents/{alive[kind]['id']}",
                json={"agent": {"admin_state_up": False}},
            )  # fmt: skip


def clean_env() -> dict:
    """The worktree's own interpreter and code, never this process's PYTHONPATH."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
