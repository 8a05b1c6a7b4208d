"""Two projects, every kind of resource: project B neither sees, changes nor uses what
project A owns — by id, through listings and their filters (`all_tenants`, `project_id`,
`owner`, `visibility`, `shared`), nor by naming it in its own requests (booting on A's
network or image, attaching A's volume, routing A's subnet) — and A's resources are intact
afterwards."""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.cloudrunner import CloudRunner

NOT_SEEN = (403, 404)  # refused without telling whether it exists, or as Nova/Cinder: 404


class Project:
    """A project's member, with a client per service."""

    def __init__(self, cloud: CloudRunner, token: str, project_id: str) -> None:
        self.project_id = project_id
        ports = cloud.config.ports
        headers = {"X-Auth-Token": token}

        def client(port: int) -> httpx.Client:
            return httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=60)

        self.identity = client(ports.identity)
        self.compute = client(ports.compute)
        self.network = client(ports.network)
        self.image = client(ports.image)
        self.volume = client(ports.block_storage)
        self.object = client(ports.object_store)


def _ok(response: httpx.Response) -> Any:
    assert response.is_success, f"{response.request.method} {response.request.url}: {response.text}"
    return response.json() if response.content else None


def _wait(fetch, done, what: str, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = fetch()
        if done(value):
            return value
        assert time.monotonic() < deadline, f"{what}: {value}"
        time.sleep(0.3)


@pytest.fixture(scope="module")
def projects(cloud: CloudRunner, tmp_path_factory) -> Iterator[tuple[Project, Project, dict]]:
    """A (the demo project, with one of each resource) and B (a new project's member)."""
    name = f"iso-{uuid.uuid4().hex[:6]}"
    cloud.openstack("project", "create", name)
    cloud.openstack("user", "create", "--password", "b-password-1", "--project", name, name)
    cloud.openstack("role", "add", "--project", name, "--user", name, "member")
    a_token = cloud.token("demo", project="demo")
    b_token = cloud.token(name, password="b-password-1", project=name)

    def project_of(token: str) -> str:
        headers = {"X-Auth-Token": token, "X-Subject-Token": token}
        return _ok(httpx.get(cloud.auth_url + "/auth/tokens", headers=headers))["token"]["project"][
            "id"
        ]

    a_id, b_id = project_of(a_token), project_of(b_token)
    a, b = Project(cloud, a_token, a_id), Project(cloud, b_token, b_id)

    made: dict[str, Any] = {}
    net = _ok(a.network.post("/v2.0/networks", json={"network": {"name": "a-net"}}))["network"]
    sub = _ok(a.network.post("/v2.0/subnets", json={"subnet": {
        "network_id": net["id"], "cidr": "10.77.0.0/24", "ip_version": 4}}))["subnet"]  # fmt: skip
    port = _ok(a.network.post("/v2.0/ports", json={"port": {"network_id": net["id"]}}))["port"]
    router = _ok(a.network.post("/v2.0/routers", json={"router": {"name": "a-r"}}))["router"]
    group = _ok(a.network.post("/v2.0/security-groups", json={
        "security_group": {"name": "a-sg"}}))["security_group"]  # fmt: skip
    rule = _ok(a.network.post("/v2.0/security-group-rules", json={"security_group_rule": {
        "security_group_id": group["id"], "direction": "ingress", "protocol": "tcp",
        "port_range_min": 22, "port_range_max": 22}}))["security_group_rule"]  # fmt: skip
    made.update(network=net, subnet=sub, port=port, router=router, group=group, rule=rule)

    disk = tmp_path_factory.mktemp("iso") / "disk.qcow2"
    subprocess.run(["qemu-img", "create", "-f", "qcow2", str(disk), "64M"], check=True)
    image = _ok(a.image.post("/v2/images", json={
        "name": "a-img", "disk_format": "qcow2", "container_format": "bare",
        "visibility": "private"}))  # fmt: skip
    put = a.image.put(f"/v2/images/{image['id']}/file", content=disk.read_bytes(),
                      headers={"Content-Type": "application/octet-stream"})  # fmt: skip
    assert put.status_code == 204, put.text
    made["image"] = image

    flavors = _ok(a.compute.get("/v2.1/flavors"))["flavors"]
    flavor = next(f for f in flavors if f["name"] == "m1.tiny")
    server = _ok(a.compute.post("/v2.1/servers", json={"server": {
        "name": "a-vm", "imageRef": image["id"], "flavorRef": flavor["id"],
        "networks": [{"uuid": net["id"]}]}}))["server"]  # fmt: skip
    made["server"] = _wait(
        lambda: _ok(a.compute.get(f"/v2.1/servers/{server['id']}"))["server"],
        lambda s: s["status"] == "ACTIVE",
        "A's server",
    )
    made["keypair"] = _ok(a.compute.post("/v2.1/os-keypairs", json={
        "keypair": {"name": f"a-key-{uuid.uuid4().hex[:4]}"}}))["keypair"]  # fmt: skip
    made["server_group"] = _ok(a.compute.post("/v2.1/os-server-groups", json={
        "server_group": {"name": "a-sg", "policies": ["affinity"]}}))["server_group"]  # fmt: skip

    volume = _ok(a.volume.post(f"/v3/{a_id}/volumes", json={
        "volume": {"size": 1, "name": "a-vol"}}))["volume"]  # fmt: skip
    made["volume"] = _wait(
        lambda: _ok(a.volume.get(f"/v3/{a_id}/volumes/{volume['id']}"))["volume"],
        lambda v: v["status"] == "available",
        "A's volume",
    )
    snap = _ok(a.volume.post(f"/v3/{a_id}/snapshots", json={
        "snapshot": {"volume_id": volume["id"], "name": "a-snap"}}))["snapshot"]  # fmt: skip
    made["snapshot"] = _wait(
        lambda: _ok(a.volume.get(f"/v3/{a_id}/snapshots/{snap['id']}"))["snapshot"],
        lambda s: s["status"] == "available",
        "A's snapshot",
    )
    assert a.object.put(f"/v1/AUTH_{a_id}/a-box").status_code in (201, 202)
    assert a.object.put(f"/v1/AUTH_{a_id}/a-box/thing", content=b"A's bytes").status_code == 201
    yield a, b, made
    a.compute.delete(f"/v2.1/servers/{made['server']['id']}")


def test_b_cannot_read_a_s_resources_by_id(projects):
    a, b, made = projects
    by_id = [
        (b.compute, f"/v2.1/servers/{made['server']['id']}"),
        (b.compute, f"/v2.1/servers/{made['server']['id']}/os-interface"),
        (b.compute, f"/v2.1/servers/{made['server']['id']}/os-instance-actions"),
        (b.compute, f"/v2.1/os-keypairs/{made['keypair']['name']}"),
        (b.compute, f"/v2.1/os-server-groups/{made['server_group']['id']}"),
        (b.compute, f"/v2.1/os-quota-sets/{a.project_id}"),
        (b.network, f"/v2.0/networks/{made['network']['id']}"),
        (b.network, f"/v2.0/subnets/{made['subnet']['id']}"),
        (b.network, f"/v2.0/ports/{made['port']['id']}"),
        (b.network, f"/v2.0/routers/{made['router']['id']}"),
        (b.network, f"/v2.0/security-groups/{made['group']['id']}"),
        (b.network, f"/v2.0/security-group-rules/{made['rule']['id']}"),
        (b.image, f"/v2/images/{made['image']['id']}"),
        (b.image, f"/v2/images/{made['image']['id']}/file"),
        (b.image, f"/v2/images/{made['image']['id']}/members"),
        (b.volume, f"/v3/{b.project_id}/volumes/{made['volume']['id']}"),
        (b.volume, f"/v3/{b.project_id}/snapshots/{made['snapshot']['id']}"),
        (b.volume, f"/v3/{a.project_id}/volumes/{made['volume']['id']}"),
        (b.object, f"/v1/AUTH_{a.project_id}"),
        (b.object, f"/v1/AUTH_{a.project_id}/a-box"),
        (b.object, f"/v1/AUTH_{a.project_id}/a-box/thing"),
        (b.identity, f"/v3/projects/{a.project_id}"),
    ]
    for client, path in by_id:
        answer = client.get(path)
        assert answer.status_code in NOT_SEEN, f"GET {path}: {answer.status_code} {answer.text}"
        assert "A's bytes" not in answer.text


def test_b_s_listings_and_filters_never_show_a_s_resources(projects):
    a, b, made = projects
    mine = {made[k]["id"] for k in made if isinstance(made[k], dict) and "id" in made[k]}
    listings = [
        (b.compute, "/v2.1/servers/detail", "servers"),
        (b.compute, "/v2.1/servers/detail?all_tenants=1", "servers"),
        (b.compute, f"/v2.1/servers/detail?all_tenants=1&project_id={a.project_id}", "servers"),
        (b.compute, f"/v2.1/servers?tenant_id={a.project_id}", "servers"),
        (b.compute, "/v2.1/os-server-groups?all_projects=True", "server_groups"),
        (b.network, "/v2.0/networks", "networks"),
        (b.network, f"/v2.0/networks?project_id={a.project_id}", "networks"),
        (b.network, f"/v2.0/networks?tenant_id={a.project_id}", "networks"),
        (b.network, "/v2.0/networks?shared=false", "networks"),
        (b.network, "/v2.0/subnets", "subnets"),
        (b.network, "/v2.0/ports", "ports"),
        (b.network, f"/v2.0/ports?network_id={made['network']['id']}", "ports"),
        (b.network, f"/v2.0/ports?device_id={made['server']['id']}", "ports"),
        (b.network, "/v2.0/routers", "routers"),
        (b.network, "/v2.0/security-groups", "security_groups"),
        (b.network, "/v2.0/security-group-rules", "security_group_rules"),
        (b.network, "/v2.0/floatingips", "floatingips"),
        (b.image, "/v2/images", "images"),
        (b.image, "/v2/images?visibility=private", "images"),
        (b.image, "/v2/images?visibility=all", "images"),
        (b.image, f"/v2/images?owner={a.project_id}", "images"),
        (b.volume, f"/v3/{b.project_id}/volumes/detail", "volumes"),
        (b.volume, f"/v3/{b.project_id}/volumes/detail?all_tenants=1", "volumes"),
        (b.volume, f"/v3/{b.project_id}/volumes/detail?project_id={a.project_id}", "volumes"),
        (b.volume, f"/v3/{b.project_id}/snapshots/detail?all_tenants=1", "snapshots"),
    ]
    for client, path, key in listings:
        answer = client.get(path)
        if answer.status_code in NOT_SEEN:
            continue  # an admin-only filter refused: nothing shown either
        listed = {item["id"] for item in _ok(answer)[key]}
        assert not listed & mine, f"GET {path} shows A's {listed & mine}"
    containers = b.object.get(f"/v1/AUTH_{b.project_id}?format=json")
    assert containers.status_code in (200, 204)
    assert "a-box" not in containers.text


def test_b_cannot_change_or_delete_a_s_resources(projects):
    a, b, made = projects
    writes = [
        (b.compute, "PUT", f"/v2.1/servers/{made['server']['id']}", {"server": {"name": "x"}}),
        (b.compute, "POST", f"/v2.1/servers/{made['server']['id']}/action", {"os-stop": None}),
        (b.compute, "DELETE", f"/v2.1/servers/{made['server']['id']}", None),
        (b.compute, "DELETE", f"/v2.1/os-server-groups/{made['server_group']['id']}", None),
        (b.network, "PUT", f"/v2.0/networks/{made['network']['id']}", {"network": {"name": "x"}}),
        (b.network, "DELETE", f"/v2.0/ports/{made['port']['id']}", None),
        (b.network, "DELETE", f"/v2.0/security-groups/{made['group']['id']}", None),
        (b.network, "DELETE", f"/v2.0/security-group-rules/{made['rule']['id']}", None),
        (b.network, "DELETE", f"/v2.0/routers/{made['router']['id']}", None),
        (b.image, "DELETE", f"/v2/images/{made['image']['id']}", None),
        (b.volume, "PUT", f"/v3/{b.project_id}/volumes/{made['volume']['id']}",
         {"volume": {"name": "x"}}),
        (b.volume, "DELETE", f"/v3/{b.project_id}/volumes/{made['volume']['id']}", None),
        (b.volume, "DELETE", f"/v3/{b.project_id}/snapshots/{made['snapshot']['id']}", None),
        (b.object, "PUT", f"/v1/AUTH_{a.project_id}/a-box/b-was-here", b"B"),
        (b.object, "DELETE", f"/v1/AUTH_{a.project_id}/a-box/thing", None),
        (b.object, "POST", f"/v1/AUTH_{a.project_id}/a-box", None),
    ]  # fmt: skip
    for client, method, path, body in writes:
        kwargs = {"content": body} if isinstance(body, bytes) else {"json": body}
        answer = client.request(method, path, **kwargs)
        assert answer.status_code in NOT_SEEN, f"{method} {path}: {answer.status_code}"
    image_patch = b.image.patch(
        f"/v2/images/{made['image']['id']}",
        json=[{"op": "replace", "path": "/name", "value": "x"}],
        headers={"Content-Type": "application/openstack-images-v2.1-json-patch"},
    )
    assert image_patch.status_code in NOT_SEEN


def test_b_cannot_use_a_s_resources_in_its_own_requests(projects):
    a, b, made = projects
    flavor = next(
        f for f in _ok(b.compute.get("/v2.1/flavors"))["flavors"] if f["name"] == "m1.tiny"
    )
    b_net = _ok(b.network.post("/v2.0/networks", json={"network": {"name": "b-net"}}))["network"]
    _ok(b.network.post("/v2.0/subnets", json={"subnet": {
        "network_id": b_net["id"], "cidr": "10.78.0.0/24", "ip_version": 4}}))  # fmt: skip
    public_images = [
        i for i in _ok(b.image.get("/v2/images?visibility=public"))["images"]
        if i["status"] == "active"
    ]  # fmt: skip
    uses = [
        # A port on A's network; A's subnet on B's router; A's group on B's port.
        (b.network, "POST", "/v2.0/ports", {"port": {"network_id": made["network"]["id"]}}),
        (b.network, "POST", "/v2.0/ports", {"port": {
            "network_id": b_net["id"], "security_groups": [made["group"]["id"]]}}),
        (b.compute, "POST", "/v2.1/servers", {"server": {
            "name": "b-on-a-net", "imageRef": made["image"]["id"], "flavorRef": flavor["id"],
            "networks": [{"uuid": b_net["id"]}]}}),
        (b.volume, "POST", f"/v3/{b.project_id}/volumes", {"volume": {
            "size": 1, "snapshot_id": made["snapshot"]["id"]}}),
        (b.volume, "POST", f"/v3/{b.project_id}/volumes", {"volume": {
            "size": 1, "source_volid": made["volume"]["id"]}}),
    ]  # fmt: skip
    if public_images:
        uses.append((b.compute, "POST", "/v2.1/servers", {"server": {
            "name": "b-vm", "imageRef": public_images[0]["id"], "flavorRef": flavor["id"],
            "networks": [{"uuid": made["network"]["id"]}]}}))  # fmt: skip
    for client, method, path, body in uses:
        answer = client.request(method, path, json=body)
        assert answer.status_code in (400, 403, 404), f"{method} {path} {body}: {answer.text}"
    b_router = _ok(b.network.post("/v2.0/routers", json={"router": {"name": "b-r"}}))["router"]
    answer = b.network.put(
        f"/v2.0/routers/{b_router['id']}/add_router_interface",
        json={"subnet_id": made["subnet"]["id"]},
    )
    assert answer.status_code == 404, answer.text
    # Nothing B tried left anything behind in B's project.
    assert _ok(b.compute.get("/v2.1/servers"))["servers"] == []
    assert _ok(b.volume.get(f"/v3/{b.project_id}/volumes"))["volumes"] == []


def test_a_s_resources_are_intact_after_b_tried(projects):
    a, b, made = projects
    server = _ok(a.compute.get(f"/v2.1/servers/{made['server']['id']}"))["server"]
    assert server["name"] == "a-vm" and server["status"] == "ACTIVE"
    assert (
        _ok(a.network.get(f"/v2.0/networks/{made['network']['id']}"))["network"]["name"] == "a-net"
    )
    assert _ok(a.network.get(f"/v2.0/ports/{made['port']['id']}"))["port"]["id"]
    assert _ok(a.network.get(f"/v2.0/security-group-rules/{made['rule']['id']}"))
    assert _ok(a.image.get(f"/v2/images/{made['image']['id']}"))["name"] == "a-img"
    volume = _ok(a.volume.get(f"/v3/{a.project_id}/volumes/{made['volume']['id']}"))["volume"]
    assert volume["name"] == "a-vol" and volume["status"] == "available"
    assert a.object.get(f"/v1/AUTH_{a.project_id}/a-box/thing").content == b"A's bytes"
    assert a.object.head(f"/v1/AUTH_{a.project_id}/a-box/b-was-here").status_code == 404
