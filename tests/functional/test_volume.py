"""Block Storage with the real `openstack` CLI and openstacksdk, as a new user would:
volumes empty, from an image, a snapshot or another volume; snapshots; read-only;
extend; upload to an image; attach/detach as compute does; delete. Data is real."""

from __future__ import annotations

import subprocess
import time
import uuid
from pathlib import Path

import httpx
import pytest

from tests.cloudrunner import CloudRunner

GiB = 1 << 30
PATTERN = b"cumulo-volume-pattern!" * 100


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def wait_status(cloud: CloudRunner, kind: str, name: str, status: str, timeout: float = 60) -> dict:
    """Poll the API (cheaper than the CLI) until the volume or snapshot has the status."""
    collection = "volumes" if kind == "volume" else "snapshots"
    base = f"http://127.0.0.1:{cloud.config.ports.block_storage}/v3/{collection}"
    headers = {"X-Auth-Token": cloud.token("admin"), "OpenStack-API-Version": "volume 3.60"}
    deadline = time.monotonic() + timeout
    with httpx.Client(headers=headers, timeout=30) as http:
        while True:
            found = http.get(f"{base}/detail", params={"name": name}).json()[collection]
            body = found[0] if found else {"status": "missing"}
            if body["status"] == status:
                return body
            assert not body["status"].startswith("error"), body
            assert time.monotonic() < deadline, f"{kind} {name} stuck in {body['status']}"
            time.sleep(0.1)


def volumes_dir(cloud: CloudRunner) -> Path:
    return cloud.state_dir / "volumes"


def volume_file(cloud: CloudRunner, volume_id: str) -> Path:
    return volumes_dir(cloud) / f"volume-{volume_id}"


def write_pattern(path: Path, offset: int) -> None:
    with path.open("r+b") as f:
        f.seek(offset)
        f.write(PATTERN)


def read_at(path: Path, offset: int, size: int = len(PATTERN)) -> bytes:
    with path.open("rb") as f:
        f.seek(offset)
        return f.read(size)


def test_create_empty_volume_then_delete(cloud: CloudRunner) -> None:
    name = unique("vol")
    created = cloud.openstack("volume", "create", "--size", "1", name, "-f", "json")
    assert created["size"] == 1 and created["status"] in ("creating", "available")
    body = wait_status(cloud, "volume", name, "available")
    path = volume_file(cloud, body["id"])
    assert path.stat().st_size == GiB
    assert path.stat().st_blocks * 512 < 16 << 20  # sparse
    listed = cloud.openstack("volume", "list", "-f", "json")
    assert any(v["Name"] == name and v["Status"] == "available" for v in listed)
    cloud.openstack("volume", "delete", name)
    deadline = time.monotonic() + 30
    while path.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not path.exists()
    assert cloud.openstack("volume", "show", name, check=False).returncode != 0


def test_snapshot_and_clone_hold_the_data_written(cloud: CloudRunner) -> None:
    src = unique("src")
    vid = cloud.openstack("volume", "create", "--size", "1", src, "-f", "json")["id"]
    wait_status(cloud, "volume", src, "available")
    write_pattern(volume_file(cloud, vid), 5 << 20)

    snap = unique("snap")
    cloud.openstack("volume", "snapshot", "create", "--volume", src, snap, "-f", "json")
    wait_status(cloud, "snapshot", snap, "available")
    # Writing to the volume after the snapshot does not change the snapshot.
    with volume_file(cloud, vid).open("r+b") as f:
        f.seek(5 << 20)
        f.write(b"X" * 16)

    from_snap = unique("fromsnap")
    body = cloud.openstack(
        "volume", "create", "--snapshot", snap, "--size", "2", from_snap, "-f", "json"
    )
    done = wait_status(cloud, "volume", from_snap, "available")
    assert done["size"] == 2 and done["snapshot_id"] == body["snapshot_id"]
    assert read_at(volume_file(cloud, body["id"]), 5 << 20) == PATTERN
    assert volume_file(cloud, body["id"]).stat().st_size == 2 * GiB

    clone = unique("clone")
    cid = cloud.openstack("volume", "create", "--source", src, clone, "-f", "json")["id"]
    wait_status(cloud, "volume", clone, "available")
    assert read_at(volume_file(cloud, cid), 5 << 20, 16) == b"X" * 16

    # A volume with snapshots is not deleted unless cascading.
    refused = cloud.openstack("volume", "delete", src, check=False)
    assert refused.returncode != 0 and "dependent snapshots" in refused.stderr
    cloud.openstack("volume", "delete", "--purge", src)
    cloud.openstack("volume", "delete", from_snap, clone)


def test_read_only_flag_and_extend(cloud: CloudRunner) -> None:
    name = unique("rw")
    vid = cloud.openstack("volume", "create", "--size", "1", name, "-f", "json")["id"]
    wait_status(cloud, "volume", name, "available")
    cloud.openstack("volume", "set", "--read-only", name)
    cloud.openstack("volume", "set", "--size", "2", name)
    body = wait_status(cloud, "volume", name, "available")
    assert body["size"] == 2
    assert volume_file(cloud, vid).stat().st_size == 2 * GiB
    # Shrinking is refused with Cinder's 400.
    refused = cloud.openstack("volume", "set", "--size", "1", name, check=False)
    assert refused.returncode != 0
    cloud.openstack("volume", "set", "--read-write", name)
    cloud.openstack("volume", "delete", name)


def test_volume_from_image_and_image_from_volume(cloud: CloudRunner, tmp_path: Path) -> None:
    raw = tmp_path / "disk.raw"
    subprocess.run(["qemu-img", "create", "-f", "raw", str(raw), "16M"], check=True)
    write_pattern(raw, 1 << 20)
    qcow = tmp_path / "disk.qcow2"
    subprocess.run(["qemu-img", "convert", "-O", "qcow2", str(raw), str(qcow)], check=True)
    image = unique("img")
    cloud.openstack(
        "image", "create", "--disk-format", "qcow2", "--container-format", "bare",
        "--file", str(qcow), image, "-f", "json",
    )  # fmt: skip
    name = unique("fromimg")
    vid = cloud.openstack("volume", "create", "--image", image, "--size", "1", name, "-f", "json")[
        "id"
    ]
    body = wait_status(cloud, "volume", name, "available")
    assert body["bootable"] in (True, "true")
    assert body["volume_image_metadata"]["image_name"] == image
    assert read_at(volume_file(cloud, vid), 1 << 20) == PATTERN
    # A volume made from a snapshot of it boots too, with the same image metadata (Cinder).
    snap = unique("bootsnap")
    cloud.openstack("volume", "snapshot", "create", "--volume", name, snap, "-f", "json")
    wait_status(cloud, "snapshot", snap, "available")
    again = unique("fromsnap")
    cloud.openstack("volume", "create", "--snapshot", snap, again, "-f", "json")
    made = wait_status(cloud, "volume", again, "available")
    assert made["bootable"] in (True, "true")
    assert made["volume_image_metadata"]["image_name"] == image
    cloud.openstack("volume", "delete", again)
    cloud.openstack("volume", "snapshot", "delete", snap)
    wait_gone = time.monotonic() + 60
    while cloud.openstack("volume", "snapshot", "list", "--name", snap, "-f", "json"):
        assert time.monotonic() < wait_gone
        time.sleep(0.2)

    uploaded = unique("upl")
    cloud.openstack("image", "create", "--volume", name, uploaded, "-f", "json")
    deadline = time.monotonic() + 60
    while cloud.openstack("image", "show", uploaded, "-f", "json")["status"] != "active":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    wait_status(cloud, "volume", name, "available")
    out = tmp_path / "uploaded.raw"
    cloud.openstack("image", "save", "--file", str(out), uploaded)
    assert out.stat().st_size == GiB
    assert read_at(out, 1 << 20) == PATTERN
    cloud.openstack("volume", "delete", name)
    cloud.openstack("image", "delete", image, uploaded)


def test_sdk_create_wait_attach_detach_delete(cloud: CloudRunner) -> None:
    conn = cloud.sdk()
    bs = conn.block_storage
    volume = bs.create_volume(size=1, name=unique("sdk"))
    volume = bs.wait_for_status(volume, "available", wait=60, interval=0.2)
    server_id = str(uuid.uuid4())
    # What compute does: attachment (reserve) -> connector -> complete -> delete.
    session = bs
    r = session.post(
        "/attachments",
        json={"attachment": {"volume_uuid": volume.id, "instance_uuid": server_id}},
        microversion="3.44",
    )
    assert r.status_code == 200, r.text
    att = r.json()["attachment"]
    assert bs.get_volume(volume.id).status == "reserved"
    r = session.put(
        f"/attachments/{att['id']}",
        json={"attachment": {"connector": {"host": bs_host(cloud), "mountpoint": "/dev/vdb"}}},
        microversion="3.44",
    )
    info = r.json()["attachment"]["connection_info"]
    assert info["driver_volume_type"] == "file"
    assert Path(info["data"]["path"]) == volume_file(cloud, volume.id)
    r = session.post(
        f"/attachments/{att['id']}/action", json={"os-complete": None}, microversion="3.44"
    )
    assert r.status_code == 204
    attached = bs.get_volume(volume.id)
    assert attached.status == "in-use"
    assert attached.attachments[0]["server_id"] == server_id
    # An attached volume cannot be deleted (400), nor attached again.
    with pytest.raises(Exception, match="400"):
        bs.delete_volume(volume.id)
    again = session.post(
        "/attachments",
        json={"attachment": {"volume_uuid": volume.id, "instance_uuid": str(uuid.uuid4())}},
        microversion="3.44",
    )
    assert again.status_code == 400 and "badRequest" in again.json()
    assert session.delete(f"/attachments/{att['id']}", microversion="3.44").status_code == 200
    assert bs.get_volume(volume.id).status == "available"
    bs.delete_volume(volume.id)
    bs.wait_for_delete(volume, wait=30, interval=0.2)


def bs_host(cloud: CloudRunner) -> str:
    assert cloud.cloud is not None and cloud.cloud.volume is not None
    return cloud.cloud.volume.host


def test_legacy_attach_actions_and_nbd_export(cloud: CloudRunner, admin_token: str) -> None:
    conn = cloud.sdk()
    volume = conn.block_storage.create_volume(size=1, name=unique("legacy"))
    volume = conn.block_storage.wait_for_status(volume, "available", wait=60, interval=0.2)
    port = cloud.config.ports.block_storage
    url = f"http://127.0.0.1:{port}/v3/volumes/{volume.id}/action"
    with httpx.Client(headers={"X-Auth-Token": admin_token}, timeout=30) as http:

        def act(body: dict) -> httpx.Response:
            return http.post(url, json=body)

        assert act({"os-reserve": None}).status_code == 202
        assert act({"os-reserve": None}).status_code == 400  # already reserved
        connector = {"host": "other-host", "initiator": "x"}
        r = act({"os-initialize_connection": {"connector": connector}})
        assert r.status_code == 200
        info = r.json()["connection_info"]
        assert info["driver_volume_type"] == "nbd"
        probe = subprocess.run(
            ["qemu-img", "info", "--output=json", info["data"]["uri"]],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert probe.returncode == 0 and '"virtual-size": 1073741824' in probe.stdout
        server = str(uuid.uuid4())
        r = act({"os-attach": {"instance_uuid": server, "mountpoint": "/dev/vdb"}})
        assert r.status_code == 202
        assert conn.block_storage.get_volume(volume.id).status == "in-use"
        assert http.delete(f"http://127.0.0.1:{port}/v3/volumes/{volume.id}").status_code == 400
        assert act({"os-begin_detaching": None}).status_code == 202
        assert act({"os-roll_detaching": None}).status_code == 202
        assert conn.block_storage.get_volume(volume.id).status == "in-use"
        assert act({"os-begin_detaching": None}).status_code == 202
        assert act({"os-detach": {}}).status_code == 202
        assert act({"os-terminate_connection": {"connector": connector}}).status_code == 202
        assert conn.block_storage.get_volume(volume.id).status == "available"
        # The export is gone with the connection.
        gone = subprocess.run(
            ["qemu-img", "info", info["data"]["uri"]], capture_output=True, timeout=30
        )
        assert gone.returncode != 0
    conn.block_storage.delete_volume(volume.id)


def test_a_multiattach_type_lets_servers_share_a_volume_and_retype_decides(
    cloud: CloudRunner,
) -> None:
    """Cinder's `multiattach` extra spec (`<is> True`) on the type makes the volume
    attachable to several servers; a retype of an available volume takes the new type's
    answer, an attached one may not change it."""
    shared, plain = unique("ma"), unique("plain")
    cloud.openstack("volume", "type", "create", "--property", "multiattach=<is> True", shared)
    cloud.openstack("volume", "type", "create", plain)
    volume = cloud.openstack("volume", "create", "--type", shared, "--size", "1", unique("v"),
                             "-f", "json")  # fmt: skip
    bs = cloud.sdk().block_storage
    bs.wait_for_status(bs.get_volume(volume["id"]), "available", wait=60, interval=0.2)
    assert cloud.openstack("volume", "show", volume["id"], "-f", "json")["multiattach"] is True

    def attach(server_id: str):
        return bs.post(
            "/attachments",
            json={"attachment": {"volume_uuid": volume["id"], "instance_uuid": server_id}},
            microversion="3.44",
        )

    first, second = attach(str(uuid.uuid4())), attach(str(uuid.uuid4()))
    assert first.status_code == 200 and second.status_code == 200, second.text
    ids = [first.json()["attachment"]["id"], second.json()["attachment"]["id"]]
    for att_id in ids:
        connector = {"connector": {"host": bs_host(cloud), "mountpoint": "/dev/vdb"}}
        bs.put(f"/attachments/{att_id}", json={"attachment": connector}, microversion="3.44")
        bs.post(f"/attachments/{att_id}/action", json={"os-complete": None}, microversion="3.44")
    attached = bs.get_volume(volume["id"])
    assert attached.status == "in-use" and len(attached.attachments) == 2
    # Attached to two servers, it may not lose multiattach.
    proc = cloud.openstack("volume", "set", "--type", plain, "--retype-policy", "never",
                           volume["id"], check=False)  # fmt: skip
    assert proc.returncode != 0 and "multiattach" in proc.stderr
    # One detached, it stays in use for the other.
    assert bs.delete(f"/attachments/{ids[0]}", microversion="3.44").status_code == 200
    assert bs.get_volume(volume["id"]).status == "in-use"
    assert bs.delete(f"/attachments/{ids[1]}", microversion="3.44").status_code == 200
    assert bs.get_volume(volume["id"]).status == "available"
    # Retyped while available: the plain type's volumes are for one server at a time.
    cloud.openstack("volume", "set", "--type", plain, "--retype-policy", "never", volume["id"])
    assert cloud.openstack("volume", "show", volume["id"], "-f", "json")["multiattach"] is False
    assert attach(str(uuid.uuid4())).status_code == 200
    assert attach(str(uuid.uuid4())).status_code == 400
