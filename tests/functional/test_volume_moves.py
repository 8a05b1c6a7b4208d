"""Moving volumes between backends and handing data in and out of Block Storage, with
the real `openstack` CLI on a cloud of two file backends: `east` (raw) and `west`
(qcow2). A migration (`openstack volume migrate`) and a retype with
`--retype-policy on-demand` copy every byte to the other backend and leave nothing
behind; `volume delete --remote` (unmanage) keeps the data on the backend and
`volume create --remote-source` (manage) adopts it again, as the manageable lists show;
bad requests are answered 400/404 with nothing written."""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from pathlib import Path

import httpx
import pytest

from cumulo.common.config import VolumeBackendConfig, load_config, write_config
from tests.cloudrunner import CloudRunner, configure_state_dir

MiB = 1 << 20
HOST = "storage1"
EAST, WEST = f"{HOST}@east#east", f"{HOST}@west#west"


@pytest.fixture(scope="module")
def cloud(tmp_path_factory) -> CloudRunner:
    state = tmp_path_factory.mktemp("volume-moves")
    configure_state_dir(state)
    config = load_config(state)
    config.volume.host = HOST
    config.volume.backends = [
        VolumeBackendConfig(name="east", capacity_gb=100),
        VolumeBackendConfig(name="west", capacity_gb=50, volume_format="qcow2"),
    ]
    write_config(state, config)
    runner = CloudRunner(state).start()
    yield runner
    runner.stop()


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def api(cloud: CloudRunner, token: str | None = None, version: str = "3.0") -> httpx.Client:
    return httpx.Client(
        base_url=f"http://127.0.0.1:{cloud.config.ports.block_storage}/v3",
        headers={
            "X-Auth-Token": token or cloud.token("admin"),
            "OpenStack-API-Version": f"volume {version}",
        },
        timeout=60,
    )


def show(cloud: CloudRunner, volume_id: str) -> dict:
    with api(cloud) as http:
        r = http.get(f"/volumes/{volume_id}")
    return r.json()["volume"] if r.status_code == 200 else {"status": "missing"}


def wait(cloud: CloudRunner, volume_id: str, until, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while not until(body := show(cloud, volume_id)):
        assert time.monotonic() < deadline, f"volume {volume_id}: {body}"
        time.sleep(0.1)
    return body


def directory(cloud: CloudRunner, backend: str) -> Path:
    return cloud.state_dir / "volumes" / backend


def files(cloud: CloudRunner, backend: str) -> set[str]:
    return {p.name for p in directory(cloud, backend).iterdir() if p.is_file()}


def raw_bytes(path: Path, tmp_path: Path) -> bytes:
    """What a reader of the volume sees, whatever the file's format."""
    out = tmp_path / f"{path.name}.raw"
    subprocess.run(["qemu-img", "convert", "-U", "-O", "raw", str(path), str(out)], check=True)
    data = out.read_bytes()
    out.unlink()
    return data


def write(path: Path, offset: int, data: bytes) -> None:
    with path.open("r+b") as f:
        f.seek(offset)
        f.write(data)


def new_volume(cloud: CloudRunner, *args: str) -> dict:
    created = cloud.openstack("volume", "create", "--size", "1", *args, unique("v"), "-f", "json")
    return wait(cloud, created["id"], lambda b: b["status"] == "available")


def filled_volume(cloud: CloudRunner, *args: str) -> tuple[dict, bytes]:
    """A raw volume on east with data written at its start, middle and end."""
    volume = new_volume(cloud, *args)
    assert volume["os-vol-host-attr:host"] == EAST
    path = directory(cloud, "east") / f"volume-{volume['id']}"
    write(path, 0, os.urandom(2 * MiB))
    write(path, 512 * MiB, b"middle of the volume")
    write(path, 1024 * MiB - 4, b"tail")
    return volume, path.read_bytes()


@pytest.fixture(scope="module")
def typed(cloud: CloudRunner) -> dict[str, str]:
    """A volume type per backend (volume_backend_name)."""
    names = {}
    for backend in ("east", "west"):
        names[backend] = unique(backend)
        cloud.openstack(
            "volume", "type", "create", "--property", f"volume_backend_name={backend}",
            names[backend],
        )  # fmt: skip
    return names


# -- migration ------------------------------------------------------------------------


def test_migrate_copies_every_byte_to_the_other_backend_and_leaves_nothing(
    cloud: CloudRunner, tmp_path: Path
) -> None:
    volume, data = filled_volume(cloud)
    vid = volume["id"]
    before = show(cloud, vid)
    assert before["migration_status"] is None

    cloud.openstack("volume", "migrate", "--host", WEST, "--lock-volume", vid)
    moved = wait(cloud, vid, lambda b: b["migration_status"] in ("success", "error"))
    assert moved["migration_status"] == "success", moved
    assert moved["os-vol-mig-status-attr:migstat"] == "success"
    assert moved["os-vol-host-attr:host"] == WEST
    assert moved["status"] == "available"  # back from maintenance (--lock-volume)
    for key in ("id", "name", "size", "volume_type", "user_id", "os-vol-tenant-attr:tenant_id"):
        assert moved[key] == before[key]

    # The bytes read from the new backend (qcow2 there) are the volume's.
    assert f"volume-{vid}" not in files(cloud, "east")
    dest = directory(cloud, "west") / f"volume-{vid}"
    assert dest.read_bytes()[:4] == b"QFI\xfb"
    assert raw_bytes(dest, tmp_path) == data
    # The new volume the copy went into is gone; only the volume's own files are left.
    with api(cloud) as http:
        listed = http.get("/volumes/detail", params={"all_tenants": 1}).json()["volumes"]
    assert [v["id"] for v in listed if v["name"] == volume["name"]] == [vid]
    assert not [f for f in files(cloud, "west") if f != f"volume-{vid}" and "volume-" in f
                and f.removeprefix("volume-") not in {v["id"] for v in listed}]  # fmt: skip

    # ...and it is usable there: a snapshot and a clone are made on west.
    clone = cloud.openstack("volume", "create", "--source", vid, unique("c"), "-f", "json")
    cloned = wait(cloud, clone["id"], lambda b: b["status"] == "available")
    assert cloned["os-vol-host-attr:host"] == WEST
    # Moving back works the same way.
    cloud.openstack("volume", "migrate", "--host", f"{HOST}@east", vid)
    back = wait(cloud, vid, lambda b: b["os-vol-host-attr:host"] == EAST)
    assert back["migration_status"] == "success"
    assert (directory(cloud, "east") / f"volume-{vid}").read_bytes() == data
    assert f"volume-{vid}" not in files(cloud, "west")
    cloud.openstack("volume", "delete", vid, clone["id"])


def test_bad_migrations_are_refused_and_change_nothing(cloud: CloudRunner, typed) -> None:
    volume = new_volume(cloud)
    vid = volume["id"]
    before = (files(cloud, "east"), files(cloud, "west"))
    with api(cloud) as http:
        count = len(http.get("/volumes", params={"all_tenants": 1}).json()["volumes"])

        def migrate(body: dict) -> httpx.Response:
            return http.post(f"/volumes/{vid}/action", json={"os-migrate_volume": body})

        unknown = migrate({"host": f"{HOST}@nowhere#nowhere"})
        assert unknown.status_code == 400
        assert "No available service named" in unknown.json()["badRequest"]["message"]
        same = migrate({"host": EAST})
        assert same.status_code == 400
        assert "different than the current one" in same.json()["badRequest"]["message"]
        assert migrate({"host": WEST, "force_host_copy": "maybe"}).status_code == 400
        assert migrate({"host": WEST, "bogus": 1}).status_code == 400
        assert migrate({}).status_code == 400
        # Only admins migrate.
        with api(cloud, cloud.token("demo", project="demo")) as demo:
            assert demo.post(
                f"/volumes/{vid}/action", json={"os-migrate_volume": {"host": WEST}}
            ).status_code in (403, 404)

        # A volume with snapshots cannot move (Cinder's rule).
        snap = cloud.openstack("volume", "snapshot", "create", "--volume", vid, unique("s"),
                               "-f", "json")  # fmt: skip
        deadline = time.monotonic() + 30
        while http.get(f"/snapshots/{snap['id']}").json()["snapshot"]["status"] != "available":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert migrate({"host": WEST}).status_code == 400
        cloud.openstack("volume", "snapshot", "delete", snap["id"])
        while http.get(f"/snapshots/{snap['id']}").status_code != 404:
            time.sleep(0.1)

        assert show(cloud, vid)["migration_status"] is None
        assert show(cloud, vid)["os-vol-host-attr:host"] == EAST
        assert len(http.get("/volumes", params={"all_tenants": 1}).json()["volumes"]) == count
        assert (files(cloud, "east"), files(cloud, "west")) == before

        # A destination the volume's type does not fit: accepted, then the migration is
        # in error (Cinder's scheduler), the volume where it was.
        eastern = new_volume(cloud, "--type", typed["east"])
        r = http.post(f"/volumes/{eastern['id']}/action",
                      json={"os-migrate_volume": {"host": WEST}})  # fmt: skip
        assert r.status_code == 202
        failed = wait(cloud, eastern["id"], lambda b: b["migration_status"] == "error")
        assert failed["os-vol-host-attr:host"] == EAST and failed["status"] == "available"
        # os-migrate_volume_completion outside a migration: Cinder's checks.
        r = http.post(
            f"/volumes/{vid}/action",
            json={"os-migrate_volume_completion": {"new_volume": eastern["id"]}},
        )
        assert r.status_code == 400
        assert "not mid-migration" in r.json()["badRequest"]["message"]
    cloud.openstack("volume", "delete", vid, eastern["id"])


def test_retype_on_demand_moves_the_volume_to_the_new_types_backend(
    cloud: CloudRunner, typed, tmp_path: Path
) -> None:
    volume, data = filled_volume(cloud, "--type", typed["east"])
    vid = volume["id"]
    refused = cloud.openstack(
        "volume", "set", "--type", typed["west"], "--retype-policy", "never", vid, check=False
    )
    assert refused.returncode != 0 and "migration_policy is never" in refused.stderr
    assert show(cloud, vid)["volume_type"] == typed["east"]

    cloud.openstack("volume", "set", "--type", typed["west"], "--retype-policy", "on-demand", vid)
    # The type changes when the volume lands, with its host and migration status.
    moved = wait(cloud, vid, lambda b: b["volume_type"] == typed["west"])
    assert moved["os-vol-host-attr:host"] == WEST
    assert moved["migration_status"] == "success" and moved["status"] == "available"
    assert raw_bytes(directory(cloud, "west") / f"volume-{vid}", tmp_path) == data
    assert f"volume-{vid}" not in files(cloud, "east")

    # Retyped back on-demand to east.
    cloud.openstack("volume", "set", "--type", typed["east"], "--retype-policy", "on-demand", vid)
    back = wait(cloud, vid, lambda b: b["volume_type"] == typed["east"])
    assert back["os-vol-host-attr:host"] == EAST
    assert (directory(cloud, "east") / f"volume-{vid}").read_bytes() == data
    cloud.openstack("volume", "delete", vid)


def test_a_restart_during_a_migration_ends_it_in_error_with_the_data_in_place(
    cloud: CloudRunner,
) -> None:
    """A source backend that stops mid-migration: on start the migration is `error`, the
    volume still on its backend with its data, the new volume deleted."""
    volume, data = filled_volume(cloud)
    vid = volume["id"]
    east = next(m for m in cloud.cloud.volume.managers if m.backend.name == "east")

    async def crashed_mid_copy() -> str:
        from cumulo.volume import states
        from cumulo.volume.models import Volume

        async with east.db.write() as session:
            row = await session.get(Volume, vid)
            target = Volume(
                id=str(uuid.uuid4()), project_id=row.project_id, user_id=row.user_id,
                name=row.name, size=row.size, status="available",
                availability_zone=row.availability_zone, type_id=row.type_id, host=WEST,
                migration_status=f"{states.MIGRATION_TARGET}{vid}",
            )  # fmt: skip
            session.add(target)
            row.migration_status = states.MIGRATING
        west = next(m for m in cloud.cloud.volume.managers if m.backend.name == "west")
        await west.driver.create_volume(target.id, 1)
        await east.recover_interrupted_work()
        return target.id

    target = cloud.run_async(crashed_mid_copy())
    body = wait(cloud, vid, lambda b: b["migration_status"] == "error")
    assert body["os-vol-host-attr:host"] == EAST and body["status"] == "available"
    assert (directory(cloud, "east") / f"volume-{vid}").read_bytes() == data
    wait(cloud, target, lambda b: b["status"] == "missing")
    assert f"volume-{target}" not in files(cloud, "west")
    cloud.openstack("volume", "delete", vid)


# -- manage / unmanage --------------------------------------------------------------------


def manageable(cloud: CloudRunner, kind: str, host: str) -> dict[str, dict]:
    rows = cloud.openstack(
        "--os-volume-api-version", "3.8", "block", "storage", kind, "manageable", "list",
        host, "--long", "-f", "json",
    )  # fmt: skip
    return {r["reference"]["source-name"]: r for r in rows}


def test_unmanage_keeps_the_data_and_manage_adopts_it_again(cloud: CloudRunner) -> None:
    volume, data = filled_volume(cloud)
    vid = volume["id"]
    assert manageable(cloud, "volume", EAST)[f"volume-{vid}"]["safe_to_manage"] is False

    cloud.openstack("volume", "delete", "--remote", vid)
    wait(cloud, vid, lambda b: b["status"] == "missing")
    kept = directory(cloud, "east") / f"unmanaged-volume-{vid}"
    assert kept.read_bytes() == data and f"volume-{vid}" not in files(cloud, "east")
    listed = manageable(cloud, "volume", EAST)[kept.name]
    assert listed["safe_to_manage"] is True and listed["size"] == 1
    assert listed["cinder_id"] is None

    adopted = cloud.openstack(
        "volume", "create", "--remote-source", f"source-name={kept.name}", "--host", EAST,
        "--description", "adopted", unique("managed"), "-f", "json",
    )  # fmt: skip
    new = wait(cloud, adopted["id"], lambda b: b["status"] == "available")
    assert new["id"] != vid and new["size"] == 1 and new["os-vol-host-attr:host"] == EAST
    assert (directory(cloud, "east") / f"volume-{new['id']}").read_bytes() == data
    assert not kept.exists()

    # A snapshot goes out and comes back, its volume attached or not.
    snap = cloud.openstack("volume", "snapshot", "create", "--volume", new["id"], unique("s"),
                           "-f", "json")  # fmt: skip
    with api(cloud) as http:
        deadline = time.monotonic() + 30
        while http.get(f"/snapshots/{snap['id']}").json()["snapshot"]["status"] != "available":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        cloud.openstack("volume", "snapshot", "delete", "--remote", snap["id"])
        while http.get(f"/snapshots/{snap['id']}").status_code != 404:
            assert time.monotonic() < deadline
            time.sleep(0.1)
    kept_snap = directory(cloud, "east") / f"unmanaged-snapshot-{snap['id']}"
    assert kept_snap.exists()
    assert manageable(cloud, "snapshot", EAST)[kept_snap.name]["safe_to_manage"] is True
    managed = cloud.openstack(
        "volume", "snapshot", "create", "--volume", new["id"], "--remote-source",
        f"source-name={kept_snap.name}", "--property", "k=v", unique("ms"), "-f", "json",
    )  # fmt: skip
    assert managed["status"] == "available" and managed["size"] == 1
    assert (directory(cloud, "east") / f"snapshot-{managed['id']}").exists()
    # A volume made from the managed snapshot reads the volume's bytes.
    restored = cloud.openstack("volume", "create", "--snapshot", managed["id"], unique("r"),
                               "-f", "json")  # fmt: skip
    wait(cloud, restored["id"], lambda b: b["status"] == "available")
    assert (directory(cloud, "east") / f"volume-{restored['id']}").read_bytes() == data
    cloud.openstack("volume", "snapshot", "delete", managed["id"])
    cloud.openstack("volume", "delete", restored["id"])
    wait(cloud, restored["id"], lambda b: b["status"] == "missing")
    cloud.openstack("volume", "delete", new["id"])


def test_a_foreign_file_is_adopted_with_its_real_size(cloud: CloudRunner, tmp_path: Path) -> None:
    disk = directory(cloud, "west") / "imported-disk.qcow2"
    subprocess.run(["qemu-img", "create", "-f", "qcow2", str(disk), "2500M"], check=True)
    raw = tmp_path / "content.raw"
    raw.write_bytes(b"payload" * 1000)
    subprocess.run(["qemu-img", "dd", "-O", "qcow2", f"if={raw}", f"of={disk}", "bs=7000",
                    "conv=notrunc"], check=False)  # fmt: skip
    listed = manageable(cloud, "volume", WEST)[disk.name]
    assert listed["size"] == 3 and listed["safe_to_manage"] is True

    adopted = cloud.openstack(
        "volume", "create", "--remote-source", f"source-name={disk.name}", "--host", WEST,
        "--bootable", unique("foreign"), "-f", "json",
    )  # fmt: skip
    body = wait(cloud, adopted["id"], lambda b: b["status"] == "available")
    assert body["size"] == 3 and body["bootable"] == "true"
    assert not disk.exists()
    assert (directory(cloud, "west") / f"volume-{body['id']}").exists()
    cloud.openstack("volume", "delete", body["id"])


def test_bad_manage_and_unmanage_requests_write_nothing(cloud: CloudRunner) -> None:
    volume = new_volume(cloud)
    vid = volume["id"]
    before = (files(cloud, "east"), files(cloud, "west"))
    with api(cloud) as http:
        count = len(http.get("/volumes", params={"all_tenants": 1}).json()["volumes"])

        def manage(body: dict) -> httpx.Response:
            return http.post("/os-volume-manage", json={"volume": body})

        missing = manage({"host": EAST, "ref": {"source-name": "no-such-file"}})
        assert missing.status_code == 400
        assert "invalid backend reference" in missing.json()["badRequest"]["message"]
        assert manage({"host": EAST, "ref": {"source-id": "x"}}).status_code == 400
        assert manage({"host": EAST, "ref": {"source-name": "../east/x"}}).status_code == 400
        nohost = manage({"host": f"{HOST}@nowhere", "ref": {"source-name": "x"}})
        assert nohost.status_code == 400 and "not found" in nohost.json()["badRequest"]["message"]
        assert manage({"ref": {"source-name": "x"}}).status_code == 400  # no host
        assert manage({"host": EAST}).status_code == 400  # no ref
        managed = manage({"host": EAST, "ref": {"source-name": f"volume-{vid}"}})
        assert managed.status_code == 400
        assert "already managed" in managed.json()["badRequest"]["message"]
        badtype = manage({"host": EAST, "ref": {"source-name": "x"}, "volume_type": "nope"})
        assert badtype.status_code == 400
        elsewhere = manage({"host": EAST, "ref": {"source-name": "x"}, "availability_zone": "z"})
        assert elsewhere.status_code == 400
        # Snapshots: the volume must exist, the reference too.
        r = http.post("/os-snapshot-manage", json={"snapshot": {
            "volume_id": str(uuid.uuid4()), "ref": {"source-name": "x"}}})  # fmt: skip
        assert r.status_code == 404
        r = http.post("/os-snapshot-manage", json={"snapshot": {
            "volume_id": vid, "ref": {"source-name": "no-such-snapshot"}}})  # fmt: skip
        assert r.status_code == 400
        # manageable_volumes is 3.8+; an unknown host is 404 there.
        assert http.get("/manageable_volumes", params={"host": EAST}).status_code == 404
        with api(cloud, version="3.8") as v38:
            assert v38.get("/manageable_volumes", params={"host": "x@y"}).status_code == 404
            assert v38.get("/manageable_volumes").status_code == 400
            listed = v38.get("/manageable_volumes", params={"host": EAST, "sort_key": "size"})
            assert listed.status_code == 200
            unsortable = {"host": EAST, "sort_key": "name"}
            assert v38.get("/manageable_volumes", params=unsortable).status_code == 400
        # Only admins manage.
        with api(cloud, cloud.token("demo", project="demo")) as demo:
            r = demo.post("/os-volume-manage",
                          json={"volume": {"host": EAST, "ref": {"source-name": "x"}}})  # fmt: skip
            assert r.status_code == 403

        # Unmanage refuses what delete refuses: a volume with snapshots.
        snap = cloud.openstack("volume", "snapshot", "create", "--volume", vid, unique("s"),
                               "-f", "json")  # fmt: skip
        deadline = time.monotonic() + 30
        while http.get(f"/snapshots/{snap['id']}").json()["snapshot"]["status"] != "available":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        r = http.post(f"/volumes/{vid}/action", json={"os-unmanage": {}})
        assert r.status_code == 400
        assert show(cloud, vid)["status"] == "available"
        cloud.openstack("volume", "snapshot", "delete", snap["id"])
        while http.get(f"/snapshots/{snap['id']}").status_code != 404:
            time.sleep(0.1)
        assert len(http.get("/volumes", params={"all_tenants": 1}).json()["volumes"]) == count
    assert (files(cloud, "east"), files(cloud, "west")) == before
    cloud.openstack("volume", "delete", vid)
