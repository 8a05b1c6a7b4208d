"""Block Storage bad input and wrong states: the right status and Nova-style body,
and no volume file left behind by any failure."""

from __future__ import annotations

import time
import uuid

import httpx
import pytest

from tests.cloudrunner import CloudRunner


@pytest.fixture
def volume_http(cloud: CloudRunner, admin_token: str):
    base = f"http://127.0.0.1:{cloud.config.ports.block_storage}/v3"
    with httpx.Client(base_url=base, headers={"X-Auth-Token": admin_token}, timeout=30) as c:
        yield c


def known_files(cloud: CloudRunner) -> set[str]:
    return {p.name for p in (cloud.state_dir / "volumes").iterdir() if p.is_file()}


def backend_files_match_rows(cloud: CloudRunner, http: httpx.Client) -> None:
    """Every file under volumes/ belongs to a volume or snapshot row (no orphans)."""
    deadline = time.monotonic() + 30
    while True:
        vols = http.get("/volumes/detail?all_tenants=1").json()["volumes"]
        snaps = http.get("/snapshots/detail?all_tenants=1").json()["snapshots"]
        busy = [v for v in vols + snaps if v["status"] in ("creating", "deleting", "downloading")]
        if not busy or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    expected = {f"volume-{v['id']}" for v in vols if v["status"] != "error"}
    expected |= {f"snapshot-{s['id']}" for s in snaps}
    assert known_files(cloud) <= expected


@pytest.mark.parametrize("size", [0, -1, "big", 1.5, True])
def test_bad_sizes_are_400(cloud: CloudRunner, volume_http: httpx.Client, size) -> None:
    before = known_files(cloud)
    r = volume_http.post("/volumes", json={"volume": {"size": size, "name": "bad"}})
    assert r.status_code == 400, r.text
    assert r.json()["badRequest"]["code"] == 400
    assert "size" in r.json()["badRequest"]["message"]
    assert known_files(cloud) == before


def test_size_smaller_than_the_image_is_400(
    cloud: CloudRunner, volume_http: httpx.Client, tmp_path
) -> None:
    import subprocess

    disk = tmp_path / "big.qcow2"
    subprocess.run(["qemu-img", "create", "-f", "qcow2", str(disk), "2G"], check=True)
    name = f"big-{uuid.uuid4().hex[:6]}"
    image = cloud.openstack(
        "image", "create", "--disk-format", "qcow2", "--container-format", "bare",
        "--file", str(disk), name, "-f", "json",
    )  # fmt: skip
    before = known_files(cloud)
    r = volume_http.post("/volumes", json={"volume": {"size": 1, "imageRef": image["id"]}})
    assert r.status_code == 400
    assert "larger than volume size" in r.json()["badRequest"]["message"]
    assert known_files(cloud) == before
    cloud.openstack("image", "delete", name)


def test_unknown_things_are_404(volume_http: httpx.Client) -> None:
    missing = str(uuid.uuid4())
    r = volume_http.get(f"/volumes/{missing}")
    assert r.status_code == 404
    assert r.json() == {
        "itemNotFound": {"code": 404, "message": f"Volume {missing} could not be found."}
    }
    r = volume_http.post("/volumes", json={"volume": {"size": 1, "snapshot_id": missing}})
    assert r.status_code == 404
    r = volume_http.post("/volumes", json={"volume": {"size": 1, "volume_type": "nope"}})
    assert r.status_code == 404


def test_quota_exceeded_is_413_and_leaves_nothing(
    cloud: CloudRunner, volume_http: httpx.Client, admin_token: str
) -> None:
    # A project of its own, with a 2 GiB quota.
    project = cloud.openstack("project", "create", f"q-{uuid.uuid4().hex[:6]}", "-f", "json")
    cloud.openstack("role", "add", "--user", "admin", "--project", project["id"], "member")
    token = cloud.token("admin", project=project["name"])
    r = volume_http.put(
        f"/os-quota-sets/{project['id']}", json={"quota_set": {"gigabytes": 2, "volumes": 5}}
    )
    assert r.status_code == 200 and r.json()["quota_set"]["gigabytes"] == 2
    before = known_files(cloud)
    headers = {"X-Auth-Token": token}
    r = volume_http.post("/volumes", json={"volume": {"size": 3}}, headers=headers)
    assert r.status_code == 413, r.text
    assert "gigabytes quota" in r.json()["overLimit"]["message"]
    r = volume_http.post("/volumes", json={"volume": {"size": 2}}, headers=headers)
    assert r.status_code == 202
    vid = r.json()["volume"]["id"]
    r = volume_http.post("/volumes", json={"volume": {"size": 1}}, headers=headers)
    assert r.status_code == 413
    usage = volume_http.get(f"/os-quota-sets/{project['id']}?usage=true").json()["quota_set"]
    assert usage["gigabytes"] == {"limit": 2, "in_use": 2, "reserved": 0, "allocated": 0}
    limits = volume_http.get("/limits", headers=headers).json()["limits"]["absolute"]
    assert limits["totalGigabytesUsed"] == 2 and limits["maxTotalVolumeGigabytes"] == 2
    # Extending past the quota is refused too.
    deadline = time.monotonic() + 30
    while volume_http.get(f"/volumes/{vid}", headers=headers).json()["volume"]["status"] != (
        "available"
    ):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    r = volume_http.post(
        f"/volumes/{vid}/action", json={"os-extend": {"new_size": 3}}, headers=headers
    )
    assert r.status_code == 413
    assert volume_http.delete(f"/volumes/{vid}", headers=headers).status_code == 202
    backend_files_match_rows(cloud, volume_http)
    assert known_files(cloud) <= before | {f"volume-{vid}"}


def test_other_projects_volumes_are_invisible(
    cloud: CloudRunner, volume_http: httpx.Client
) -> None:
    r = volume_http.post("/volumes", json={"volume": {"size": 1, "name": "admins"}})
    vid = r.json()["volume"]["id"]
    demo = cloud.token("demo", project="demo")
    r = volume_http.get(f"/volumes/{vid}", headers={"X-Auth-Token": demo})
    assert r.status_code == 404
    listed = volume_http.get("/volumes", headers={"X-Auth-Token": demo}).json()["volumes"]
    assert vid not in {v["id"] for v in listed}
    r = volume_http.delete(f"/volumes/{vid}", headers={"X-Auth-Token": demo})
    assert r.status_code == 404
    assert volume_http.get("/volumes", headers={"X-Auth-Token": "nonsense"}).status_code == 401


def test_wrong_status_actions_are_400(cloud: CloudRunner, volume_http: httpx.Client) -> None:
    vid = volume_http.post("/volumes", json={"volume": {"size": 1}}).json()["volume"]["id"]
    deadline = time.monotonic() + 30
    while volume_http.get(f"/volumes/{vid}").json()["volume"]["status"] != "available":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    act = f"/volumes/{vid}/action"
    assert volume_http.post(act, json={"os-begin_detaching": None}).status_code == 400
    assert volume_http.post(act, json={"os-extend": {"new_size": 1}}).status_code == 400
    assert volume_http.post(act, json={"os-nonsense": {}}).status_code == 400
    assert volume_http.post(act, json={"os-reserve": None}).status_code == 202
    r = volume_http.post(act, json={"os-extend": {"new_size": 2}})
    assert r.status_code == 400 and "must be available" in r.json()["badRequest"]["message"]
    r = volume_http.post("/snapshots", json={"snapshot": {"volume_id": vid}})
    assert r.status_code == 400
    assert volume_http.delete(f"/volumes/{vid}").status_code == 400
    assert volume_http.post(act, json={"os-unreserve": None}).status_code == 202
    assert volume_http.delete(f"/volumes/{vid}").status_code == 202
    backend_files_match_rows(cloud, volume_http)


def test_microversions_pagination_and_types(volume_http: httpx.Client) -> None:
    r = volume_http.get("/volumes", headers={"OpenStack-API-Version": "volume 3.60"})
    assert r.headers["OpenStack-API-Version"] == "volume 3.60"
    too_new = {"OpenStack-API-Version": "volume 4.0"}
    assert volume_http.get("/volumes", headers=too_new).status_code == 406
    tag = uuid.uuid4().hex[:6]
    ids = [
        volume_http.post("/volumes", json={"volume": {"size": 1, "name": f"p-{tag}-{i}"}}).json()[
            "volume"
        ]["id"]
        for i in range(3)
    ]
    seen: list[str] = []
    url = f"/volumes?name~=p-{tag}&limit=2&sort=name:asc"
    page = volume_http.get(url, headers={"OpenStack-API-Version": "volume 3.34"}).json()
    seen += [v["id"] for v in page["volumes"]]
    assert len(page["volumes"]) == 2 and page["volumes_links"][0]["rel"] == "next"
    marker = page["volumes"][-1]["id"]
    rest = volume_http.get(
        f"/volumes?name~=p-{tag}&limit=2&sort=name:asc&marker={marker}",
        headers={"OpenStack-API-Version": "volume 3.34"},
    ).json()
    seen += [v["id"] for v in rest["volumes"]]
    assert seen == ids and "volumes_links" not in rest
    # Volume types and extra specs (admin).
    r = volume_http.post(
        "/types", json={"volume_type": {"name": f"fast-{tag}", "extra_specs": {"tier": "ssd"}}}
    )
    assert r.status_code == 200 and r.json()["volume_type"]["extra_specs"] == {"tier": "ssd"}
    again = volume_http.post("/types", json={"volume_type": {"name": f"fast-{tag}"}})
    assert again.status_code == 409
    for vid in ids:
        volume_http.delete(f"/volumes/{vid}")
