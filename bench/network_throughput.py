"""Guest-to-guest TCP throughput on each data plane driver, beside a bare veth pair.

Not a test: two namespaces stand in for guests on one network, wired by the driver
itself (linuxbridge: a Linux bridge and nftables; openvswitch: br-int and its
conntrack flows, the userspace datapath here) from a desired state with a security
group admitting TCP; iperf3 runs between them for a few seconds. The bare veth pair
(one namespace to the other, nothing between) is the limit. Root; Debian iperf3.

    .venv/bin/python bench/network_throughput.py [--seconds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from cumulo.network.dataplane.linuxbridge import LinuxBridgeDriver, bridge_name, tap_name
from cumulo.network.dataplane.openvswitch import OpenvSwitchDriver, plug

ADDRESSES = ("10.77.0.10", "10.77.0.11")
MACS = ("fa:16:3e:77:00:10", "fa:16:3e:77:00:11")


def sh(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


def iperf(server_ns: str, client_ns: str, address: str, seconds: int) -> float:
    """Gbit/s received, iperf3 from client_ns to server_ns."""
    server = subprocess.Popen(
        ["ip", "netns", "exec", server_ns, "iperf3", "-s", "-1", "-B", address],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        for _ in range(50):
            run = subprocess.run(
                ["ip", "netns", "exec", client_ns, "iperf3", "-c", address, "-t", str(seconds),
                 "-J"], capture_output=True, text=True,
            )  # fmt: skip
            result = json.loads(run.stdout or "{}")
            if "end" in result and "sum_received" in result["end"]:
                return result["end"]["sum_received"]["bits_per_second"] / 1e9
            time.sleep(0.1)  # the server not listening yet
        raise SystemExit("iperf3 never connected")
    finally:
        server.kill()
        server.wait()


def guests(tag: str) -> tuple[str, str]:
    names = (f"{tag}a", f"{tag}b")
    for ns in names:
        sh("ip", "netns", "add", ns)
        sh("ip", "-n", ns, "link", "set", "lo", "up")
    return names


def state(ports: list[str]) -> dict:
    net = {"id": str(uuid.uuid4()), "mtu": 1500, "admin_state_up": True, "external": False,
           "subnets": [], "dhcp": None, "leases": []}  # fmt: skip
    rule = {"direction": "ingress", "ethertype": "IPv4", "protocol": "tcp", "port_range_min": 5201,
            "port_range_max": 5201, "remote_prefixes": ["10.77.0.0/24"]}  # fmt: skip
    egress = {"direction": "egress", "ethertype": "IPv4", "protocol": None, "remote_prefixes": None}
    return {
        "networks": [net],
        "routers": [],
        "ports": [
            {"id": pid, "network_id": net["id"], "mac": mac, "allowed_address_pairs": [],
             "addresses": [{"ip": ip, "prefixlen": 24}], "port_security_enabled": True,
             "rules": [rule, egress]}
            for pid, mac, ip in zip(ports, MACS, ADDRESSES, strict=True)
        ],
    }  # fmt: skip


async def wired(kind: type, tag: str, seconds: int) -> float:
    state_dir = Path(tempfile.mkdtemp(prefix="cumulo-bench-tput-"))
    driver = kind(state_dir)
    ports = [str(uuid.uuid4()) for _ in ADDRESSES]
    desired = state(ports)
    names = guests(tag)
    try:
        await driver.apply(desired)
        for ns, pid, address, mac in zip(names, ports, ADDRESSES, MACS, strict=True):
            tap = tap_name(pid)
            sh("ip", "-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", tap,
               "netns", driver.host_ns)  # fmt: skip
            sh("ip", "-n", ns, "link", "set", "eth0", "address", mac, "up")
            sh("ip", "-n", ns, "addr", "add", f"{address}/24", "dev", "eth0")
            sh("ip", "-n", driver.host_ns, "link", "set", tap, "up")
            if isinstance(driver, OpenvSwitchDriver):
                await plug(driver.daemons.remote, "br-int", tap, pid, mac)
            else:
                sh("ip", "-n", driver.host_ns, "link", "set", tap, "master",
                   bridge_name(desired["networks"][0]["id"]))  # fmt: skip
        await driver.apply(desired)
        return await asyncio.to_thread(iperf, names[1], names[0], ADDRESSES[1], seconds)
    finally:
        for ns in names:
            subprocess.run(["ip", "netns", "delete", ns], check=False)
        await driver.teardown()
        shutil.rmtree(state_dir, ignore_errors=True)


def bare(tag: str, seconds: int) -> float:
    names = guests(tag)
    try:
        sh("ip", "-n", names[0], "link", "add", "eth0", "type", "veth", "peer", "name", "eth0",
           "netns", names[1])  # fmt: skip
        for ns, address in zip(names, ADDRESSES, strict=True):
            sh("ip", "-n", ns, "addr", "add", f"{address}/24", "dev", "eth0")
            sh("ip", "-n", ns, "link", "set", "eth0", "up")
        return iperf(names[1], names[0], ADDRESSES[1], seconds)
    finally:
        for ns in names:
            subprocess.run(["ip", "netns", "delete", ns], check=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=5)
    args = parser.parse_args()
    if not shutil.which("iperf3"):
        raise SystemExit("iperf3 is not installed (Debian: iperf3)")
    tag = f"cmlo-tp{uuid.uuid4().hex[:4]}-"
    print(f"bare veth pair : {bare(tag, args.seconds):6.2f} Gbit/s (the limit)")
    for name, kind in (("linuxbridge", LinuxBridgeDriver), ("openvswitch", OpenvSwitchDriver)):
        rate = asyncio.run(wired(kind, tag, args.seconds))
        print(f"{name:15}: {rate:6.2f} Gbit/s (guest to guest, security group on)")


if __name__ == "__main__":
    main()
