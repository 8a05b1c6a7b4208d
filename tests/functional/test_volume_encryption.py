"""Encrypted volumes, as a user makes them with the `openstack` CLI: a volume type with
LUKS encryption (admin), volumes of it whose keys the Key Manager keeps under the user's
project, LUKS containers on the backend that hold only ciphertext, copies (snapshots,
clones) with copies of the key, extend, and what is refused for now."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import httpx

from tests.cloudrunner import CloudRunner
from tests.functional.test_compute_flavors import compute
from tests.functional.test_compute_microversions_2_8x import _boot, _upload
from tests.functional.test_volume import unique
from tests.functional.test_volume_transfers import wait_status

DEMO = "cumulo-demo"
PATTERN = b"cumulo-encrypted-volume-pattern." * 128


def _encrypted_type(cloud: CloudRunner, provider: str = "luks") -> str:
    vtype = unique(provider)
    cloud.openstack(
        "volume", "type", "create", vtype, "--encryption-provider", provider,
        "--encryption-cipher", "aes-xts-plain64", "--encryption-key-size", "256",
        "--encryption-control-location", "front-end", "-f", "json",
    )  # fmt: skip
    return vtype


def _volume_file(cloud: CloudRunner, volume_id: str) -> Path:
    found = list(cloud.state_dir.glob(f"volumes/**/volume-{volume_id}"))
    assert len(found) == 1, found
    return found[0]


def _head(path: Path) -> bytes:
    with path.open("rb") as f:
        return f.read(8)


def _key(cloud: CloudRunner, token: str, key_id: str) -> httpx.Response:
    url = f"http://127.0.0.1:{cloud.config.ports.key_manager}/v1/secrets/{key_id}/payload"
    return httpx.get(url, headers={"X-Auth-Token": token, "Accept": "application/octet-stream"})


def _encryption_metadata(cloud: CloudRunner, token: str, volume_id: str) -> dict:
    url = f"http://127.0.0.1:{cloud.config.ports.block_storage}/v3/volumes/{volume_id}/encryption"
    response = httpx.get(url, headers={"X-Auth-Token": token})
    response.raise_for_status()
    return response.json()


def _decrypts(path: Path, key: bytes) -> dict:
    """qemu-img's view of the container opened with the key (as Compute opens it)."""
    out = subprocess.run(
        [
            "qemu-img", "info", "--output=json", "--object",
            f"secret,id=s0,data={key.hex()}", "--image-opts",
            f"driver=luks,key-secret=s0,file.filename={path}",
        ],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return json.loads(out.stdout)


def test_encrypted_volume_lifecycle(cloud: CloudRunner) -> None:
    vtype = _encrypted_type(cloud)
    demo = cloud.token("demo", project="demo")
    name = unique("enc")
    cloud.openstack(
        "volume", "create", "--size", "1", "--type", vtype, name, "-f", "json", cloud=DEMO
    )
    volume = wait_status(cloud, name, "available")
    assert volume["encrypted"] is True
    shown = cloud.openstack(
        "--os-volume-api-version", "3.64", "volume", "show", volume["id"], "-f", "json", cloud=DEMO
    )
    key_id = shown["encryption_key_id"]
    meta = _encryption_metadata(cloud, demo, volume["id"])
    assert meta == {
        "encryption_key_id": key_id,
        "provider": "luks",
        "cipher": "aes-xts-plain64",
        "key_size": 256,
        "control_location": "front-end",
    }
    # The key is the project's secret in the Key Manager: 256 random bits.
    key = _key(cloud, demo, key_id)
    assert key.status_code == 200 and len(key.content) == 32
    # On the backend: a LUKS1 container the key opens, of the volume's size.
    path = _volume_file(cloud, volume["id"])
    assert _head(path) == b"LUKS\xba\xbe\x00\x01"
    assert _decrypts(path, key.content)["virtual-size"] == 1 << 30
    # An unencrypted volume's metadata has only a null key.
    plain = unique("plain")
    cloud.openstack("volume", "create", "--size", "1", plain, "-f", "json", cloud=DEMO)
    plain_volume = wait_status(cloud, plain, "available")
    assert plain_volume["encrypted"] is False
    assert _encryption_metadata(cloud, demo, plain_volume["id"]) == {"encryption_key_id": None}

    # Extend: the payload grows, the same key opens it.
    cloud.openstack("volume", "set", "--size", "2", volume["id"], cloud=DEMO)
    wait_status(cloud, name, "available")
    assert _decrypts(path, key.content)["virtual-size"] == 2 << 30

    # A snapshot, and a volume made from it: a copy of the container with a copy of the
    # key under a new id.
    snap = unique("encsnap")
    cloud.openstack("volume", "snapshot", "create", "--volume", volume["id"], snap, cloud=DEMO)
    _wait_snapshot(cloud, demo, snap)
    copy = unique("enccopy")
    cloud.openstack(
        "volume", "create", "--snapshot", snap, "--type", vtype, "--size", "3", copy,
        "-f", "json", cloud=DEMO,
    )  # fmt: skip
    copied = wait_status(cloud, copy, "available")
    copied_meta = _encryption_metadata(cloud, demo, copied["id"])
    assert copied_meta["encryption_key_id"] not in (None, key_id)
    assert _key(cloud, demo, copied_meta["encryption_key_id"]).content == key.content
    copy_path = _volume_file(cloud, copied["id"])
    assert _decrypts(copy_path, key.content)["virtual-size"] == 3 << 30

    # What cannot carry the key along is refused, nothing changes (backups, images and
    # migrations carry it: tests/functional/test_volume_encryption_moves.py).
    for argv, words in (
        (("volume", "transfer", "request", "create", volume["id"]), "Transferring"),
        (("volume", "set", "--type", "__DEFAULT__", "--retype-policy", "on-demand", volume["id"]),
         "Retype cannot change encryption requirements"),
    ):  # fmt: skip
        refused = cloud.openstack(*argv, check=False, cloud=DEMO)
        assert refused.returncode != 0 and words in refused.stderr, (argv, refused.stderr)
    assert wait_status(cloud, name, "available")["encrypted"] is True
    # An encrypted snapshot into an unencrypted type: refused.
    refused = cloud.openstack(
        "volume", "create", "--snapshot", snap, "--size", "3", unique("x"), check=False,
        cloud=DEMO,
    )  # fmt: skip
    assert refused.returncode != 0 and "must be of an encrypted volume type" in refused.stderr

    # Another project's user reads neither the volume nor its key.
    admin = cloud.token("admin")
    assert _key(cloud, admin, key_id).status_code in (403, 404)

    # Deleted: the data and the key go.
    cloud.openstack("volume", "delete", copied["id"], cloud=DEMO)
    cloud.openstack("volume", "snapshot", "delete", snap, cloud=DEMO)
    _wait_gone(cloud, demo, copied["id"])
    assert _key(cloud, demo, copied_meta["encryption_key_id"]).status_code == 404
    assert not copy_path.exists()
    _wait_no_snapshot(cloud, demo, snap)
    cloud.openstack("volume", "delete", volume["id"], plain_volume["id"], cloud=DEMO)
    _wait_gone(cloud, demo, volume["id"])
    assert _key(cloud, demo, key_id).status_code == 404
    cloud.openstack("volume", "type", "delete", vtype)


def test_encrypted_volume_from_an_image(cloud: CloudRunner, tmp_path: Path) -> None:
    """The image is written through the container: ciphertext at rest, the image's bytes
    through the key."""
    vtype = _encrypted_type(cloud)
    demo = cloud.token("demo", project="demo")
    raw = tmp_path / "disk.raw"
    raw.write_bytes(PATTERN + bytes(16 << 20))
    qcow = tmp_path / "disk.qcow2"
    subprocess.run(["qemu-img", "convert", "-O", "qcow2", str(raw), str(qcow)], check=True)
    image = unique("encsrc")
    cloud.openstack(
        "image", "create", "--disk-format", "qcow2", "--container-format", "bare",
        "--file", str(qcow), image, "-f", "json", cloud=DEMO,
    )  # fmt: skip
    name = unique("encimg")
    cloud.openstack(
        "volume", "create", "--image", image, "--type", vtype, "--size", "1", name,
        "-f", "json", cloud=DEMO,
    )  # fmt: skip
    volume = wait_status(cloud, name, "available", timeout=120)
    assert volume["bootable"] == "true" and volume["encrypted"] is True
    key = _key(cloud, demo, _encryption_metadata(cloud, demo, volume["id"])["encryption_key_id"])
    path = _volume_file(cloud, volume["id"])
    with path.open("rb") as f:
        assert PATTERN not in f.read(32 << 20)  # not in the clear on the backend
    check = tmp_path / "check.raw"
    subprocess.run(
        [
            "qemu-img", "dd", "--object", f"secret,id=s0,data={key.content.hex()}",
            "--image-opts", "-O", "raw", "bs=1M", "count=1",
            f"if=driver=luks,key-secret=s0,file.filename={path}", f"of={check}",
        ],
        check=True,
    )  # fmt: skip
    assert check.read_bytes().startswith(PATTERN)  # the guest reads the image
    assert _decrypts(path, key.content)["virtual-size"] == 1 << 30
    # A LUKS2 type cannot take an image here (no dm-crypt to write through).
    luks2 = _encrypted_type(cloud, "luks2")
    refused = cloud.openstack(
        "volume", "create", "--image", image, "--type", luks2, "--size", "1",
        unique("x"), check=False, cloud=DEMO,
    )  # fmt: skip
    assert refused.returncode != 0 and "LUKS2" in refused.stderr
    # An empty LUKS2 volume is made (cryptsetup formats it; a host's dm-crypt opens it).
    blank = unique("luks2")
    cloud.openstack("volume", "create", "--type", luks2, "--size", "1", blank, cloud=DEMO)
    made = wait_status(cloud, blank, "available")
    assert _head(_volume_file(cloud, made["id"])) == b"LUKS\xba\xbe\x00\x02"
    cloud.openstack("volume", "delete", volume["id"], made["id"], cloud=DEMO)
    _wait_gone(cloud, demo, made["id"])
    _wait_gone(cloud, demo, volume["id"])
    cloud.openstack("image", "delete", image, cloud=DEMO)
    cloud.openstack("volume", "type", "delete", vtype)
    cloud.openstack("volume", "type", "delete", luks2)


def _wait_snapshot(cloud: CloudRunner, token: str, name: str) -> None:
    url = f"http://127.0.0.1:{cloud.config.ports.block_storage}/v3/snapshots/detail"
    deadline = time.monotonic() + 60
    while True:
        found = httpx.get(url, params={"name": name}, headers={"X-Auth-Token": token}).json()
        if found["snapshots"] and found["snapshots"][0]["status"] == "available":
            return
        assert time.monotonic() < deadline, found
        time.sleep(0.1)


def _wait_no_snapshot(cloud: CloudRunner, token: str, name: str) -> None:
    url = f"http://127.0.0.1:{cloud.config.ports.block_storage}/v3/snapshots/detail"
    deadline = time.monotonic() + 60
    while httpx.get(url, params={"name": name}, headers={"X-Auth-Token": token}).json()[
        "snapshots"
    ]:
        assert time.monotonic() < deadline
        time.sleep(0.1)


def _wait_gone(cloud: CloudRunner, token: str, volume_id: str) -> None:
    url = f"http://127.0.0.1:{cloud.config.ports.block_storage}/v3/volumes/{volume_id}"
    deadline = time.monotonic() + 60
    while httpx.get(url, headers={"X-Auth-Token": token}).status_code != 404:
        assert time.monotonic() < deadline, f"volume {volume_id} still there"
        time.sleep(0.1)


def test_encrypted_volumes_attach_extend_and_a_lost_key(cloud: CloudRunner, tmp_path) -> None:
    """A server (fake compute host) gets encrypted volumes with their keys: Compute reads
    the encryption metadata and the key with the user's token (the host says in the
    console log what it opened the disk with); an attached one is extended (Nova's
    compute_extend_volume event succeeds); a volume whose key is gone is not attached."""
    luks, luks2 = _encrypted_type(cloud), _encrypted_type(cloud, "luks2")
    demo = cloud.token("demo", project="demo")
    image = _upload(cloud, tmp_path_factory=_Factory(tmp_path))
    with compute(cloud, demo, "2.51") as api:
        server = _boot(api, image)["id"]
        volumes = {}
        for vtype in (luks, luks2):
            name = unique("att")
            cloud.openstack("volume", "create", "--size", "1", "--type", vtype, name, cloud=DEMO)
            volumes[vtype] = wait_status(cloud, name, "available")["id"]
            cloud.openstack("server", "add", "volume", server, volumes[vtype], cloud=DEMO)
            wait_status(cloud, name, "in-use")
        log = cloud.openstack("console", "log", "show", server, cloud=DEMO)
        assert "opened with luks\n" in log and "opened with luks2" in log, log

        # Extend while attached (3.42): the volume grows, the host is told.
        cloud.openstack(
            "--os-volume-api-version", "3.42", "volume", "set", "--size", "2", volumes[luks],
            cloud=DEMO,
        )  # fmt: skip
        grown = _wait_size(cloud, demo, volumes[luks], 2)
        assert grown["status"] == "in-use"
        admin = compute(cloud, cloud.token("admin"), "2.51")
        with admin:

            def extended() -> dict | None:
                actions = admin.get(f"/servers/{server}/os-instance-actions").json()
                for action in actions["instanceActions"]:
                    if action["action"] != "extend_volume":
                        continue
                    shown = admin.get(
                        f"/servers/{server}/os-instance-actions/{action['request_id']}"
                    ).json()["instanceAction"]
                    for event in shown["events"]:
                        if event["event"] == "compute_extend_volume" and event["finish_time"]:
                            return event
                return None

            event = _until(extended, "the compute_extend_volume event")
            assert event["result"] == "Success", event
        path = _volume_file(cloud, volumes[luks])
        key = _key(
            cloud, demo, _encryption_metadata(cloud, demo, volumes[luks])["encryption_key_id"]
        )
        assert _decrypts(path, key.content)["virtual-size"] == 2 << 30

        # A volume whose key was deleted from the Key Manager: the attach fails, the
        # volume is available again, the action says why.
        name = unique("lost")
        cloud.openstack("volume", "create", "--size", "1", "--type", luks, name, cloud=DEMO)
        lost = wait_status(cloud, name, "available")["id"]
        key_id = _encryption_metadata(cloud, demo, lost)["encryption_key_id"]
        url = f"http://127.0.0.1:{cloud.config.ports.key_manager}/v1/secrets/{key_id}"
        assert httpx.delete(url, headers={"X-Auth-Token": demo}).status_code == 204
        cloud.openstack("server", "add", "volume", server, lost, cloud=DEMO)
        _until(
            lambda: (
                httpx.get(
                    f"http://127.0.0.1:{cloud.config.ports.block_storage}/v3/volumes/{lost}",
                    headers={"X-Auth-Token": demo},
                ).json()["volume"]["status"]
                == "available"
            ),
            "the volume back to available",
        )
        for volume_id in volumes.values():
            cloud.openstack("server", "remove", "volume", server, volume_id, cloud=DEMO)
        for vtype in (luks, luks2):
            wait_status(cloud, cloud.openstack("volume", "show", volumes[vtype], "-f", "json")[
                "name"], "available")  # fmt: skip
        api.delete(f"/servers/{server}")
        cloud.openstack("volume", "delete", *volumes.values(), lost, cloud=DEMO)
        for volume_id in (*volumes.values(), lost):
            _wait_gone(cloud, demo, volume_id)
    cloud.openstack("volume", "type", "delete", luks, luks2)


class _Factory:
    """tmp_path as the tmp_path_factory _upload wants."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def mktemp(self, name: str) -> Path:
        made = self.path / name
        made.mkdir()
        return made


def _until(check, what: str, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def _wait_size(cloud: CloudRunner, token: str, volume_id: str, size: int) -> dict:
    url = f"http://127.0.0.1:{cloud.config.ports.block_storage}/v3/volumes/{volume_id}"

    def grown() -> dict | None:
        volume = httpx.get(url, headers={"X-Auth-Token": token}).json()["volume"]
        return volume if volume["size"] == size and volume["status"] != "extending" else None

    return _until(grown, f"volume {volume_id} at {size} GiB")
