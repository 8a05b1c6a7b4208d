"""dnsmasq for one network: static leases from the ports, in the network's DHCP namespace.

The hosts file maps each port's MAC to its fixed IP (a port's IP is what the guest
gets, and nobody else gets a lease: the ranges are `static`); the options file gives
each subnet its router, DNS servers, host routes and MTU. A change to either is a
rewrite and SIGHUP; a change to the command line (the subnets) is a restart.
"""

from __future__ import annotations

import ipaddress
import os
import signal
from pathlib import Path
from typing import Any

from cumulo.network.dataplane.commands import netns_exec, run_daemon

LEASE_SECONDS = 86400


def dhcp_subnets(network: dict[str, Any]) -> list[dict[str, Any]]:
    """The IPv4 DHCP-enabled subnets the DHCP port has an address on."""
    served = {a["subnet_id"] for a in (network.get("dhcp") or {}).get("addresses", [])}
    return [
        s
        for s in network["subnets"]
        if s["ip_version"] == 4 and s["enable_dhcp"] and s["id"] in served
    ]


def hosts_file(network: dict[str, Any]) -> str:
    subnets = [ipaddress.ip_network(s["cidr"]) for s in dhcp_subnets(network)]
    lines = []
    for lease in sorted(network["leases"], key=lambda x: (x["mac"], x["ip"])):
        address = ipaddress.ip_address(lease["ip"])
        if any(address in net for net in subnets):
            name = "host-" + lease["ip"].replace(".", "-")
            lines.append(f"{lease['mac']},{name},{lease['ip']}")
    return "\n".join(lines) + "\n"


def opts_file(network: dict[str, Any]) -> str:
    lines = []
    for i, s in enumerate(dhcp_subnets(network)):
        tag = f"tag:subnet{i}"
        routes = [(r["destination"], r["nexthop"]) for r in s.get("host_routes") or []]
        if s.get("gateway_ip"):
            lines.append(f"{tag},option:router,{s['gateway_ip']}")
            routes.append(("0.0.0.0/0", s["gateway_ip"]))
        else:
            lines.append(f"{tag},option:router")
        if s.get("dns_nameservers"):
            lines.append(f"{tag},option:dns-server,{','.join(s['dns_nameservers'])}")
        else:
            lines.append(f"{tag},option:dns-server")
        if s.get("host_routes"):
            # RFC 3442: with classless routes a client ignores option 3, so the default
            # route goes in the list too.
            flat = ",".join(f"{dest},{hop}" for dest, hop in routes)
            lines.append(f"{tag},option:classless-static-route,{flat}")
        if network.get("mtu"):
            lines.append(f"{tag},option:mtu,{network['mtu']}")
    return "\n".join(lines) + "\n"


def dnsmasq_argv(
    network: dict[str, Any], interface: str, files: Path, namespace: str
) -> tuple[str, ...]:
    args = [
        "dnsmasq",
        "--conf-file=/dev/null",
        "--no-hosts",
        "--no-resolv",
        "--port=0",  # DHCP only: guests get the subnet's DNS servers
        "--bind-interfaces",
        f"--interface={interface}",
        "--except-interface=lo",
        "--dhcp-authoritative",
        # Root inside the namespace: it re-reads the state dir's files on SIGHUP.
        "--user=root",
        "--group=root",
        f"--pid-file={files / 'pid'}",
        f"--dhcp-hostsfile={files / 'hosts'}",
        f"--dhcp-optsfile={files / 'opts'}",
        f"--dhcp-leasefile={files / 'leases'}",
    ]
    for i, s in enumerate(dhcp_subnets(network)):
        net = ipaddress.ip_network(s["cidr"])
        args.append(
            f"--dhcp-range=set:subnet{i},{net.network_address},static,{net.netmask},{LEASE_SECONDS}s"
        )
    return netns_exec(namespace, *args)


def _pid(files: Path) -> int | None:
    """dnsmasq's pid, when that process is alive and is ours (its pid file is ours)."""
    try:
        pid = int((files / "pid").read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except (OSError, ValueError):
        return None
    return pid if str(files / "pid") in cmdline else None


class Dnsmasq:
    """One network's dnsmasq: files under `files`, process in `namespace`."""

    def __init__(self, files: Path, namespace: str) -> None:
        self.files = files
        self.namespace = namespace

    @property
    def pid(self) -> int | None:
        return _pid(self.files)

    async def ensure(self, network: dict[str, Any], interface: str) -> None:
        """Running with this network's leases and options (reloaded or restarted as needed)."""
        self.files.mkdir(parents=True, exist_ok=True)
        argv = dnsmasq_argv(network, interface, self.files, self.namespace)
        changed = _write(self.files / "hosts", hosts_file(network))
        changed |= _write(self.files / "opts", opts_file(network))
        command_changed = _write(self.files / "argv", "\0".join(argv))
        pid = self.pid
        if pid is not None and command_changed:
            await self.stop()
            pid = None
        if pid is None:
            await run_daemon(*argv)  # dnsmasq daemonizes: it outlives an agent restart
        elif changed:
            os.kill(pid, signal.SIGHUP)

    async def stop(self) -> None:
        pid = self.pid
        if pid is not None:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        (self.files / "pid").unlink(missing_ok=True)


def _write(path: Path, text: str) -> bool:
    """Write text unless the file already holds it; True when it changed."""
    try:
        if path.read_text() == text:
            return False
    except OSError:
        pass
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return True
