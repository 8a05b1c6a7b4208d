"""Real boots: `POST /servers` to the tiny guest's "ready" line, beside bare QEMU.

Not a test: it prints figures. The cloud runs as a user starts it (`cumulo up
--state-dir <tmp>`) with the QEMU driver (accelerator probed: KVM when it really
works, else TCG) and the linuxbridge data plane; the tiny test guest
(cumulo.testing.guest) is uploaded as kernel + ramdisk + an empty qcow2 root.

Each of the --runs rounds:
1. cumulo: `POST /servers` (demo user, m1.tiny, the `private` network) and the time
   until "cumulo-guest: ready" appears in the guest's console.log (read on the host
   every 10 ms: no API polling delay in the figure);
2. bare QEMU, the physical limit: the server is stopped, then the very command line
   the driver runs (rebuilt from the guest's guest.json with the driver's own
   `command_line`, in the same network namespace, same disks, tap, DHCP lease and
   metadata) is started by hand and timed to its next "ready" line; then killed and
   the server deleted.
cumulo's overhead is (1) - (2); target <= 0.5 s. A first boot before the rounds
fills the host's image cache and is reported apart.

Then --concurrent servers are created at once and all must reach "ready".

With `--image debian-12` the guest is the Debian cloud image (`cumulo image build
debian`, cached), m1.small, and "ready" is its SSH banner answering through a floating
IP from the host (the external network's host leg; port 22 allowed in the default
security group); bare QEMU runs the same argv and is timed to the same banner. Target:
overhead <= 1 s. No concurrent phase with this image.

    .venv/bin/python bench/real_boot.py [--runs 5] [--concurrent 10] [--image tiny|debian-12]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from identity_tokens import free_port, start_cloud  # noqa: E402

from cumulo.cloud import prepare_state_dir  # noqa: E402
from cumulo.common.config import write_config  # noqa: E402
from cumulo.compute.virt import qemu_process as qp  # noqa: E402
from cumulo.testing.guest import build_guest  # noqa: E402

HOST = "real-boot"
READY = b"cumulo-guest: ready after"
TARGET_OVERHEAD = 0.5


def configure(state_dir: Path) -> None:
    config = prepare_state_dir(state_dir)
    for name in type(config.ports).model_fields:
        setattr(config.ports, name, free_port())
    config.identity.bcrypt_rounds = 4
    config.compute.driver = "qemu"
    config.compute.host = HOST
    # 10 one-vcpu guests on 2 cores: Nova's default ratio (4.0) would place only 8.
    config.compute.cpu_allocation_ratio = 8.0
    config.network.driver = "linuxbridge"
    config.network.agent_host = HOST  # the data plane filters the ports bound to its host
    # An external subnet no other cloud on this machine has: the host leg (the path to
    # the floating IP) is made only where the host has no address in it yet.
    third = free_subnet()
    config.network.public_cidr = f"172.31.{third}.0/24"
    config.network.public_gateway = f"172.31.{third}.1"
    write_config(state_dir, config)


def free_subnet() -> int:
    """The third byte of a 172.31.x.0/24 the host has no address or route in."""
    routes = subprocess.run(["ip", "-4", "route", "show", "table", "all"],
                            capture_output=True, text=True).stdout  # fmt: skip
    addresses = subprocess.run(["ip", "-4", "-br", "addr"], capture_output=True, text=True).stdout
    taken = routes + addresses
    for third in random.sample(range(100, 250), 150):
        if f"172.31.{third}." not in taken:
            return third
    raise RuntimeError("no free 172.31.x.0/24 for the external network")


def connect(state_dir: Path, cloud: str):
    from openstack.config.loader import OpenStackConfig
    from openstack.connection import Connection

    config = OpenStackConfig(config_files=[str(state_dir / "clouds.yaml")], load_envvars=False)
    return Connection(config=config.get_one(cloud=cloud))


def upload_tiny_guest(admin, work: Path) -> str:
    guest = build_guest()
    kernel = admin.image.create_image(
        name="tiny-kernel", filename=str(guest.kernel), disk_format="aki",
        container_format="aki", visibility="public",
    )  # fmt: skip
    ramdisk = admin.image.create_image(
        name="tiny-ramdisk", filename=str(guest.initramfs), disk_format="ari",
        container_format="ari", visibility="public",
    )  # fmt: skip
    root = work / "root.qcow2"
    subprocess.run(
        ["qemu-img", "create", "-f", "qcow2", str(root), "16M"], check=True, capture_output=True
    )
    image = admin.image.create_image(
        name="tiny", filename=str(root), disk_format="qcow2", container_format="bare",
        visibility="public", kernel_id=kernel.id, ramdisk_id=ramdisk.id,
        os_command_line=guest.command_line,
    )  # fmt: skip
    return image.id


class Bench:
    def __init__(self, state_dir: Path, demo, image_id: str) -> None:
        self.instances = state_dir / "compute" / HOST / "instances"
        self.demo = demo
        self.image_id = image_id
        self.flavor_id = demo.compute.find_flavor("m1.tiny").id
        self.network_id = demo.network.find_network("private").id
        self.netns: str | None = None  # the data plane's host namespace, seen on a guest

    def create(self, name: str) -> tuple[str, float]:
        """POST /servers; returns the server id and the monotonic time of the request."""
        body = {
            "server": {
                "name": name,
                "imageRef": self.image_id,
                "flavorRef": self.flavor_id,
                "networks": [{"uuid": self.network_id}],
            }
        }
        t0 = time.monotonic()
        r = self.demo.compute.post("/servers", json=body)
        if r.status_code != 202:
            raise RuntimeError(f"POST /servers: {r.status_code} {r.text}")
        return r.json()["server"]["id"], t0

    def console(self, server_id: str) -> bytes:
        try:
            return (self.instances / server_id / "console.log").read_bytes()
        except FileNotFoundError:
            return b""

    def wait_ready(self, server_id: str, count: int, timeout: float = 300) -> float:
        """The monotonic time the console shows its `count`-th ready line."""
        deadline = time.monotonic() + timeout
        next_check = time.monotonic() + 2
        while self.console(server_id).count(READY) < count:
            if time.monotonic() > next_check:
                next_check = time.monotonic() + 2
                status = self.demo.compute.get_server(server_id).status
                if status == "ERROR" or time.monotonic() > deadline:
                    raise RuntimeError(f"{server_id} ({status}) never got ready")
            time.sleep(0.01)
        return time.monotonic()

    def guest_uptime(self, server_id: str, count: int) -> float:
        """The guest's own clock at its `count`-th ready line ("ready after 2.41s")."""
        line = self.console(server_id).split(READY)[count].split(b"\n", 1)[0]
        return float(line.strip().rstrip(b"s"))

    def wait_status(self, server_id: str, status: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while (current := self.demo.compute.get_server(server_id).status) != status:
            if current == "ERROR" or time.monotonic() > deadline:
                raise RuntimeError(f"{server_id} is {current}, not {status}")
            time.sleep(0.2)

    def delete(self, server_ids: Sequence[str]) -> None:
        for sid in server_ids:
            self.demo.compute.delete_server(sid)
        deadline = time.monotonic() + 120
        while any(self.demo.compute.find_server(sid) for sid in server_ids):
            if time.monotonic() > deadline:
                raise RuntimeError(f"servers {server_ids} were not deleted in 120 s")
            time.sleep(0.5)

    def dhcp_story(self, server_id: str, state_dir: Path) -> str:
        """Why a guest has no address: its console marks and what dnsmasq logged for it."""
        marks = [
            line.strip()
            for line in self.console(server_id).decode(errors="replace").splitlines()
            if "cumulo-guest:" in line
        ]
        mac = next((m.split()[-1] for m in marks if " eth0 mac " in m), "?")
        logs = sorted((state_dir / "network" / "dhcp").glob("*/log"))
        seen = [
            line
            for log in logs
            for line in log.read_text(errors="replace").splitlines()
            if mac in line
        ]
        return "\n  ".join([f"no DHCP address: {server_id} mac {mac}", *marks, "dnsmasq:", *seen])

    def bare_boot(self, server_id: str) -> tuple[float, float]:
        """The driver's own command line for this guest, run by hand: seconds to ready,
        and of those the seconds before the guest's kernel started."""
        directory = self.instances / server_id
        if self.demo.compute.get_server(server_id).status != "SHUTOFF":
            self.demo.compute.stop_server(server_id)
            self.wait_status(server_id, "SHUTOFF")
        record = json.loads((directory / "guest.json").read_text())
        machine = dict(record["machine"])
        machine["drives"] = [qp.Drive(**d) for d in machine["drives"]]
        machine["nics"] = [qp.Nic(**n) for n in machine["nics"]]
        config = qp.MachineConfig(**machine)
        self.netns = config.netns
        before = self.console(server_id).count(READY)
        with qp.listening_socket(directory, "qmp.sock") as qmp:
            argv = qp.command_line(config, directory, qmp.fileno())
            if config.netns:
                argv = ["ip", "netns", "exec", config.netns, *argv]
            t0 = time.monotonic()
            subprocess.run(
                argv, check=True, pass_fds=[qmp.fileno()], cwd=directory, start_new_session=True
            )
        ready = self.wait_ready(server_id, before + 1) - t0
        pid = qp.read_pid(directory)
        if pid:
            os.kill(pid, signal.SIGKILL)
        return ready, ready - self.guest_uptime(server_id, before + 1)


class DebianBench(Bench):
    """The Debian cloud image, ready when sshd answers through the floating IP."""

    def __init__(self, state_dir: Path, demo, image_id: str) -> None:
        super().__init__(state_dir, demo, image_id)
        self.flavor_id = demo.compute.find_flavor("m1.small").id
        self.public_id = demo.network.find_network("public").id
        self.addresses: dict[str, str] = {}
        group = demo.network.find_security_group("default", project_id=demo.current_project_id)
        demo.network.create_security_group_rule(
            security_group_id=group.id, direction="ingress", protocol="tcp",
            port_range_min=22, port_range_max=22, remote_ip_prefix="0.0.0.0/0",
        )  # fmt: skip

    def _address(self, server_id: str) -> str | None:
        """The server's floating IP, made once its port exists."""
        if server_id not in self.addresses:
            ports = list(self.demo.network.ports(device_id=server_id))
            if not ports:
                return None
            fip = self.demo.network.create_ip(
                floating_network_id=self.public_id, port_id=ports[0].id
            )
            self.addresses[server_id] = fip.floating_ip_address
        return self.addresses[server_id]

    def wait_ready(self, server_id: str, count: int, timeout: float = 600) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            address = self._address(server_id)
            if address and _ssh_banner(address):
                return time.monotonic()
            time.sleep(0.1)
        raise RuntimeError(f"{server_id}: no SSH banner in {timeout:g} s")

    def guest_uptime(self, server_id: str, count: int) -> float:
        return 0.0  # the Debian guest prints no uptime mark: not split before/after kernel

    def bare_boot(self, server_id: str) -> tuple[float, float]:
        """As Bench's, on a fresh root disk: a second boot of the same disk would skip
        cloud-init's first-boot work (SSH host keys, growing the filesystem)."""
        self.demo.compute.stop_server(server_id)
        self.wait_status(server_id, "SHUTOFF")
        root = self.instances / server_id / "disk"
        info = json.loads(subprocess.run(
            ["qemu-img", "info", "-U", "--output=json", str(root)],
            check=True, capture_output=True, text=True,
        ).stdout)  # fmt: skip
        root.unlink()
        subprocess.run(
            ["qemu-img", "create", "-q", "-f", "qcow2", "-F", info["backing-filename-format"],
             "-b", info["full-backing-filename"], str(root), str(info["virtual-size"])],
            check=True,
        )  # fmt: skip
        return super().bare_boot(server_id)

    def delete(self, server_ids: Sequence[str]) -> None:
        super().delete(server_ids)
        for fip in self.demo.network.ips():
            if fip.floating_ip_address in {self.addresses.pop(s, None) for s in server_ids}:
                self.demo.network.delete_ip(fip)


def _ssh_banner(address: str) -> bool:
    try:
        with socket.create_connection((address, 22), timeout=0.5) as conn:
            conn.settimeout(2)
            return conn.recv(8).startswith(b"SSH-")
    except OSError:
        return False


def register_debian(state_dir: Path) -> str:
    from cumulo.common.config import load_config
    from cumulo.image.cloud_image import build_debian, register

    built = build_debian(Path("~/.cache/cumulo/images").expanduser(), log=lambda _: None)
    return register(built, load_config(state_dir), log=lambda _: None)["disk"]


def seconds(values: Sequence[float]) -> str:
    return " ".join(f"{v:.2f}" for v in values)


def benchmark(args: argparse.Namespace, bench: Bench, state_dir: Path) -> list[str]:
    accel = json.loads((state_dir / "compute" / HOST / "accel.json").read_text())["accel"]
    out = [f"accelerator: {accel}; load average at start: {os.getloadavg()[0]:.1f}"]
    print(out[0], flush=True)

    sid, t0 = bench.create("warm-up")
    first = bench.wait_ready(sid, 1) - t0
    bench.delete([sid])
    out.append(f"first boot (image cache cold): {first:.2f} s")
    print(out[-1], flush=True)

    cumulo, bare, cumulo_pre, bare_pre = [], [], [], []
    for i in range(args.runs):
        sid, t0 = bench.create(f"run-{i}")
        cumulo.append(bench.wait_ready(sid, 1) - t0)
        cumulo_pre.append(cumulo[-1] - bench.guest_uptime(sid, 1))
        bench.wait_status(sid, "ACTIVE")
        total, pre = bench.bare_boot(sid)
        bare.append(total)
        bare_pre.append(pre)
        bench.delete([sid])
        print(
            f"run {i + 1}: cumulo {cumulo[-1]:.2f} s ({cumulo_pre[-1]:.2f} before the kernel), "
            f"bare QEMU {bare[-1]:.2f} s ({bare_pre[-1]:.2f})",
            flush=True,
        )
    overhead = [c - b for c, b in zip(cumulo, bare, strict=True)]
    pre_overhead = [c - b for c, b in zip(cumulo_pre, bare_pre, strict=True)]
    median = statistics.median(overhead)
    target = 1.0 if isinstance(bench, DebianBench) else TARGET_OVERHEAD
    out += [
        f"POST /servers -> ready, {args.runs} runs: {seconds(cumulo)} "
        f"(median {statistics.median(cumulo):.2f} s)",
        f"bare QEMU (same argv) -> ready: {seconds(bare)} (median {statistics.median(bare):.2f} s)",
        f"cumulo overhead: {seconds(overhead)} (median {median:.2f} s; target <= "
        f"{target} s: {'met' if median <= target else 'NOT met'})",
        f"before the guest's kernel (host time to ready - the guest's uptime at ready): "
        f"cumulo {seconds(cumulo_pre)}, bare {seconds(bare_pre)}, "
        f"difference median {statistics.median(pre_overhead):.2f} s",
    ]

    n = args.concurrent
    if not n:
        return out
    t0 = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(n) as pool:
        ids = [sid for sid, _ in pool.map(bench.create, [f"many-{i}" for i in range(n)])]
    failures, times = [], []
    for sid in ids:
        try:
            times.append(bench.wait_ready(sid, 1, timeout=600) - t0)
        except RuntimeError as exc:
            failures.append(str(exc))
    without_ip = [sid for sid in ids if b"eth0 ip " not in bench.console(sid)]
    out.append(
        f"{n} concurrent: {len(times)}/{n} ready ({n - len(without_ip)} with a DHCP address), "
        f"first {min(times, default=0):.1f} s, last {max(times, default=0):.1f} s"
        + (f"; failures: {failures}" if failures else "")
    )
    print(out[-1], flush=True)
    for sid in without_ip:
        print(bench.dhcp_story(sid, state_dir), flush=True)
    bench.delete(ids)
    return out


def remove_namespaces(host_ns: str | None) -> None:
    """The cloud's namespaces (and the dnsmasq in them) outlive it: remove them."""
    if not host_ns:
        return
    prefix = host_ns.removesuffix("host")
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    for ns in (line.split()[0] for line in names.splitlines() if line.startswith(prefix)):
        pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout
        for pid in pids.split():
            os.kill(int(pid), signal.SIGTERM)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--concurrent", type=int, default=10)
    p.add_argument("--image", choices=("tiny", "debian-12"), default="tiny")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("real boots need root (namespaces, taps)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="cumulo-real-boot-") as tmp:
        state_dir, work = Path(tmp) / "state", Path(tmp) / "work"
        work.mkdir()
        configure(state_dir)
        proc = start_cloud(state_dir, work / "cloud.log")
        bench = None
        try:
            admin, demo = connect(state_dir, "cumulo"), connect(state_dir, "cumulo-demo")
            if args.image == "debian-12":
                args.concurrent = 0
                bench = DebianBench(state_dir, demo, register_debian(state_dir))
            else:
                bench = Bench(state_dir, demo, upload_tiny_guest(admin, work))
            lines = benchmark(args, bench, state_dir)
        finally:
            if bench is not None:  # guests outlive the cloud: leave none behind
                bench.delete([s.id for s in bench.demo.compute.servers()])
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
            remove_namespaces(bench.netns if bench else None)
    print("\n".join(["", *lines]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
