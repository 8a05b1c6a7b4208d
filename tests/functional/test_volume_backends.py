"""Several backends chosen by volume type, with the real `openstack` CLI: a cloud of
its own with two file backends, `alpha` (large, thin) and `beta` (3 GiB, qcow2, no
overcommit). A type with volume_backend_name=beta puts volumes in beta's directory
and host@beta; a volume too big for it goes to `error` leaving no file; pool list,
capabilities and os-services show both backends."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import httpx
import pytest

from cumulo.common.config import VolumeBackendConfig, load_config, write_config
from tests.cloudrunner import CloudRunner, configure_state_dir


@pytest.fixture(scope="module")
def two_backends(tmp_path_factory):
    state = tmp_path_factory.mktemp("two-backends")
    configure_state_dir(state)
    config = load_config(state)
    config.volume.host = "storage1"
    config.volume.backends = [
        VolumeBackendConfig(name="alpha", capacity_gb=100),
        VolumeBackendConfig(
            name="beta",
            volume_backend_name="beta",
            capacity_gb=3,
            volume_format="qcow2",
            max_over_subscription_ratio=1.0,
            capabilities={"tier": "gold"},
        ),
    ]
    write_config(state, config)
    runner = CloudRunner(state).start()
    yield runner
    runner.stop()


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def show(cloud: CloudRunner, volume_id: str) -> dict:
    url = f"http://127.0.0.1:{cloud.config.ports.block_storage}/v3/volumes/{volume_id}"
    r = httpx.get(url, headers={"X-Auth-Token": cloud.token("admin")}, timeout=30)
    return r.json()["volume"] if r.status_code == 200 else {"status": "missing"}


def wait(cloud: CloudRunner, volume_id: str, *statuses: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while (body := show(cloud, volume_id))["status"] not in statuses:
        assert time.monotonic() < deadline, f"volume {volume_id} stuck in {body['status']}"
        time.sleep(0.1)
    return body


def files(cloud: CloudRunner, backend: str) -> set[str]:
    return {p.name for p in (cloud.state_dir / "volumes" / backend).iterdir() if p.is_file()}


@pytest.fixture(scope="module")
def gold_type(two_backends: CloudRunner) -> str:
    name = unique("gold")
    two_backends.openstack(
        "volume", "type", "create", "--property", "volume_backend_name=beta", name
    )
    return name


def test_a_type_with_volume_backend_name_puts_the_volume_on_that_backend(
    two_backends: CloudRunner, gold_type: str
) -> None:
    cloud = two_backends
    vid = cloud.openstack(
        "volume", "create", "--type", gold_type, "--size", "1", unique("g"), "-f", "json"
    )["id"]
    body = wait(cloud, vid, "available")
    assert body["os-vol-host-attr:host"] == "storage1@beta#beta"
    path = cloud.state_dir / "volumes" / "beta" / f"volume-{vid}"
    assert path.exists() and path.read_bytes()[:4] == b"QFI\xfb"  # beta makes qcow2
    assert f"volume-{vid}" not in files(cloud, "alpha")

    # A clone stays on its source's backend (as Cinder), whatever its type.
    clone = cloud.openstack("volume", "create", "--source", vid, unique("c"), "-f", "json")["id"]
    assert wait(cloud, clone, "available")["os-vol-host-attr:host"] == "storage1@beta#beta"
    assert f"volume-{clone}" in files(cloud, "beta")

    # Extending checks the backend's room: 1 + 1 GiB used of 3, no overcommit. As Cinder,
    # the request is accepted and the volume keeps its size.
    cloud.openstack("volume", "set", "--size", "3", vid)
    assert wait(cloud, vid, "available")["size"] == 1
    cloud.openstack("volume", "set", "--size", "2", vid)
    assert wait(cloud, vid, "available")["size"] == 2

    # Attaching: the connection comes from the backend holding the volume.
    conn = cloud.sdk()
    r = conn.block_storage.post(
        "/attachments",
        json={
            "attachment": {
                "volume_uuid": vid,
                "instance_uuid": str(uuid.uuid4()),
                "connector": {"host": "storage1", "mountpoint": "/dev/vdb"},
            }
        },
        microversion="3.44",
    )
    assert r.status_code == 200, r.text
    att = r.json()["attachment"]
    assert Path(att["connection_info"]["data"]["path"]) == path
    assert att["connection_info"]["data"]["format"] == "qcow2"
    assert conn.block_storage.delete(f"/attachments/{att['id']}", microversion="3.44").ok

    cloud.openstack("volume", "delete", vid, clone)
    deadline = time.monotonic() + 30
    while {f"volume-{vid}", f"volume-{clone}"} & files(cloud, "beta"):
        assert time.monotonic() < deadline
        time.sleep(0.1)


def test_a_backend_too_small_gives_error_and_no_file(
    two_backends: CloudRunner, gold_type: str
) -> None:
    cloud = two_backends
    before = files(cloud, "alpha") | files(cloud, "beta")
    vid = cloud.openstack(
        "volume", "create", "--type", gold_type, "--size", "5", unique("big"), "-f", "json"
    )["id"]
    body = wait(cloud, vid, "error")
    assert body["os-vol-host-attr:host"] is None
    assert files(cloud, "alpha") | files(cloud, "beta") == before
    # An extra spec no backend reports: no valid backend either.
    odd = unique("odd")
    cloud.openstack("volume", "type", "create", "--property", "tier=platinum", odd)
    vid2 = cloud.openstack(
        "volume", "create", "--type", odd, "--size", "1", unique("odd"), "-f", "json"
    )["id"]
    wait(cloud, vid2, "error")
    # ...but one it does report finds it.
    gold = unique("tier")
    cloud.openstack("volume", "type", "create", "--property", "tier=gold", gold)
    vid3 = cloud.openstack(
        "volume", "create", "--type", gold, "--size", "1", unique("t"), "-f", "json"
    )["id"]
    assert wait(cloud, vid3, "available")["os-vol-host-attr:host"] == "storage1@beta#beta"
    # A volume never placed is deleted at once.
    cloud.openstack("volume", "delete", vid, vid2, vid3)
    deadline = time.monotonic() + 30
    while any(show(cloud, v)["status"] != "missing" for v in (vid, vid2, vid3)):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert files(cloud, "alpha") | files(cloud, "beta") == before


def test_default_volumes_go_to_the_backend_with_most_room(two_backends: CloudRunner) -> None:
    cloud = two_backends
    vid = cloud.openstack("volume", "create", "--size", "1", unique("d"), "-f", "json")["id"]
    assert wait(cloud, vid, "available")["os-vol-host-attr:host"] == "storage1@alpha#alpha"
    assert f"volume-{vid}" in files(cloud, "alpha")
    cloud.openstack("volume", "delete", vid)


def test_pools_capabilities_and_services(two_backends: CloudRunner) -> None:
    cloud = two_backends
    names = {p["Name"] for p in cloud.openstack("volume", "backend", "pool", "list", "-f", "json")}
    assert names == {"storage1@alpha#alpha", "storage1@beta#beta"}
    pools = cloud.openstack("volume", "backend", "pool", "list", "--long", "-f", "json")
    caps = {p["Name"]: p["Capabilities"] for p in pools}
    beta = caps["storage1@beta#beta"]
    assert beta["total_capacity_gb"] == 3 and beta["volume_backend_name"] == "beta"
    assert beta["max_over_subscription_ratio"] == 1.0 and beta["tier"] == "gold"
    assert caps["storage1@alpha#alpha"]["total_capacity_gb"] == 100
    assert "allocated_capacity_gb" in beta

    shown = cloud.openstack(
        "volume", "backend", "capability", "show", "storage1@beta", "-f", "json"
    )
    keys = {row["Key"] for row in shown}
    assert {"thin_provisioning_support", "volume_format", "tier"} <= keys
    missing = cloud.openstack("volume", "backend", "capability", "show", "nohost@x", check=False)
    assert missing.returncode != 0

    services = cloud.openstack("volume", "service", "list", "-f", "json")
    got = {(s["Binary"], s["Host"], s["State"]) for s in services}
    assert ("cinder-volume", "storage1@alpha", "up") in got
    assert ("cinder-volume", "storage1@beta", "up") in got
    assert ("cinder-scheduler", "storage1", "up") in got
