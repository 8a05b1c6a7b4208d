"""Encrypted volumes leaving their backend and coming back, as Cinder moves them, with
the real `openstack` CLI on a cloud of two file backends (`east` raw, `west` qcow2: a
container is a raw file on both): a backup keeps the container's bytes and its own
clone of the key, and restores into a new volume (of the backed-up type) or onto an
existing one of that type, each with its own clone; an image uploaded from one holds
the container and names a clone of the key (`cinder_encryption_key_id`), and a volume
made from it is that container with a clone of the image's key; a detached one
migrates byte for byte and keeps its key. What stays refused, and keys deleted with
the backup, the volume."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import httpx
import pytest

from cumulo.volume.encryption import LUKS1_MAGIC as LUKS1
from tests.cloudrunner import CloudRunner
from tests.functional.test_volume_encryption import DEMO, PATTERN, _decrypts, _head
from tests.functional.test_volume_moves import EAST, WEST, directory, unique
from tests.functional.test_volume_moves import cloud as cloud  # east (raw), west (qcow2)

GiB = 1 << 30


@pytest.fixture(scope="module")
def demo(cloud: CloudRunner) -> str:
    return cloud.token("demo", project="demo")


def _luks_type(cloud: CloudRunner, backend: str | None = None, provider: str = "luks") -> str:
    vtype = unique(provider)
    where = ("--property", f"volume_backend_name={backend}") if backend else ()
    cloud.openstack(
        "volume", "type", "create", *where, "--encryption-provider", provider,
        "--encryption-cipher", "aes-xts-plain64", "--encryption-key-size", "256",
        "--encryption-control-location", "front-end", vtype,
    )  # fmt: skip
    return vtype


def _volume(cloud: CloudRunner, token: str, volume_id: str) -> dict:
    url = f"http://127.0.0.1:{cloud.config.ports.block_storage}/v3/volumes/{volume_id}"
    response = httpx.get(
        url, headers={"X-Auth-Token": token, "OpenStack-API-Version": "volume 3.64"}
    )
    return response.json()["volume"] if response.status_code == 200 else {"status": "gone"}


def _wait(cloud: CloudRunner, token: str, volume_id: str, until, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while not until(body := _volume(cloud, token, volume_id)):
        assert body["status"] not in ("error", "error_restoring"), body
        assert time.monotonic() < deadline, body
        time.sleep(0.2)
    return body


def _available(cloud: CloudRunner, token: str, volume_id: str) -> dict:
    return _wait(cloud, token, volume_id, lambda b: b["status"] == "available")


def _gone(cloud: CloudRunner, token: str, volume_id: str) -> None:
    _wait(cloud, token, volume_id, lambda b: b["status"] == "gone")


def _file(cloud: CloudRunner, volume_id: str) -> Path:
    found = list(cloud.state_dir.glob(f"volumes/*/volume-{volume_id}"))
    assert len(found) == 1, found
    return found[0]


def _key(cloud: CloudRunner, token: str, key_id: str) -> httpx.Response:
    url = f"http://127.0.0.1:{cloud.config.ports.key_manager}/v1/secrets/{key_id}/payload"
    return httpx.get(url, headers={"X-Auth-Token": token, "Accept": "application/octet-stream"})


def _secret_named(cloud: CloudRunner, token: str, name: str) -> str:
    url = f"http://127.0.0.1:{cloud.config.ports.key_manager}/v1/secrets"
    found = httpx.get(url, params={"name": name}, headers={"X-Auth-Token": token}).json()
    assert found["total"] == 1, found
    return found["secrets"][0]["secret_ref"].rsplit("/", 1)[-1]


def _plaintext(path: Path, key: bytes, tmp_path: Path) -> bytes:
    """The first MiB a guest reads through the container (qemu-img's LUKS driver)."""
    out = tmp_path / f"{path.name}.plain"
    out.unlink(missing_ok=True)
    subprocess.run(
        [
            "qemu-img", "dd", "-U", "--object", f"secret,id=s0,data={key.hex()}",
            "--image-opts", "-O", "raw", "bs=1M", "count=1",
            f"if=driver=luks,key-secret=s0,file.filename={path}", f"of={out}",
        ],
        check=True,
    )  # fmt: skip
    return out.read_bytes()


def _filled(cloud: CloudRunner, token: str, vtype: str, tmp_path: Path) -> tuple[dict, bytes]:
    """A new encrypted volume with PATTERN written at its start through the container."""
    created = cloud.openstack(
        "volume", "create", "--size", "1", "--type", vtype, unique("enc"), "-f", "json",
        cloud=DEMO,
    )  # fmt: skip
    volume = _available(cloud, token, created["id"])
    key = _key(cloud, token, volume["encryption_key_id"]).content
    target = _file(cloud, volume["id"])
    source = tmp_path / "pattern.raw"
    source.write_bytes(PATTERN)
    with (tmp_path / "key").open("w") as f:
        f.write(key.hex())
    subprocess.run(
        [
            "qemu-img", "convert", "-n", "--object",
            f"secret,id=s0,file={tmp_path / 'key'},format=raw", "-f", "raw", str(source),
            "--target-image-opts",
            f"driver=luks,key-secret=s0,file.driver=file,file.filename={target}",
        ],
        check=True,
    )  # fmt: skip
    return volume, key


def _wait_backup(cloud: CloudRunner, token: str, backup_id: str, status: str) -> dict:
    url = f"http://127.0.0.1:{cloud.config.ports.block_storage}/v3/backups/{backup_id}"
    deadline = time.monotonic() + 120
    while True:
        response = httpx.get(url, headers={"X-Auth-Token": token})
        if status == "deleted" and response.status_code == 404:
            return {}
        body = response.json().get("backup") if response.status_code == 200 else None
        if body and body["status"] == status:
            return body
        assert body is None or body["status"] != "error", body
        assert time.monotonic() < deadline, body
        time.sleep(0.2)


def _refused(cloud: CloudRunner, words: str, *argv: str, as_cloud: str = DEMO) -> None:
    refused = cloud.openstack(*argv, check=False, cloud=as_cloud)
    assert refused.returncode != 0 and words in refused.stderr, (argv, refused.stderr)


# -- backups ------------------------------------------------------------------------


def test_backup_of_an_encrypted_volume_restores_its_container_with_cloned_keys(
    cloud: CloudRunner, demo: str, tmp_path: Path
) -> None:
    vtype = _luks_type(cloud, "west")  # a qcow2 backend: the container is raw there
    volume, key = _filled(cloud, demo, vtype, tmp_path)
    made = cloud.openstack(
        "volume", "backup", "create", "--name", unique("ebk"), volume["id"], "-f", "json",
        cloud=DEMO,
    )  # fmt: skip
    _wait_backup(cloud, demo, made["id"], "available")
    # The backup owns a clone of the key (Cinder's backup encryption_key_id).
    backup_key = _secret_named(cloud, demo, f"backup-{made['id']}")
    assert backup_key != volume["encryption_key_id"]
    assert _key(cloud, demo, backup_key).content == key
    # Its objects hold the container: ciphertext, never the plaintext.
    listing = cloud.openstack("object", "list", "volumebackups", "-f", "json", cloud=DEMO)
    data = [o["Name"] for o in listing if f"backup_{made['id']}-" in o["Name"]]
    assert data, listing
    stored = b""
    for name in sorted(data):
        out = tmp_path / "object"
        cloud.openstack("object", "save", "--file", str(out), "volumebackups", name, cloud=DEMO)
        stored += out.read_bytes()
    assert stored.startswith(LUKS1) and PATTERN[:64] not in stored

    # Restored to a new volume: the backed-up type, its own clone of the key, the bytes.
    restored = cloud.openstack(
        "volume", "backup", "restore", made["id"], unique("restored"), "-f", "json", cloud=DEMO
    )
    new = _available(cloud, demo, restored["volume_id"])
    assert new["encrypted"] is True and new["volume_type"] == vtype
    assert new["encryption_key_id"] not in (volume["encryption_key_id"], backup_key)
    assert _key(cloud, demo, new["encryption_key_id"]).content == key
    path = _file(cloud, new["id"])
    assert _head(path) == LUKS1
    assert _plaintext(path, key, tmp_path).startswith(PATTERN)
    assert _decrypts(path, key)["virtual-size"] == GiB

    # A volume made from the backup (3.47): of the backed-up type only.
    made_from = cloud.openstack(
        "--os-volume-api-version", "3.47", "volume", "create", "--backup", made["id"],
        "--type", vtype, unique("from"), "-f", "json", cloud=DEMO,
    )  # fmt: skip
    from_backup = _available(cloud, demo, made_from["id"])
    assert from_backup["encryption_key_id"] not in (volume["encryption_key_id"], backup_key)
    assert _plaintext(_file(cloud, made_from["id"]), key, tmp_path).startswith(PATTERN)
    _refused(
        cloud, "is different than the destination volume type",
        "--os-volume-api-version", "3.47", "volume", "create", "--backup", made["id"],
        unique("x"),
    )  # fmt: skip

    # Onto an existing volume of the same type: it takes a new clone, its old key goes.
    other = cloud.openstack(
        "volume", "create", "--size", "2", "--type", vtype, unique("target"), "-f", "json",
        cloud=DEMO,
    )  # fmt: skip
    other = _available(cloud, demo, other["id"])
    cloud.openstack("volume", "backup", "restore", "--force", made["id"], other["id"], cloud=DEMO)
    onto = _wait(cloud, demo, other["id"], lambda b: b["status"] == "available"
                 and b["encryption_key_id"] != other["encryption_key_id"])  # fmt: skip
    assert _key(cloud, demo, other["encryption_key_id"]).status_code == 404
    assert _key(cloud, demo, onto["encryption_key_id"]).content == key
    path = _file(cloud, other["id"])
    assert _plaintext(path, key, tmp_path).startswith(PATTERN)
    assert _decrypts(path, key)["virtual-size"] == 2 * GiB  # the payload fills the volume

    # Refused, as Cinder: an encrypted backup into a volume of another type (plain or
    # encrypted), and an unencrypted backup into an encrypted volume.
    plain = cloud.openstack(
        "volume", "create", "--size", "1", unique("plain"), "-f", "json", cloud=DEMO
    )
    _available(cloud, demo, plain["id"])
    another = _luks_type(cloud)
    elsewhere = cloud.openstack(
        "volume", "create", "--size", "1", "--type", another, unique("e2"), "-f", "json",
        cloud=DEMO,
    )  # fmt: skip
    _available(cloud, demo, elsewhere["id"])
    for target in (plain["id"], elsewhere["id"]):
        _refused(
            cloud, "is different than the destination volume type",
            "volume", "backup", "restore", "--force", made["id"], target,
        )  # fmt: skip
    plain_backup = cloud.openstack(
        "volume", "backup", "create", plain["id"], "-f", "json", cloud=DEMO
    )
    _wait_backup(cloud, demo, plain_backup["id"], "available")
    _refused(
        cloud, "an unencrypted backup cannot be restored into an encrypted volume",
        "volume", "backup", "restore", "--force", plain_backup["id"], elsewhere["id"],
    )  # fmt: skip
    for vid in (plain["id"], elsewhere["id"]):
        assert _volume(cloud, demo, vid)["status"] == "available"

    # A backup of a snapshot of it: the snapshot's container, the same way.
    snap = cloud.openstack(
        "volume", "snapshot", "create", "--volume", volume["id"], unique("s"), "-f", "json",
        cloud=DEMO,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while cloud.openstack("volume", "snapshot", "show", snap["id"], "-f", "json", cloud=DEMO)[
        "status"
    ] != "available":  # fmt: skip
        assert time.monotonic() < deadline
        time.sleep(0.2)
    of_snap = cloud.openstack(
        "volume", "backup", "create", "--snapshot", snap["id"], volume["id"], "-f", "json",
        cloud=DEMO,
    )  # fmt: skip
    _wait_backup(cloud, demo, of_snap["id"], "available")
    again = cloud.openstack(
        "volume", "backup", "restore", of_snap["id"], unique("again"), "-f", "json", cloud=DEMO
    )
    _available(cloud, demo, again["volume_id"])
    assert _plaintext(_file(cloud, again["volume_id"]), key, tmp_path).startswith(PATTERN)
    cloud.openstack("volume", "backup", "delete", of_snap["id"], cloud=DEMO)
    _wait_backup(cloud, demo, of_snap["id"], "deleted")
    cloud.openstack("volume", "delete", again["volume_id"], cloud=DEMO)
    cloud.openstack("volume", "snapshot", "delete", snap["id"], cloud=DEMO)
    deadline = time.monotonic() + 60
    while cloud.openstack("volume", "snapshot", "show", snap["id"], check=False, cloud=DEMO
                          ).returncode == 0:  # fmt: skip
        assert time.monotonic() < deadline
        time.sleep(0.2)

    # The backup outlives its volume; deleting it deletes its key.
    cloud.openstack("volume", "delete", volume["id"], cloud=DEMO)
    _gone(cloud, demo, volume["id"])
    assert _key(cloud, demo, volume["encryption_key_id"]).status_code == 404
    assert _key(cloud, demo, backup_key).status_code == 200
    cloud.openstack("volume", "backup", "delete", made["id"], plain_backup["id"], cloud=DEMO)
    _wait_backup(cloud, demo, made["id"], "deleted")
    assert _key(cloud, demo, backup_key).status_code == 404
    for vid in (new["id"], other["id"], plain["id"], elsewhere["id"], from_backup["id"]):
        cloud.openstack("volume", "delete", vid, cloud=DEMO)
    for vid in (new["id"], other["id"]):
        _gone(cloud, demo, vid)
    assert _key(cloud, demo, onto["encryption_key_id"]).status_code == 404


# -- images -------------------------------------------------------------------------


def _image(cloud: CloudRunner, token: str, image_id: str) -> dict:
    url = f"http://127.0.0.1:{cloud.config.ports.image}/v2/images/{image_id}"
    response = httpx.get(url, headers={"X-Auth-Token": token})
    return response.json() if response.status_code == 200 else {"status": "gone"}


def test_an_encrypted_volume_uploaded_to_an_image_makes_volumes_of_its_container(
    cloud: CloudRunner, demo: str, tmp_path: Path
) -> None:
    vtype = _luks_type(cloud)
    volume, key = _filled(cloud, demo, vtype, tmp_path)
    # Cinder's rule: the image is the container as it is (raw, bare).
    _refused(
        cloud, "must use 'raw' disk_format",
        "image", "create", "--volume", volume["id"], "--disk-format", "qcow2", unique("x"),
    )  # fmt: skip
    name = unique("encimg")
    made = cloud.openstack("image", "create", "--volume", volume["id"], name, "-f", "json",
                           cloud=DEMO)  # fmt: skip
    image_id = made.get("image_id") or made["id"]
    deadline = time.monotonic() + 120
    while (image := _image(cloud, demo, image_id))["status"] != "active":
        assert image["status"] in ("queued", "saving", "importing"), image
        assert time.monotonic() < deadline, image
        time.sleep(0.2)
    assert image["disk_format"] == "raw" and image["container_format"] == "bare"
    assert image["cinder_encryption_key_deletion_policy"] == "on_image_deletion"
    image_key = image["cinder_encryption_key_id"]
    assert image_key != volume["encryption_key_id"]
    assert _key(cloud, demo, image_key).content == key
    saved = tmp_path / "image.raw"
    cloud.openstack("image", "save", "--file", str(saved), image_id, cloud=DEMO)
    assert saved.read_bytes() == _file(cloud, volume["id"]).read_bytes()  # the container

    # A volume made from it: the container's bytes, a clone of the image's key.
    made_volume = cloud.openstack(
        "volume", "create", "--image", image_id, "--type", vtype, "--size", "1", unique("fromimg"),
        "-f", "json", cloud=DEMO,
    )  # fmt: skip
    new = _available(cloud, demo, made_volume["id"])
    assert new["size"] == 1 and new["encrypted"] is True
    assert new["encryption_key_id"] not in (image_key, volume["encryption_key_id"])
    assert _key(cloud, demo, new["encryption_key_id"]).content == key
    path = _file(cloud, new["id"])
    assert _plaintext(path, key, tmp_path).startswith(PATTERN)
    assert _decrypts(path, key)["virtual-size"] == GiB
    # It cannot reimage a volume (the volume's key is not the image's).
    reimage = httpx.post(
        f"http://127.0.0.1:{cloud.config.ports.block_storage}/v3/volumes/{new['id']}/action",
        json={"os-reimage": {"image_id": image_id}},
        headers={"X-Auth-Token": demo, "OpenStack-API-Version": "volume 3.68"},
    )
    assert reimage.status_code == 400 and "cannot reimage" in reimage.text, reimage.text
    # ...never into an unencrypted volume (it would hold ciphertext), nor a LUKS2 one.
    _refused(
        cloud, "must be of an encrypted volume type",
        "volume", "create", "--image", image_id, "--size", "1", unique("x"),
    )  # fmt: skip
    luks2 = _luks_type(cloud, provider="luks2")
    bad = cloud.openstack(
        "volume", "create", "--image", image_id, "--type", luks2, "--size", "1", unique("x"),
        "-f", "json",
        cloud=DEMO,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while _volume(cloud, demo, bad["id"])["status"] not in ("error", "available"):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert _volume(cloud, demo, bad["id"])["status"] == "error"  # a LUKS1 container

    for vid in (volume["id"], new["id"], bad["id"]):
        cloud.openstack("volume", "delete", vid, cloud=DEMO)
        _gone(cloud, demo, vid)
    assert _key(cloud, demo, image_key).status_code == 200  # the image's own
    cloud.openstack("image", "delete", image_id, cloud=DEMO)
    assert _key(cloud, demo, image_key).status_code == 404  # deleted with the image (Glance)


# -- migration ----------------------------------------------------------------------


def test_a_detached_encrypted_volume_migrates_byte_for_byte_and_keeps_its_key(
    cloud: CloudRunner, demo: str, tmp_path: Path
) -> None:
    vtype = _luks_type(cloud)  # no backend asked: placed on east, the larger one
    volume, key = _filled(cloud, demo, vtype, tmp_path)
    admin = cloud.token("admin")
    assert _volume(cloud, admin, volume["id"])["os-vol-host-attr:host"] == EAST
    before = _file(cloud, volume["id"]).read_bytes()
    cloud.openstack("volume", "migrate", "--host", WEST, volume["id"])
    moved = _wait(
        cloud, admin, volume["id"], lambda b: b["migration_status"] in ("success", "error")
    )
    assert moved["migration_status"] == "success", moved
    assert _volume(cloud, admin, volume["id"])["os-vol-host-attr:host"] == WEST
    assert moved["encryption_key_id"] == volume["encryption_key_id"]  # Cinder keeps it
    path = directory(cloud, "west") / f"volume-{volume['id']}"
    assert path.read_bytes() == before  # the container, byte for byte (raw on qcow2 west)
    assert not (directory(cloud, "east") / f"volume-{volume['id']}").exists()
    assert _plaintext(path, key, tmp_path).startswith(PATTERN)

    # A retype on demand to an encrypted type of the other backend (same encryption)
    # moves it back the same way.
    back = _luks_type(cloud, "east")
    cloud.openstack(
        "volume", "set", "--type", back, "--retype-policy", "on-demand", volume["id"], cloud=DEMO
    )
    _wait(
        cloud, demo, volume["id"], lambda b: b["volume_type"] == back and b["status"] == "available"
    )
    assert (directory(cloud, "east") / f"volume-{volume['id']}").read_bytes() == before
    assert _key(cloud, demo, volume["encryption_key_id"]).content == key

    # Attached (in-use), it stays where it is: Compute's swap cannot open the new one.
    cloud.openstack("volume", "set", "--state", "in-use", volume["id"])
    _refused(
        cloud, "an attached encrypted volume cannot be moved",
        "volume", "migrate", "--host", WEST, volume["id"], as_cloud="cumulo",
    )  # fmt: skip
    cloud.openstack("volume", "set", "--state", "available", volume["id"])
    cloud.openstack("volume", "delete", volume["id"], cloud=DEMO)
    _gone(cloud, demo, volume["id"])
    assert _key(cloud, demo, volume["encryption_key_id"]).status_code == 404
