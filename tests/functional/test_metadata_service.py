"""The metadata service as the network agent's proxy calls it: a guest is answered about
itself with a valid signature from its own address, and refused otherwise."""

from __future__ import annotations

import base64
import json
import os
import uuid

import httpx
import pytest

from cumulo.metadata.signature import sign_instance_id
from tests.cloudrunner import CloudRunner
from tests.functional.test_compute_servers import demo, image  # noqa: F401 - fixture


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def guest(cloud: CloudRunner, image: str, tmp_path_factory) -> dict:  # noqa: F811
    tmp = tmp_path_factory.mktemp("md")
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGu4bqEJmbx2pX1w6cNqW7Cq5n6mQx4Zz1Bv2v4d6e0q md"
    (tmp / "k.pub").write_text(key + "\n")
    (tmp / "ud.sh").write_text("#!/bin/sh\necho metadata-user-data\n")
    keyname = _name("k")
    demo(cloud, "keypair", "create", "--public-key", str(tmp / "k.pub"), keyname)
    name = _name("md")
    server = demo(
        cloud, "server", "create", "--image", image, "--flavor", "m1.tiny", "--network",
        "private", "--user-data", str(tmp / "ud.sh"), "--key-name", keyname, "--wait", name,
        "-f", "json",
    )  # fmt: skip
    [ip] = server["addresses"]["private"]
    yield {"id": server["id"], "name": name, "project": server["project_id"], "ip": ip,
           "key": key, "keyname": keyname}  # fmt: skip
    demo(cloud, "server", "delete", "--wait", server["id"], check=False)


def _as_proxy(cloud: CloudRunner, guest: dict, **override: str) -> httpx.Client:
    headers = {
        "X-Instance-ID": guest["id"],
        "X-Tenant-ID": guest["project"],
        "X-Instance-ID-Signature": sign_instance_id(
            cloud.config.metadata.shared_secret, guest["id"]
        ),
        "X-Forwarded-For": guest["ip"],
        **override,
    }
    return httpx.Client(
        base_url=f"http://127.0.0.1:{cloud.config.ports.metadata}", headers=headers, timeout=10
    )


def test_the_guest_reads_its_openstack_metadata(cloud: CloudRunner, guest: dict):
    with _as_proxy(cloud, guest) as md:
        assert "latest" in md.get("/openstack").text.split("\n")
        assert "meta_data.json" in md.get("/openstack/latest").text.split("\n")
        meta = md.get("/openstack/latest/meta_data.json").json()
        assert meta["uuid"] == guest["id"] and meta["name"] == guest["name"]
        # As uploaded (Nova keeps the file's newline too).
        assert {k: v.strip() for k, v in meta["public_keys"].items()} == {
            guest["keyname"]: guest["key"]
        }
        assert meta["project_id"] == guest["project"]
        assert md.get("/openstack/latest/user_data").text == "#!/bin/sh\necho metadata-user-data\n"
        net = md.get("/openstack/latest/network_data.json").json()
        assert net["links"] and net["networks"][0]["network_id"]
        # Nova's default provider, StaticJSON, without a file: empty documents.
        assert md.get("/openstack/latest/vendor_data2.json").json() == {"static": {}}
        assert md.get("/openstack/latest/vendor_data.json").json() == {}
        assert md.get("/openstack/latest/nothing-here").status_code == 404


def test_the_guest_reads_its_ec2_metadata(cloud: CloudRunner, guest: dict):
    with _as_proxy(cloud, guest) as md:
        assert md.get("/").text.split("\n")[-1] == "latest"
        assert "instance-id" in md.get("/latest/meta-data/").text.split("\n")
        assert md.get("/latest/meta-data/local-ipv4").text == guest["ip"]
        assert md.get("/latest/meta-data/hostname").text == guest["name"]
        assert md.get("/latest/meta-data/placement/availability-zone").text == "nova"
        assert md.get("/latest/meta-data/public-keys/0/openssh-key").text.strip() == guest["key"]
        assert md.get("/latest/user-data").text.startswith("#!/bin/sh")


def test_the_guest_posts_its_password_once(cloud: CloudRunner, guest: dict):
    # What a guest posts: an RSA-2048 ciphertext in base64 (344 characters), kept whole.
    posted = base64.b64encode(os.urandom(256))
    with _as_proxy(cloud, guest) as md:
        assert md.get("/openstack/latest/password").text == ""
        too_big = md.post("/openstack/latest/password", content=b"x" * 1021)
        assert too_big.status_code == 400
        assert md.get("/openstack/latest/password").text == ""
        assert md.post("/openstack/latest/password", content=posted).status_code == 200
        assert md.get("/openstack/2013-04-04/password").text == posted.decode()
        again = md.post("/openstack/latest/password", content=b"other")
        assert again.status_code == 409
        assert md.post("/openstack/latest/meta_data.json", content=b"x").status_code == 400


@pytest.mark.parametrize(
    "forged, status",
    [
        ({"X-Instance-ID-Signature": "0" * 64}, 403),  # signed by someone without the secret
        ({"X-Instance-ID-Signature": ""}, 403),
        ({"X-Forwarded-For": "10.99.99.99"}, 403),  # not one of this instance's addresses
        ({"X-Tenant-ID": "another-project"}, 404),  # Nova: the instance is not found
    ],
)
def test_forged_requests_get_nothing(cloud: CloudRunner, guest: dict, forged, status):
    with _as_proxy(cloud, guest, **forged) as md:
        response = md.get("/openstack/latest/meta_data.json")
    assert response.status_code == status
    assert guest["id"] not in response.text


def test_a_request_without_the_proxy_headers_is_refused(cloud: CloudRunner):
    response = httpx.get(f"http://127.0.0.1:{cloud.config.ports.metadata}/openstack/latest")
    assert response.status_code == 400
    signed_for_nobody = httpx.get(
        f"http://127.0.0.1:{cloud.config.ports.metadata}/openstack/latest/meta_data.json",
        headers={"X-Instance-ID": str(uuid.uuid4()), "X-Tenant-ID": "p",
                 "X-Instance-ID-Signature": "x", "X-Forwarded-For": "10.0.0.2"},
    )  # fmt: skip
    assert signed_for_nobody.status_code == 403
    assert json.loads(signed_for_nobody.text)["forbidden"]["code"] == 403
