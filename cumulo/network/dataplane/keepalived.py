"""keepalived for HA routers (Neutron's agent/linux/keepalived.py and l3/ha_router.py).

Each host an HA router is scheduled to builds the router's namespace whole (its legs
with their MACs), plus an `ha-` leg on the project's HA network with the host's HA port
address, and runs one keepalived (VRRP only) in the namespace. The instances elect one
of them by VRRP over the HA network (multicast, the router's VRRP id); the winner adds
the router's addresses (interfaces, gateway, floating IPs: `virtual_ipaddress_excluded`)
and routes (default and extra routes: `virtual_routes`), the others hold none, so
nothing answers for the router where it is standby. As Neutron's, every instance
starts as BACKUP with `nopreempt` (a host coming back does not take the router back),
and the first VIP is 169.254.0.<VRRP id>/24 on the HA leg: the host that has it is
active, which the agent reads to report the router's `ha_state`.

keepalived daemonizes (it outlives an agent restart, as dnsmasq); its files are under
`<state dir>/network/keepalived/<router id>`; a changed configuration is reloaded with
SIGHUP, a stopped keepalived started again (as Neutron's process monitor respawns it).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
from pathlib import Path
from typing import Any

from cumulo.network.dataplane.commands import addresses, netns_exec, run_daemon, terminate
from cumulo.network.dataplane.dhcp import _write

ACTIVE, STANDBY = "active", "standby"
ADVERT_INT = 2  # seconds (Neutron's ha_vrrp_advert_int)
PRIORITY = 50  # the same on every host (Neutron's): the first one up wins


def tool_available() -> bool:
    return shutil.which("keepalived") is not None


def ha_device(port_id: str) -> str:
    return f"ha-{port_id[:11]}"


def primary_vip(vr_id: int) -> str:
    """The address whose holder is the active host (Neutron's 169.254.0.<vr_id>/24)."""
    return f"169.254.0.{vr_id}/24"


def config(router: dict[str, Any], devices: dict[str, list[str]], gw_dev: str | None) -> str:
    """keepalived.conf of one router: `devices` maps each leg to the addresses it holds
    where the router is active."""
    ha = router["ha"]
    vr_id, ha_dev = ha["vr_id"], ha_device(ha["port"]["port_id"])
    # no_track: a leg whose link is down (being made again) does not fail the router over.
    vips = [
        f"{address} dev {dev} no_track"
        for dev, addrs in sorted(devices.items())
        for address in addrs
    ]
    routes = []
    gateway_ip = (router.get("gateway") or {}).get("gateway_ip")
    if gw_dev and gateway_ip and ":" not in gateway_ip:
        routes.append(f"0.0.0.0/0 via {gateway_ip} dev {gw_dev} no_track")
    routes += [
        f"{r['destination']} via {r['nexthop']} no_track"
        for r in router.get("routes") or []
        if ":" not in r["destination"]
    ]
    lines = [
        "global_defs {",
        f"    router_id cumulo-{router['id'][:8]}",
        "}",
        f"vrrp_instance VR_{vr_id} {{",
        "    state BACKUP",
        f"    interface {ha_dev}",
        f"    virtual_router_id {vr_id}",
        f"    priority {PRIORITY}",
        "    nopreempt",
        f"    advert_int {ADVERT_INT}",
        f"    track_interface {{\n        {ha_dev}\n    }}",
        f"    virtual_ipaddress {{\n        {primary_vip(vr_id)} dev {ha_dev}\n    }}",
    ]
    if vips:
        lines.append("    virtual_ipaddress_excluded {")
        lines += [f"        {vip}" for vip in vips]
        lines.append("    }")
    if routes:
        lines.append("    virtual_routes {")
        lines += [f"        {route}" for route in routes]
        lines.append("    }")
    lines.append("}")
    return "\n".join(lines) + "\n"


class Keepalived:
    """One router's keepalived: files under `files`, process in `namespace`."""

    def __init__(self, files: Path, namespace: str) -> None:
        self.files = files
        self.namespace = namespace

    @property
    def conf(self) -> Path:
        return self.files / "keepalived.conf"

    @property
    def pid(self) -> int | None:
        """keepalived's (parent) pid, when that process is alive and is ours."""
        try:
            pid = int((self.files / "pid").read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except (OSError, ValueError):
            return None
        return pid if str(self.conf) in cmdline else None

    async def ensure(self, text: str) -> None:
        """Running with this configuration (reloaded when it changed)."""
        self.files.mkdir(parents=True, exist_ok=True)
        changed = _write(self.conf, text)
        pid = self.pid
        if pid is None:
            await run_daemon(
                *netns_exec(
                    self.namespace, "keepalived", "--vrrp", "--dont-respawn",
                    f"--use-file={self.conf}", f"--pid={self.files / 'pid'}",
                    f"--vrrp_pid={self.files / 'vrrp.pid'}",
                )
            )  # fmt: skip
            for _ in range(100):  # its pid file comes once it has forked
                if self.pid is not None:
                    break
                await asyncio.sleep(0.02)
        elif changed:
            os.kill(pid, signal.SIGHUP)

    async def stop(self) -> None:
        """SIGTERM (keepalived removes the addresses it added), and wait up to 5 s."""
        await terminate(self.pid)
        shutil.rmtree(self.files, ignore_errors=True)


async def ha_state(namespace: str, router: dict[str, Any]) -> str:
    """active when this host's namespace holds the router's primary VIP."""
    ha = router["ha"]
    held = await addresses(namespace, ha_device(ha["port"]["port_id"]))
    return ACTIVE if primary_vip(ha["vr_id"]) in held else STANDBY
