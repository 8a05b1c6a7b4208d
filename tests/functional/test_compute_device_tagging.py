"""Device role tagging as Nova has it (and Tempest's test_device_tagging checks it): the
tags a user gives NICs and volumes at boot (`--nic ...,tag=`, `--block-device ...,tag=`),
on interface attach and on volume attach (`--tag`) are in meta_data.json's `devices`,
from the metadata service and on the config drive, with where the guest finds each
device; a detached device leaves it. The `openstack` CLI and openstacksdk drive it."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from cumulo.metadata.signature import sign_instance_id
from tests.cloudrunner import CloudRunner
from tests.functional.test_compute_flavors import compute
from tests.functional.test_compute_servers import demo, image  # noqa: F401 - fixture

PCI_ADDRESS = re.compile(r"^0000:00:[0-1][0-9a-f]\.0$")


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _eventually(check: Callable[[], Any], what: str, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)
    return result


def _volume(cloud: CloudRunner) -> str:
    volume = demo(cloud, "volume", "create", "--size", "1", _name("dt-vol"), "-f", "json")
    _eventually(
        lambda: demo(cloud, "volume", "show", volume["id"], "-f", "json")["status"] == "available",
        f"volume {volume['id']}",
    )
    return volume["id"]


def _metadata(cloud: CloudRunner, server: dict, version: str = "latest") -> dict:
    """meta_data.json as the guest reads it through its network's metadata proxy."""
    address = next(a for addrs in server["addresses"].values() for a in addrs)
    headers = {
        "X-Instance-ID": server["id"],
        "X-Tenant-ID": server["project_id"],
        "X-Instance-ID-Signature": sign_instance_id(
            cloud.config.metadata.shared_secret, server["id"]
        ),
        "X-Forwarded-For": address,
    }
    url = f"http://127.0.0.1:{cloud.config.ports.metadata}/openstack/{version}/meta_data.json"
    response = httpx.get(url, headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def _config_drive(cloud: CloudRunner, server_id: str, version: str = "latest") -> dict:
    """meta_data.json on the config drive the (fake) hypervisor was given for the guest."""
    for manager in cloud.cloud.compute.managers:
        guest = manager.driver.guests.get(server_id)
        if guest is not None:
            return json.loads(guest.spec.config_drive[f"openstack/{version}/meta_data.json"])
    raise AssertionError(f"no host runs {server_id}")


def _guest_addresses(cloud: CloudRunner, server_id: str) -> dict[str, str]:
    """Where the hypervisor says the guest has each device (MAC or volume id -> address)."""
    for manager in cloud.cloud.compute.managers:
        if server_id in manager.driver.guests:
            found = cloud.run_async(manager.driver.get_device_addresses(server_id))
            return {a.id: a.address for a in found}
    raise AssertionError(f"no host runs {server_id}")


def _tags(devices: list[dict]) -> dict[str, dict]:
    return {d["tags"][0]: d for d in devices}


@pytest.fixture(scope="module")
def tagged(cloud: CloudRunner, image: str):  # noqa: F811
    """A server booted as Tempest's TaggedBootDevicesTest boots one: tagged ports, a tagged
    NIC on a network with a fixed address, an untagged NIC, a tagged and an untagged
    volume, and a config drive."""
    private = demo(cloud, "network", "show", "private", "-f", "json")["id"]
    net2 = demo(cloud, "network", "create", _name("dt-net"), "-f", "json")["id"]
    demo(cloud, "subnet", "create", "--network", net2, "--subnet-range", "10.77.7.0/24",
         _name("dt-sub"))  # fmt: skip
    port = demo(cloud, "port", "create", "--network", private, _name("dt-port"), "-f", "json")
    data, plain = _volume(cloud), _volume(cloud)
    name = _name("dt-boot")
    server = demo(
        cloud, "server", "create", "--image", image, "--flavor", "m1.tiny",
        "--nic", f"net-id={private}",
        "--nic", f"port-id={port['id']},tag=port-1",
        "--nic", f"net-id={net2},v4-fixed-ip=10.77.7.100,tag=net-2-100",
        "--block-device", f"source_type=volume,uuid={data},destination_type=volume,tag=data",
        "--block-device", f"source_type=volume,uuid={plain},destination_type=volume",
        "--config-drive", "True", "--wait", name, "-f", "json",
    )  # fmt: skip
    assert server["status"] == "ACTIVE"
    yield {"server": server, "port": port, "net2": net2, "data": data, "plain": plain}
    demo(cloud, "server", "delete", "--wait", server["id"], check=False)
    for volume in (data, plain):
        demo(cloud, "volume", "delete", volume, check=False)
    demo(cloud, "port", "delete", port["id"], check=False)
    demo(cloud, "network", "delete", net2, check=False)


def test_boot_tags_are_in_the_metadata_service_and_on_the_config_drive(
    cloud: CloudRunner, tagged: dict
):
    server = tagged["server"]
    sdk = cloud.sdk("cumulo-demo")
    macs = {
        i.fixed_ips[0]["ip_address"]: i.mac_addr
        for i in sdk.compute.server_interfaces(server["id"])
    }
    net2_mac = macs["10.77.7.100"]
    where = _guest_addresses(cloud, server["id"])

    for devices in (
        _metadata(cloud, server)["devices"],
        _config_drive(cloud, server["id"])["devices"],
    ):
        assert sorted(_tags(devices)) == ["data", "net-2-100", "port-1"]  # no untagged device
        port_1, net_2, disk = (_tags(devices)[t] for t in ("port-1", "net-2-100", "data"))
        assert port_1 == {
            "vf_trusted": False,
            "type": "nic",
            "mac": tagged["port"]["mac_address"],
            "bus": "pci",
            "address": where[tagged["port"]["mac_address"]],
            "tags": ["port-1"],
        }
        assert (net_2["mac"], net_2["address"]) == (net2_mac, where[net2_mac])
        assert disk == {
            "type": "disk",
            "serial": tagged["data"],
            "bus": "pci",
            "address": where[tagged["data"]],
            "tags": ["data"],
        }
        assert all(PCI_ADDRESS.match(d["address"]) for d in devices)
        assert len({d["address"] for d in devices}) == 3
    # The first version with devices has neither vlan nor vf_trusted; older ones no list.
    newton = _metadata(cloud, server, "2016-06-30")["devices"]
    assert sorted(_tags(newton)) == ["data", "net-2-100", "port-1"]
    assert all("vf_trusted" not in d for d in newton)
    assert "devices" not in _config_drive(cloud, server["id"], "2015-10-15")


def test_the_api_shows_the_tags_from_2_70(cloud: CloudRunner, tagged: dict):
    server = tagged["server"]
    sdk = cloud.sdk("cumulo-demo")
    tags = {i.port_id: i.tag for i in sdk.compute.server_interfaces(server["id"])}
    assert tags[tagged["port"]["id"]] == "port-1"
    assert sorted(tags.values(), key=str) == sorted(["port-1", "net-2-100", None], key=str)
    volumes = demo(cloud, "server", "volume", "list", server["id"], "-f", "json")
    assert {v["Volume ID"]: v["Tag"] for v in volumes} == {
        tagged["data"]: "data",
        tagged["plain"]: None,
    }
    token = cloud.token("demo", project="demo")
    with compute(cloud, token, "2.69") as old:
        listed = old.get(f"/servers/{server['id']}/os-interface").json()
    assert all("tag" not in i for i in listed["interfaceAttachments"])


def test_tagged_attachments_come_and_go_in_the_metadata(cloud: CloudRunner, tagged: dict, image):  # noqa: F811
    """Tempest's TaggedAttachmentsTest: a NIC and a volume attached with tags (2.49) are
    listed, and once detached they are not any more."""
    name = _name("dt-attach")
    server = demo(cloud, "server", "create", "--image", image, "--flavor", "m1.tiny",
                  "--network", "private", "--wait", name, "-f", "json")  # fmt: skip
    volume = _volume(cloud)
    try:
        assert _metadata(cloud, server)["devices"] == []
        demo(cloud, "server", "add", "network", "--tag", "nic-tag", name, tagged["net2"])
        demo(cloud, "server", "add", "volume", "--tag", "volume-tag", name, volume)

        def both_listed() -> list | None:
            devices = _metadata(cloud, server)["devices"]
            return devices if sorted(_tags(devices)) == ["nic-tag", "volume-tag"] else None

        devices = _tags(_eventually(both_listed, "the tagged attachments in the metadata"))
        where = _guest_addresses(cloud, server["id"])
        assert devices["volume-tag"]["serial"] == volume
        assert devices["volume-tag"]["address"] == where[volume]
        assert devices["nic-tag"]["address"] == where[devices["nic-tag"]["mac"]]
        sdk = cloud.sdk("cumulo-demo")
        [nic] = [i for i in sdk.compute.server_interfaces(server["id"]) if i.tag == "nic-tag"]
        assert nic.mac_addr == devices["nic-tag"]["mac"]

        demo(cloud, "server", "remove", "volume", name, volume)
        demo(cloud, "server", "remove", "port", name, nic.port_id)

        def none_listed() -> bool:
            return _metadata(cloud, server)["devices"] == []

        _eventually(none_listed, "the detached devices to leave the metadata")
    finally:
        demo(cloud, "server", "delete", "--wait", name, check=False)
        _eventually(
            lambda: demo(cloud, "volume", "show", volume, "-f", "json")["status"] == "available",
            "the volume to be free",
        )
        demo(cloud, "volume", "delete", volume)


@pytest.mark.parametrize(
    "microversion, networks_tag, bdm_tag",
    [
        ("2.31", False, False),
        ("2.32", True, True),
        ("2.33", True, False),  # 2.33 dropped block device tags (by mistake, as Nova)
        ("2.36", True, False),
        ("2.37", False, False),  # 2.37 dropped network tags
        ("2.41", False, False),
        ("2.42", True, True),  # 2.42 brought both back
        ("2.96", True, True),
    ],
)
def test_boot_tags_are_taken_in_the_microversions_nova_takes_them(
    cloud: CloudRunner, microversion: str, networks_tag: bool, bdm_tag: bool
):
    token = cloud.token("demo", project="demo")
    # An unknown flavor: a body that passes validation is answered about the flavor.
    base = {"name": "dt", "flavorRef": "no-such-flavor", "imageRef": str(uuid.uuid4())}
    network = {"uuid": str(uuid.uuid4()), "tag": "nic"}
    mapping = {"source_type": "volume", "destination_type": "volume",
               "uuid": str(uuid.uuid4()), "boot_index": 1, "tag": "disk"}  # fmt: skip
    untagged = [{"uuid": network["uuid"]}]
    with compute(cloud, token, microversion) as api:
        for body, allowed in (
            ({**base, "networks": [network]}, networks_tag),
            ({**base, "networks": untagged, "block_device_mapping_v2": [mapping]}, bdm_tag),
        ):
            answer = api.post("/servers", json={"server": body})
            message = answer.json()["badRequest"]["message"]
            assert answer.status_code == 400
            assert ("'tag' was unexpected" not in message) == allowed, (microversion, message)


@pytest.mark.parametrize("tag", ["a/b", "a,b", "", "x" * 61, 7])
def test_a_bad_tag_is_refused(cloud: CloudRunner, tagged: dict, tag: Any):
    token = cloud.token("demo", project="demo")
    server_id = tagged["server"]["id"]
    network = {"uuid": tagged["net2"], "tag": tag}
    boot = {"name": "dt", "flavorRef": "1", "imageRef": "x", "networks": [network]}
    with compute(cloud, token, "2.70") as api:
        answers = [
            api.post("/servers", json={"server": boot}),
            api.post(
                f"/servers/{server_id}/os-interface",
                json={"interfaceAttachment": {"net_id": tagged["net2"], "tag": tag}},
            ),
            api.post(
                f"/servers/{server_id}/os-volume_attachments",
                json={"volumeAttachment": {"volumeId": tagged["plain"], "tag": tag}},
            ),
        ]
    for answer in answers:
        assert answer.status_code == 400
        assert "tag" in answer.json()["badRequest"]["message"]


def test_attach_tags_need_2_49(cloud: CloudRunner, tagged: dict):
    token = cloud.token("demo", project="demo")
    server_id = tagged["server"]["id"]
    with compute(cloud, token, "2.48") as api:
        answers = [
            api.post(
                f"/servers/{server_id}/os-interface",
                json={"interfaceAttachment": {"net_id": tagged["net2"], "tag": "t"}},
            ),
            api.post(
                f"/servers/{server_id}/os-volume_attachments",
                json={"volumeAttachment": {"volumeId": tagged["plain"], "tag": "t"}},
            ),
        ]
    for answer in answers:
        assert answer.status_code == 400
        assert "'tag' was unexpected" in answer.json()["badRequest"]["message"]
