"""Signed images as a user makes and boots them: a certificate in the Key Manager
(openstacksdk), an image uploaded with its img_signature properties (the openstack CLI),
servers booted from it with and without trusted certificates (2.63)."""

from __future__ import annotations

import base64
import datetime
import subprocess
import time
import uuid
from pathlib import Path

import httpx
import pytest

from cumulo.testing.signing import Issued, issue, signature_properties
from tests.cloudrunner import CloudRunner

V263 = {"OpenStack-API-Version": "compute 2.63"}


def _name(prefix: str = "signed") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _store_cert(cloud: CloudRunner, issued: Issued) -> str:
    """The certificate in the Key Manager as Glance's guide stores it (base64 of PEM)."""
    secret = cloud.sdk().key_manager.create_secret(
        name=_name("cert"),
        secret_type="certificate",
        payload=base64.b64encode(issued.pem).decode(),
        payload_content_type="application/octet-stream",
        payload_content_encoding="base64",
    )
    return secret.secret_id


def _qcow2(path: Path) -> bytes:
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), "8M"], check=True)
    return path.read_bytes()


def _property_args(props: dict[str, str]) -> list[str]:
    return [arg for k, v in props.items() for arg in ("--property", f"{k}={v}")]


@pytest.fixture(scope="module")
def pki(cloud: CloudRunner) -> dict:
    """A CA and a signing certificate it issued, both in the Key Manager."""
    ca = issue("cumulo test CA", ca=True, path_length=0)
    signer = issue("image signer", issuer=ca)
    return {
        "ca": ca,
        "signer": signer,
        "ca_id": _store_cert(cloud, ca),
        "signer_id": _store_cert(cloud, signer),
    }


@pytest.fixture(scope="module")
def image_api(cloud: CloudRunner, admin_token: str):
    with cloud.api("image", admin_token) as client:
        yield client


@pytest.fixture(scope="module")
def compute_api(cloud: CloudRunner, admin_token: str):
    with cloud.api("compute", admin_token, "/v2.1", headers=V263) as client:
        yield client


def _signed_image(cloud: CloudRunner, tmp_path: Path, pki: dict) -> dict:
    disk = tmp_path / f"{_name()}.qcow2"
    props = signature_properties(_qcow2(disk), pki["signer"], pki["signer_id"])
    return cloud.openstack(
        "image", "create", _name(), "--file", str(disk), "--disk-format", "qcow2",
        "--container-format", "bare", *_property_args(props), "-f", "json",
    )  # fmt: skip


def _new_image(image_api: httpx.Client, props: dict[str, str]) -> str:
    body = {"name": _name(), "disk_format": "raw", "container_format": "bare", **props}
    answer = image_api.post("/v2/images", json=body)
    assert answer.status_code == 201, answer.text
    return answer.json()["id"]


def _upload(image_api: httpx.Client, image_id: str, data: bytes) -> httpx.Response:
    headers = {"Content-Type": "application/octet-stream"}
    return image_api.put(f"/v2/images/{image_id}/file", content=data, headers=headers)


def _store_files(cloud: CloudRunner) -> set[str]:
    return {p.name for p in (cloud.state_dir / "images").iterdir()}


# -- the Image service ------------------------------------------------------------------


def test_signed_image_uploaded_with_the_cli_becomes_active(cloud, tmp_path, pki):
    image = _signed_image(cloud, tmp_path, pki)
    assert image["status"] == "active"
    shown = cloud.openstack("image", "show", image["id"], "-f", "json")
    assert shown["properties"]["img_signature_certificate_uuid"] == pki["signer_id"]


def test_tampered_data_is_refused_and_the_image_stays_queued_without_data(
    cloud, tmp_path, pki, image_api
):
    disk = tmp_path / "disk.qcow2"
    data = _qcow2(disk)
    props = signature_properties(data, pki["signer"], pki["signer_id"])
    disk.write_bytes(data[:-1] + b"\x01")  # one byte changed after signing
    failed = cloud.openstack(
        "image", "create", _name(), "--file", str(disk), "--disk-format", "qcow2",
        "--container-format", "bare", *_property_args(props), check=False,
    )  # fmt: skip
    assert failed.returncode != 0

    data = b"raw image data " * 1000
    props = signature_properties(data, pki["signer"], pki["signer_id"])
    image_id = _new_image(image_api, props)
    before = _store_files(cloud)
    answer = _upload(image_api, image_id, data[:-1] + b"\x01")
    assert answer.status_code == 400
    assert f"Signature verification failed for image {image_id}" in answer.text
    shown = image_api.get(f"/v2/images/{image_id}").json()
    assert (shown["status"], shown["size"], shown["checksum"]) == ("queued", None, None)
    assert _store_files(cloud) == before
    # The right data is still accepted afterwards.
    assert _upload(image_api, image_id, data).status_code == 204
    assert image_api.get(f"/v2/images/{image_id}").json()["status"] == "active"


def test_unreadable_or_expired_certificate_refuses_the_upload(cloud, pki, image_api):
    data = b"raw image data " * 1000
    cases = {
        str(uuid.uuid4()): "Certificate not found with ID",
        _store_cert(
            cloud,
            issue(
                "old signer",
                not_before=datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=40),
                days=30,
            ),
        ): "outside its valid date range",
    }
    for cert_id, message in cases.items():
        image_id = _new_image(image_api, signature_properties(data, pki["signer"], cert_id))
        answer = _upload(image_api, image_id, data)
        assert answer.status_code == 400 and message in answer.text, answer.text
        assert image_api.get(f"/v2/images/{image_id}").json()["status"] == "queued"
    bad_method = {
        **signature_properties(data, pki["signer"], pki["signer_id"]),
        "img_signature_hash_method": "MD5",
    }
    answer = _upload(image_api, _new_image(image_api, bad_method), data)
    assert answer.status_code == 400 and "Invalid signature hash method: MD5" in answer.text


def test_partial_signature_properties_are_not_verified_as_in_glance(pki, image_api):
    data = b"raw image data " * 1000
    props = signature_properties(data, pki["signer"], pki["signer_id"])
    del props["img_signature_key_type"]
    image_id = _new_image(image_api, {**props, "img_signature": "bm90IGEgc2lnbmF0dXJl"})
    assert _upload(image_api, image_id, data).status_code == 204


def test_glance_direct_import_verifies_the_staged_data(pki, image_api):
    data = b"raw image data " * 1000
    props = signature_properties(data, pki["signer"], pki["signer_id"])
    headers = {"Content-Type": "application/octet-stream"}
    results = {}
    for name, payload in (("good", data), ("tampered", data + b"!")):
        image_id = _new_image(image_api, props)
        staged = image_api.put(f"/v2/images/{image_id}/stage", content=payload, headers=headers)
        assert staged.status_code == 204
        answer = image_api.post(
            f"/v2/images/{image_id}/import", json={"method": {"name": "glance-direct"}}
        )
        assert answer.status_code == 202
        deadline = time.monotonic() + 30
        while (status := image_api.get(f"/v2/images/{image_id}").json()["status"]) in (
            "importing",
            "uploading",
        ) and time.monotonic() < deadline:
            time.sleep(0.2)
        tasks = image_api.get(f"/v2/images/{image_id}/tasks").json()["tasks"]
        results[name] = (status, tasks[-1]["status"], tasks[-1]["message"])
    assert results["good"][:2] == ("active", "success")
    assert results["tampered"][:2] == ("queued", "failure")
    assert "Signature verification failed" in results["tampered"][2]


# -- Compute ----------------------------------------------------------------------------


def _wait_server(compute_api: httpx.Client, server_id: str, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        server = compute_api.get(f"/servers/{server_id}").json()["server"]
        if server["status"] in ("ACTIVE", "ERROR") or time.monotonic() > deadline:
            return server
        time.sleep(0.2)


def _boot(cloud, image_id: str, *trusted: str) -> dict:
    args = [arg for cert in trusted for arg in ("--trusted-image-cert", cert)]
    return cloud.openstack(
        "--os-compute-api-version", "2.63", "server", "create", "--image", image_id,
        "--flavor", "m1.nano", "--nic", "none", *args, _name("server"), "-f", "json",
    )  # fmt: skip


def test_server_boots_from_a_signed_image_with_trusted_certificates(
    cloud, tmp_path, pki, compute_api
):
    image = _signed_image(cloud, tmp_path, pki)
    trusted = _boot(cloud, image["id"], pki["ca_id"], pki["signer_id"])
    server = _wait_server(compute_api, trusted["id"])
    assert server["status"] == "ACTIVE", server.get("fault")
    assert server["trusted_image_certificates"] == [pki["ca_id"], pki["signer_id"]]
    plain = _wait_server(compute_api, _boot(cloud, image["id"])["id"])
    assert plain["status"] == "ACTIVE" and plain["trusted_image_certificates"] is None

    # Rebuild replaces them (null: none).
    answer = compute_api.post(
        f"/servers/{server['id']}/action",
        json={"rebuild": {"imageRef": image["id"], "trusted_image_certificates": None}},
    )
    assert (
        answer.status_code == 202 and answer.json()["server"]["trusted_image_certificates"] is None
    )
    assert _wait_server(compute_api, server["id"])["status"] == "ACTIVE"


def test_untrusted_chain_fails_the_build_with_a_fault(cloud, tmp_path, pki, compute_api):
    image = _signed_image(cloud, tmp_path, pki)
    other_ca = _store_cert(cloud, issue("another CA", ca=True))
    server = _wait_server(compute_api, _boot(cloud, image["id"], other_ca)["id"])
    assert server["status"] == "ERROR"
    message = server["fault"]["message"]
    assert "Image signature certificate validation failed" in message
    assert pki["signer_id"] in message


def test_bad_signature_fails_the_build_and_nothing_is_cached(cloud, tmp_path, pki, compute_api):
    image = _signed_image(cloud, tmp_path, pki)
    # The signature of other data (Glance lets properties change on an active image).
    other = signature_properties(b"other data", pki["signer"], pki["signer_id"])
    cloud.openstack(
        "image", "set", "--property", f"img_signature={other['img_signature']}", image["id"]
    )
    server = _wait_server(compute_api, _boot(cloud, image["id"])["id"])
    assert server["status"] == "ERROR"
    assert "Signature verification for the image failed" in server["fault"]["message"]
    cached = list((cloud.state_dir / "compute").glob(f"*/images/{image['id']}"))
    assert cached == []


def test_trusted_certificates_need_2_63_and_an_image(pki, compute_api):
    body = {
        "server": {
            "name": _name(), "flavorRef": "1", "imageRef": str(uuid.uuid4()),
            "networks": "none", "trusted_image_certificates": [pki["ca_id"]],
        }
    }  # fmt: skip
    old = compute_api.post("/servers", json=body, headers={"OpenStack-API-Version": "compute 2.62"})
    assert old.status_code == 400 and "trusted_image_certificates" in old.text
    for bad in ([], [""], [pki["ca_id"], pki["ca_id"]], "x"):
        body["server"]["trusted_image_certificates"] = bad
        answer = compute_api.post("/servers", json=body)
        assert answer.status_code == 400, (bad, answer.text)
