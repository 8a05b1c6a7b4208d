"""dnsmasq for one network: static leases from the ports, in the network's DHCP namespace.

The hosts file maps each port's MAC to its fixed IP (a port's IP is what the guest
gets, and nobody else gets a lease: the ranges are `static`); the options file gives
each subnet its router, DNS servers, host routes and MTU, and each port with
`extra_dhcp_opts` its own IPv4 options, tagged by port as Neutron's dnsmasq driver
does. A change to either is a
rewrite and SIGHUP; a change to the command line (the subnets) is a restart.

Metadata on isolated networks (Neutron's DHCP agent with `enable_isolated_metadata`):
the classless static routes (option 121) send 169.254.169.254/32 to the DHCP port on
a subnet no router serves (no router interface holds its gateway IP), where the
driver puts that address and a metadata proxy, and to the gateway on a subnet a
router serves; with `force_metadata`, to the DHCP port on every subnet.

A reload does not forget leases: when a port is deleted, dnsmasq still holds its
address for the old MAC until the lease expires, and refuses it to the next port that
IPAM gives the same address ("no address available"). So leases that no longer match
a port are released first, as Neutron does: with `dhcp_release` (dnsmasq-utils) when
it is installed, otherwise by restarting dnsmasq on a lease file without them.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import signal
from pathlib import Path
from typing import Any

from cumulo.network.dataplane.commands import netns_exec, run, run_daemon, terminate

LEASE_SECONDS = 86400
METADATA_IP = "169.254.169.254"
METADATA_CIDR = f"{METADATA_IP}/32"


def dhcp_subnets(network: dict[str, Any]) -> list[dict[str, Any]]:
    """The IPv4 DHCP-enabled subnets the DHCP port has an address on."""
    served = {a["subnet_id"] for a in (network.get("dhcp") or {}).get("addresses", [])}
    return [
        s
        for s in network["subnets"]
        if s["ip_version"] == 4 and s["enable_dhcp"] and s["id"] in served
    ]


def served_leases(network: dict[str, Any]) -> list[tuple[str, str]]:
    """(mac, ip) of every port address dnsmasq hands out, in a stable order."""
    subnets = [ipaddress.ip_network(s["cidr"]) for s in dhcp_subnets(network)]
    return sorted(
        (lease["mac"], lease["ip"])
        for lease in network["leases"]
        if any(ipaddress.ip_address(lease["ip"]) in net for net in subnets)
    )


def _option_tags(network: dict[str, Any]) -> dict[str, str]:
    """mac -> the dnsmasq tag of a port with extra DHCP options (Neutron's: the port id)."""
    return {
        lease["mac"]: f"port-{lease['port_id']}"
        for lease in network["leases"]
        if lease.get("dhcp_opts")
    }


def hosts_file(network: dict[str, Any]) -> str:
    tags = _option_tags(network)
    lines = [
        f"{mac},{'set:' + tags[mac] + ',' if mac in tags else ''}host-{ip.replace('.', '-')},{ip}"
        for mac, ip in served_leases(network)
    ]
    return "\n".join(lines) + "\n"


def port_options(network: dict[str, Any]) -> list[str]:
    """dnsmasq option lines of the ports' extra_dhcp_opts (IPv4), for served ports only:
    `tag:port-<id>,option:<name>,<value>` (a number is an option code as is)."""
    served = {mac for mac, _ in served_leases(network)}
    lines: dict[str, None] = {}
    for lease in network["leases"]:
        if lease["mac"] not in served:
            continue
        for opt in lease.get("dhcp_opts") or []:
            name = opt["opt_name"]
            code = name if name.isdecimal() else f"option:{name}"
            lines[f"tag:port-{lease['port_id']},{code},{opt['opt_value']}"] = None
    return list(lines)


def stale_leases(lease_file: str, served: set[tuple[str, str]]) -> list[tuple[str, str]]:
    """(mac, ip) of the leases in dnsmasq's lease file that no port has any more.

    Lines are `<expiry> <mac> <ip> <hostname> <client-id>`; the MAC is compared in
    lower case (dnsmasq writes it so, the API may not)."""
    served = {(mac.lower(), ip) for mac, ip in served}
    stale = []
    for line in lease_file.splitlines():
        fields = line.split()
        if len(fields) >= 3 and (fields[1].lower(), fields[2]) not in served:
            stale.append((fields[1], fields[2]))
    return stale


def metadata_nexthops(
    network: dict[str, Any], isolated_metadata: bool, force_metadata: bool
) -> dict[str, str]:
    """subnet id -> where its guests are routed for 169.254.169.254 (Neutron's rules).

    With `force_metadata`: the DHCP port's address on every served subnet. With
    `isolated_metadata`: the DHCP port's on an isolated subnet (no router interface
    holds its gateway IP: `routed` in the desired state), the gateway on a routed one
    (whose router answers 169.254.169.254). Neither: no metadata route at all."""
    dhcp_ips = {a["subnet_id"]: a["ip"] for a in (network.get("dhcp") or {}).get("addresses", [])}
    hops = {}
    for s in dhcp_subnets(network):
        if force_metadata or (isolated_metadata and not s.get("routed")):
            hops[s["id"]] = dhcp_ips[s["id"]]
        elif isolated_metadata and s.get("gateway_ip"):
            hops[s["id"]] = s["gateway_ip"]
    return hops


def opts_file(network: dict[str, Any], metadata_hops: dict[str, str] | None = None) -> str:
    """dnsmasq's options per subnet; `metadata_hops` from `metadata_nexthops`."""
    lines = []
    for i, s in enumerate(dhcp_subnets(network)):
        tag = f"tag:subnet{i}"
        routes = [(r["destination"], r["nexthop"]) for r in s.get("host_routes") or []]
        metadata_via = (metadata_hops or {}).get(s["id"])
        if metadata_via:
            routes.append((METADATA_CIDR, metadata_via))
        if s.get("gateway_ip"):
            lines.append(f"{tag},option:router,{s['gateway_ip']}")
        else:
            lines.append(f"{tag},option:router")
        if s.get("dns_nameservers"):
            lines.append(f"{tag},option:dns-server,{','.join(s['dns_nameservers'])}")
        else:
            lines.append(f"{tag},option:dns-server")
        if routes:
            # RFC 3442: with classless routes a client ignores option 3, so the default
            # route goes in the list too.
            if s.get("gateway_ip"):
                routes.append(("0.0.0.0/0", s["gateway_ip"]))
            flat = ",".join(f"{dest},{hop}" for dest, hop in routes)
            lines.append(f"{tag},option:classless-static-route,{flat}")
        if network.get("mtu"):
            lines.append(f"{tag},option:mtu,{network['mtu']}")
    lines += port_options(network)
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
        # Every DISCOVER/OFFER/REQUEST/ACK, one line each: why a guest got no lease.
        f"--log-facility={files / 'log'}",
    ]
    for i, s in enumerate(dhcp_subnets(network)):
        net = ipaddress.ip_network(s["cidr"])
        args.append(
            f"--dhcp-range=set:subnet{i},{net.network_address},static,{net.netmask},{LEASE_SECONDS}s"
        )
    return netns_exec(namespace, *args)


def dhcp_release_tool() -> str | None:
    """dnsmasq-utils' dhcp_release, when installed."""
    return shutil.which("dhcp_release")


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

    async def ensure(
        self,
        network: dict[str, Any],
        interface: str,
        metadata_hops: dict[str, str] | None = None,
    ) -> None:
        """Running with this network's leases and options (reloaded or restarted as needed)."""
        self.files.mkdir(parents=True, exist_ok=True)
        argv = dnsmasq_argv(network, interface, self.files, self.namespace)
        changed = _write(self.files / "hosts", hosts_file(network))
        changed |= _write(self.files / "opts", opts_file(network, metadata_hops))
        command_changed = _write(self.files / "argv", "\0".join(argv))
        served = set(served_leases(network))
        pid = self.pid
        if pid is not None and not command_changed:
            if not await self._release_stale(interface, served):
                command_changed = True  # no dhcp_release: restart without those leases
        if pid is not None and command_changed:
            await self.stop()
            pid = None
        if pid is None:
            _drop_stale(self.files / "leases", served)
            await run_daemon(*argv)  # dnsmasq daemonizes: it outlives an agent restart
        elif changed:
            os.kill(pid, signal.SIGHUP)

    async def _release_stale(self, interface: str, served: set[tuple[str, str]]) -> bool:
        """Release the leases no port has any more; False when that needs a restart."""
        try:
            stale = stale_leases((self.files / "leases").read_text(), served)
        except OSError:
            return True
        if not stale:
            return True
        tool = dhcp_release_tool()
        if tool is None:
            return False
        for mac, ip in stale:
            await run(*netns_exec(self.namespace, tool, interface, ip, mac))
        return True

    async def stop(self) -> None:
        """SIGTERM, and wait (up to 5 s) until it is gone: it writes its lease file on exit."""
        await terminate(self.pid)
        (self.files / "pid").unlink(missing_ok=True)


def _drop_stale(lease_file: Path, served: set[tuple[str, str]]) -> None:
    """Before dnsmasq starts: keep only the leases that still belong to a port."""
    try:
        text = lease_file.read_text()
    except OSError:
        return
    stale = set(stale_leases(text, served))
    if stale:
        kept = [line for line in text.splitlines() if tuple(line.split()[1:3]) not in stale]
        _write(lease_file, "".join(f"{line}\n" for line in kept))


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
