"""A real guest through the whole cloud: `openstack server create` boots the tiny QEMU
guest on a linuxbridge network; it gets the IP Neutron gave its port over DHCP, reads its
hostname and key from the config drive, runs its user data, lets the key pair's key in
over SSH and finds its NIC's device role tag in meta_data.json at the address it sees."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import uuid
from urllib.parse import parse_qs, urlsplit

import pytest
from websockets.sync.client import connect

from tests.cloudrunner import CloudRunner, configure_guest_state_dir, stop_guest_cloud
from tests.conftest import require_real_guests, skip_or_fail

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def cloud_with_guests(tmp_path_factory):
    require_real_guests()
    from cumulo.testing.guest import build_guest

    try:
        guest = build_guest()
    except Exception as exc:  # noqa: BLE001 - no kernel package to be had here
        skip_or_fail(f"the tiny test guest could not be built: {exc}")
    state = tmp_path_factory.mktemp("qemu-cloud")
    configure_guest_state_dir(state, "e2e-compute")
    runner = CloudRunner(state).start(timeout=120)
    runner.guest = guest
    try:
        yield runner
    finally:
        stop_guest_cloud(runner)


def test_server_create_boots_a_guest_that_gets_its_ip_and_its_data(cloud_with_guests, tmp_path):
    cloud = cloud_with_guests
    kernel = cloud.openstack(
        "image",
        "create",
        "tiny-kernel",
        "--file",
        str(cloud.guest.kernel),
        "--disk-format",
        "aki",
        "--container-format",
        "aki",
        "--public",
        "-f",
        "json",
    )
    ramdisk = cloud.openstack(
        "image",
        "create",
        "tiny-ramdisk",
        "--file",
        str(cloud.guest.initramfs),
        "--disk-format",
        "ari",
        "--container-format",
        "ari",
        "--public",
        "-f",
        "json",
    )
    root = tmp_path / "root.qcow2"
    subprocess.run(
        ["qemu-img", "create", "-f", "qcow2", str(root), "16M"], check=True, capture_output=True
    )
    cloud.openstack(
        "image",
        "create",
        "tiny",
        "--file",
        str(root),
        "--disk-format",
        "qcow2",
        "--public",
        "--property",
        f"kernel_id={kernel['id']}",
        "--property",
        f"ramdisk_id={ramdisk['id']}",
        "--property",
        "os_command_line=console=ttyS0 panic=-1 quiet",
    )
    if shutil.which("ssh-keygen") is None or shutil.which("ssh") is None:
        skip_or_fail("openssh-client is needed to log in to the guest")
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "e2e", "-f", str(tmp_path / "k")],
        check=True,
    )
    key = (tmp_path / "k.pub").read_text().strip()
    marker = f"hello-{uuid.uuid4().hex[:6]}"
    (tmp_path / "ud.sh").write_text(f"#!/bin/sh\necho {marker}\n")
    demo = {"cloud": "cumulo-demo"}
    cloud.openstack("keypair", "create", "--public-key", str(tmp_path / "k.pub"), "k", **demo)
    # SSH in from the network's DHCP namespace, which is on the guest's subnet.
    cloud.openstack("security group", "rule", "create", "--protocol", "tcp", "--dst-port",
                    "22", "--remote-ip", "0.0.0.0/0", "default", **demo)  # fmt: skip
    server = cloud.openstack(
        "--os-compute-api-version",
        "2.52",  # a tag on a --nic: 2.43 and later (the API takes networks[].tag from 2.42)
        "server",
        "create",
        "--image",
        "tiny",
        "--flavor",
        "m1.tiny",
        "--nic",
        "net-id=private,tag=uplink",
        "--user-data",
        str(tmp_path / "ud.sh"),
        "--key-name",
        "k",
        "--wait",
        "vm1",
        "-f",
        "json",
        **demo,
    )
    assert server["status"] == "ACTIVE"
    [port_ip] = server["addresses"]["private"]

    deadline = time.monotonic() + 90
    log = ""
    # sshd starts in the background (its host key is made at boot): it may come after ready.
    while "cumulo-guest: ready" not in log or "cumulo-guest: sshd" not in log:
        assert time.monotonic() < deadline, f"the guest never got ready:\n{log}"
        time.sleep(1)
        log = cloud.openstack("console", "log", "show", "vm1", **demo)
    assert re.search(rf"eth0 ip {re.escape(port_ip)}/\d+", log), log
    assert "config-drive hostname=vm1" in log
    assert f"config-drive key k {key}" in log
    assert marker in log and "user-data exit=0" in log
    assert "sshd started keys=1" in log

    # The key pair's private key logs in as root; what Tempest runs there works.
    from cumulo.network.dataplane.linuxbridge import LinuxBridgeDriver

    network = cloud.openstack("network", "show", "private", "-f", "json", **demo)

    def in_guest(command: str) -> str:
        ssh = subprocess.run(
            ["ip", "netns", "exec", LinuxBridgeDriver(cloud.state_dir).dhcp_ns(network["id"]),
             "ssh", "-i", str(tmp_path / "k"), "-o", "BatchMode=yes", "-o", "ConnectTimeout=20",
             "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
             f"root@{port_ip}", f"set -eu -o pipefail; {command}"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert ssh.returncode == 0, ssh.stderr
        return ssh.stdout

    hostname, header, *disks = in_guest("hostname; sudo lsblk -lb --nodeps").splitlines()
    assert hostname == "vm1" and header.split()[5] == "TYPE"
    assert any(line.split()[:1] == ["vda"] and line.split()[5] == "disk" for line in disks)

    # The NIC's tag is in meta_data.json's devices, from the metadata service (read with
    # `curl` as Tempest's device tagging tests do) and on the config drive, at the MAC and
    # the PCI address the guest itself finds eth0 at (the PCI device above its virtio one).
    mac, device = in_guest(
        "cat /sys/class/net/eth0/address; readlink -f /sys/class/net/eth0/device/.."
    ).split()
    metadata_url = "http://169.254.169.254/openstack/latest/meta_data.json"
    for source in (f"curl {metadata_url}", "cat /mnt/config/openstack/latest/meta_data.json"):
        devices = json.loads(in_guest(source))["devices"]
        assert devices == [
            {"type": "nic", "bus": "pci", "address": device.rsplit("/", 1)[-1], "mac": mac,
             "tags": ["uplink"], "vf_trusted": False}
        ], source  # fmt: skip

    # The console URL opens the guest's own VNC server through the noVNC proxy.
    url = cloud.openstack("console", "url", "show", "--novnc", "vm1", "-f", "json", **demo)
    token = parse_qs(parse_qs(urlsplit(url["url"]).query)["path"][0].lstrip("?"))["token"][0]
    proxy = f"ws://127.0.0.1:{cloud.config.ports.novncproxy}/websockify?token={token}"
    with connect(proxy, subprotocols=["binary"], open_timeout=10) as ws:
        assert ws.recv(timeout=10).startswith(b"RFB 003.")  # QEMU's VNC greeting

    cloud.openstack("server", "stop", "vm1", **demo)
    deadline = time.monotonic() + 60
    while cloud.openstack("server", "show", "vm1", "-f", "json", **demo)["status"] != "SHUTOFF":
        assert time.monotonic() < deadline
        time.sleep(1)
    cloud.openstack("server", "delete", "--wait", "vm1", **demo)
