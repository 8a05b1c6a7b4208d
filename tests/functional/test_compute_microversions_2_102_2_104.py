"""Compute microversions 2.102 to 2.104, each as its api-ref entry says, and the version
before it unchanged: unknown query parameters refused (2.75 on the APIs with filters,
2.102 on the others), the flavors' `name` filter and the fields 2.102 drops, the
`/os-volumes_boot` alias of `/servers` that 2.103 removes, and the pinned availability
zone that 2.104 lets a user unpin and re-pin, beside the zone of the host a server is on
(which `OS-EXT-AZ:availability_zone` shows)."""

from __future__ import annotations

import httpx
import pytest

from tests.cloudrunner import CloudRunner, running_cloud
from tests.functional.test_compute_flavors import compute
from tests.functional.test_compute_microversions_2_9x import _name
from tests.functional.test_compute_microversions_2_9x_2_100 import _image, _server_status

MAIN = "mv2102-main"


@pytest.fixture(scope="module")
def cloud(tmp_path_factory):
    def two_hosts(config) -> None:
        config.compute.host = MAIN
        config.compute.fake_hosts = 1

    with running_cloud(tmp_path_factory.mktemp("mv2102"), two_hosts) as runner:
        yield runner


@pytest.fixture(scope="module")
def admin_token(cloud: CloudRunner) -> str:
    return cloud.token("admin")


@pytest.fixture(scope="module")
def image(cloud: CloudRunner, tmp_path_factory) -> str:
    return _image(cloud, tmp_path_factory.mktemp("img2102"))


def _boot(api: httpx.Client, image: str, **extra) -> dict:
    body = {"name": _name("mv"), "flavorRef": "0", "imageRef": image, "networks": "none", **extra}
    made = api.post("/servers", json={"server": body})
    assert made.status_code == 202, made.text
    return _server_status(api, made.json()["server"]["id"], "ACTIVE")


@pytest.fixture(scope="module")
def zoned(cloud: CloudRunner, admin_token: str) -> str:
    """The fake host in zone az-fast (an aggregate's); MAIN stays in nova."""
    with compute(cloud, admin_token) as api:
        agg = api.post("/os-aggregates", json={"aggregate": {"name": "fast"}}).json()
        agg_id = agg["aggregate"]["id"]
        host = f"{MAIN}-fake1"
        add = api.post(f"/os-aggregates/{agg_id}/action", json={"add_host": {"host": host}})
        assert add.status_code == 200, add.text
        meta = {"set_metadata": {"metadata": {"availability_zone": "az-fast"}}}
        assert api.post(f"/os-aggregates/{agg_id}/action", json=meta).status_code == 200
    return host


def test_the_version_document_offers_2_104_and_latest_is_2_104(
    cloud: CloudRunner, admin_token: str
):
    port = cloud.config.ports.compute
    assert httpx.get(f"http://127.0.0.1:{port}/v2.1").json()["version"]["version"] == "2.104"
    with compute(cloud, admin_token) as api:
        latest = api.get("/servers", headers={"OpenStack-API-Version": "compute latest"})
        assert latest.headers["OpenStack-API-Version"] == "compute 2.104"
        r = api.get("/servers", headers={"OpenStack-API-Version": "compute 2.105"})
        assert r.status_code == 406 and "maximum is 2.104" in r.json()["computeFault"]["message"]


def test_unknown_query_parameters_are_refused_from_the_microversion_nova_refuses_them(
    cloud: CloudRunner, admin_token: str, image: str
):
    refused = "Additional properties are not allowed ('bogus' was unexpected)"
    with (
        compute(cloud, admin_token, "2.74") as v274,
        compute(cloud, admin_token, "2.75") as v275,
        compute(cloud, admin_token, "2.101") as v2101,
        compute(cloud, admin_token, "2.102") as v2102,
    ):
        # APIs with filters: ignored before 2.75, refused from it.
        for path in ("/flavors", "/os-keypairs", "/limits", "/os-services", "/os-server-groups"):
            assert v274.get(path, params={"bogus": "1"}).status_code == 200, path
            r = v275.get(path, params={"bogus": "1"})
            assert r.status_code == 400 and r.json()["badRequest"]["message"] == refused, path
            # Their own parameters still pass.
        assert v275.get("/os-services", params={"binary": "nova-compute"}).status_code == 200
        assert v275.get("/flavors", params={"minRam": "0", "limit": "2"}).status_code == 200
        # The others: ignored up to 2.101, refused from 2.102.
        server = _boot(v2101, image)
        for path in (
            f"/servers/{server['id']}",
            f"/servers/{server['id']}/metadata",
            f"/servers/{server['id']}/ips",
            "/flavors/0",
            "/os-availability-zone",
            "/os-aggregates",
        ):
            assert v2101.get(path, params={"bogus": "1"}).status_code == 200, path
            r = v2102.get(path, params={"bogus": "1"})
            assert r.status_code == 400 and r.json()["badRequest"]["message"] == refused, path
        # The server list keeps ignoring unknown filters (Nova's, at every version)...
        assert v2102.get("/servers", params={"bogus": "1"}).status_code == 200
        # ...and the list is not taken for a server's show.
        detail = v2102.get("/servers/detail", params={"name": server["name"]})
        assert [s["id"] for s in detail.json()["servers"]] == [server["id"]]
        # Two unknown ones are both named; no token is still 401 first.
        r = v2102.get("/flavors", params={"zz": "1", "bogus": "2"})
        assert "('bogus', 'zz' were unexpected)" in r.json()["badRequest"]["message"]
        port = cloud.config.ports.compute
        anonymous = httpx.get(f"http://127.0.0.1:{port}/v2.1/flavors/0?bogus=1")
        assert anonymous.status_code == 401
        v2102.delete(f"/servers/{server['id']}")


def test_2_102_flavors_filter_by_name_and_drop_rxtx_factor_and_disabled(
    cloud: CloudRunner, admin_token: str
):
    with compute(cloud, admin_token, "2.101") as old, compute(cloud, admin_token, "2.102") as api:
        name = _name("flv-2102")
        made = api.post(
            "/flavors", json={"flavor": {"name": name, "ram": 64, "vcpus": 1, "disk": 1}}
        )
        assert made.status_code == 200, made.text
        flavor = made.json()["flavor"]
        assert "rxtx_factor" not in flavor and "OS-FLV-DISABLED:disabled" not in flavor
        shown = old.get(f"/flavors/{flavor['id']}").json()["flavor"]
        assert shown["rxtx_factor"] == 1.0 and shown["OS-FLV-DISABLED:disabled"] is False
        for item in api.get("/flavors/detail").json()["flavors"]:
            assert "rxtx_factor" not in item and "OS-FLV-DISABLED:disabled" not in item
        # name: a regular expression, as Nova's.
        listed = api.get("/flavors", params={"name": f"^{name}$"}).json()["flavors"]
        assert [f["id"] for f in listed] == [flavor["id"]]
        assert api.get("/flavors", params={"name": "^no-such-flavor$"}).json()["flavors"] == []
        assert len(api.get("/flavors/detail", params={"name": "flv-2102"}).json()["flavors"]) >= 1
        # Before 2.102 the name filter was not a filter (refused from 2.75).
        assert old.get("/flavors", params={"name": name}).status_code == 400
        # rxtx_factor can no longer be given or sorted on.
        bad = {"flavor": {"name": _name("flv"), "ram": 64, "vcpus": 1, "disk": 1, "rxtx_factor": 2}}
        r = api.post("/flavors", json=bad)
        assert r.status_code == 400 and "rxtx_factor" in r.json()["badRequest"]["message"]
        assert old.post("/flavors", json=bad).status_code == 200
        assert api.get("/flavors", params={"sort_key": "rxtx_factor"}).status_code == 400
        assert old.get("/flavors", params={"sort_key": "rxtx_factor"}).status_code == 200


def test_a_server_shows_its_hosts_zone_and_2_104_unpins_and_re_pins_it(
    cloud: CloudRunner, admin_token: str, zoned: str, image: str
):
    with compute(cloud, admin_token, "2.103") as old, compute(cloud, admin_token, "2.104") as api:
        # Unpinned: its zone is that of the host it landed on (it was "nova" everywhere).
        free = _boot(api, image)
        landed = free["OS-EXT-SRV-ATTR:host"]
        assert free["OS-EXT-AZ:availability_zone"] == ("az-fast" if landed == zoned else "nova")
        assert free["pinned_availability_zone"] is None
        api.delete(f"/servers/{free['id']}")
        # Asked into az-fast (onto its host): pinned there, and there.
        pinned = _boot(api, image, availability_zone=f"az-fast:{zoned}")
        assert pinned["OS-EXT-AZ:availability_zone"] == "az-fast"
        assert pinned["pinned_availability_zone"] == "az-fast"

        # 2.104: a pin changes only through null; re-pinning goes to where it is.
        put = f"/servers/{pinned['id']}"
        r = api.put(put, json={"server": {"pinned_availability_zone": "nova"}})
        assert r.status_code == 409
        assert "Unpin first" in r.json()["conflictingRequest"]["message"]
        same = api.put(put, json={"server": {"pinned_availability_zone": "az-fast"}})
        assert same.status_code == 200 and same.json()["server"]["pinned_availability_zone"] == (
            "az-fast"
        )
        unpinned = api.put(put, json={"server": {"pinned_availability_zone": None}})
        assert unpinned.status_code == 200
        assert unpinned.json()["server"]["pinned_availability_zone"] is None
        shown = api.get(put).json()["server"]
        assert shown["pinned_availability_zone"] is None
        assert shown["OS-EXT-AZ:availability_zone"] == "az-fast"
        assert api.put(put, json={"server": {"pinned_availability_zone": None}}).status_code == 200
        elsewhere = api.put(put, json={"server": {"pinned_availability_zone": "nova"}})
        assert elsewhere.status_code == 409
        assert "current availability zone 'az-fast'" in elsewhere.text
        repinned = api.put(put, json={"server": {"pinned_availability_zone": "az-fast"}})
        assert repinned.json()["server"]["pinned_availability_zone"] == "az-fast"
        # The body's rules: a name or null; unknown before 2.104.
        for bad in ("", " x", 5):
            r = api.put(put, json={"server": {"pinned_availability_zone": bad}})
            assert r.status_code == 400, bad
        r = old.put(put, json={"server": {"pinned_availability_zone": None}})
        assert r.status_code == 400 and "pinned_availability_zone" in r.text
        # The CLI negotiates the newest version it knows and sees the same.
        listed = cloud.openstack("server", "show", pinned["id"], "-f", "json")
        assert listed["OS-EXT-AZ:availability_zone"] == "az-fast"
        api.delete(put)


def test_2_103_os_volumes_boot_is_the_servers_api_until_it_is_gone(
    cloud: CloudRunner, admin_token: str, image: str
):
    with compute(cloud, admin_token, "2.102") as old, compute(cloud, admin_token, "2.103") as api:
        body = {"name": _name("vb"), "flavorRef": "0", "imageRef": image, "networks": "none"}
        made = old.post("/os-volumes_boot", json={"server": body})
        assert made.status_code == 202, made.text
        server_id = made.json()["server"]["id"]
        assert old.get(f"/os-volumes_boot/{server_id}").json()["server"]["id"] == server_id
        listed = old.get("/os-volumes_boot/detail").json()["servers"]
        assert server_id in [s["id"] for s in listed]
        for path in (
            "/os-volumes_boot",
            "/os-volumes_boot/detail",
            f"/os-volumes_boot/{server_id}",
        ):
            assert api.get(path).status_code == 404, path
        assert api.post("/os-volumes_boot", json={"server": body}).status_code == 404
        assert api.delete(f"/os-volumes_boot/{server_id}").status_code == 404
        assert old.delete(f"/os-volumes_boot/{server_id}").status_code == 204
