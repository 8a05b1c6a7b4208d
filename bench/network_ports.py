"""Network port creation: 2,000 ports on one /20 with 16 concurrent clients.

Not a test: it prints ports/s, latency percentiles and whether any IP was handed out
twice. The cloud runs in its own process (`cumulo up --state-dir <tmp>`, SQLite, the
noop data plane driver) exactly as a user starts it.

    .venv/bin/python bench/network_ports.py [--ports 2000] [--clients 16]

With `--driver linuxbridge --driver openvswitch` (root) it measures wiring instead, on
each data plane driver in turn: ports bound to the agent's host, each with a tap
made in the driver's namespace as the compute side makes it (plugged into br-int
through OVSDB on openvswitch); ports wired per second (all ACTIVE) and the time from
a port's create to ACTIVE.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from cumulo.cloud import prepare_state_dir
from cumulo.common.config import load_config, write_config

HOST = "127.0.0.1"
VENV_BIN = Path(sys.executable).parent
TARGET_PORTS_PER_S = 300
ANCHOR = "Anchor: the issue's target (>= 300 ports/s with noop); no Neutron figure measured here."


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


AGENT_HOST = "bench-wiring"


def start_cloud(state_dir: Path, driver: str = "noop") -> tuple[subprocess.Popen, dict]:
    config = prepare_state_dir(state_dir)
    for name in type(config.ports).model_fields:
        setattr(config.ports, name, free_port())
    config.network.driver = driver
    config.network.agent_host = AGENT_HOST
    write_config(state_dir, config)
    proc = subprocess.Popen(
        [str(VENV_BIN / "cumulo"), "up", "--state-dir", str(state_dir)],
        stdout=subprocess.DEVNULL,
        stderr=open(os.environ["BENCH_LOG"], "w")
        if os.environ.get("BENCH_LOG")
        else subprocess.DEVNULL,
    )
    config = load_config(state_dir)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://{HOST}:{config.ports.network}/", timeout=1)
            return proc, {"config": config}
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.terminate()
    raise SystemExit("cumulo up did not start")


def admin_token(config) -> str:
    r = httpx.post(
        f"http://{HOST}:{config.ports.identity}/v3/auth/tokens",
        json={
            "auth": {
                "identity": {
                    "methods": ["password"],
                    "password": {
                        "user": {
                            "name": "admin",
                            "domain": {"id": "default"},
                            "password": config.identity.admin_password,
                        }
                    },
                },
                "scope": {"project": {"name": "admin", "domain": {"id": "default"}}},
            }
        },
    )
    r.raise_for_status()
    return r.headers["X-Subject-Token"]


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process, from /proc (0 where there is no /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def run(base: str, token: str, ports: int, clients: int, pid: int = 0) -> None:
    headers = {"X-Auth-Token": token}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=60) as http:
        project = (await http.get("/v2.0/networks?name=public")).json()["networks"][0]["project_id"]
        await http.put(f"/v2.0/quotas/{project}", json={"quota": {"port": -1}})
        net = (await http.post("/v2.0/networks", json={"network": {"name": "bench"}})).json()
        net_id = net["network"]["id"]
        subnet = {"subnet": {"network_id": net_id, "cidr": "10.128.0.0/20", "ip_version": 4}}
        (await http.post("/v2.0/subnets", json=subnet)).raise_for_status()

        latencies: list[float] = []
        failures: list[str] = []
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(ports):
            queue.put_nowait(i)

        async def client() -> None:
            async with httpx.AsyncClient(base_url=base, headers=headers, timeout=60) as c:
                while not queue.empty():
                    i = queue.get_nowait()
                    started = time.perf_counter()
                    r = await c.post(
                        "/v2.0/ports", json={"port": {"network_id": net_id, "name": f"p{i}"}}
                    )
                    latencies.append(time.perf_counter() - started)
                    if r.status_code != 201:
                        failures.append(f"{r.status_code} {r.text[:200]}")

        started, cpu_before = time.perf_counter(), cpu_seconds(pid)
        await asyncio.gather(*(client() for _ in range(clients)))
        elapsed = time.perf_counter() - started
        server_cpu = cpu_seconds(pid) - cpu_before

        listed = (await http.get(f"/v2.0/ports?network_id={net_id}&fields=fixed_ips")).json()
        ips = [ip["ip_address"] for p in listed["ports"] for ip in p["fixed_ips"]]

    latencies.sort()
    p99 = latencies[int(len(latencies) * 0.99) - 1] if latencies else 0.0
    rate = (ports - len(failures)) / elapsed
    print(f"ports created : {ports - len(failures)} / {ports} ({clients} clients, one /20)")
    print(f"throughput    : {rate:.0f} ports/s  (target >= {TARGET_PORTS_PER_S}, noop driver)")
    print(
        f"latency       : p50 {statistics.median(latencies) * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms"
    )
    print(
        f"server CPU    : {server_cpu / max(ports, 1) * 1000:.2f} ms per port"
        f" ({server_cpu / elapsed:.2f} cores; steadier than ports/s on a shared machine)"
    )
    print(f"duplicate IPs : {len(ips) - len(set(ips))} (of {len(ips)} addresses incl. DHCP port)")
    if failures:
        print(f"failures      : {len(failures)}, first: {failures[0]}")
    print(ANCHOR)


async def wire(base: str, token: str, driver: str, ports: int, clients: int) -> None:
    """Ports bound to the agent's host, a tap each: how fast they go ACTIVE."""
    headers = {"X-Auth-Token": token}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=60) as http:
        project = (await http.get("/v2.0/networks?name=public")).json()["networks"][0]["project_id"]
        await http.put(f"/v2.0/quotas/{project}", json={"quota": {"port": -1}})
        net = (await http.post("/v2.0/networks", json={"network": {"name": "wire"}})).json()
        net_id = net["network"]["id"]
        subnet = {"subnet": {"network_id": net_id, "cidr": "10.129.0.0/20", "ip_version": 4}}
        (await http.post("/v2.0/subnets", json=subnet)).raise_for_status()
        created: dict[str, float] = {}
        active: dict[str, float] = {}
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(ports):
            queue.put_nowait(i)

        async def client() -> None:
            async with httpx.AsyncClient(base_url=base, headers=headers, timeout=60) as c:
                while not queue.empty():
                    i = queue.get_nowait()
                    body = {"network_id": net_id, "name": f"w{i}", "binding:host_id": AGENT_HOST,
                            "device_owner": "compute:nova"}  # fmt: skip
                    started = time.perf_counter()
                    r = await c.post("/v2.0/ports", json={"port": body})
                    r.raise_for_status()
                    port = r.json()["port"]
                    created[port["id"]] = started
                    for _ in range(100):  # until the agent has made the network's bridge
                        try:
                            await plug_tap(port)
                            break
                        except Exception:  # noqa: BLE001 - DriverError: no bridge yet
                            await asyncio.sleep(0.1)

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        while len(active) < ports and time.perf_counter() - started < 300:
            listed = await http.get(f"/v2.0/ports?network_id={net_id}&fields=id&fields=status")
            now = time.perf_counter()
            for p in listed.json()["ports"]:
                if p["id"] in created and p["status"] == "ACTIVE" and p["id"] not in active:
                    active[p["id"]] = now
            await asyncio.sleep(0.05)
        elapsed = max(active.values(), default=started) - started
    waits = sorted(active[p] - created[p] for p in active)
    p99 = waits[int(len(waits) * 0.99) - 1] if waits else 0.0
    p50 = statistics.median(waits) if waits else 0.0
    print(f"{driver:12}: {len(active)}/{ports} ACTIVE, {len(active) / elapsed:.0f} ports wired/s; "
          f"create->ACTIVE p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms")  # fmt: skip


async def plug_tap(port: dict) -> None:
    """The tap as the compute side makes it (cumulo/compute/virt/qemu.py's _plug_tap)."""
    from cumulo.compute.virt.driver import Vif
    from cumulo.compute.virt.qemu import _plug_tap

    details = port["binding:vif_details"]
    await _plug_tap(Vif(port_id=port["id"], mac=port["mac_address"], network_id=port["network_id"],
                        bridge=details.get("bridge_name"), netns=details.get("netns"),
                        ovsdb=details.get("ovsdb")))  # fmt: skip


def teardown(state_dir: Path, driver: str) -> None:
    from cumulo.network.dataplane.linuxbridge import LinuxBridgeDriver
    from cumulo.network.dataplane.openvswitch import OpenvSwitchDriver

    kind = {"linuxbridge": LinuxBridgeDriver, "openvswitch": OpenvSwitchDriver}.get(driver)
    if kind is not None:
        asyncio.run(kind(state_dir).teardown())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ports", type=int, default=None, help="2000; 200 when wiring")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument(
        "--driver", action="append", choices=["linuxbridge", "openvswitch"],
        help="measure wiring on this data plane driver (repeatable; root)",
    )  # fmt: skip
    args = parser.parse_args()
    for driver in args.driver or ["noop"]:
        state_dir = Path(tempfile.mkdtemp(prefix="cumulo-bench-net-"))
        proc, info = start_cloud(state_dir, driver)
        try:
            config = info["config"]
            base = f"http://{HOST}:{config.ports.network}"
            if driver == "noop":
                ports = args.ports or 2000
                asyncio.run(run(base, admin_token(config), ports, args.clients, proc.pid))
            else:
                asyncio.run(
                    wire(base, admin_token(config), driver, args.ports or 200, args.clients)
                )
        finally:
            proc.terminate()
            proc.wait(30)
            teardown(state_dir, driver)
            shutil.rmtree(state_dir, ignore_errors=True)
            os.environ.pop("CUMULO_STATE_DIR", None)
    if args.driver:
        print("Anchor: the issue's target: openvswitch wiring within 20 % of linuxbridge.")


if __name__ == "__main__":
    main()
