"""The dashboard's forms driven over HTTP as a browser sends them (the login form, the
session cookie, each form's CSRF token), on an in-process cloud with the fake compute
driver; every outcome checked through the APIs (openstacksdk, plain HTTP for Swift)."""

from __future__ import annotations

import html
import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from cumulo.dashboard.web import HERE
from tests.cloudrunner import CloudRunner, running_cloud
from tests.functional.dashboard_helpers import Dashboard, alerts, dashboard_url


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CloudRunner]:
    with running_cloud(tmp_path_factory.mktemp("dashboard-pages") / "state", timeout=60) as runner:
        yield runner


def section(page: str, element_id: str) -> str:
    """The HTML of the form (or table) with this id."""
    start = page.index(f'id="{element_id}"')
    tag = page.rfind("<", 0, start)
    name = page[tag + 1 : start].split()[0]
    return page[start : page.index(f"</{name}>", start)]


def wait_for(what: Callable[[], Any], timeout: float = 60, step: float = 0.3) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = what()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(step)


@pytest.fixture(scope="module")
def demo(cloud: CloudRunner) -> Iterator[Dashboard]:
    browser = Dashboard(dashboard_url(cloud), "demo", cloud.config.identity.demo_password)
    yield browser
    browser.close()


@pytest.fixture(scope="module")
def sdk(cloud: CloudRunner):
    """The demo project's API client."""
    connection = cloud.sdk("cumulo-demo")
    yield connection
    connection.close()


@pytest.fixture(scope="module")
def images(sdk) -> dict[str, str]:
    """Two small images of the demo project."""
    made = {}
    for name in ("dash-img-a", "dash-img-b"):
        image = sdk.image.create_image(
            name=name, data=b"\0" * 65536, disk_format="raw", container_format="bare"
        )
        made[name] = image.id
    return made


def server_status(sdk, server_id: str, *wanted: str) -> Any:
    server = sdk.compute.get_server(server_id)
    assert server.status != "ERROR", server.fault
    return server if server.status in wanted else None


def launch(demo: Dashboard, **form: Any) -> str:
    location = demo.submit("/instances/launch", {"flavor": "1", "count": "1", **form})
    assert re.fullmatch(r"/instances/[0-9a-f-]{36}", location), location
    return location.rsplit("/", 1)[1]


def test_a_server_is_resized_confirmed_reverted_rebuilt_and_wired(demo, sdk, images):
    private = sdk.network.find_network("private")
    server_id = launch(
        demo, name="resizable", source="image", image=images["dash-img-a"], networks=private.id
    )
    wait_for(lambda: server_status(sdk, server_id, "ACTIVE"))

    # Resize to m1.small, then confirm: the new flavor stays.
    demo.submit(f"/instances/{server_id}/resize", {"flavor": "2"})
    wait_for(lambda: server_status(sdk, server_id, "VERIFY_RESIZE"))
    page = demo.get(f"/instances/{server_id}").text
    assert "Confirm resize" in page and "Revert resize" in page
    demo.submit(f"/instances/{server_id}/action", {"action": "confirm_resize"})
    server = wait_for(lambda: server_status(sdk, server_id, "ACTIVE"))
    assert server.flavor.name == "m1.small"

    # A smaller disk is refused: Nova's message next to the resize form, with the request id.
    answer = demo.post(f"/instances/{server_id}/resize", {"flavor": "1"})
    page = demo.get(answer.headers["location"]).text
    message = alerts(section(page, "change-errors"))
    assert message and "request req-" in message[0], alerts(page)
    assert sdk.compute.get_server(server_id).flavor.name == "m1.small"

    # Resize to m1.medium, then revert: back on m1.small.
    demo.submit(f"/instances/{server_id}/resize", {"flavor": "3"})
    wait_for(lambda: server_status(sdk, server_id, "VERIFY_RESIZE"))
    demo.submit(f"/instances/{server_id}/action", {"action": "revert_resize"})
    server = wait_for(lambda: server_status(sdk, server_id, "ACTIVE"))
    assert server.flavor.name == "m1.small"

    # Rebuilt from the other image.
    demo.submit(f"/instances/{server_id}/rebuild", {"image": images["dash-img-b"]})
    wait_for(
        lambda: (
            server_status(sdk, server_id, "ACTIVE")
            and sdk.compute.get_server(server_id).image.id == images["dash-img-b"]
        )
    )

    # An interface on a new network's port, then an existing port; both listed, detached.
    net = sdk.network.create_network(name="second-net")
    sdk.network.create_subnet(network_id=net.id, cidr="10.55.0.0/24", ip_version=4)
    demo.submit(f"/instances/{server_id}/interfaces", {"interface": f"net:{net.id}"})
    ports = wait_for(lambda: list(sdk.network.ports(device_id=server_id, network_id=net.id)))
    free = sdk.network.create_port(network_id=net.id, name="spare-port")
    page = demo.get(f"/instances/{server_id}").text
    assert f'value="port:{free.id}"' in section(page, "attach-interface")
    demo.submit(f"/instances/{server_id}/interfaces", {"interface": f"port:{free.id}"})
    wait_for(lambda: sdk.network.get_port(free.id).device_id == server_id)
    page = demo.get(f"/instances/{server_id}").text
    table = section(page, "interfaces")
    assert ports[0].id in table and free.id in table and "second-net" in table
    for port_id in (ports[0].id, free.id):
        demo.submit(f"/instances/{server_id}/interfaces/{port_id}/detach")
    wait_for(lambda: not list(sdk.network.ports(device_id=server_id, network_id=net.id)))
    assert [p.network_id for p in sdk.network.ports(device_id=server_id)] == [private.id]


def test_the_wizard_boots_from_a_volume_snapshot_an_existing_volume_and_a_port(demo, sdk, images):
    private = sdk.network.find_network("private")
    volume = sdk.block_storage.create_volume(name="golden", size=1, image_id=images["dash-img-a"])
    sdk.block_storage.wait_for_status(volume, "available", wait=60)
    snapshot = sdk.block_storage.create_snapshot(volume_id=volume.id, name="golden-snap")
    sdk.block_storage.wait_for_status(snapshot, "available", wait=60)
    port = sdk.network.create_port(network_id=private.id, name="launch-port")

    form = demo.get("/instances/launch").text
    assert f'value="{snapshot.id}"' in form and f'value="{volume.id}"' in form
    assert f'value="{port.id}"' in form

    # A volume snapshot: a new volume from it, the server's root disk.
    from_snapshot = launch(
        demo, name="from-snap", source="snapshot", snapshot_id=snapshot.id, ports=port.id
    )
    wait_for(lambda: server_status(sdk, from_snapshot, "ACTIVE"))
    attached = [a.volume_id for a in sdk.compute.volume_attachments(from_snapshot)]
    assert len(attached) == 1
    root = sdk.block_storage.get_volume(attached[0])
    assert root.snapshot_id == snapshot.id and root.is_bootable
    assert sdk.network.get_port(port.id).device_id == from_snapshot  # the chosen port

    # An existing bootable volume.
    from_volume = launch(
        demo, name="from-vol", source="volume", volume_id=volume.id, networks=private.id
    )
    wait_for(lambda: server_status(sdk, from_volume, "ACTIVE"))
    assert [a.volume_id for a in sdk.compute.volume_attachments(from_volume)] == [volume.id]

    # No volume chosen: said next to the boot source, the form kept, nothing made.
    before = {s.id for s in sdk.compute.servers()}
    answer = demo.post(
        "/instances/launch", {"name": "no-volume", "source": "volume", "flavor": "1"}
    )
    assert answer.status_code == 400
    assert alerts(section(answer.text, "boot-source")) == ["Choose a volume to boot from."]
    assert 'value="no-volume"' in answer.text
    assert {s.id for s in sdk.compute.servers()} == before


def test_an_image_is_edited_with_json_patches_and_shared_with_a_project(cloud, demo, sdk, images):
    image_id = images["dash-img-b"]
    form = {
        "name": "edited-image",
        "visibility": "private",
        "min_disk": "2",
        "min_ram": "256",
        "add_properties": "team=storage\nbuild_id=41\n",
    }
    demo.submit(f"/images/{image_id}", form)
    image = sdk.image.get_image(image_id)
    assert (image.name, image.min_disk, image.min_ram) == ("edited-image", 2, 256)
    assert image.properties["team"] == "storage"
    assert image.properties["build_id"] == "41"
    # One property changed, one removed.
    page = demo.get(f"/images/{image_id}").text
    assert 'name="property:build_id" value="41"' in page
    form = {**form, "add_properties": "", "property:team": "compute"}
    form.update({"property:build_id": "41", "remove": "build_id"})
    demo.submit(f"/images/{image_id}", form)
    image = sdk.image.get_image(image_id)
    assert image.properties["team"] == "compute" and "build_id" not in image.properties

    # Bad input: Glance's message next to the form, with the request id; nothing changed.
    answer = demo.post(f"/images/{image_id}", {**form, "remove": "", "min_ram": "-5"})
    assert answer.status_code == 400
    message = alerts(section(answer.text, "image-edit"))
    assert message and "request req-" in message[0]
    assert sdk.image.get_image(image_id).min_ram == 256

    # Shared with project beta: the image becomes shared, beta's member accepts it.
    cloud.openstack("project", "create", "beta")
    cloud.openstack("user", "create", "--password", "erin-secret-pw", "erin")
    cloud.openstack("role", "add", "--project", "beta", "--user", "erin", "member")
    beta = cloud.openstack("project", "show", "beta", "-f", "json")["id"]
    demo.submit(f"/images/{image_id}/members", {"member": beta})
    assert sdk.image.get_image(image_id).visibility == "shared"
    assert [m.member_id for m in sdk.image.members(image_id)] == [beta]
    erin = Dashboard(dashboard_url(cloud), "erin", "erin-secret-pw")
    assert image_id in section(erin.get("/images").text, "pending-images")
    erin.submit(f"/images/{image_id}/share", {"status": "accepted"})
    assert sdk.image.get_member(beta, image_id).status == "accepted"
    assert "edited-image" in section(erin.get("/images").text, "images")
    erin.close()
    # Sharing twice: Glance's 409 next to the share form.
    answer = demo.post(f"/images/{image_id}/members", {"member": beta})
    assert answer.status_code == 409 and alerts(section(answer.text, "image-share"))
    demo.submit(f"/images/{image_id}/members/{beta}/delete")
    assert list(sdk.image.members(image_id)) == []


def test_volume_snapshots_and_backups_are_made_restored_and_deleted(demo, sdk):
    volume = sdk.block_storage.create_volume(name="precious", size=1)
    sdk.block_storage.wait_for_status(volume, "available", wait=60)

    demo.submit("/volume-snapshots", {"volume_id": volume.id, "name": "precious-snap"})
    snapshot = wait_for(lambda: list(sdk.block_storage.snapshots(name="precious-snap")))[0]
    sdk.block_storage.wait_for_status(snapshot, "available", wait=60)
    assert "precious-snap" in section(demo.get("/volumes").text, "snapshots")
    demo.submit(f"/volume-snapshots/{snapshot.id}/volume", {"name": "from-precious-snap"})
    copy = wait_for(lambda: list(sdk.block_storage.volumes(name="from-precious-snap")))[0]
    assert copy.snapshot_id == snapshot.id
    sdk.block_storage.wait_for_status(copy, "available", wait=60)

    demo.submit("/volume-backups", {"volume_id": volume.id, "name": "precious-backup"})
    backup = wait_for(lambda: list(sdk.block_storage.backups(name="precious-backup")))[0]
    sdk.block_storage.wait_for_status(backup, "available", wait=120)
    assert "precious-backup" in section(demo.get("/volumes").text, "backups")
    demo.submit(f"/volume-backups/{backup.id}/restore", {"name": "restored"})
    restored = wait_for(lambda: list(sdk.block_storage.volumes(name="restored")))[0]
    sdk.block_storage.wait_for_status(restored, "available", wait=120)
    sdk.block_storage.wait_for_status(backup, "available", wait=60)

    # A snapshot of a volume that does not exist: Cinder's 404 next to the form.
    answer = demo.post("/volume-snapshots", {"volume_id": "no-such-volume", "name": "x"})
    assert answer.status_code == 404
    message = alerts(section(answer.text, "snapshot-form"))
    assert message and "request req-" in message[0]

    demo.submit(f"/volume-backups/{backup.id}/delete")
    demo.submit(f"/volume-snapshots/{snapshot.id}/delete")
    wait_for(lambda: not list(sdk.block_storage.backups(name="precious-backup")), timeout=120)
    wait_for(lambda: not list(sdk.block_storage.snapshots(name="precious-snap")))


def test_a_volume_transfer_made_in_one_project_is_accepted_in_another(cloud, demo, sdk):
    admin = cloud.sdk()
    other = admin.identity.create_project(name="transfer-b", domain_id="default")
    hank = admin.identity.create_user(
        name="hank", password="hank-secret-pw", domain_id="default", default_project_id=other.id
    )
    admin.identity.assign_project_role_to_user(other, hank, admin.identity.find_role("member"))
    volume = sdk.block_storage.create_volume(name="moving", size=1)
    sdk.block_storage.wait_for_status(volume, "available", wait=60)

    def offer() -> tuple[str, str]:
        answer = demo.post(f"/volumes/{volume.id}/transfer")
        assert answer.status_code == 200, alerts(answer.text)
        notice = section(answer.text, "new-transfer")
        assert "shown only once" in notice
        transfer_id = re.search(r'id="transfer-id">([^<]+)<', notice)[1]
        auth_key = re.search(r'id="transfer-auth-key">([^<]+)<', notice)[1]
        assert transfer_id in section(answer.text, "transfers")
        return transfer_id, auth_key

    # Offered, then cancelled: the volume is available in its project again.
    transfer_id, _ = offer()
    assert sdk.block_storage.get_volume(volume.id).status == "awaiting-transfer"
    page = demo.page("/volumes")
    assert transfer_id in section(page, "transfers") and "new-transfer" not in page
    demo.submit(f"/volume-transfers/{transfer_id}/delete")
    assert sdk.block_storage.get_volume(volume.id).status == "available"
    assert transfer_id not in section(demo.page("/volumes"), "transfers")

    transfer_id, auth_key = offer()
    taker = Dashboard(dashboard_url(cloud), "hank", "hank-secret-pw")
    # A wrong auth key: Cinder's 400 next to the accept form, the volume stays.
    form = {"transfer_id": transfer_id, "auth_key": "0" * len(auth_key)}
    page = taker.refused("/volume-transfers/accept", form, 400)
    message = alerts(section(page, "accept-transfer-form"))
    assert message and "Invalid auth key" in message[0] and "request req-" in message[0]
    assert f'value="{transfer_id}"' in page
    assert sdk.block_storage.get_volume(volume.id).status == "awaiting-transfer"
    assert "moving" not in section(taker.page("/volumes"), "volumes")
    page = taker.refused("/volume-transfers/accept", {"transfer_id": " ", "auth_key": "x"}, 400)
    assert alerts(section(page, "accept-transfer-form")) == ["The transfer's id is needed."]

    taker.submit("/volume-transfers/accept", {**form, "auth_key": auth_key})
    moved = admin.block_storage.get_volume(volume.id)
    assert (moved.project_id, moved.status) == (other.id, "available")
    assert "moving" in section(taker.page("/volumes"), "volumes")
    page = demo.page("/volumes")
    assert "moving" not in section(page, "volumes") and transfer_id not in page
    assert volume.id not in [v.id for v in sdk.block_storage.volumes()]
    taker.close()
    admin.close()


def test_a_container_goes_public_and_private_and_an_object_gets_a_temp_url(cloud, demo, sdk):
    sdk.object_store.create_container("shared-docs")
    sdk.object_store.upload_object("shared-docs", "notes/today.txt", data=b"hello world\n")
    project = sdk.current_project_id
    swift = f"http://127.0.0.1:{cloud.config.ports.object_store}/v1/AUTH_{project}"
    anonymous = f"{swift}/shared-docs/notes/today.txt"
    assert httpx.get(anonymous).status_code in (401, 403)

    demo.submit("/containers/shared-docs/access", {"public": "1"})
    assert sdk.object_store.get_container_metadata("shared-docs").read_ACL == ".r:*,.rlistings"
    assert httpx.get(anonymous).content == b"hello world\n"
    page = demo.get("/containers/shared-docs").text
    assert "Make private" in page and f"{swift}/shared-docs/" in page
    demo.submit("/containers/shared-docs/access", {"public": "0"})
    assert not sdk.object_store.get_container_metadata("shared-docs").read_ACL
    assert httpx.get(anonymous).status_code in (401, 403)

    # A TempURL valid for an hour: the account's key made, the link works without a token.
    before = time.time()
    answer = demo.post(
        "/containers/shared-docs/temp-url?prefix=notes/",
        {"object": "notes/today.txt", "expires_in": "3600"},
    )
    assert answer.status_code == 200
    link = html.unescape(re.search(r'id="temp-url">([^<]+)<', answer.text)[1])
    assert link.startswith(f"{anonymous}?temp_url_sig=")
    expires = int(re.search(r"temp_url_expires=(\d+)", link)[1])
    assert int(before) + 3600 <= expires <= time.time() + 3600
    assert httpx.get(link).content == b"hello world\n"
    assert httpx.get(link.replace("temp_url_sig=", "temp_url_sig=0")).status_code == 401
    key = sdk.object_store.get_account_metadata().meta_temp_url_key
    assert key and len(key) == 64
    # A second link signs with the same key.
    demo.post(
        "/containers/shared-docs/temp-url", {"object": "notes/today.txt", "expires_in": "86400"}
    )
    assert sdk.object_store.get_account_metadata().meta_temp_url_key == key
    # An object that does not exist: Swift's 404, no link.
    answer = demo.post(
        "/containers/shared-docs/temp-url", {"object": "nothing-here", "expires_in": "3600"}
    )
    assert answer.status_code == 404 and 'id="temp-url"' not in answer.text


def test_subnets_router_interfaces_and_egress_rules_on_their_own(demo, sdk):
    net = sdk.network.create_network(name="lonely-net")
    demo.submit("/subnets", {"network_id": net.id, "name": "lonely-a", "cidr": "10.66.0.0/24"})
    subnet = sdk.network.find_subnet("lonely-a")
    assert (subnet.network_id, subnet.cidr, subnet.is_dhcp_enabled) == (
        net.id,
        "10.66.0.0/24",
        False,
    )
    demo.submit(
        "/subnets",
        {
            "network_id": net.id,
            "name": "lonely-b",
            "cidr": "10.67.0.0/24",
            "enable_dhcp": "1",
            "no_gateway": "1",
        },
    )
    other = sdk.network.find_subnet("lonely-b")
    assert other.is_dhcp_enabled and other.gateway_ip is None
    # An overlapping CIDR: Neutron's message next to the subnet form, the form kept.
    answer = demo.post("/subnets", {"network_id": net.id, "name": "bad", "cidr": "10.66.0.0/25"})
    assert answer.status_code == 400
    message = alerts(section(answer.text, "subnet-form"))
    assert message and "request req-" in message[0]
    assert 'value="10.66.0.0/25"' in answer.text

    # router1 (the demo project's) gets an interface on lonely-a, then loses it.
    router = sdk.network.find_router("router1")
    demo.submit("/router-interfaces", {"router_id": router.id, "subnet_id": subnet.id})
    interfaces = list(sdk.network.ports(device_id=router.id, network_id=net.id))
    assert [p.fixed_ips[0]["subnet_id"] for p in interfaces] == [subnet.id]
    assert "lonely-a" in section(demo.get("/networks").text, "routers")
    demo.submit(f"/routers/{router.id}/interfaces/{subnet.id}/remove")
    assert list(sdk.network.ports(device_id=router.id, network_id=net.id)) == []

    demo.submit(f"/subnets/{other.id}/delete")
    assert sdk.network.find_subnet("lonely-b") is None

    # An egress rule (outbound HTTPS to anywhere).
    group = sdk.network.create_security_group(name="web-out")
    demo.submit(
        f"/security-groups/{group.id}/rules",
        {"direction": "egress", "protocol": "tcp", "port": "443", "remote_ip_prefix": ""},
    )
    rules = [
        r
        for r in sdk.network.security_group_rules(security_group_id=group.id)
        if r.port_range_min == 443
    ]
    assert [(r.direction, r.protocol, r.remote_ip_prefix) for r in rules] == [
        ("egress", "tcp", None)
    ]


def test_a_subnet_s_pools_dns_servers_routes_and_dhcp_are_edited(demo, sdk):
    net = sdk.network.create_network(name="edited-net")
    subnet = sdk.network.create_subnet(
        network_id=net.id, name="edited-a", cidr="10.68.0.0/24", ip_version=4, is_dhcp_enabled=False
    )
    form = section(demo.get("/networks").text, f"subnet-edit-{subnet.id}")
    assert "10.68.0.2-10.68.0.254" in form  # the current pool, as the form shows it
    fields = {
        "name": "edited-b",
        "current_gateway_ip": "10.68.0.1",
        "gateway_ip": "10.68.0.1",
        "enable_dhcp": "1",
        "allocation_pools": "10.68.0.10-10.68.0.50\n10.68.0.100-10.68.0.120\n",
        "dns_nameservers": "192.0.2.53\n198.51.100.53",
        "host_routes": "192.168.5.0/24 10.68.0.254",
    }
    demo.submit(f"/subnets/{subnet.id}", fields)
    edited = sdk.network.get_subnet(subnet.id)
    assert edited.name == "edited-b" and edited.is_dhcp_enabled
    assert edited.allocation_pools == [
        {"start": "10.68.0.10", "end": "10.68.0.50"},
        {"start": "10.68.0.100", "end": "10.68.0.120"},
    ]
    assert edited.dns_nameservers == ["192.0.2.53", "198.51.100.53"]
    assert edited.host_routes == [{"destination": "192.168.5.0/24", "nexthop": "10.68.0.254"}]
    assert "198.51.100.53" in section(demo.get("/networks").text, f"subnet-edit-{subnet.id}")

    # A pool outside the CIDR: Neutron's 400 next to that subnet's form, nothing changed.
    bad = {**fields, "name": "never", "allocation_pools": "10.69.0.10-10.69.0.20"}
    page = demo.refused(f"/subnets/{subnet.id}", bad, 400)
    message = alerts(section(page, f"subnet-edit-{subnet.id}"))
    assert message and "request req-" in message[0], alerts(page)
    assert "10.69.0.10-10.69.0.20" in section(page, f"subnet-edit-{subnet.id}")  # form kept
    again = sdk.network.get_subnet(subnet.id)
    assert (again.name, again.allocation_pools) == ("edited-b", edited.allocation_pools)

    # No gateway, no DNS servers, no routes.
    demo.submit(
        f"/subnets/{subnet.id}",
        {"name": "edited-b", "current_gateway_ip": "10.68.0.1", "no_gateway": "1"},
    )
    cleared = sdk.network.get_subnet(subnet.id)
    assert cleared.gateway_ip is None and not cleared.is_dhcp_enabled
    assert cleared.dns_nameservers == [] and cleared.host_routes == []
    assert cleared.allocation_pools == edited.allocation_pools  # none given: kept


def test_a_router_is_created_wired_and_deleted_on_its_own(demo, sdk):
    public = sdk.network.find_network("public")
    demo.submit("/routers", {"name": "solo-router", "external_network_id": public.id})
    router = sdk.network.find_router("solo-router")
    assert router.external_gateway_info["network_id"] == public.id
    demo.submit("/routers", {"name": "no-gateway-router", "external_network_id": ""})
    bare = sdk.network.find_router("no-gateway-router")
    assert not bare.external_gateway_info
    assert "public" in section(demo.get("/networks").text, "routers")

    net = sdk.network.create_network(name="solo-net")
    subnet = sdk.network.create_subnet(network_id=net.id, cidr="10.71.0.0/24", ip_version=4)
    demo.submit("/router-interfaces", {"router_id": router.id, "subnet_id": subnet.id})
    interfaces = list(sdk.network.ports(device_id=router.id, network_id=net.id))
    assert [p.fixed_ips[0]["subnet_id"] for p in interfaces] == [subnet.id]

    # Neutron refuses to delete a router with an interface: its 409 on the page.
    page = demo.refused(f"/routers/{router.id}/delete", {}, 409)
    message = alerts(page)
    assert message and router.id in message[0] and "request req-" in message[0], message
    assert sdk.network.find_router("solo-router") is not None

    demo.submit(f"/routers/{router.id}/interfaces/{subnet.id}/remove")
    demo.submit(f"/routers/{router.id}/delete")
    demo.submit(f"/routers/{bare.id}/delete")
    assert sdk.network.find_router("solo-router") is None
    assert sdk.network.find_router("no-gateway-router") is None


def test_a_distributed_router_s_interfaces_are_listed_and_removed(cloud, demo, sdk):
    """An admin's distributed router in the project (Neutron's DVR: its interfaces are
    owned by network:router_interface_distributed) is wired and unwired on the page."""
    cloud.openstack("router", "create", "--distributed", "--project", "demo", "dvr-router")
    router = sdk.network.find_router("dvr-router")
    net = sdk.network.create_network(name="dvr-net")
    subnet = sdk.network.create_subnet(network_id=net.id, cidr="10.72.0.0/24", ip_version=4)
    demo.submit("/router-interfaces", {"router_id": router.id, "subnet_id": subnet.id})
    [port] = sdk.network.ports(device_id=router.id, network_id=net.id)
    assert port.device_owner == "network:router_interface_distributed"
    assert "10.72.0.0/24" in section(demo.get("/networks").text, "routers")

    demo.submit(f"/routers/{router.id}/interfaces/{subnet.id}/remove")
    assert "10.72.0.0/24" not in section(demo.get("/networks").text, "routers")
    demo.submit(f"/routers/{router.id}/delete")
    assert sdk.network.find_router("dvr-router") is None


def test_a_rule_takes_a_remote_group_instead_of_a_cidr(demo, sdk):
    db = sdk.network.create_security_group(name="db-tier")
    app = sdk.network.create_security_group(name="app-tier")
    demo.submit(
        f"/security-groups/{db.id}/rules",
        {
            "direction": "ingress",
            "protocol": "tcp",
            "port": "5432",
            "remote_ip_prefix": "0.0.0.0/0",  # the form's default, overridden by the group
            "remote_group_id": app.id,
        },
    )
    rules = [
        r
        for r in sdk.network.security_group_rules(security_group_id=db.id)
        if r.port_range_min == 5432
    ]
    assert [(r.remote_group_id, r.remote_ip_prefix) for r in rules] == [(app.id, None)]
    assert "group app-tier" in demo.get("/security-groups").text


def test_a_rebuild_takes_a_name_metadata_and_shows_the_api_s_refusal(demo, sdk, images):
    private = sdk.network.find_network("private")
    # An image of its own (the shared ones are edited by the image test).
    image_b = sdk.image.create_image(
        name="rebuild-img", data=b"\0" * 65536, disk_format="raw", container_format="bare"
    ).id
    server_id = launch(
        demo, name="to-rebuild", source="image", image=images["dash-img-a"], networks=private.id
    )
    wait_for(lambda: server_status(sdk, server_id, "ACTIVE"))
    sdk.compute.create_keypair(name="rebuild-key")
    page = demo.get(f"/instances/{server_id}").text
    assert 'name="metadata"' in section(page, "rebuild")
    assert 'value="key:rebuild-key"' in section(page, "rebuild")

    demo.submit(
        f"/instances/{server_id}/rebuild",
        {
            "image": image_b,
            "name": "rebuilt",
            "metadata": "role=web\n tier = front \n",
            "admin_pass": "s3cret-Pass",
            "key": "key:rebuild-key",
        },
    )
    server = wait_for(lambda: server_status(sdk, server_id, "ACTIVE"))
    assert server.name == "rebuilt" and server.key_name == "rebuild-key"
    assert server.metadata == {"role": "web", "tier": "front"}
    assert server.image.id == image_b
    assert "role=web" in section(demo.get(f"/instances/{server_id}").text, "rebuild")

    # An unknown image: Nova's message with the request id next to the form, nothing changed.
    answer = demo.post(
        f"/instances/{server_id}/rebuild",
        {"image": "00000000-0000-0000-0000-000000000000", "name": "never", "metadata": ""},
    )
    assert answer.status_code == 303
    page = demo.get(answer.headers["location"]).text
    message = alerts(section(page, "change-errors"))
    assert message and "request req-" in message[0], alerts(page)
    server = sdk.compute.get_server(server_id)
    assert (server.name, server.metadata) == ("rebuilt", {"role": "web", "tier": "front"})

    # A metadata line without "=": refused by the form, nothing sent.
    answer = demo.post(
        f"/instances/{server_id}/rebuild",
        {"image": image_b, "name": "never", "metadata": "no-equals-sign"},
    )
    page = demo.get(answer.headers["location"]).text
    assert any("key=value" in m for m in alerts(section(page, "change-errors")))
    assert sdk.compute.get_server(server_id).name == "rebuilt"

    # An unknown key pair is Nova's 400; "none" takes the key away.
    answer = demo.post(f"/instances/{server_id}/rebuild", {"image": image_b, "key": "key:nope"})
    message = alerts(section(demo.get(answer.headers["location"]).text, "change-errors"))
    assert message and "Keypair nope not found" in message[0], message
    demo.submit(
        f"/instances/{server_id}/rebuild",
        {"image": image_b, "name": "rebuilt", "metadata": "", "key": "none"},
    )
    server = wait_for(lambda: server_status(sdk, server_id, "ACTIVE"))
    assert server.key_name is None and server.metadata == {}


def _svg_tag(page: str, element_id: str) -> str:
    """The opening tag of the topology's element with this id."""
    match = re.search(rf'<[a-z]+ [^>]*id="{re.escape(element_id)}"[^>]*>', page)
    assert match, element_id
    return match[0]


def _port_lines(page: str) -> set[tuple[str, str, str, bool]]:
    """The topology's port lines: (device, network, IPs, gateway)."""
    return {
        (m[1], m[2], m[3], bool(m[4]))
        for m in re.finditer(
            r'<g class="topo-port" id="[^"]*" data-device="([^"]*)" data-network="([^"]*)"'
            r' data-ips="([^"]*)"( data-gateway="true")?>',
            page,
        )
    }


def _sse_events(stream: httpx.Response) -> Iterator[tuple[str, str]]:
    name, data = "", []
    for line in stream.iter_lines():
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            data.append(line[6:])
        elif not line and name:
            yield name, "\n".join(data)
            name, data = "", []


def test_the_topology_is_drawn_by_the_server_and_follows_changes(cloud, demo, sdk, images):
    public = sdk.network.find_network("public")
    net = sdk.network.create_network(name="topo-net")
    subnet = sdk.network.create_subnet(
        network_id=net.id, name="topo-sub", cidr="10.72.0.0/24", ip_version=4
    )
    router = sdk.network.create_router(
        name="topo-router", external_gateway_info={"network_id": public.id}
    )
    sdk.network.add_interface_to_router(router, subnet_id=subnet.id)
    server_id = launch(
        demo, name="topo-vm", source="image", image=images["dash-img-a"], networks=net.id
    )
    wait_for(lambda: server_status(sdk, server_id, "ACTIVE"))
    server_ip = next(sdk.network.ports(device_id=server_id)).fixed_ips[0]["ip_address"]
    gateway_ip = sdk.network.get_router(router.id).external_gateway_info["external_fixed_ips"][0]
    # Another project's network and router, which no one else's page may show.
    admin = cloud.sdk()
    other = admin.identity.create_project(name="topo-b", domain_id="default")
    secret = admin.network.create_network(name="topo-secret-net", project_id=other.id)
    admin.network.create_router(name="topo-secret-router", project_id=other.id)

    page = demo.page("/topology")
    # No cytoscape: the page's scripts (htmx and its extensions) stay under 100 KB.
    scripts = re.findall(r'<script src="([^"]+)"', page)
    assert not any("cytoscape" in s or "topology.js" in s for s in scripts), scripts
    total = sum(len(demo.get(s).content) for s in scripts)
    assert total < 100 * 1024, (total, scripts)
    # The network, the router and the server, each a link to its page.
    assert 'href="/networks#network-' + net.id + '"' in _svg_tag(page, f"topo-network-{net.id}")
    assert "topo-external" in _svg_tag(page, f"topo-network-{public.id}")
    assert f'href="/networks#router-{router.id}"' in _svg_tag(page, f"topo-router-{router.id}")
    assert f'href="/instances/{server_id}"' in _svg_tag(page, f"topo-server-{server_id}")
    assert "topo-net · 10.72.0.0/24</text>" in page
    assert "<title>Server topo-vm (ACTIVE)</title>" in page
    # The lines: the router's gateway and interface, the server's port with its IP.
    lines = _port_lines(page)
    assert (router.id, public.id, gateway_ip["ip_address"], True) in lines
    assert (router.id, net.id, "10.72.0.1", False) in lines
    assert (server_id, net.id, server_ip, False) in lines
    assert f">{server_ip}</text>" in page
    # A floating IP associated with the server's port is written on its line.
    port = next(sdk.network.ports(device_id=server_id))
    fip = sdk.network.create_ip(floating_network_id=public.id, port_id=port.id)
    line = _svg_tag(demo.page("/topology"), f"topo-port-{port.id}")
    assert f'data-floating-ips="{fip.floating_ip_address}"' in line
    assert f"{server_ip}, ↔ {fip.floating_ip_address}</text>" in demo.page("/topology")
    sdk.network.delete_ip(fip)
    # The links' targets exist.
    networks_page = demo.page("/networks")
    assert f'id="network-{net.id}"' in networks_page and f'id="router-{router.id}"' in networks_page
    assert "topo-secret" not in page and secret.id not in page
    assert "topo-secret" not in demo.page("/topology.json")
    json_edges = demo.get("/topology.json").json()["edges"]
    assert {"source": server_id, "target": net.id} in [
        {k: e["data"][k] for k in ("source", "target")} for e in json_edges
    ]

    # Live: a router interface added elsewhere reaches the open page's stream as the
    # picture drawn again (what htmx morphs in).
    view = re.search(r'sse-connect="/topology/live\?view=([^"]+)"', page)[1]
    net2 = sdk.network.create_network(name="topo-net-2")
    subnet2 = sdk.network.create_subnet(network_id=net2.id, cidr="10.73.0.0/24", ip_version=4)
    seen: list[str] = []
    with demo.http.stream("GET", f"/topology/live?view={view}") as stream:
        assert stream.status_code == 200
        sdk.network.add_interface_to_router(router, subnet_id=subnet2.id)
        deadline = time.monotonic() + 60
        for name, data in _sse_events(stream):
            assert name == "topology", (name, data[:500])
            seen.append(data)
            if (router.id, net2.id, "10.73.0.1", False) in _port_lines(data):
                break
            assert time.monotonic() < deadline, "the interface never reached the stream"
        else:
            raise AssertionError("the stream ended before the interface reached it")
    assert all("topo-secret" not in data for data in seen)
    assert 'sse-swap="topology"' in seen[-1]

    # An administrator's lists hold every project's: their topology shows their own.
    admin_page = Dashboard(dashboard_url(cloud), "admin", cloud.config.identity.admin_password)
    shown = admin_page.page("/topology")
    assert net.id not in shown and router.id not in shown and "topo-secret" not in shown
    assert f"topo-network-{public.id}" in shown
    admin_page.close()
    admin.close()


def _activity_rows(page: str) -> list[dict[str, str]]:
    """The overview's recent activity, row by row: the action, the linked server, the
    request id and the result."""
    rows = []
    table = section(page, "activity-log")
    for row in re.findall(r'<tr class="activity-server">(.*?)</tr>', table, re.S):
        cells = re.findall(r"<td>(.*?)</td>", row, re.S)
        rows.append(
            {
                "when": re.search(r'<time datetime="([^"]+)" title="\1">', cells[0])[1],
                "what": cells[1],
                "href": re.search(r'<a href="([^"]+)">', cells[2])[1],
                "by": cells[3],
                "request": re.search(r"request <code>([^<]+)</code>", cells[3])[1],
                "result": re.sub(r"<[^>]+>", "", cells[4]).strip(),
            }
        )
    return rows


def test_the_overview_shows_the_project_s_recent_activity_newest_first(cloud, demo, sdk, images):
    private = sdk.network.find_network("private")
    server_id = launch(
        demo, name="busy-bee", source="image", image=images["dash-img-a"], networks=private.id
    )
    wait_for(lambda: server_status(sdk, server_id, "ACTIVE"))
    demo.submit(f"/instances/{server_id}/action", {"action": "reboot"})
    wait_for(lambda: server_status(sdk, server_id, "ACTIVE"))
    demo.submit(f"/instances/{server_id}/action", {"action": "stop"})
    wait_for(lambda: server_status(sdk, server_id, "SHUTOFF"))
    # The admin project's server: another project's, which demo's page never shows.
    admin = cloud.sdk()
    admin_image = admin.image.create_image(
        name="activity-admin-img", data=b"\0" * 65536, disk_format="raw", container_format="bare"
    )
    theirs = admin.compute.create_server(
        name="admin-only", image_id=admin_image.id, flavor_id="1", networks="none"
    )
    admin.compute.wait_for_server(theirs, status="ACTIVE", wait=60)
    admin.compute.reboot_server(theirs, "SOFT")
    admin.compute.wait_for_server(theirs, status="ACTIVE", wait=60)

    listed = sdk.compute.get(f"/servers/{server_id}/os-instance-actions").json()
    request_ids = {a["action"]: a["request_id"] for a in listed["instanceActions"]}
    page = demo.page("/")
    mine = [r for r in _activity_rows(page) if r["href"] == f"/instances/{server_id}"]
    assert [r["what"] for r in mine] == ["stop", "reboot", "create"], mine
    assert [r["request"] for r in mine] == [request_ids[a] for a in ("stop", "reboot", "create")]
    assert all(r["result"] == "finished" for r in mine), mine
    assert all("(you)" in r["by"] for r in mine), mine
    # Newest first, the ISO time in the title.
    assert [r["when"] for r in mine] == sorted((r["when"] for r in mine), reverse=True)
    assert f'<a href="/instances/{server_id}">busy-bee</a>' in section(page, "activity-log")
    assert theirs.id not in page and "admin-only" not in page

    # An administrator's lists hold every project's: their overview shows their own only.
    admin_page = Dashboard(dashboard_url(cloud), "admin", cloud.config.identity.admin_password)
    shown = admin_page.page("/")
    rows = _activity_rows(shown)
    assert [r["what"] for r in rows if r["href"] == f"/instances/{theirs.id}"] == [
        "reboot",
        "create",
    ], rows
    assert server_id not in shown and "busy-bee" not in shown
    admin_page.close()
    admin.compute.delete_server(theirs)
    admin.close()


def _scripts_sent(demo: Dashboard, paths: list[str]) -> tuple[int, int]:
    """The scripts' bytes on the wire (gzipped above 1 KB) and inflated, each checked to
    be the vendored file's bytes."""
    wire = plain = 0
    for path in paths:
        with demo.http.stream("GET", path, headers={"Accept-Encoding": "gzip"}) as answer:
            assert answer.status_code == 200, path
            raw = b"".join(answer.iter_raw())
            if len(raw) > 1024:
                assert answer.headers["content-encoding"] == "gzip", path
        wire += len(raw)
        body = demo.get(path).content  # httpx inflates it
        plain += len(body)
        assert body == (HERE / "static" / path.removeprefix("/static/")).read_bytes()
    return wire, plain


def test_a_server_page_and_its_console_page_each_send_under_100_kb_of_scripts(demo, sdk, images):
    """Issue 17's budget, per page: the server page, and its console (a page of its own,
    framed in the server page's Console panel: console.js, which imports noVNC's RFB),
    each load under 100 KB of scripts, inflated; they travel gzipped."""
    net = sdk.network.create_network(name="console-weight-net")
    sdk.network.create_subnet(network_id=net.id, cidr="10.73.0.0/24", ip_version=4)
    server_id = launch(demo, name="console-weight", source="image",
                       image=images["dash-img-a"], networks=net.id)  # fmt: skip
    wait_for(lambda: server_status(sdk, server_id, "ACTIVE"))
    page = demo.page(f"/instances/{server_id}")
    scripts = re.findall(r'<script src="([^"]+)"', page)
    assert "/static/console-panel.js" in scripts, scripts
    assert not any("novnc" in s or s == "/static/console.js" for s in scripts), scripts
    assert f'<iframe id="vnc-frame" src="/instances/{server_id}/console"' in page

    console = demo.page(f"/instances/{server_id}/console")
    assert "<script>" not in console  # no inline script: the files are all of it
    console_scripts = re.findall(r'<script src="([^"]+)"', console)
    assert console_scripts == ["/static/console.js"], console_scripts
    imported = re.findall(r'import\("(/static/[^"]+)"\)', demo.get("/static/console.js").text)
    assert imported == ["/static/vendor/novnc-rfb.min.js"], imported

    for name, paths in (("server page", scripts), ("console page", console_scripts + imported)):
        wire, plain = _scripts_sent(demo, paths)
        print(f"{name}: scripts {plain} bytes, {wire} on the wire")
        assert plain <= 100 * 1024 and wire < plain / 2, (name, wire, plain)
    sdk.compute.delete_server(server_id)
