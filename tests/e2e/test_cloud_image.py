"""A Debian cloud image built here, configured by cloud-init, reached with SSH through a
floating IP from this host: what a user does with a real cloud.

`cumulo image build debian` (mmdebstrap from the machine's apt archive; cached under
~/.cache/cumulo/images, so only the first run builds), then as the demo user: a key pair,
a server of the image with cloud-config user data, a floating IP, and `ssh debian@<ip>`
once the security group lets port 22 in (before that, SSH times out). The guest boots
under TCG here: about a minute.
"""

from __future__ import annotations

import random
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from cumulo.common.config import load_config, write_config
from tests.cloudrunner import VENV_BIN, CloudRunner, configure_guest_state_dir, stop_guest_cloud
from tests.conftest import require_real_guests, skip_or_fail

pytestmark = pytest.mark.e2e

HOST = "e2e-image"
DEMO = {"cloud": "cumulo-demo"}
CLOUD_CONFIG = """#cloud-config
write_files:
  - path: /etc/cumulo-test
    content: "written by cloud-init\\n"
runcmd:
  - [sh, -c, "echo user-data ran > /var/tmp/runcmd-done"]
"""
BOOT_TIMEOUT = 600  # TCG on a loaded 2-core machine


@pytest.fixture(scope="module")
def cloud(tmp_path_factory):
    require_real_guests()
    if shutil.which("mmdebstrap") is None or shutil.which("ssh") is None:
        skip_or_fail("the Debian cloud image needs mmdebstrap and ssh (cumulo host-packages)")
    state = tmp_path_factory.mktemp("cloud-image")
    configure_guest_state_dir(state, HOST)
    config = load_config(state)
    # This cloud's external network reaches the host: a subnet no other test uses.
    third = random.randrange(100, 200)
    config.network.public_cidr = f"172.31.{third}.0/24"
    config.network.public_gateway = f"172.31.{third}.1"
    config.network.host_leg = True
    write_config(state, config)
    runner = CloudRunner(state).start()
    yield runner
    stop_guest_cloud(runner)


def ssh(key: Path, address: str, command: str, timeout: int = 10) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            "ssh",
            "-i",
            str(key),
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "BatchMode=yes",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            f"ConnectTimeout={timeout}",
            f"debian@{address}",
            command,
        ],
        capture_output=True,
        text=True,
        timeout=timeout + 30,
    )


def test_debian_image_cloud_init_and_ssh_through_a_floating_ip(cloud: CloudRunner, tmp_path):
    started = time.monotonic()
    build = subprocess.run(
        [str(VENV_BIN / "cumulo"), "image", "build", "debian", "--state-dir", str(cloud.state_dir)],
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    built_in = time.monotonic() - started
    image = cloud.openstack("image", "show", "debian-12", "-f", "json", **DEMO)
    props = image["properties"]
    assert props["os_distro"] == "debian" and props["hw_qemu_guest_agent"] == "yes"
    assert props["kernel_id"] and props["ramdisk_id"]
    # A second build is the cached one, registered once.
    again = subprocess.run(
        [str(VENV_BIN / "cumulo"), "image", "build", "debian", "--state-dir", str(cloud.state_dir)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    said = again.stdout + again.stderr
    assert again.returncode == 0 and "cached" in said and "already registered" in said, said

    key = tmp_path / "k"
    cloud.openstack("keypair", "create", "--private-key", str(key), "k", **DEMO)
    key.chmod(0o600)
    user_data = tmp_path / "cloud-config.yaml"
    user_data.write_text(CLOUD_CONFIG)
    server = cloud.openstack(
        "server",
        "create",
        "--image",
        "debian-12",
        "--flavor",
        "m1.small",
        "--key-name",
        "k",
        "--user-data",
        str(user_data),
        "--network",
        "private",
        "--wait",
        "-f",
        "json",
        "web-1",
        **DEMO,
    )
    assert server["status"] == "ACTIVE"
    fip = cloud.openstack("floating", "ip", "create", "public", "-f", "json", **DEMO)
    address = fip["floating_ip_address"]
    cloud.openstack("server", "add", "floating", "ip", "web-1", address, **DEMO)

    # Wait for cloud-init to finish (on the serial console), then: no rule, no SSH.
    deadline = time.monotonic() + BOOT_TIMEOUT
    console = ""
    while time.monotonic() < deadline:
        console = cloud.openstack("console", "log", "show", "web-1", **DEMO)
        if "Cloud-init" in console and "finished at" in console:
            break
        time.sleep(5)
    assert "finished at" in console, console[-3000:]
    booted_in = time.monotonic() - started - built_in
    refused = ssh(key, address, "true", timeout=5)
    assert refused.returncode == 255 and "timed out" in refused.stderr, refused.stderr

    cloud.openstack(
        "security",
        "group",
        "rule",
        "create",
        "--protocol",
        "tcp",
        "--dst-port",
        "22",
        "default",
        **DEMO,
    )
    for _ in range(30):
        answer = ssh(
            key,
            address,
            "hostname; cat /etc/cumulo-test /var/tmp/runcmd-done; "
            "df -B1G --output=size / | tail -1",
        )
        if answer.returncode == 0:
            break
        time.sleep(2)
    assert answer.returncode == 0, answer.stderr
    lines = answer.stdout.split("\n")
    assert lines[0] == "web-1"
    assert lines[1:3] == ["written by cloud-init", "user-data ran"]
    assert int(lines[3]) >= 18  # the root filesystem grown to the flavor's 20 GB disk
    print(f"image built in {built_in:.0f} s; booted to cloud-init done in {booted_in:.0f} s")
