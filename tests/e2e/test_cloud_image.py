"""A Debian cloud image built here, configured by cloud-init, reached with SSH through a
floating IP from this host: what a user does with a real cloud.

`cumulo image build debian` (mmdebstrap from the machine's apt archive; cached under
~/.cache/cumulo/images, so only the first run builds) makes a whole-disk image, as real
cloud images are: an MBR partition table and GRUB, which SeaBIOS boots (no kernel_id).
Then as the demo user: a key pair, a server of the image with cloud-config user data, a
floating IP, and `ssh debian@<ip>` once the security group lets port 22 in (before that,
SSH times out). The guest boots under TCG here: about a minute.

A Puppet server (Debian's `puppetserver`, started by the test with directories of its own,
autosign on) listens on the external network's host address; the user data points the
guest's agent at it (cloud-init's `puppet` module), and the catalog writes a file and
starts a service. The masterless form (`puppet apply` of a manifest in user data) runs
too.
"""

from __future__ import annotations

import base64
import hashlib
import os
import random
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import padding

from cumulo.common.config import load_config, write_config
from tests.cloudrunner import (
    VENV_BIN,
    CloudRunner,
    configure_guest_state_dir,
    configure_state_dir,
    free_port,
    stop_guest_cloud,
)
from tests.conftest import require_real_guests, skip_or_fail
from tests.e2e import puppet_server as puppet
from tests.functional.test_identity_lifecycle import _clean_env as clean_env

pytestmark = pytest.mark.e2e

HOST = "e2e-image"
DEMO = {"cloud": "cumulo-demo"}
CLOUD_CONFIG = """#cloud-config
ssh_pwauth: true
# No RSA host key: generating it alone takes most of a minute under TCG (the test's
# client takes any host key).
ssh_genkeytypes: [ed25519, ecdsa]
puppet:
  install: false
  start_service: false
  exec: true
  exec_args: [--onetime, --no-daemonize, --verbose]
  conf:
    agent:
      server: puppet
      serverport: "{puppet_port}"
write_files:
  - path: /etc/hosts
    append: true
    content: "{puppet_address} puppet\\n"
  - path: /etc/cumulo-test
    content: "written by cloud-init\\n"
  - path: /etc/puppet/site.pp
    content: |
      file {{ '/etc/made-by-puppet': content => "puppet apply\\n" }}
runcmd:
  - [sh, -c, "echo user-data ran > /var/tmp/runcmd-done"]
  - [puppet, apply, /etc/puppet/site.pp]
"""
# What the Puppet server's catalog does on every node: a file, and a service it starts.
SITE_PP = """\
node default {
  file { '/etc/made-by-puppet-server':
    content => "catalog from the Puppet server\\n",
  }
  $unit = "[Unit]\\nDescription=started by Puppet\\n[Service]\\nExecStart=/bin/sleep infinity\\n"
  file { '/etc/systemd/system/cumulo-hello.service':
    content => "${unit}[Install]\\nWantedBy=multi-user.target\\n",
  }
  ~> service { 'cumulo-hello':
    ensure => running,
    enable => true,
  }
}
"""
BROKEN_CONFIG = "#cloud-config\nwrite_files: [ this is: not yaml\n"
BOOT_TIMEOUT = 900  # TCG on a loaded 2-core machine; the Puppet agent run alone takes minutes


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


@pytest.fixture(scope="module")
def puppet_server(cloud: CloudRunner, tmp_path_factory):
    """Started before the image is built: the JVM takes a minute or two to be ready."""
    if not puppet.available():
        skip_or_fail("the Puppet server test needs puppetserver (cumulo host-packages)")
    server = puppet.PuppetServer(tmp_path_factory.mktemp("puppet"), free_port(), SITE_PP)
    yield server.start()
    server.stop()


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


def password_login(address: str, password: str) -> str:
    """Who `ssh debian@address` with that password (and no key) logs in as."""
    login = subprocess.run(
        ["sshpass", "-p", password, "ssh", "-o", "StrictHostKeyChecking=no",
         "-o", "UserKnownHostsFile=/dev/null", "-o", "PubkeyAuthentication=no",
         "-o", "PreferredAuthentications=password", "-o", "ConnectTimeout=10",
         f"debian@{address}", "id -un"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert login.returncode == 0, login.stderr
    return login.stdout.strip()


def assert_mbr_and_grub(cloud: CloudRunner, cached: Path, tmp_path: Path) -> None:
    """The registered disk is the built one (the hash the Image service took of what it
    stored), and its first MiB: an MBR whose partition 1 (bootable, Linux) starts at
    sector 2048, GRUB's boot code before it and core.img from sector 1. (Read from the
    cache: not 600 MB downloaded again.)"""
    image = cloud.sdk("cumulo-demo").image.find_image("debian-12", ignore_missing=False)
    digest = hashlib.sha512()
    with cached.open("rb") as disk:
        while chunk := disk.read(1 << 20):
            digest.update(chunk)
    assert (image.hash_algo, image.hash_value) == ("sha512", digest.hexdigest())
    head = tmp_path / "head.raw"
    subprocess.run(
        ["qemu-img", "dd", "-f", "qcow2", "-O", "raw", "bs=512", "count=2048",
         f"if={cached}", f"of={head}"],
        check=True,
    )  # fmt: skip
    sectors = head.read_bytes()
    assert sectors[510:512] == b"\x55\xaa"
    flag, kind, start = sectors[446], sectors[450], int.from_bytes(sectors[454:458], "little")
    assert (flag, kind, start) == (0x80, 0x83, 2048)
    assert b"GRUB" in sectors[:440]  # boot.img's messages ("GRUB ", "Geom", "Read")
    assert int.from_bytes(sectors[1012:1020], "little") == 2  # diskboot reads on from 2


def test_debian_image_cloud_init_and_ssh_through_a_floating_ip(
    cloud: CloudRunner, puppet_server: puppet.PuppetServer, tmp_path
):
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
    # A whole disk: no kernel of its own in the Image service, the BIOS boots its GRUB.
    assert "kernel_id" not in props and "ramdisk_id" not in props
    assert image["disk_format"] == "qcow2"
    # A second build is the cached one, registered once.
    again = subprocess.run(
        [str(VENV_BIN / "cumulo"), "image", "build", "debian", "--state-dir", str(cloud.state_dir)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    said = again.stdout + again.stderr
    assert again.returncode == 0 and "cached" in said and "already registered" in said, said
    cached = re.search(r"cached: (\S+)", said)
    assert cached is not None, said
    assert_mbr_and_grub(cloud, Path(cached[1]) / "disk.qcow2", tmp_path)

    # An RSA key pair (the client makes ed25519 ones, which cannot encrypt): the guest
    # posts its password encrypted with it.
    key = tmp_path / "k"
    subprocess.run(["ssh-keygen", "-q", "-t", "rsa", "-b", "2048", "-m", "PEM", "-N", "",
                    "-f", str(key)], check=True)  # fmt: skip
    cloud.openstack("keypair", "create", "--public-key", f"{key}.pub", "k", **DEMO)
    user_data = tmp_path / "cloud-config.yaml"
    puppet_server.wait()
    # The guest reaches the host at the external network's gateway address (the host leg).
    user_data.write_text(
        CLOUD_CONFIG.format(
            puppet_port=puppet_server.port,
            puppet_address=cloud.config.network.public_gateway,
        )
    )
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
        "--property",
        "post_password=true",
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

    # A snapshot of the running guest boots again, and a user-data YAML error does not
    # stop the boot (checked below, once the FIP moves to it): web-2 boots while web-1
    # is checked (a TCG boot is a minute and more; web-1 mostly idles meanwhile).
    cloud.openstack("server", "image", "create", "--name", "web-snap", "--wait", "web-1", **DEMO)
    broken = tmp_path / "broken.yaml"
    broken.write_text(BROKEN_CONFIG)
    cloud.openstack(
        "server",
        "create",
        "--image",
        "web-snap",
        "--flavor",
        "m1.small",
        "--key-name",
        "k",
        "--user-data",
        str(broken),
        "--network",
        "private",
        "--wait",
        "web-2",
        **DEMO,
    )

    for _ in range(30):
        answer = ssh(
            key,
            address,
            "hostname; cat /etc/cumulo-test /var/tmp/runcmd-done; "
            "df -B1G --output=size / | tail -1; cat /proc/cmdline",
        )
        if answer.returncode == 0:
            break
        time.sleep(2)
    assert answer.returncode == 0, answer.stderr
    lines = answer.stdout.split("\n")
    assert lines[0] == "web-1"
    assert lines[1:3] == ["written by cloud-init", "user-data ran"]
    assert int(lines[3]) >= 18  # partition 1 and its filesystem grown to the 20 GB disk
    assert lines[4].startswith("BOOT_IMAGE=/vmlinuz ")  # booted by the image's GRUB
    # puppet apply's file; the agent's certificate was autosigned and its catalog
    # applied: file and service (one login).
    applied = ssh(
        key,
        address,
        "cat /etc/made-by-puppet /etc/made-by-puppet-server; sudo systemctl is-active cumulo-hello",
    )
    assert applied.stdout == "puppet apply\ncatalog from the Puppet server\nactive\n", (
        applied.stdout + applied.stderr + puppet_server.log()[-2000:]
    )
    assert "web-1" in puppet_server.signed()

    # The password the guest posted, decrypted with the key pair's private key, logs in;
    # then changePassword through qemu-guest-agent, and the new one logs in.
    sdk = cloud.sdk("cumulo-demo")
    web = sdk.compute.find_server("web-1")
    posted = sdk.compute.get_server_password(web)
    if not posted:
        said = ssh(key, address, "sudo grep -A3 post-password /var/log/cloud-init-output.log")
        pytest.fail(f"the guest posted no password:\n{said.stdout}{said.stderr}")
    private = serialization.load_pem_private_key(key.read_bytes(), password=None)
    password = private.decrypt(base64.b64decode(posted), padding.PKCS1v15()).decode()
    assert password_login(address, password) == "debian"
    sdk.compute.change_server_password(web, "N3w-pass-word")
    assert password_login(address, "N3w-pass-word") == "debian"

    # An image whose disk is bigger than the flavor's is refused at once.
    small = cloud.openstack(
        "server",
        "create",
        "--image",
        "debian-12",
        "--flavor",
        "m1.tiny",
        "--network",
        "private",
        "tiny-disk",
        check=False,
        **DEMO,
    )
    assert small.returncode != 0 and "400" in small.stderr and "too small" in small.stderr

    cloud.openstack("server", "remove", "floating", "ip", "web-1", address, **DEMO)
    cloud.openstack("server", "add", "floating", "ip", "web-2", address, **DEMO)
    deadline = time.monotonic() + BOOT_TIMEOUT
    while time.monotonic() < deadline:
        answer = ssh(key, address, "hostname; sudo grep -ci yaml /var/log/cloud-init.log")
        if answer.stdout.startswith("web-2"):
            break
        time.sleep(5)
    assert answer.stdout.startswith("web-2\n"), answer.stdout + answer.stderr
    assert int(answer.stdout.split()[1]) > 0  # cloud-init logged the YAML error
    print(f"image built in {built_in:.0f} s; booted to cloud-init done in {booted_in:.0f} s")


def test_cumulo_up_with_debian_image_serves_at_once_and_registers_it_in_the_background(
    tmp_path: Path,
):
    """`cumulo up --with-debian-image` on a fresh state dir: the APIs answer first, then
    debian-12 appears (the build above left it in the cache; alone, this builds it)."""
    if shutil.which("mmdebstrap") is None or os.geteuid() != 0:
        skip_or_fail("image builds need root and mmdebstrap (cumulo host-packages)")
    state = tmp_path / "up"
    configure_state_dir(state)
    up = subprocess.Popen(
        [str(VENV_BIN / "cumulo"), "up", "--no-demo-image", "--with-debian-image",
         "--state-dir", str(state)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=clean_env(),
    )  # fmt: skip
    printed: list[str] = []
    try:
        deadline = time.monotonic() + 1200
        while not any("is ready" in line or "warning" in line for line in printed):
            assert up.poll() is None, "".join(printed)
            assert time.monotonic() < deadline, "".join(printed)
            printed.append(up.stderr.readline())
        said = "".join(printed)
        assert "debian-12" in said and "is ready" in said, said
        assert said.index("cumulo is up") < said.index("is ready"), "served while building"
        image = CloudRunner(state).openstack("image", "show", "debian-12", "-f", "json")
        assert image["status"] == "active" and image["visibility"] == "public"
        assert image["properties"]["os_distro"] == "debian"
    finally:
        up.send_signal(signal.SIGINT)
        up.wait(timeout=120)


def test_a_build_without_the_archive_fails_clearly_and_leaves_nothing(tmp_path):
    from cumulo.image.cloud_image import ImageBuildError, build_debian

    if shutil.which("mmdebstrap") is None or os.geteuid() != 0:
        skip_or_fail("image builds need root and mmdebstrap (cumulo host-packages)")
    with pytest.raises(ImageBuildError) as exc:
        build_debian(tmp_path, mirror="http://127.0.0.1:9/debian", log=lambda _: None)
    assert "mmdebstrap" in str(exc.value) and "archive" in str(exc.value)
    assert list(tmp_path.iterdir()) == []  # no half-built image in the cache
