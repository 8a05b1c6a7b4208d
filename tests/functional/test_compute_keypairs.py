"""Key pairs as users manage them: generated and imported with the openstack CLI,
fingerprints as ssh-keygen prints them, server-side generation, quota and bad input."""

from __future__ import annotations

import base64
import hashlib
import subprocess
import uuid

from cryptography.hazmat.primitives import serialization

from tests.cloudrunner import CloudRunner
from tests.functional.test_compute_flavors import compute


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def md5_fingerprint(public_key: str) -> str:
    digest = hashlib.md5(base64.b64decode(public_key.split()[1])).hexdigest()
    return ":".join(digest[i : i + 2] for i in range(0, 32, 2))


def test_generated_key_is_saved_and_listed(cloud: CloudRunner, tmp_path):
    name = _name("gen")
    private = tmp_path / "gen.pem"
    created = cloud.openstack(
        "keypair", "create", name, "--private-key", str(private), "-f", "json",
        cloud="cumulo-demo",
    )  # fmt: skip
    key = serialization.load_ssh_private_key(private.read_bytes(), password=None)
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    assert created["fingerprint"] == md5_fingerprint(public.decode())
    listed = cloud.openstack("keypair", "list", "-f", "json", cloud="cumulo-demo")
    assert {"Name": name, "Fingerprint": created["fingerprint"], "Type": "ssh"} in listed
    shown = cloud.openstack("keypair", "show", name, "-f", "json", cloud="cumulo-demo")
    assert shown["user_id"] == created["user_id"] and shown["type"] == "ssh"
    assert cloud.openstack("keypair", "show", "--public-key", name, cloud="cumulo-demo").startswith(
        public.decode()
    )
    # Another user's key pairs are not visible.
    assert name not in {k["Name"] for k in cloud.openstack("keypair", "list", "-f", "json")}
    cloud.openstack("keypair", "delete", name, cloud="cumulo-demo")
    gone = cloud.openstack("keypair", "show", name, cloud="cumulo-demo", check=False)
    assert gone.returncode != 0


def test_imported_public_key_gets_ssh_keygen_fingerprint(cloud: CloudRunner, tmp_path):
    path = tmp_path / "id_rsa"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "rsa", "-b", "2048", "-N", "", "-f", str(path)], check=True
    )
    expected = subprocess.run(
        ["ssh-keygen", "-l", "-E", "md5", "-f", f"{path}.pub"],
        check=True, capture_output=True, text=True,
    ).stdout.split()[1].removeprefix("MD5:")  # fmt: skip
    name = _name("imported")
    created = cloud.openstack(
        "keypair", "create", name, "--public-key", f"{path}.pub", "-f", "json"
    )
    assert created["fingerprint"] == expected
    cloud.openstack("keypair", "delete", name)


def test_server_generates_ssh_and_x509_keys(cloud: CloudRunner, admin_token):
    with compute(cloud, admin_token, "2.2") as api:
        ssh = api.post("/os-keypairs", json={"keypair": {"name": _name("srv")}})
        assert ssh.status_code == 201
        body = ssh.json()["keypair"]
        assert body["private_key"].startswith("-----BEGIN RSA PRIVATE KEY-----")
        assert body["fingerprint"] == md5_fingerprint(body["public_key"])
        assert body["type"] == "ssh"
        cert = api.post("/os-keypairs", json={"keypair": {"name": _name("x509"), "type": "x509"}})
        assert cert.status_code == 201
        cert_body = cert.json()["keypair"]
        assert cert_body["public_key"].startswith("-----BEGIN CERTIFICATE-----")
        assert len(cert_body["fingerprint"].split(":")) == 20
        shown = api.get(f"/os-keypairs/{body['name']}").json()["keypair"]
        assert shown["deleted"] is False and isinstance(shown["id"], int)
        assert "private_key" not in shown
        for key in (body, cert_body):
            assert api.delete(f"/os-keypairs/{key['name']}").status_code == 204


def test_bad_key_material_names_and_duplicates(cloud: CloudRunner, admin_token):
    name = _name("bad")
    with compute(cloud, admin_token) as api:
        garbage = api.post(
            "/os-keypairs", json={"keypair": {"name": name, "public_key": "ssh-rsa not-a-key"}}
        )
        assert garbage.status_code == 400
        assert garbage.json() == {
            "badRequest": {
                "code": 400,
                "message": "Keypair data is invalid: failed to generate fingerprint",
            }
        }
        unsafe = api.post("/os-keypairs", json={"keypair": {"name": "a/b"}})
        assert unsafe.status_code == 400 and "unsafe" in unsafe.json()["badRequest"]["message"]
        assert api.get(f"/os-keypairs/{name}").status_code == 404
        made = api.post("/os-keypairs", json={"keypair": {"name": name}})
        assert made.status_code == 200  # 201 only from 2.2
        dup = api.post("/os-keypairs", json={"keypair": {"name": name}})
        assert dup.status_code == 409
        assert dup.json()["conflictingRequest"]["message"] == f"Key pair '{name}' already exists."
        assert api.delete(f"/os-keypairs/{name}").status_code == 202


def test_key_pair_quota_and_admin_user_id(cloud: CloudRunner, admin_token):
    demo_user = cloud.openstack("user", "show", "demo", "-f", "json")["id"]
    demo_project = cloud.openstack("project", "show", "demo", "-f", "json")["id"]
    demo_token = cloud.token("demo", project="demo")
    with compute(cloud, admin_token, "2.35") as admin, compute(cloud, demo_token, "2.35") as demo:
        made = [_name("q") for _ in range(2)]
        for name in made:
            body = {"keypair": {"name": name, "user_id": demo_user}}
            assert admin.post("/os-keypairs", json=body).status_code == 201
        mine = demo.get("/os-keypairs").json()["keypairs"]
        assert set(made) <= {k["keypair"]["name"] for k in mine}
        page = admin.get("/os-keypairs", params={"user_id": demo_user, "limit": 1}).json()
        assert len(page["keypairs"]) == 1 and page["keypairs_links"][0]["rel"] == "next"
        assert demo.get("/os-keypairs", params={"user_id": "someone-else"}).status_code == 403
        used = len(mine)
        admin.put(f"/os-quota-sets/{demo_project}", json={"quota_set": {"key_pairs": used}})
        try:
            over = demo.post("/os-keypairs", json={"keypair": {"name": _name("over")}})
            assert over.status_code == 403
            assert over.json()["forbidden"]["message"] == "Quota exceeded, too many key pairs."
        finally:
            admin.delete(f"/os-quota-sets/{demo_project}")
        for name in made:
            deleted = admin.delete(f"/os-keypairs/{name}", params={"user_id": demo_user})
            assert deleted.status_code == 204
