"""What a host does when it starts again after a crash (`kill -9`), with its work cut
in the middle: the records are left as the crash left them, then the host's start-up
recovery runs (the compute host's and each volume backend's, as at `cumulo up`).
tests/e2e/test_crash_recovery.py kills a real `cumulo up`; this checks each case."""

from __future__ import annotations

import time
import uuid

from sqlalchemy import update

from cumulo.compute.models import Instance
from cumulo.volume.models import Volume
from tests.cloudrunner import CloudRunner


def demo(cloud: CloudRunner, *args: str):
    return cloud.openstack(*args, cloud="cumulo-demo")


def boot(cloud: CloudRunner, name: str) -> dict:
    image = cloud.sdk().image.create_image(
        name=name, data=b"\0" * 65536, disk_format="raw", container_format="bare",
        visibility="public",
    )  # fmt: skip
    return demo(cloud, "server", "create", "--image", image.id, "--flavor", "m1.tiny",
                "--network", "private", "--wait", name, "-f", "json")  # fmt: skip


def crash_left_instance(cloud: CloudRunner, server_id: str, **values) -> None:
    async def write():
        async with cloud.cloud.compute.db.write() as s:
            await s.execute(update(Instance).where(Instance.uuid == server_id).values(**values))

    cloud.run_async(write())


def crash_left_volume(cloud: CloudRunner, volume_id: str, status: str) -> None:
    async def write():
        async with cloud.cloud.volume.db.write() as s:
            await s.execute(update(Volume).where(Volume.id == volume_id).values(status=status))

    cloud.run_async(write())


def restart_compute_host(cloud: CloudRunner) -> None:
    [host] = [m for m in cloud.cloud.compute.managers]
    cloud.run_async(host.recover_interrupted_work())


def restart_volume_backends(cloud: CloudRunner) -> None:
    for manager in cloud.cloud.volume.managers:
        cloud.run_async(manager.recover_interrupted_work())


def ports_of(cloud: CloudRunner, server_id: str) -> list:
    return cloud.openstack("port", "list", "--device-id", server_id, "-f", "json")


def test_a_build_cut_by_a_restart_goes_error_with_a_fault_and_frees_its_ports(cloud):
    name = f"cut-{uuid.uuid4().hex[:8]}"
    server = boot(cloud, name)
    assert ports_of(cloud, server["id"])
    # As if the host died while spawning, before it had recorded the ports it made.
    crash_left_instance(cloud, server["id"], vm_state="building", task_state="spawning",
                        network_info=[])  # fmt: skip
    restart_compute_host(cloud)
    shown = cloud.openstack("server", "show", server["id"], "-f", "json")
    assert shown["status"] == "ERROR"
    assert "restarted while it was building" in shown["fault"]["message"]
    assert ports_of(cloud, server["id"]) == []
    demo(cloud, "server", "delete", "--wait", server["id"])


def test_a_delete_cut_by_a_restart_is_finished(cloud):
    name = f"cut-{uuid.uuid4().hex[:8]}"
    server = boot(cloud, name)
    crash_left_instance(cloud, server["id"], task_state="deleting")
    restart_compute_host(cloud)
    assert cloud.openstack("server", "show", server["id"], check=False).returncode != 0
    assert ports_of(cloud, server["id"]) == []


def test_another_task_cut_by_a_restart_is_cleared(cloud):
    name = f"cut-{uuid.uuid4().hex[:8]}"
    server = boot(cloud, name)
    crash_left_instance(cloud, server["id"], task_state="powering-off")
    restart_compute_host(cloud)
    shown = cloud.openstack("server", "show", server["id"], "-f", "json")
    assert shown["status"] == "ACTIVE" and shown["OS-EXT-STS:task_state"] is None
    demo(cloud, "server", "delete", "--wait", server["id"])


def wait_status(cloud: CloudRunner, volume: str, status: str) -> None:
    deadline = time.monotonic() + 30
    while demo(cloud, "volume", "show", volume, "-f", "json")["status"] != status:
        assert time.monotonic() < deadline, f"{volume} never became {status}"
        time.sleep(0.3)


def test_volumes_cut_by_a_restart_end_final_and_backend_data_nobody_owns_goes(cloud):
    backend = cloud.cloud.volume.managers[0].driver
    made = {}
    for what in ("creating", "deleting", "extending", "uploading"):
        made[what] = demo(cloud, "volume", "create", "--size", "1", f"cut-{what}",
                          "-f", "json")["id"]  # fmt: skip
        wait_status(cloud, made[what], "available")
        crash_left_volume(cloud, made[what], what)
    orphan = backend.root / f"volume-{uuid.uuid4()}"
    orphan.write_bytes(b"left by a create the crash cut short")

    restart_volume_backends(cloud)

    assert demo(cloud, "volume", "show", made["creating"], "-f", "json")["status"] == "error"
    assert not (backend.root / f"volume-{made['creating']}").exists()
    assert cloud.openstack("volume", "show", made["deleting"], check=False).returncode != 0
    assert not (backend.root / f"volume-{made['deleting']}").exists()
    extended = demo(cloud, "volume", "show", made["extending"], "-f", "json")
    assert extended["status"] == "error_extending"
    assert demo(cloud, "volume", "show", made["uploading"], "-f", "json")["status"] == "available"
    assert not orphan.exists()
    for what in ("creating", "uploading"):
        demo(cloud, "volume", "delete", made[what])
    cloud.openstack("volume", "set", "--state", "available", made["extending"])
    demo(cloud, "volume", "delete", made["extending"])
