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
