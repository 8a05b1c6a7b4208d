"""A server keeps the machine type of its first spawn across moves (Nova's
image_hw_machine_type system metadata), on a cloud of fake hosts whose default machine
types differ: built on a pc host it stays pc when it moves to q35 hosts; a rebuild from
the same image keeps it, one from another image takes the host's default anew, and a
snapshot names the server's machine type."""

from __future__ import annotations

import subprocess
import uuid

import pytest

from cumulo.common.config import load_config, write_config
from cumulo.compute.virt.driver import MACHINE_TYPE_KEY
from tests.cloudrunner import CloudRunner, configure_state_dir
from tests.functional.test_compute_moves import wait_status

MAIN = "mtype-main"
PC_HOST, Q35_HOST = f"{MAIN}-fake1", f"{MAIN}-fake2"


@pytest.fixture(scope="module")
def cloud(tmp_path_factory):
    state = tmp_path_factory.mktemp("mtype")
    configure_state_dir(state)
    config = load_config(state)
    config.compute.host = MAIN
    config.compute.fake_hosts = 2
    config.compute.report_interval = 0.5
    write_config(state, config)
    runner = CloudRunner(state).start()
    # The hosts' defaults ([compute] qemu_machine_type of a QEMU host): one pc, the rest q35.
    for manager in runner.cloud.compute.managers:
        manager.driver.machine_type = "pc" if manager.host == PC_HOST else "q35"
    yield runner
    runner.stop()


@pytest.fixture(scope="module")
def images(cloud: CloudRunner, tmp_path_factory) -> list[str]:
    path = tmp_path_factory.mktemp("img") / "disk.qcow2"
    subprocess.run(["qemu-img", "create", "-f", "qcow2", str(path), "16M"], check=True)

    def create(name: str) -> str:
        return cloud.openstack(
            "image", "create", name, "--file", str(path), "--disk-format", "qcow2",
            "--container-format", "bare", "--public", "-f", "json",
        )["id"]  # fmt: skip

    return [create("mtype-first"), create("mtype-other")]


def recorded(cloud: CloudRunner, server: str) -> str | None:
    """The machine type recorded on the server (Nova shows it with nova-manage only)."""
    from sqlalchemy import select

    from cumulo.compute.models import Instance

    async def read() -> dict:
        async with cloud.cloud.compute.service.db.read() as session:
            query = select(Instance.system_metadata).where(Instance.uuid == server)
            return await session.scalar(query)

    return cloud.run_async(read()).get(MACHINE_TYPE_KEY)


def guest_machine_type(cloud: CloudRunner, host: str, server: str) -> str | None:
    [manager] = [m for m in cloud.cloud.compute.managers if m.host == host]
    return manager.driver.guests[server].machine_type


def test_a_server_built_on_a_pc_host_stays_pc_on_q35_hosts(cloud, images):
    first, other = images
    server = cloud.openstack(
        "server", "create", "--image", first, "--flavor", "m1.nano", "--nic", "none",
        "--availability-zone", f"nova:{PC_HOST}", "--wait", f"mt-{uuid.uuid4().hex[:6]}",
        "-f", "json",
    )["id"]  # fmt: skip
    assert guest_machine_type(cloud, PC_HOST, server) == "pc"
    assert recorded(cloud, server) == "pc"

    # Cold migration to a host whose default is q35: the guest there is still pc.
    cloud.openstack(
        "--os-compute-api-version", "2.56", "server", "migrate", "--host", Q35_HOST,
        "--wait", server,
    )  # fmt: skip
    assert wait_status(cloud, server, "VERIFY_RESIZE")["OS-EXT-SRV-ATTR:host"] == Q35_HOST
    assert guest_machine_type(cloud, Q35_HOST, server) == "pc"
    cloud.openstack("server", "migrate", "confirm", server)
    wait_status(cloud, server, "ACTIVE")

    # Live migration to the other q35 host, and shelve / unshelve (a new guest there).
    cloud.openstack(
        "server", "migrate", "--live-migration", "--host", MAIN, "--block-migration",
        "--wait", server,
    )  # fmt: skip
    assert wait_status(cloud, server, "ACTIVE")["OS-EXT-SRV-ATTR:host"] == MAIN
    assert guest_machine_type(cloud, MAIN, server) == "pc"
    cloud.openstack("server", "shelve", "--wait", server)
    wait_status(cloud, server, "SHELVED_OFFLOADED")
    cloud.openstack(
        "--os-compute-api-version", "2.91", "server", "unshelve", "--host", Q35_HOST,
        "--wait", server,
    )  # fmt: skip
    assert wait_status(cloud, server, "ACTIVE")["OS-EXT-SRV-ATTR:host"] == Q35_HOST
    assert guest_machine_type(cloud, Q35_HOST, server) == "pc"

    # A rebuild from its own image keeps it; from another image (naming no machine
    # type) the guest takes this host's default, recorded anew (as Nova's).
    cloud.openstack("server", "rebuild", "--image", first, "--wait", server)
    wait_status(cloud, server, "ACTIVE")
    assert guest_machine_type(cloud, Q35_HOST, server) == "pc"
    assert recorded(cloud, server) == "pc"
    cloud.openstack("server", "rebuild", "--image", other, "--wait", server)
    wait_status(cloud, server, "ACTIVE")
    assert guest_machine_type(cloud, Q35_HOST, server) == "q35"
    assert recorded(cloud, server) == "q35"

    # Its snapshot names that machine type: a server booted from it gets the same one.
    snapshot = cloud.openstack(
        "server", "image", "create", "--name", f"mt-snap-{uuid.uuid4().hex[:6]}", "--wait",
        server, "-f", "json",
    )  # fmt: skip
    shown = cloud.openstack("image", "show", snapshot["id"], "-f", "json")
    assert shown["properties"]["hw_machine_type"] == "q35"
    cloud.openstack("image", "delete", snapshot["id"])
    cloud.openstack("server", "delete", "--wait", server)
