"""Neutron's auto-allocated topology ("Get Me A Network") as users drive it: the
`openstack network auto allocated topology` commands, openstacksdk, and a server booted
with `--nic auto` in a project that has no network of its own.

A cloud of its own: these tests change what is default (the external network, the
subnet pool) and need a cloud where no other test has shared a network.
"""

from __future__ import annotations

import subprocess
import threading

import httpx
import pytest
from openstack import exceptions as sdk_exc

from tests.cloudrunner import CloudRunner, running_cloud
from tests.functional.test_network_rbac import Member, _member, _name, as_member


@pytest.fixture(scope="module")
def aa_cloud(tmp_path_factory):
    with running_cloud(tmp_path_factory.mktemp("autoalloc")) as runner:
        yield runner


def member_sdk(cloud: CloudRunner, who: Member):
    conn = cloud.sdk("cumulo-demo")
    return conn.connect_as(username=who.user, password=who.password, project_name=who.project)


def network_api(cloud: CloudRunner, token: str) -> httpx.Client:
    return httpx.Client(
        base_url=f"http://127.0.0.1:{cloud.config.ports.network}/v2.0",
        headers={"X-Auth-Token": token},
        timeout=60,
    )


def member_token(cloud: CloudRunner, who: Member) -> str:
    return cloud.token(who.user, who.password, who.project)


def refused(proc: subprocess.CompletedProcess, *words: str) -> None:
    assert proc.returncode != 0, proc.stdout
    for word in words:
        assert word in proc.stderr, proc.stderr


def test_cumulo_init_gives_what_auto_allocation_needs(aa_cloud: CloudRunner):
    ext = aa_cloud.openstack("extension", "show", "auto-allocated-topology", "-f", "json")
    assert ext["name"] == "Auto Allocated Topology Services"
    public = aa_cloud.openstack("network", "show", "public", "-f", "json")
    assert public["router:external"] is True and public["is_default"] is True
    pools = aa_cloud.openstack("subnet", "pool", "list", "--default", "--long", "-f", "json")
    assert [p["Name"] for p in pools] == ["shared-default-subnetpool-v4"]
    # The demo project keeps its own `private` network, nothing auto-allocated.
    demo = aa_cloud.openstack("network", "list", "-f", "json", cloud="cumulo-demo")
    assert "private" in {n["Name"] for n in demo}
    assert "auto_allocated_network" not in {n["Name"] for n in demo}


def test_member_creates_shows_and_deletes_the_topology_with_the_cli(aa_cloud: CloudRunner):
    who = _member(aa_cloud, "aa")
    as_member(aa_cloud, who, "network", "auto", "allocated", "topology", "create",
              "--check-resources", "-f", "json")  # fmt: skip
    created = as_member(aa_cloud, who, "network", "auto", "allocated", "topology", "create",
                        "-f", "json")  # fmt: skip
    assert created["project_id"] == who.project_id

    network = as_member(aa_cloud, who, "network", "show", created["id"], "-f", "json")
    assert network["name"] == "auto_allocated_network" and network["admin_state_up"] is True
    assert network["project_id"] == who.project_id and network["shared"] is False
    [subnet_id] = network["subnets"]
    subnet = as_member(aa_cloud, who, "subnet", "show", subnet_id, "-f", "json")
    pool = aa_cloud.openstack("subnet", "pool", "show", "shared-default-subnetpool-v4",
                              "-f", "json")  # fmt: skip
    assert subnet["name"] == "auto_allocated_subnet_v4"
    assert subnet["subnetpool_id"] == pool["id"] and subnet["cidr"].endswith("/26")
    [router] = as_member(aa_cloud, who, "router", "list", "--long", "-f", "json")
    assert router["Name"] == "auto_allocated_router"
    public = aa_cloud.openstack("network", "show", "public", "-f", "json")
    assert router["External gateway info"]["network_id"] == public["id"]
    ports = as_member(aa_cloud, who, "port", "list", "--router", router["ID"], "-f", "json")
    assert [p["Fixed IP Addresses"][0]["ip_address"] for p in ports] == [subnet["gateway_ip"]]

    # Asking again gives the same topology.
    again = as_member(aa_cloud, who, "network", "auto", "allocated", "topology", "create",
                      "--or-show", "-f", "json")  # fmt: skip
    assert again["id"] == created["id"]

    as_member(aa_cloud, who, "network", "auto", "allocated", "topology", "delete")
    assert as_member(aa_cloud, who, "router", "list", "-f", "json") == []
    names = {n["Name"] for n in as_member(aa_cloud, who, "network", "list", "-f", "json")}
    assert "auto_allocated_network" not in names
    # Deleting what is not there is still 204; asking again builds a new one.
    as_member(aa_cloud, who, "network", "auto", "allocated", "topology", "delete")
    renewed = as_member(aa_cloud, who, "network", "auto", "allocated", "topology", "create",
                        "-f", "json")  # fmt: skip
    assert renewed["id"] != created["id"]
    as_member(aa_cloud, who, "network", "auto", "allocated", "topology", "delete")


def test_sdk_validates_gets_and_deletes(aa_cloud: CloudRunner):
    who = _member(aa_cloud, "aa")
    conn = member_sdk(aa_cloud, who)
    checked = conn.network.validate_auto_allocated_topology(who.project_id)
    assert checked.id == "dry-run=pass"
    topology = conn.network.get_auto_allocated_topology()
    assert topology.project_id == who.project_id
    assert conn.network.get_network(topology.id).name == "auto_allocated_network"
    assert conn.network.get_auto_allocated_topology(who.project_id).id == topology.id
    conn.network.delete_auto_allocated_topology(who.project_id)
    with pytest.raises(sdk_exc.NotFoundException):
        conn.network.get_network(topology.id)


def test_admin_allocates_for_another_project_a_member_cannot(aa_cloud: CloudRunner):
    who, other = _member(aa_cloud, "aa"), _member(aa_cloud, "aa")
    made = aa_cloud.openstack("network", "auto", "allocated", "topology", "create",
                              "--project", who.project_id, "-f", "json")  # fmt: skip
    assert made["project_id"] == who.project_id
    network = as_member(aa_cloud, who, "network", "show", made["id"], "-f", "json")
    assert network["project_id"] == who.project_id

    with network_api(aa_cloud, member_token(aa_cloud, other)) as api:
        for method in ("GET", "DELETE"):
            r = api.request(method, f"/auto-allocated-topology/{who.project_id}")
            assert r.status_code == 403, r.text
            assert r.json()["NeutronError"]["type"] == "NotAuthorized"
        r = api.get(f"/auto-allocated-topology/{other.project_id}", params={"fields": "id"})
        assert r.status_code == 400
        assert r.json()["NeutronError"]["message"] == (
            "Bad auto_allocate request: Unrecognized field."
        )
    aa_cloud.openstack("network", "auto", "allocated", "topology", "delete",
                       "--project", who.project_id)  # fmt: skip
    assert as_member(aa_cloud, who, "network", "show", made["id"], check=False).returncode


def test_a_reader_sees_but_cannot_delete(aa_cloud: CloudRunner):
    who = _member(aa_cloud, "aa", role="reader")
    with network_api(aa_cloud, member_token(aa_cloud, who)) as api:
        r = api.get(f"/auto-allocated-topology/{who.project_id}")
        assert r.status_code == 200, r.text
        body = r.json()["auto_allocated_topology"]
        assert set(body) == {"id", "tenant_id", "project_id"}
        r = api.delete(f"/auto-allocated-topology/{who.project_id}")
        assert r.status_code == 404 and r.json()["NeutronError"]["type"] == "HTTPNotFound"
    aa_cloud.openstack("network", "auto", "allocated", "topology", "delete",
                       "--project", who.project_id)  # fmt: skip


def test_concurrent_first_calls_make_one_topology(aa_cloud: CloudRunner):
    who = _member(aa_cloud, "aa")
    token = member_token(aa_cloud, who)
    answers: list[str] = []

    def first_call() -> None:
        with network_api(aa_cloud, token) as api:
            r = api.get(f"/auto-allocated-topology/{who.project_id}")
            assert r.status_code == 200, r.text
            answers.append(r.json()["auto_allocated_topology"]["id"])

    threads = [threading.Thread(target=first_call) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(answers) == 4 and len(set(answers)) == 1
    with network_api(aa_cloud, token) as api:
        own = api.get("/networks", params={"project_id": who.project_id}).json()["networks"]
        assert [n["id"] for n in own] == answers[:1]
        assert len(api.get("/routers").json()["routers"]) == 1
        assert api.delete(f"/auto-allocated-topology/{who.project_id}").status_code == 204


@pytest.fixture(scope="module")
def image(aa_cloud: CloudRunner) -> str:
    created = aa_cloud.sdk().image.create_image(
        name=_name("tiny"), data=b"\0" * 65536, disk_format="raw", container_format="bare",
        visibility="public",
    )  # fmt: skip
    return created.id


def _boot_auto(cloud: CloudRunner, who: Member, image: str, *extra: str, check: bool = True):
    return as_member(
        cloud, who, "--os-compute-api-version", "2.37", "server", "create", "--nic", "auto",
        "--image", image, "--flavor", "m1.tiny", "--wait", *extra, _name("auto"),
        "-f", "json", check=check,
    )  # fmt: skip


def test_server_with_nic_auto_gets_a_port_on_the_auto_allocated_network(
    aa_cloud: CloudRunner, image: str
):
    who = _member(aa_cloud, "aa")
    server = _boot_auto(aa_cloud, who, image)
    assert server["status"] == "ACTIVE"
    assert list(server["addresses"]) == ["auto_allocated_network"]
    topology = as_member(aa_cloud, who, "network", "auto", "allocated", "topology", "create",
                         "-f", "json")  # fmt: skip
    [port] = as_member(aa_cloud, who, "port", "list", "--server", server["id"], "-f", "json")
    shown = as_member(aa_cloud, who, "port", "show", port["ID"], "-f", "json")
    assert shown["network_id"] == topology["id"]

    # A second server uses the same network; the topology stays while servers use it.
    second = _boot_auto(aa_cloud, who, image)
    assert list(second["addresses"]) == ["auto_allocated_network"]
    refused(
        as_member(aa_cloud, who, "network", "auto", "allocated", "topology", "delete",
                  check=False),
        "ports still in use",
    )  # fmt: skip
    for s in (server, second):
        as_member(aa_cloud, who, "server", "delete", "--wait", s["id"])
    as_member(aa_cloud, who, "network", "auto", "allocated", "topology", "delete")


def test_nic_auto_with_several_networks_is_ambiguous(aa_cloud: CloudRunner, image: str):
    who = _member(aa_cloud, "aa")
    for _ in range(2):
        net = as_member(aa_cloud, who, "network", "create", _name("n"), "-f", "json")
        as_member(aa_cloud, who, "subnet", "create", "--network", net["id"],
                  "--subnet-range", "192.168.7.0/24", _name("s"))  # fmt: skip
    refused(
        _boot_auto(aa_cloud, who, image, check=False),
        "Multiple possible networks found, use a Network ID to be more specific.",
        "409",
    )


def test_what_is_missing_is_a_deployment_error(aa_cloud: CloudRunner, image: str):
    who = _member(aa_cloud, "aa")
    check = ("network", "auto", "allocated", "topology", "create", "--check-resources")
    # One default external network at a time.
    refused(
        aa_cloud.openstack("network", "create", "--external", "--default", _name("ext"),
                           check=False),
        "A default external network already exists",
    )  # fmt: skip
    aa_cloud.openstack("network", "set", "--no-default", "public")
    try:
        refused(as_member(aa_cloud, who, *check, check=False),
                "Deployment error: No default router:external network.")  # fmt: skip
        refused(as_member(aa_cloud, who, *check[:-1], check=False),
                "Deployment error: No default router:external network.")  # fmt: skip
        refused(
            _boot_auto(aa_cloud, who, image, check=False),
            f"Unable to automatically allocate a network for project {who.project_id}",
            "400",
        )
    finally:
        aa_cloud.openstack("network", "set", "--default", "public")
    aa_cloud.openstack("subnet", "pool", "set", "--no-default", "shared-default-subnetpool-v4")
    try:
        refused(as_member(aa_cloud, who, *check, check=False),
                "Deployment error: No default subnetpools defined.")  # fmt: skip
    finally:
        aa_cloud.openstack("subnet", "pool", "set", "--default", "shared-default-subnetpool-v4")
    as_member(aa_cloud, who, *check)
