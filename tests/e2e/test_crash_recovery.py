"""`kill -9` of `cumulo up` in the middle of 100 concurrent boots (6 real QEMU guests,
the rest on three fake compute hosts of the same process) and volume creates, then
`cumulo up` again: every server ends ACTIVE, or ERROR with a fault (a fake host's
guest that was running is gone with the killed process: its server SHUTOFF); every volume
available or error; the guest that was running before is found and kept (same QEMU
process); no QEMU process, instance directory or volume file that no server or volume
owns; the databases are whole. Then everything is deleted and nothing is left.
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

import pytest

from cumulo.compute.virt import qemu_process as qp
from tests.churn import footprint
from tests.cloudrunner import (
    VENV_BIN,
    configure_guest_state_dir,
    kill_guests,
    remove_data_plane,
    wait_for_port,
)
from tests.conftest import require_real_guests

pytestmark = pytest.mark.e2e

HOST = "e2e-crash"
BOOTS, FAKE_BOOTS, VOLUMES = 6, 94, 6
FAKE_HOSTS = [f"{HOST}-fake{i}" for i in (1, 2, 3)]
FINAL_SERVER = {"ACTIVE", "ERROR"}
# A fake host's guests live in its process's memory: one that ran when the process was
# killed is gone after the restart, and the power sync says so (SHUTOFF, never ACTIVE).
FINAL_FAKE_SERVER = FINAL_SERVER | {"SHUTOFF"}
FINAL_VOLUME = {"available", "error"}


class UpProcess:
    """`cumulo up --with-demo-image` in its own process, as a user runs it."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        log = (self.state_dir.parent / f"up-{self.starts}.log").open("wb")
        self.proc = subprocess.Popen(
            [str(VENV_BIN / "cumulo"), "up", "--state-dir", str(self.state_dir),
             "--with-demo-image"],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        from cumulo.common.config import load_config

        config = load_config(self.state_dir)
        for port in (config.ports.identity, config.ports.compute, config.ports.block_storage):
            wait_for_port(port, 180, self.proc)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.kill()


def sdk(state_dir: Path, cloud: str = "cumulo-demo"):
    from openstack.config.loader import OpenStackConfig
    from openstack.connection import Connection

    config = OpenStackConfig(config_files=[str(state_dir / "clouds.yaml")], load_envvars=False)
    return Connection(config=config.get_one(cloud=cloud))


def wait_until(check, timeout: float, message) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, message() if callable(message) else message
        time.sleep(1)


def qemu_pid(state_dir: Path, server_id: str) -> int | None:
    directory = state_dir / "compute" / HOST / "instances" / server_id
    pid = qp.read_pid(directory)
    return pid if qp.process_alive(pid, server_id) else None


@pytest.fixture
def up(tmp_path):
    require_real_guests()
    state = tmp_path / "state"
    configure_guest_state_dir(state, HOST, fake_hosts=len(FAKE_HOSTS), fake_spawn_delay=5.0)
    cloud = UpProcess(state)
    try:
        yield cloud
    finally:
        cloud.stop()
        kill_guests(state, HOST)
        remove_data_plane(state)


def test_a_killed_cloud_restarts_with_every_server_and_volume_final_and_nothing_orphaned(up):
    state = up.state_dir
    up.start()
    conn = sdk(state, "cumulo")  # the admin: boots are placed on a given host
    image = conn.image.find_image("tiny", ignore_missing=False)
    flavor = conn.compute.find_flavor("m1.tiny", ignore_missing=False)
    private = conn.network.find_network("private", ignore_missing=False)

    def boot(name: str, host: str = HOST):
        return conn.compute.create_server(
            name=name, image_id=image.id, flavor_id=flavor.id, networks=[{"uuid": private.id}],
            availability_zone=f"nova:{host}",
        )  # fmt: skip

    # Room for the storm (Nova's default quota is 10 instances).
    conn.set_compute_quotas(conn.current_project_id, instances=200, cores=400, ram=200 * 1024)
    keeper = conn.compute.wait_for_server(boot("keeper"), wait=180)
    keeper_pid = qemu_pid(state, keeper.id)
    assert keeper_pid is not None

    # The storm: boots and volume creates at once, and the cloud killed in the middle.
    made: dict[str, list[str]] = {"servers": [], "volumes": []}

    def create(kind: str, n: int) -> None:
        try:
            if kind == "servers":
                made[kind].append(boot(f"storm-{n}").id)
            elif kind == "fake servers":
                host = FAKE_HOSTS[n % len(FAKE_HOSTS)]
                made["servers"].append(boot(f"fake-storm-{n}", host).id)
            else:
                # Half of them from the image: downloading and converting takes a while.
                source = {"image_id": image.id} if n % 2 else {}
                volume = conn.block_storage.create_volume(size=1, name=f"v{n}", **source)
                made[kind].append(volume.id)
        except Exception:  # noqa: BLE001, S110 - a request the kill cut off was not made
            pass

    threads = [threading.Thread(target=create, args=("servers", n)) for n in range(BOOTS)]
    threads += [
        threading.Thread(target=create, args=("fake servers", n)) for n in range(FAKE_BOOTS)
    ]
    threads += [threading.Thread(target=create, args=("volumes", n)) for n in range(VOLUMES)]
    for thread in threads:
        thread.start()
    # Killed once the API has taken (nearly) every create: the builds are then all under
    # way (scheduling, networking, spawning), the volumes creating or downloading.
    deadline = time.monotonic() + 60
    while len(made["servers"]) < (BOOTS + FAKE_BOOTS) * 0.9 and time.monotonic() < deadline:
        time.sleep(0.1)
    up.kill()
    for thread in threads:
        thread.join()
    conn.close()
    assert len(made["servers"]) >= (BOOTS + FAKE_BOOTS) * 0.9, len(made["servers"])

    up.start()
    conn = sdk(state, "cumulo")  # the admin: boots are placed on a given host
    admin = sdk(state, "cumulo")

    def servers():
        return list(conn.compute.servers())

    def volumes():
        return list(conn.block_storage.volumes())

    def not_final():
        return [
            (s.name, s.status, s.task_state)
            for s in servers()
            if s.status not in (FINAL_FAKE_SERVER if s.name.startswith("fake-") else FINAL_SERVER)
        ]

    wait_until(lambda: not not_final(), 180, lambda: f"servers not final: {not_final()}")
    wait_until(
        lambda: {v.status for v in volumes()} <= FINAL_VOLUME,
        120,
        lambda: f"volumes not final: {[(v.name, v.status) for v in volumes()]}",
    )
    by_id = {s.id: s for s in servers()}
    assert set(made["servers"]) <= set(by_id)
    for server in by_id.values():
        if server.status == "ERROR":
            assert admin.compute.get_server(server.id).fault["message"], server.name
        elif not server.name.startswith("fake-"):
            assert qemu_pid(state, server.id) is not None, f"{server.name} is ACTIVE, no QEMU"
    import collections

    print(
        "FINAL",
        len(made["servers"]),
        len(by_id),
        collections.Counter((s.name.split("-")[0], s.status) for s in by_id.values()),
    )
    # The guest that ran before the crash is the same process, still running.
    assert by_id[keeper.id].status == "ACTIVE"
    assert qemu_pid(state, keeper.id) == keeper_pid
    # No guest, disk or volume data that nothing owns.
    held = footprint(state)
    active = {
        s.id for s in by_id.values() if s.status == "ACTIVE" and not s.name.startswith("fake-")
    }
    assert held["processes"]["qemu-system-x86_64"] == len(active)
    instances = state / "compute" / HOST / "instances"
    assert {p.name for p in instances.iterdir()} <= set(by_id)
    volume_ids = {v.id for v in volumes()}
    for path in (state / "volumes").rglob("volume-*"):
        assert path.name.removeprefix("volume-") in volume_ids, path
    for db in state.glob("*.db"):
        with sqlite3.connect(db) as check:
            assert check.execute("PRAGMA integrity_check").fetchone()[0] == "ok", db

    # Deleting all of it leaves nothing behind.
    for server in by_id.values():
        conn.compute.delete_server(server)
    for volume in volumes():
        conn.block_storage.delete_volume(volume)
    for server in by_id.values():
        conn.compute.wait_for_delete(server, wait=120)
    wait_until(lambda: not volumes(), 120, "volumes not deleted")
    assert footprint(state)["processes"]["qemu-system-x86_64"] == 0
    assert footprint(state)["links"]["tap"] == 0  # no guest's tap left on the bridges
    assert not list(instances.iterdir())
    assert not list((state / "volumes").rglob("volume-*"))
    ports = [p for p in admin.network.ports() if not p.device_owner.startswith("network:")]
    assert ports == []
