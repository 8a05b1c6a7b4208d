"""Real guests through the real `openstack` CLI: power actions change the QEMU process,
delete leaves nothing behind, two guests ping each other only when their security group
lets ICMP in, a volume appears in and leaves the guest, a volume-backed guest's snapshot
boots another, and the guests outlive a restart of the compute agent.

One cloud and two guests (vm-a, vm-b) are shared by the whole module: a TCG boot costs
seconds. The tests run in file order and each checks the state it starts from.

Each guest's user data pings the other one every second and prints the outcome on the
serial console (`cumulo-guest: ping <ip> ok seq=N`), which is how the tests see the
network from inside, and that the guest keeps going.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cumulo.compute.virt import qemu_process as qp
from tests.cloudrunner import CloudRunner, configure_guest_state_dir, stop_guest_cloud
from tests.conftest import require_real_guests, skip_or_fail

pytestmark = pytest.mark.e2e

HOST = "e2e-guests"
DEMO = {"cloud": "cumulo-demo"}
MARK = "cumulo-guest:"
BOOTED = f"{MARK} booted"
READY = f"{MARK} ready after"

# Pings the peer once a second forever (in the background: the init goes on to `ready`).
PING_USER_DATA = """#!/bin/sh
(
    n=0
    while true; do
        n=$((n + 1))
        if ping -c 1 -W 1 {peer} >/dev/null 2>&1; then r=ok; else r=unreachable; fi
        echo "cumulo-guest: ping {peer} $r seq=$n"
        sleep 1
    done
) </dev/null >/dev/console 2>&1 &
"""


class Guests:
    """The module's cloud and its two guests, with what the tests look at on the host."""

    def __init__(self, runner: CloudRunner, work: Path) -> None:
        self.runner = runner
        self.work = work
        self.ids: dict[str, str] = {}
        self.ips: dict[str, str] = {}
        self.group = ""

    def os(self, *args: str, **kw: Any) -> Any:
        return self.runner.openstack(*args, **{**DEMO, **kw})

    # -- what the host sees -----------------------------------------------------------

    def directory(self, name: str) -> Path:
        return self.runner.state_dir / "compute" / HOST / "instances" / self.ids[name]

    def machine(self, name: str) -> dict[str, Any]:
        return json.loads((self.directory(name) / "guest.json").read_text())["machine"]

    def pid(self, name: str) -> int | None:
        pid = qp.read_pid(self.directory(name))
        return pid if qp.process_alive(pid, self.ids[name]) else None

    def qmp_status(self, name: str) -> str:
        return qmp(self.directory(name), "query-status")["status"]

    def console(self, name: str) -> str:
        return self.os("console", "log", "show", name)

    def status(self, name: str) -> str:
        return self.os("server", "show", name, "-f", "json")["status"]

    # -- waiting ------------------------------------------------------------------------

    def wait_status(self, name: str, status: str, timeout: float = 90) -> None:
        wait_for(lambda: self.status(name) == status, timeout, f"{name} never became {status}")

    def wait_console(self, name: str, check: Callable[[str], bool], what: str, timeout=90) -> str:
        found: list[str] = []

        def seen() -> bool:
            found[:] = [self.console(name)]
            return check(found[0])

        wait_for(seen, timeout, lambda: f"{name}: {what}; console:\n{found[0][-3000:]}")
        return found[0]

    def wait_booted(self, name: str, boots: int, timeout: float = 90) -> str:
        """Until the console shows the `boots`-th boot of the guest got to `ready`."""
        return self.wait_console(
            name,
            lambda log: log.count(BOOTED) >= boots and READY in log.rsplit(BOOTED, 1)[1],
            f"boot #{boots} never got ready",
            timeout,
        )


def wait_for(check: Callable[[], bool], timeout: float, message: Any) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(message() if callable(message) else message)
        time.sleep(1)


def qmp(directory: Path, command: str) -> dict[str, Any]:
    """One QMP command on the guest's monitor, the way an operator would check it."""
    path, fd = qp.short_unix_path(directory, "qmp.sock")
    try:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(10)
            sock.connect(path)
            stream = sock.makefile("rwb")
            replies = iter(lambda: json.loads(stream.readline()), None)
            next(replies)  # the greeting
            for request in ({"execute": "qmp_capabilities"}, {"execute": command}):
                stream.write(json.dumps(request).encode() + b"\n")
                stream.flush()
                reply = next(r for r in replies if "event" not in r)
            return reply["return"]
    finally:
        os.close(fd)


def pings(log: str, peer: str) -> list[tuple[str, int]]:
    return [(r, int(n)) for r, n in re.findall(rf"ping {re.escape(peer)} (\w+) seq=(\d+)", log)]


def links(netns: str) -> str:
    return subprocess.run(
        ["ip", "-n", netns, "-o", "link"], capture_output=True, text=True, check=True
    ).stdout


def register_tiny_images(runner: CloudRunner, work: Path) -> None:
    """The tiny guest as Glance images: kernel (aki), ramdisk (ari) and an empty root."""
    from cumulo.testing.guest import build_guest

    try:
        guest = build_guest()
    except Exception as exc:  # noqa: BLE001 - no kernel package to be had here
        skip_or_fail(f"the tiny test guest could not be built: {exc}")
    ids = {}
    for name, path, fmt in (
        ("tiny-kernel", guest.kernel, "aki"),
        ("tiny-ramdisk", guest.initramfs, "ari"),
    ):
        ids[fmt] = runner.openstack(
            "image", "create", name, "--file", str(path), "--disk-format", fmt,
            "--container-format", fmt, "--public", "-f", "json",
        )["id"]  # fmt: skip
    root = work / "root.qcow2"
    subprocess.run(["qemu-img", "create", "-f", "qcow2", str(root), "16M"], check=True)
    runner.openstack(
        "image", "create", "tiny", "--file", str(root), "--disk-format", "qcow2", "--public",
        "--property", f"kernel_id={ids['aki']}", "--property", f"ramdisk_id={ids['ari']}",
        "--property", f"os_command_line={guest.command_line}",
    )  # fmt: skip


@contextlib.contextmanager
def guest_pair(tmp_path_factory, host: str = HOST, network_driver: str = "linuxbridge"):
    """A cloud on `network_driver` with the two guests, in a security group of their own
    without an ICMP rule, pinging each other."""
    require_real_guests()
    state = tmp_path_factory.mktemp("qemu-guests")
    work = tmp_path_factory.mktemp("qemu-guests-work")
    configure_guest_state_dir(state, host, network_driver)
    runner = CloudRunner(state).start(timeout=120)
    g = Guests(runner, work)
    try:
        register_tiny_images(runner, work)
        # A group of our own: the default group lets its members talk to each other.
        g.group = g.os("security", "group", "create", f"no-icmp-{uuid.uuid4().hex[:6]}",
                       "-f", "json")["id"]  # fmt: skip
        ports = {}
        for name in ("vm-a", "vm-b"):
            port = g.os("port", "create", "--network", "private", "--security-group", g.group,
                        f"{name}-port", "-f", "json")  # fmt: skip
            ports[name] = port["id"]
            g.ips[name] = port["fixed_ips"][0]["ip_address"]
        for name, peer in (("vm-a", "vm-b"), ("vm-b", "vm-a")):
            user_data = work / f"{name}.sh"
            user_data.write_text(PING_USER_DATA.format(peer=g.ips[peer]))
            server = g.os("server", "create", "--image", "tiny", "--flavor", "m1.tiny",
                          "--port", ports[name], "--user-data", str(user_data), name,
                          "-f", "json")  # fmt: skip
            g.ids[name] = server["id"]
        for name in g.ids:
            g.wait_status(name, "ACTIVE")
            g.wait_booted(name, 1)
        yield g
    finally:
        stop_guest_cloud(runner)


@pytest.fixture(scope="module")
def guests(tmp_path_factory):
    with guest_pair(tmp_path_factory) as g:
        yield g


def icmp_only_once_allowed(guests: Guests) -> None:
    """The guests' pings go unanswered until their group gets an ICMP rule, then pass."""
    a, b = guests.ips["vm-a"], guests.ips["vm-b"]
    # A few attempts each way, none answered: the group has no ICMP rule.
    guests.wait_console("vm-a", lambda log: len(pings(log, b)) >= 3, "vm-a never pinged")
    log_b = guests.wait_console("vm-b", lambda log: len(pings(log, a)) >= 3, "vm-b never pinged")
    log_a = guests.console("vm-a")
    assert {r for r, _ in pings(log_a, b)} == {"unreachable"}, log_a
    assert {r for r, _ in pings(log_b, a)} == {"unreachable"}, log_b

    guests.os("security", "group", "rule", "create", "--ingress", "--protocol", "icmp",
              guests.group)  # fmt: skip

    for name, peer in (("vm-a", b), ("vm-b", a)):
        guests.wait_console(
            name, lambda log, p=peer: pings(log, p)[-1][0] == "ok", f"no ping to {peer}", 30
        )


def test_guests_cannot_ping_without_an_icmp_rule_and_can_with_one(guests):
    icmp_only_once_allowed(guests)


def test_a_volume_appears_in_the_guest_and_leaves_it(guests):
    def disks(log: str) -> set[str]:
        return set(re.findall(rf"{MARK} disks (.*)", log)[-1].split())

    before = disks(guests.console("vm-a"))
    volume = guests.os("volume", "create", "--size", "1", f"vol-{uuid.uuid4().hex[:6]}",
                       "-f", "json")["id"]  # fmt: skip
    wait_for(
        lambda: guests.os("volume", "show", volume, "-f", "json")["status"] == "available",
        60,
        "the volume never became available",
    )
    guests.os("server", "add", "volume", "vm-a", volume)
    log = guests.wait_console("vm-a", lambda log: len(disks(log) - before) == 1, "no new disk", 30)
    [new] = disks(log) - before
    assert new.startswith("vd"), log  # virtio
    assert guests.os("volume", "show", volume, "-f", "json")["status"] == "in-use"

    guests.os("server", "remove", "volume", "vm-a", volume)
    guests.wait_console("vm-a", lambda log: disks(log) == before, f"{new} never left")
    wait_for(
        lambda: guests.os("volume", "show", volume, "-f", "json")["status"] == "available",
        60,
        "the volume never came back available",
    )
    assert not json.loads((guests.directory("vm-a") / "guest.json").read_text())["volumes"]
    guests.os("volume", "delete", volume)


def test_an_encrypted_volume_appears_in_the_guest(guests):
    """A volume of a LUKS type, made by Block Storage (its key in the Key Manager), opened
    by the guest's QEMU with that key: the guest sees a plain disk; the host keeps the
    passphrase only in the guest's 0600 secrets file, which forgets it on detach."""

    def disks(log: str) -> set[str]:
        return set(re.findall(rf"{MARK} disks (.*)", log)[-1].split())

    vtype = f"luks-{uuid.uuid4().hex[:6]}"
    guests.os("volume", "type", "create", vtype, "--encryption-provider", "luks",
              "--encryption-cipher", "aes-xts-plain64", "--encryption-key-size", "256",
              "--encryption-control-location", "front-end", cloud="cumulo")  # fmt: skip
    before = disks(guests.console("vm-a"))
    volume = guests.os("volume", "create", "--size", "1", "--type", vtype,
                       f"enc-{uuid.uuid4().hex[:6]}", "-f", "json")["id"]  # fmt: skip
    wait_for(
        lambda: guests.os("volume", "show", volume, "-f", "json")["status"] == "available",
        60,
        "the volume never became available",
    )
    guests.os("server", "add", "volume", "vm-a", volume)
    log = guests.wait_console("vm-a", lambda log: len(disks(log) - before) == 1, "no new disk", 60)
    [new] = disks(log) - before
    assert new.startswith("vd"), log
    assert guests.os("volume", "show", volume, "-f", "json")["status"] == "in-use"
    record = json.loads((guests.directory("vm-a") / "guest.json").read_text())
    drive = record["volumes"][volume]
    assert drive["format"] == "luks", drive
    secrets_file = guests.directory("vm-a") / "secrets.json"
    assert secrets_file.stat().st_mode & 0o777 == 0o600
    assert len(json.loads(secrets_file.read_text())) == 1

    guests.os("server", "remove", "volume", "vm-a", volume)
    guests.wait_console("vm-a", lambda log: disks(log) == before, f"{new} never left")
    wait_for(
        lambda: guests.os("volume", "show", volume, "-f", "json")["status"] == "available",
        60,
        "the volume never came back available",
    )
    assert not secrets_file.exists()  # its only passphrase forgotten
    guests.os("volume", "delete", volume)
    wait_for(
        lambda: volume not in {v["ID"] for v in guests.os("volume", "list", "-f", "json")},
        60,
        "the volume was never deleted",
    )
    guests.os("volume", "type", "delete", vtype, cloud="cumulo")


def test_a_volume_backed_guest_is_snapshotted_and_booted_from_its_snapshot(guests):
    """Nova's snapshot of a volume-backed server (no local disk for the host to copy):
    a Block Storage snapshot named by an empty image; a guest booted from that image
    runs on a new volume made from the snapshot."""
    tag = uuid.uuid4().hex[:6]
    boot = ("--flavor", "m1.tiny", "--network", "private", "--wait", "-f", "json")
    source = guests.os("server", "create", "--image", "tiny", "--boot-from-volume", "1",
                       f"vb-{tag}", *boot)  # fmt: skip
    snap = guests.os("server", "image", "create", "--name", f"vb-snap-{tag}", "--wait",
                     source["id"], "-f", "json")  # fmt: skip
    image = guests.os("image", "show", snap["id"], "-f", "json")
    assert (image["status"], image["size"]) == ("active", 0)
    [mapping] = json.loads(image["properties"]["block_device_mapping"])
    copy = guests.os("server", "create", "--image", snap["id"], f"vb-copy-{tag}", *boot)
    assert copy["status"] == "ACTIVE"
    [attached] = copy["volumes_attached"]
    volume = guests.os("volume", "show", attached["id"], "-f", "json")
    assert volume["snapshot_id"] == mapping["snapshot_id"]
    directory = guests.runner.state_dir / "compute" / HOST / "instances" / copy["id"]
    assert qp.process_alive(qp.read_pid(directory), copy["id"])  # a QEMU guest runs it
    guests.os("server", "delete", "--wait", copy["id"], source["id"])
    guests.os("image", "delete", snap["id"])


def test_power_actions_change_the_qemu_process(guests):
    pid = guests.pid("vm-a")
    assert pid and guests.qmp_status("vm-a") == "running"

    guests.os("server", "pause", "vm-a")
    guests.wait_status("vm-a", "PAUSED")
    assert guests.qmp_status("vm-a") == "paused" and guests.pid("vm-a") == pid
    guests.os("server", "unpause", "vm-a")
    guests.wait_status("vm-a", "ACTIVE")
    assert guests.qmp_status("vm-a") == "running"

    boots = guests.console("vm-a").count(BOOTED)
    guests.os("server", "stop", "vm-a")
    guests.wait_status("vm-a", "SHUTOFF")
    assert guests.pid("vm-a") is None and not qp.process_alive(pid, guests.ids["vm-a"])
    assert "power button, powering off" in guests.console("vm-a")  # a clean ACPI shutdown

    guests.os("server", "start", "vm-a")
    guests.wait_status("vm-a", "ACTIVE")
    new_pid = guests.pid("vm-a")
    assert new_pid and new_pid != pid and guests.qmp_status("vm-a") == "running"
    guests.wait_booted("vm-a", boots + 1)

    guests.os("server", "reboot", "--hard", "vm-a")
    guests.wait_status("vm-a", "ACTIVE")
    # A reset of the same QEMU: same process, a new boot on the console.
    guests.wait_booted("vm-a", boots + 2)
    assert guests.pid("vm-a") == new_pid


def test_guests_keep_running_and_active_across_a_restart_of_the_compute_agent(guests):
    pids = {name: guests.pid(name) for name in guests.ids}
    assert all(pids.values())
    peer = guests.ips["vm-a"]
    last_seq = pings(guests.console("vm-b"), peer)[-1][1]

    guests.runner.stop()  # the agent runs inside the all-in-one cloud: stop all of it
    guests.runner.start(timeout=120)

    for name, pid in pids.items():
        assert guests.pid(name) == pid, f"{name} has a new QEMU"
        assert guests.status(name) == "ACTIVE"
    # vm-b goes on pinging vm-a: its console (and the network between them) kept going.
    guests.wait_console(
        "vm-b",
        lambda log: pings(log, peer)[-1][1] > last_seq + 2 and pings(log, peer)[-1][0] == "ok",
        "vm-b stopped pinging vm-a",
        30,
    )
    # The new agent speaks to the same QEMUs over QMP.
    guests.os("server", "pause", "vm-b")
    guests.wait_status("vm-b", "PAUSED")
    assert guests.qmp_status("vm-b") == "paused"
    guests.os("server", "unpause", "vm-b")
    guests.wait_status("vm-b", "ACTIVE")
    assert guests.qmp_status("vm-b") == "running" and guests.pid("vm-b") == pids["vm-b"]


def test_delete_leaves_no_qemu_tap_or_disk(guests):
    left = {}
    for name in list(guests.ids):
        machine = guests.machine(name)
        left[name] = (guests.pid(name), machine["netns"], machine["nics"], guests.directory(name))
        assert left[name][0] and (left[name][3] / "disk").exists()
        assert all(nic["tap"] in links(machine["netns"]) for nic in machine["nics"])

    for name in left:
        guests.os("server", "delete", "--wait", name)

    for name, (pid, netns, nics, directory) in left.items():
        assert not Path(f"/proc/{pid}").exists() or not qp.process_alive(pid, guests.ids[name])
        with contextlib.suppress(subprocess.CalledProcessError):  # the namespace may be gone
            assert not any(nic["tap"] in links(netns) for nic in nics)
        assert not directory.exists()
