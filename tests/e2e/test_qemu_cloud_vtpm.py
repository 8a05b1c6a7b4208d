"""A server with an emulated TPM on a cloud of real QEMU guests, as a user asks for it
with the `openstack` CLI: a flavor with hw:tpm_version (Nova's vTPM); the compute host
(swtpm installed) reports the TPM traits, creates the secret in the Key Manager with the
user's token, runs the guest's swtpm; the guest finds its TPM, which is the same TPM
after the server is stopped and started; the secret and the TPM's state go with the
server."""

from __future__ import annotations

import shutil
import time
import uuid

import httpx
import pytest

from cumulo.compute.virt import qemu_tpm
from cumulo.testing.guest import MARK
from tests.cloudrunner import CloudRunner, configure_guest_state_dir, stop_guest_cloud
from tests.conftest import require_real_guests, skip_or_fail
from tests.e2e.test_qemu_cloud_guests import register_tiny_images

pytestmark = pytest.mark.e2e

HOST = "e2e-vtpm-cloud"
DEMO = "cumulo-demo"


@pytest.fixture(scope="module")
def cloud(tmp_path_factory):
    require_real_guests()
    if not shutil.which("swtpm") or not shutil.which("swtpm_setup"):
        skip_or_fail("servers with a TPM need swtpm and swtpm-tools")
    state = tmp_path_factory.mktemp("vtpm-cloud")
    configure_guest_state_dir(state, HOST)
    runner = CloudRunner(state).start(timeout=120)
    try:
        register_tiny_images(runner, tmp_path_factory.mktemp("vtpm-cloud-work"))
        yield runner
    finally:
        stop_guest_cloud(runner)


def tpm_lines(cloud: CloudRunner, server: str, count: int, timeout: float = 180) -> list[str]:
    deadline = time.monotonic() + timeout
    while True:
        log = cloud.openstack("console", "log", "show", server, cloud=DEMO)
        lines = [line for line in log.splitlines() if f"{MARK} tpm0 version" in line]
        if len(lines) >= count:
            return lines
        assert time.monotonic() < deadline, f"no tpm0 line #{count}:\n{log[-3000:]}"
        time.sleep(1)


def wait_status(cloud: CloudRunner, server: str, status: str, timeout: float = 180) -> dict:
    deadline = time.monotonic() + timeout
    while (shown := cloud.openstack("server", "show", server, "-f", "json"))["status"] != status:
        assert shown["status"] != "ERROR", shown.get("fault")
        assert time.monotonic() < deadline, f"{server} is {shown['status']}, not {status}"
        time.sleep(1)
    return shown


def test_a_server_with_a_tpm_keeps_it_across_stop_and_start(cloud):
    flavor = f"tpm-{uuid.uuid4().hex[:6]}"
    cloud.openstack(
        "flavor", "create", "--ram", "256", "--disk", "1", "--vcpus", "1", "--public",
        "--property", "hw:tpm_version=1.2", "--property", "hw:tpm_secret_security=host",
        flavor,
    )  # fmt: skip
    server = cloud.openstack(
        "server", "create", "--image", "tiny", "--flavor", flavor, "--nic", "none",
        "--wait", "tpm-guest", "-f", "json", cloud=DEMO,
    )["id"]  # fmt: skip
    first = tpm_lines(cloud, server, 1)[-1]
    assert " tpm0 version 1 ek " in first
    ek = first.rsplit(" ek ", 1)[1].strip()

    demo = cloud.token("demo", project="demo")
    keys = f"http://127.0.0.1:{cloud.config.ports.key_manager}/v1/secrets"
    name = f"vTPM secret for instance {server}"
    listed = httpx.get(keys, params={"name": name}, headers={"X-Auth-Token": demo}).json()
    assert listed["total"] == 1
    directory = cloud.state_dir / "compute" / HOST / "instances" / server
    assert (directory / "tpm" / "tpm-00.permall").is_file()
    assert qemu_tpm.running(directory)

    cloud.openstack("server", "stop", server, cloud=DEMO)
    wait_status(cloud, server, "SHUTOFF")
    assert not qemu_tpm.running(directory)
    cloud.openstack("server", "start", server, cloud=DEMO)
    wait_status(cloud, server, "ACTIVE")
    assert tpm_lines(cloud, server, 2)[-1].rsplit(" ek ", 1)[1].strip() == ek

    cloud.openstack("server", "delete", "--wait", server, cloud=DEMO)
    listed = httpx.get(keys, params={"name": name}, headers={"X-Auth-Token": demo}).json()
    assert listed["total"] == 0
    assert not directory.exists()
