"""Volume backups with the `openstack` CLI: full and incremental backups stored as
objects in the owner's Object Storage account, restored to a new volume and onto an
existing one with identical bytes, and deleted with their objects; the errors Cinder
answers."""

from __future__ import annotations

import hashlib
import os
import time

import httpx

from tests.cloudrunner import CloudRunner
from tests.functional.test_volume import unique, volume_file, wait_status

MiB = 1024 * 1024


def wait_backup(cloud: CloudRunner, backup_id: str, status: str, timeout: float = 120) -> dict:
    url = f"http://127.0.0.1:{cloud.config.ports.block_storage}/v3/backups/{backup_id}"
    deadline = time.monotonic() + timeout
    with httpx.Client(headers={"X-Auth-Token": cloud.token("admin")}, timeout=30) as http:
        while True:
            response = http.get(url)
            body = response.json().get("backup") if response.status_code == 200 else None
            if status == "deleted" and response.status_code == 404:
                return {}
            if body and body["status"] == status:
                return body
            assert body is None or body["status"] != "error", body
            assert time.monotonic() < deadline, f"backup {backup_id} not {status}: {body}"
            time.sleep(0.2)


def digest(path) -> str:
    with path.open("rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def write(path, offset: int, data: bytes) -> None:
    with path.open("r+b") as f:
        f.seek(offset)
        f.write(data)


def objects_of(cloud: CloudRunner, container: str = "volumebackups") -> list[dict]:
    """The objects in the admin's container (its backups), with the `openstack` CLI."""
    return cloud.openstack("object", "list", container, "--long", "-f", "json") or []


def test_full_and_incremental_backups_restore_identical_bytes(cloud: CloudRunner) -> None:
    name = unique("bk")
    cloud.openstack("volume", "create", "--size", "1", "--property", "tier=gold", name,
                    "-f", "json")  # fmt: skip
    volume = wait_status(cloud, "volume", name, "available")
    path = volume_file(cloud, volume["id"])
    first = os.urandom(3 * MiB)
    write(path, 0, first)
    write(path, 700 * MiB, b"tail of the volume")

    full = cloud.openstack("volume", "backup", "create", "--name", f"{name}-full",
                           volume["id"], "-f", "json")  # fmt: skip
    shown = wait_backup(cloud, full["id"], "available")
    assert shown["is_incremental"] is False and shown["size"] == 1
    assert shown["container"] == "volumebackups" and shown["object_count"] >= 1
    assert wait_status(cloud, "volume", name, "available")
    stored = objects_of(cloud)
    mine = [o for o in stored if f"backup_{full['id']}" in o["Name"]]
    # Only the data that is not zeros is stored (a 1 GiB volume, ~3 MiB written).
    assert sum(o["Bytes"] for o in mine if o["Name"][-5:].isdecimal()) < 8 * MiB
    assert any(o["Name"].endswith("_metadata") for o in mine)
    full_digest = digest(path)

    # Change 64 KiB: the incremental backup stores only that.
    write(path, 1 * MiB, b"\xab" * 65536)
    incr = cloud.openstack("volume", "backup", "create", "--incremental", "--name",
                           f"{name}-incr", volume["id"], "-f", "json")  # fmt: skip
    shown = wait_backup(cloud, incr["id"], "available")
    assert shown["is_incremental"] is True
    incr_objects = [o for o in objects_of(cloud) if f"backup_{incr['id']}" in o["Name"]
                    and o["Name"][-5:].isdecimal()]  # fmt: skip
    assert sum(o["Bytes"] for o in incr_objects) == 65536
    assert cloud.openstack("volume", "backup", "show", full["id"], "-f", "json")[
        "has_dependent_backups"
    ]
    incr_digest = digest(path)

    # Restore the incremental one to a new volume: the bytes of the volume then.
    restored = cloud.openstack("volume", "backup", "restore", incr["id"], f"{name}-new",
                               "-f", "json")  # fmt: skip
    new = wait_status(cloud, "volume", f"{name}-new", "available")
    assert new["id"] == restored["volume_id"]
    assert digest(volume_file(cloud, new["id"])) == incr_digest
    assert new["metadata"] == {"tier": "gold"}  # the backed-up volume's metadata
    assert wait_backup(cloud, incr["id"], "available")

    # The full one onto the original volume: the bytes it had before the change.
    cloud.openstack("volume", "backup", "restore", full["id"], volume["id"], "--force")
    assert wait_status(cloud, "volume", name, "available")
    assert digest(path) == full_digest

    # A volume created from a backup (3.47): the same bytes, the same metadata.
    cloud.openstack("--os-volume-api-version", "3.47", "volume", "create", "--backup",
                    incr["id"], f"{name}-from", "-f", "json")  # fmt: skip
    made = wait_status(cloud, "volume", f"{name}-from", "available")
    assert digest(volume_file(cloud, made["id"])) == incr_digest
    cloud.openstack("volume", "delete", made["id"])

    listed = cloud.openstack("volume", "backup", "list", "--volume", volume["id"], "-f", "json")
    assert {b["ID"] for b in listed} == {full["id"], incr["id"]}

    # The full one cannot go while an incremental one depends on it.
    refused = cloud.openstack("volume", "backup", "delete", full["id"], check=False)
    assert refused.returncode != 0 and "Incremental backups exist" in refused.stderr
    cloud.openstack("volume", "backup", "delete", incr["id"])
    wait_backup(cloud, incr["id"], "deleted")
    cloud.openstack("volume", "backup", "delete", full["id"])
    wait_backup(cloud, full["id"], "deleted")
    assert not [o for o in objects_of(cloud) if volume["id"] in o["Name"]]
    cloud.openstack("volume", "delete", volume["id"], new["id"])


def test_backup_errors_are_cinders(cloud: CloudRunner) -> None:
    url = f"http://127.0.0.1:{cloud.config.ports.block_storage}/v3/backups"
    name = unique("bkerr")
    cloud.openstack("volume", "create", "--size", "1", name, "-f", "json")
    volume = wait_status(cloud, "volume", name, "available")
    with httpx.Client(headers={"X-Auth-Token": cloud.token("admin")}, timeout=30) as http:
        missing = http.post(url, json={"backup": {"name": "x"}})
        assert missing.status_code == 400 and "volume_id" in missing.json()["badRequest"]["message"]
        unknown = http.post(url, json={"backup": {"volume_id": "not-a-volume"}})
        assert unknown.status_code == 404
        message = unknown.json()["itemNotFound"]["message"]
        assert message == "Volume not-a-volume could not be found."
        # No full backup yet: nothing to increment.
        incr = http.post(url, json={"backup": {"volume_id": volume["id"], "incremental": True}})
        assert incr.status_code == 400
        assert "No backups available to do an incremental backup" in incr.text
        assert http.get(f"{url}/does-not-exist").status_code == 404
        # Another project cannot see it.
        created = http.post(url, json={"backup": {"volume_id": volume["id"], "name": name}})
        assert created.status_code == 202, created.text
        body = created.json()["backup"]
        assert set(body) == {"id", "links", "name"}
        wait_backup(cloud, body["id"], "available")
    demo_token = cloud.token("demo", project="demo")
    with httpx.Client(headers={"X-Auth-Token": demo_token}, timeout=30) as demo:
        assert demo.get(f"{url}/{body['id']}").status_code == 404
        assert body["id"] not in demo.get(f"{url}/detail").text
    with httpx.Client(headers={"X-Auth-Token": cloud.token("admin")}, timeout=30) as http:
        # A volume too small to restore onto.
        cloud.openstack("volume", "set", "--size", "2", name)
        assert wait_status(cloud, "volume", name, "available")["size"] == 2
        big = http.post(url, json={"backup": {"volume_id": volume["id"], "name": "two"}})
        wait_backup(cloud, big.json()["backup"]["id"], "available")
        small = unique("small")
        cloud.openstack("volume", "create", "--size", "1", small, "-f", "json")
        target = wait_status(cloud, "volume", small, "available")
        refused = http.post(f"{url}/{big.json()['backup']['id']}/restore",
                            json={"restore": {"volume_id": target["id"]}})  # fmt: skip
        assert refused.status_code == 400 and "too small" in refused.text
        for backup_id in (body["id"], big.json()["backup"]["id"]):
            assert http.delete(f"{url}/{backup_id}").status_code == 202
            wait_backup(cloud, backup_id, "deleted")
    cloud.openstack("volume", "delete", volume["id"], target["id"])
