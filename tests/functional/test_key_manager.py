"""The Key Manager (Barbican v1) as its users drive it: openstacksdk, the `openstack`
CLI with python-barbicanclient, and plain HTTP for the wire details (statuses, error
bodies, headers) and the cross-project rules."""

from __future__ import annotations

import base64
import os
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from tests.cloudrunner import CloudRunner


def _name(prefix: str = "secret") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _id(ref: str) -> str:
    return ref.rstrip("/").rsplit("/", 1)[1]


@pytest.fixture(scope="module")
def kms(cloud: CloudRunner, admin_token: str) -> Iterator[httpx.Client]:
    with cloud.api("key_manager", admin_token) as client:
        yield client


@pytest.fixture(scope="module")
def demo_kms(cloud: CloudRunner) -> Iterator[httpx.Client]:
    with cloud.api("key_manager", cloud.token("demo", project="demo")) as client:
        yield client


def _identity(cloud: CloudRunner, admin_token: str) -> httpx.Client:
    return cloud.api("identity", admin_token, "/v3")


def _user_with_role(cloud: CloudRunner, admin_token: str, role: str, project: str) -> str:
    """A new user with `role` on `project`: its token."""
    name, password = _name("user"), uuid.uuid4().hex
    with _identity(cloud, admin_token) as ks:
        user = ks.post(
            "/users", json={"user": {"name": name, "password": password, "domain_id": "default"}}
        ).json()["user"]
        project_id = ks.get("/projects", params={"name": project}).json()["projects"][0]["id"]
        role_id = ks.get("/roles", params={"name": role}).json()["roles"][0]["id"]
        answer = ks.put(f"/projects/{project_id}/users/{user['id']}/roles/{role_id}")
        assert answer.status_code == 204, answer.text
    return cloud.token(name, password, project)


def _user_id(cloud: CloudRunner, token: str) -> str:
    answer = httpx.get(
        f"{cloud.auth_url}/auth/tokens", headers={"X-Auth-Token": token, "X-Subject-Token": token}
    )
    return answer.json()["token"]["user"]["id"]


def _store(client: httpx.Client, payload: bytes, **extra) -> str:
    body = {
        "name": _name(),
        "payload": base64.b64encode(payload).decode(),
        "payload_content_type": "application/octet-stream",
        "payload_content_encoding": "base64",
        **extra,
    }
    answer = client.post("/v1/secrets", json=body)
    assert answer.status_code == 201, answer.text
    return answer.json()["secret_ref"]


# -- discovery and catalog ------------------------------------------------------------


def test_version_discovery_answers_300_as_barbican(cloud: CloudRunner):
    base = f"http://127.0.0.1:{cloud.config.ports.key_manager}"
    old = httpx.get(base + "/")
    assert old.status_code == 300
    [v1] = old.json()["versions"]["values"]
    assert v1["id"] == "v1" and v1["status"] == "stable"
    new = httpx.get(base + "/", headers={"OpenStack-API-Version": "key-manager 1.1"})
    assert new.status_code == 300
    assert new.headers["OpenStack-API-Version"] == "key-manager 1.1"
    [v1] = new.json()["versions"]
    assert (v1["status"], v1["min_version"], v1["max_version"]) == ("CURRENT", "1.0", "1.1")
    assert v1["links"][0] == {"rel": "self", "href": f"{base}/v1/"}
    assert httpx.get(base + "/v1").json()["version"]["id"] == "v1"
    too_new = httpx.get(base + "/v1", headers={"OpenStack-API-Version": "key-manager 1.9"})
    assert too_new.status_code == 406 and too_new.headers["x-openstack-request-id"]
    assert too_new.json()["title"] == "Not Acceptable"


def test_catalog_lists_the_key_manager(cloud: CloudRunner):
    entry = cloud.openstack("catalog", "show", "key-manager", "-f", "json")
    assert entry["name"] == "barbican"
    assert str(cloud.config.ports.key_manager) in str(entry["endpoints"])


# -- openstacksdk ---------------------------------------------------------------------


def test_sdk_secret_lifecycle_returns_the_bytes_stored(cloud: CloudRunner):
    conn = cloud.sdk()
    raw = os.urandom(32)
    name = _name("sdk")
    secret = conn.key_manager.create_secret(
        name=name,
        payload=base64.b64encode(raw).decode(),
        payload_content_type="application/octet-stream",
        payload_content_encoding="base64",
        secret_type="symmetric",
        algorithm="aes",
        bit_length=256,
        mode="xts",
    )
    assert secret.secret_ref.startswith(f"http://127.0.0.1:{cloud.config.ports.key_manager}/v1/")
    fetched = conn.key_manager.get_secret(secret.secret_id)
    assert fetched.payload == raw
    assert (fetched.name, fetched.status, fetched.algorithm) == (name, "ACTIVE", "aes")
    assert fetched.content_types == {"default": "application/octet-stream"}
    assert name in [s.name for s in conn.key_manager.secrets(name=name)]
    conn.key_manager.delete_secret(secret.secret_id)
    assert not list(conn.key_manager.secrets(name=name))


def test_sdk_text_secret_and_key_order(cloud: CloudRunner):
    conn = cloud.sdk()
    text = conn.key_manager.create_secret(
        name=_name(), payload="correct horse battery staple", payload_content_type="text/plain"
    )
    assert conn.key_manager.get_secret(text.secret_id).payload == "correct horse battery staple"
    order = conn.key_manager.create_order(
        type="key",
        meta={"name": _name("order"), "algorithm": "aes", "bit_length": 256, "mode": "cbc"},
    )
    shown = conn.key_manager.get_order(order.order_id)
    assert shown.status == "ACTIVE" and shown.secret_ref
    key = conn.key_manager.get_secret(_id(shown.secret_ref))
    assert len(key.payload) == 32 and key.secret_type == "symmetric"
    assert order.order_id in [o.order_id for o in conn.key_manager.orders()]
    conn.key_manager.delete_order(order.order_id)
    conn.key_manager.delete_secret(_id(shown.secret_ref))
    conn.key_manager.delete_secret(text.secret_id)


def test_sdk_containers(cloud: CloudRunner, kms: httpx.Client):
    conn = cloud.sdk()
    first, second = _store(kms, b"one"), _store(kms, b"two")
    container = conn.key_manager.create_container(
        name=_name("box"),
        type="generic",
        secret_refs=[{"name": "a", "secret_ref": first}, {"name": "b", "secret_ref": second}],
    )
    shown = conn.key_manager.get_container(container.container_id)
    assert sorted(r["name"] for r in shown.secret_refs) == ["a", "b"]
    assert container.container_id in [c.container_id for c in conn.key_manager.containers()]
    conn.key_manager.delete_container(container.container_id)
    # The container's secrets stay.
    assert kms.get(f"/v1/secrets/{_id(first)}").status_code == 200


# -- the openstack CLI (python-barbicanclient) ------------------------------------------


def test_cli_secret_store_get_list_delete(cloud: CloudRunner):
    name = _name("cli")
    stored = cloud.openstack(
        "secret", "store", "--name", name, "--payload", "s3cr3t payload", "-f", "json"
    )
    ref = stored["Secret href"]
    payload = cloud.openstack("secret", "get", ref, "--payload", "-f", "json")
    assert payload["Payload"] == "s3cr3t payload"
    listed = cloud.openstack("secret", "list", "--name", name, "-f", "json")
    assert [s["Secret href"] for s in listed] == [ref]
    cloud.openstack("secret", "delete", ref)
    assert cloud.openstack("secret", "list", "--name", name, "-f", "json") == []


def test_cli_order_create_key(cloud: CloudRunner):
    name = _name("cli-order")
    order = cloud.openstack(
        "secret", "order", "create", "key", "--name", name, "--algorithm", "aes",
        "--bit-length", "256", "--mode", "ctr", "-f", "json",
    )  # fmt: skip
    shown = cloud.openstack("secret", "order", "get", order["Order href"], "-f", "json")
    assert shown["Status"] == "ACTIVE"
    secret = cloud.openstack("secret", "get", shown["Secret href"], "-f", "json")
    assert (secret["Name"], secret["Algorithm"], secret["Bit length"]) == (name, "aes", 256)


# -- wire details ---------------------------------------------------------------------


def test_metadata_only_secret_then_put_payload(kms: httpx.Client):
    answer = kms.post("/v1/secrets", json={"name": _name(), "secret_type": "passphrase"})
    assert answer.status_code == 201
    ref = answer.json()["secret_ref"]
    assert answer.headers["Location"] == ref
    sid = _id(ref)
    shown = kms.get(f"/v1/secrets/{sid}").json()
    assert "content_types" not in shown and shown["status"] == "ACTIVE"
    assert kms.get(f"/v1/secrets/{sid}/payload").status_code == 404
    raw = bytes(range(256))
    put = kms.put(
        f"/v1/secrets/{sid}", content=raw, headers={"Content-Type": "application/octet-stream"}
    )
    assert put.status_code == 204, put.text
    again = kms.put(
        f"/v1/secrets/{sid}", content=raw, headers={"Content-Type": "application/octet-stream"}
    )
    assert again.status_code == 409
    got = kms.get(f"/v1/secrets/{sid}/payload", headers={"Accept": "application/octet-stream"})
    assert got.content == raw and got.headers["content-type"] == "application/octet-stream"
    # The deprecated way: the secret's own URL with another Accept than JSON.
    old_way = kms.get(f"/v1/secrets/{sid}", headers={"Accept": "application/octet-stream"})
    assert old_way.content == raw
    assert kms.get(f"/v1/secrets/{sid}").json()["content_types"] == {
        "default": "application/octet-stream"
    }


def test_secret_metadata_shape_and_consumers_from_1_1(kms: httpx.Client):
    sid = _id(_store(kms, b"k"))
    old = kms.get(f"/v1/secrets/{sid}").json()
    assert set(old) == {
        "created", "updated", "status", "secret_ref", "name", "secret_type", "expiration",
        "algorithm", "bit_length", "mode", "creator_id", "content_types",
    }  # fmt: skip
    v11 = {"OpenStack-API-Version": "key-manager 1.1"}
    assert kms.get(f"/v1/secrets/{sid}", headers=v11).json()["consumers"] == []
    consumer = {"service": "volume", "resource_type": "volume", "resource_id": "v-1"}
    added = kms.post(f"/v1/secrets/{sid}/consumers", json=consumer, headers=v11)
    assert added.status_code == 200 and added.json()["consumers"] == [consumer]
    listed = kms.get(f"/v1/secrets/{sid}/consumers", headers=v11).json()
    assert listed["total"] == 1 and listed["consumers"][0]["resource_id"] == "v-1"
    removed = kms.request("DELETE", f"/v1/secrets/{sid}/consumers", json=consumer, headers=v11)
    assert removed.status_code == 200 and removed.json()["consumers"] == []


def test_bad_input_answers_barbican_statuses_and_bodies(kms: httpx.Client, cloud: CloudRunner):
    cases = [
        ({"payload": "x", "payload_content_type": "application/json"}, 400),
        (
            {"payload": "%%%", "payload_content_type": "application/octet-stream",
             "payload_content_encoding": "base64"},
            400,
        ),
        ({"payload": "x"}, 400),
        ({"bit_length": -8}, 400),
        ({"secret_type": "unknown"}, 400),
        ({"expiration": "2001-01-01T00:00:00Z"}, 400),
        ({"payload": "x" * 20001, "payload_content_type": "text/plain"}, 413),
    ]  # fmt: skip
    before = kms.get("/v1/secrets", params={"limit": 1}).json()["total"]
    for body, status in cases:
        answer = kms.post("/v1/secrets", json=body)
        assert answer.status_code == status, (body, answer.text)
        error = answer.json()
        assert set(error) == {"code", "title", "description"} and error["code"] == status
    assert kms.get("/v1/secrets", params={"limit": 1}).json()["total"] == before
    wrong_type = kms.post("/v1/secrets", content=b"{}", headers={"Content-Type": "text/plain"})
    assert wrong_type.status_code == 415
    assert (
        kms.post(
            "/v1/secrets", content=b"{nope", headers={"Content-Type": "application/json"}
        ).status_code
        == 400
    )
    assert kms.get(f"/v1/secrets/{uuid.uuid4()}").json() == {
        "code": 404, "title": "Not Found", "description": "Secret not found.",
    }  # fmt: skip
    assert kms.get("/v1/secrets/not-a-uuid").status_code == 404
    sid = _id(_store(kms, b"\xff\xfe"))
    assert (
        kms.get(f"/v1/secrets/{sid}/payload", headers={"Accept": "text/plain"}).status_code == 406
    )
    no_token = httpx.get(f"http://127.0.0.1:{cloud.config.ports.key_manager}/v1/secrets")
    assert no_token.status_code == 401


def test_expired_secret_is_gone_as_in_barbican(kms: httpx.Client, cloud: CloudRunner):
    soon = (datetime.now(UTC) + timedelta(seconds=2)).isoformat()
    sid = _id(_store(kms, b"short lived", expiration=soon))
    assert kms.get(f"/v1/secrets/{sid}/payload").content == b"short lived"
    time.sleep(2.5)
    assert kms.get(f"/v1/secrets/{sid}/payload").status_code == 404
    assert kms.get(f"/v1/secrets/{sid}").status_code == 404


def test_list_pages_filters_and_sorts(kms: httpx.Client):
    tag = uuid.uuid4().hex[:8]
    for i in range(5):
        answer = kms.post(
            "/v1/secrets",
            json={
                "name": f"page-{tag}",
                "algorithm": "aes" if i % 2 else "rsa",
                "bit_length": 8 * (i + 1),
            },
        )
        assert answer.status_code == 201
    first = kms.get("/v1/secrets", params={"name": f"page-{tag}", "limit": 2}).json()
    assert first["total"] == 5 and len(first["secrets"]) == 2 and "previous" not in first
    assert "offset=2" in first["next"] and f"name=page-{tag}" in first["next"]
    last = kms.get("/v1/secrets", params={"name": f"page-{tag}", "limit": 2, "offset": 4}).json()
    assert len(last["secrets"]) == 1 and "next" not in last and "offset=2" in last["previous"]
    aes = kms.get("/v1/secrets", params={"name": f"page-{tag}", "alg": "aes"}).json()
    assert aes["total"] == 2
    bits = kms.get("/v1/secrets", params={"name": f"page-{tag}", "bits": 24}).json()
    assert [s["bit_length"] for s in bits["secrets"]] == [24]
    desc = kms.get("/v1/secrets", params={"name": f"page-{tag}", "sort": "bit_length:desc"}).json()
    assert [s["bit_length"] for s in desc["secrets"]] == [40, 32, 24, 16, 8]
    created = kms.get(
        "/v1/secrets", params={"name": f"page-{tag}", "created": "gt:2000-01-01T00:00:00"}
    ).json()
    assert created["total"] == 5
    assert kms.get("/v1/secrets", params={"sort": "colour"}).status_code == 400
    assert kms.get("/v1/secrets", params={"created": "gt:yesterday"}).status_code == 400


def test_user_metadata(kms: httpx.Client):
    sid = _id(_store(kms, b"m"))
    put = kms.put(f"/v1/secrets/{sid}/metadata", json={"metadata": {"Volume": "v1", "use": "luks"}})
    assert put.status_code == 201 and put.json()["metadata_ref"].endswith(f"{sid}/metadata")
    assert kms.get(f"/v1/secrets/{sid}/metadata").json() == {
        "metadata": {"volume": "v1", "use": "luks"}
    }
    added = kms.post(f"/v1/secrets/{sid}/metadata", json={"key": "cipher", "value": "aes-xts"})
    assert added.status_code == 201 and added.json() == {"key": "cipher", "value": "aes-xts"}
    assert (
        kms.post(f"/v1/secrets/{sid}/metadata", json={"key": "cipher", "value": "x"}).status_code
        == 409
    )
    assert kms.get(f"/v1/secrets/{sid}/metadata/cipher").json() == {
        "key": "cipher",
        "value": "aes-xts",
    }
    updated = kms.put(f"/v1/secrets/{sid}/metadata/use", json={"key": "use", "value": "plain"})
    assert updated.status_code == 200 and updated.json()["value"] == "plain"
    assert (
        kms.put(f"/v1/secrets/{sid}/metadata/use", json={"key": "other", "value": "x"}).status_code
        == 409
    )
    assert kms.delete(f"/v1/secrets/{sid}/metadata/use").status_code == 204
    assert kms.get(f"/v1/secrets/{sid}/metadata/use").status_code == 404
    assert (
        kms.put(f"/v1/secrets/{sid}/metadata", json={"metadata": {"a b": "x"}}).status_code == 400
    )


def test_asymmetric_order_makes_an_rsa_container(kms: httpx.Client):
    answer = kms.post(
        "/v1/orders",
        json={
            "type": "asymmetric",
            "meta": {"name": _name("rsa"), "algorithm": "rsa", "bit_length": 2048},
        },
    )
    assert answer.status_code == 202
    order = kms.get(f"/v1/orders/{_id(answer.json()['order_ref'])}").json()
    assert order["status"] == "ACTIVE" and order["type"] == "asymmetric"
    container = kms.get(f"/v1/containers/{_id(order['container_ref'])}").json()
    assert container["type"] == "rsa"
    refs = {r["name"]: r["secret_ref"] for r in container["secret_refs"]}
    assert set(refs) == {"private_key", "public_key"}
    private = kms.get(f"/v1/secrets/{_id(refs['private_key'])}/payload").content
    public = kms.get(f"/v1/secrets/{_id(refs['public_key'])}/payload").content
    assert private.startswith(b"-----BEGIN PRIVATE KEY-----")
    assert public.startswith(b"-----BEGIN PUBLIC KEY-----")
    assert kms.get(f"/v1/secrets/{_id(refs['private_key'])}").json()["secret_type"] == "private"


def test_orders_refuse_bad_input_and_record_unsupported_keys(kms: httpx.Client):
    for body in (
        {"type": "key", "meta": {"algorithm": "aes", "bit_length": 100}},
        {"type": "key", "meta": {"algorithm": "aes"}},
        {"type": "certificate", "meta": {}},
        {"type": "key", "meta": {"algorithm": "aes", "bit_length": 256, "payload": "x"}},
    ):
        assert kms.post("/v1/orders", json=body).status_code == 400, body
    answer = kms.post(
        "/v1/orders", json={"type": "key", "meta": {"algorithm": "aes", "bit_length": 512}}
    )
    assert answer.status_code == 202
    order = kms.get(f"/v1/orders/{_id(answer.json()['order_ref'])}").json()
    assert order["status"] == "ERROR" and order["error_status_code"] == "400"
    assert "secret_ref" not in order


def test_containers_need_the_projects_existing_secrets(kms: httpx.Client, demo_kms: httpx.Client):
    mine = _store(kms, b"mine")
    theirs = _store(demo_kms, b"theirs")
    base = {"type": "generic", "name": _name("box")}
    missing = mine.rsplit("/", 1)[0] + f"/{uuid.uuid4()}"
    for ref in (missing, theirs):
        answer = kms.post(
            "/v1/containers", json={**base, "secret_refs": [{"name": "x", "secret_ref": ref}]}
        )
        assert answer.status_code == 404, answer.text
    elsewhere = {"name": "x", "secret_ref": f"http://elsewhere:9311/v1/secrets/{_id(mine)}"}
    assert kms.post("/v1/containers", json={**base, "secret_refs": [elsewhere]}).status_code == 400
    rsa_missing_public = {
        "type": "rsa",
        "secret_refs": [{"name": "private_key", "secret_ref": mine}],
    }
    assert kms.post("/v1/containers", json=rsa_missing_public).status_code == 400
    created = kms.post(
        "/v1/containers", json={**base, "secret_refs": [{"name": "a", "secret_ref": mine}]}
    )
    assert created.status_code == 201
    cid = _id(created.json()["container_ref"])
    other = _store(kms, b"other")
    assert (
        kms.post(
            f"/v1/containers/{cid}/secrets", json={"name": "b", "secret_ref": other}
        ).status_code
        == 201
    )
    assert (
        kms.post(
            f"/v1/containers/{cid}/secrets", json={"name": "b", "secret_ref": other}
        ).status_code
        == 409
    )
    shown = kms.get(f"/v1/containers/{cid}").json()
    assert sorted(r["name"] for r in shown["secret_refs"]) == ["a", "b"]
    removed = kms.request(
        "DELETE", f"/v1/containers/{cid}/secrets", json={"name": "b", "secret_ref": other}
    )
    assert removed.status_code == 204
    assert [r["name"] for r in kms.get(f"/v1/containers/{cid}").json()["secret_refs"]] == ["a"]
    assert kms.delete(f"/v1/containers/{cid}").status_code == 204
    assert kms.get(f"/v1/containers/{cid}").status_code == 404


# -- who may do what ------------------------------------------------------------------


def test_other_projects_get_403_and_orders_404(kms: httpx.Client, demo_kms: httpx.Client):
    sid = _id(_store(demo_kms, b"demo's key"))
    # The admin role reads and deletes any secret's metadata (Barbican's role:admin), but
    # not another project's payload.
    assert kms.get(f"/v1/secrets/{sid}/payload").status_code == 403
    own = _id(_store(kms, b"admin's key"))
    for method, path in (
        ("GET", f"/v1/secrets/{own}"),
        ("GET", f"/v1/secrets/{own}/payload"),
        ("DELETE", f"/v1/secrets/{own}"),
        ("PUT", f"/v1/secrets/{own}/metadata"),
        ("GET", f"/v1/secrets/{own}/acl"),
    ):
        answer = demo_kms.request(method, path, json={"metadata": {}} if method == "PUT" else None)
        assert answer.status_code == 403, (method, path, answer.text)
        assert "attempt not allowed" in answer.json()["description"]
    assert own not in [
        _id(s["secret_ref"])
        for s in demo_kms.get("/v1/secrets", params={"limit": 100}).json()["secrets"]
    ]
    order = kms.post(
        "/v1/orders", json={"type": "key", "meta": {"algorithm": "aes", "bit_length": 128}}
    )
    assert demo_kms.get(f"/v1/orders/{_id(order.json()['order_ref'])}").status_code == 404


def test_reader_sees_metadata_but_not_payloads(cloud: CloudRunner, admin_token: str, demo_kms):
    reader_token = _user_with_role(cloud, admin_token, "reader", "demo")
    sid = _id(_store(demo_kms, b"for members only"))
    with cloud.api("key_manager", reader_token) as reader:
        assert reader.get(f"/v1/secrets/{sid}").status_code == 200
        assert reader.get("/v1/secrets").status_code == 200
        assert reader.get(f"/v1/secrets/{sid}/payload").status_code == 403
        assert reader.post("/v1/secrets", json={"name": "no"}).status_code == 403
        assert reader.delete(f"/v1/secrets/{sid}").status_code == 403


def test_read_acl_lets_a_named_user_of_another_project_read(
    cloud: CloudRunner, admin_token: str, kms: httpx.Client, demo_kms: httpx.Client
):
    sid = _id(_store(kms, b"shared volume key"))
    demo_token = demo_kms.headers["X-Auth-Token"]
    demo_user = _user_id(cloud, demo_token)
    assert demo_kms.get(f"/v1/secrets/{sid}/payload").status_code == 403
    assert kms.get(f"/v1/secrets/{sid}/acl").json() == {"read": {"project-access": True}}
    put = kms.put(
        f"/v1/secrets/{sid}/acl", json={"read": {"users": [demo_user], "project-access": False}}
    )
    assert put.status_code == 200 and put.json()["acl_ref"].endswith(f"/v1/secrets/{sid}/acl")
    acl = kms.get(f"/v1/secrets/{sid}/acl").json()["read"]
    assert acl["users"] == [demo_user] and acl["project-access"] is False
    assert demo_kms.get(f"/v1/secrets/{sid}/payload").content == b"shared volume key"
    listed = demo_kms.get("/v1/secrets", params={"acl_only": "true", "limit": 100}).json()
    assert sid in [_id(s["secret_ref"]) for s in listed["secrets"]]
    # A private secret: another member of the owning project no longer reads it.
    member = _user_with_role(cloud, admin_token, "member", "admin")
    with cloud.api("key_manager", member) as other_member:
        assert other_member.get(f"/v1/secrets/{sid}/payload").status_code == 403
    patched = kms.patch(f"/v1/secrets/{sid}/acl", json={"read": {"project-access": True}})
    assert patched.status_code == 200
    assert kms.get(f"/v1/secrets/{sid}/acl").json()["read"]["users"] == [demo_user]
    assert kms.delete(f"/v1/secrets/{sid}/acl").status_code == 200
    assert demo_kms.get(f"/v1/secrets/{sid}/payload").status_code == 403
    assert kms.put(f"/v1/secrets/{sid}/acl", json={"write": {"users": []}}).status_code == 400


def test_container_consumers(kms: httpx.Client):
    cid = _id(kms.post("/v1/containers", json={"type": "generic"}).json()["container_ref"])
    consumer = {"name": "lb-1", "URL": "http://lb.example/listeners/1"}
    added = kms.post(f"/v1/containers/{cid}/consumers", json=consumer)
    assert added.status_code == 200 and added.json()["consumers"] == [consumer]
    assert kms.post(f"/v1/containers/{cid}/consumers", json=consumer).json()["consumers"] == [
        consumer
    ]
    listed = kms.get(f"/v1/containers/{cid}/consumers").json()
    assert listed["total"] == 1 and listed["consumers"][0]["URL"] == consumer["URL"]
    assert kms.post(f"/v1/containers/{cid}/consumers", json={"name": "x"}).status_code == 400
    removed = kms.request("DELETE", f"/v1/containers/{cid}/consumers", json=consumer)
    assert removed.status_code == 200 and removed.json()["consumers"] == []
    again = kms.request("DELETE", f"/v1/containers/{cid}/consumers", json=consumer)
    assert again.status_code == 404


def test_container_acl(cloud: CloudRunner, kms: httpx.Client, demo_kms: httpx.Client):
    created = kms.post("/v1/containers", json={"type": "generic", "name": _name("acl-box")})
    cid = _id(created.json()["container_ref"])
    assert demo_kms.get(f"/v1/containers/{cid}").status_code == 403
    demo_user = _user_id(cloud, demo_kms.headers["X-Auth-Token"])
    kms.put(f"/v1/containers/{cid}/acl", json={"read": {"users": [demo_user]}})
    assert demo_kms.get(f"/v1/containers/{cid}").status_code == 200


def test_payload_is_encrypted_at_rest(cloud: CloudRunner, kms: httpx.Client):
    marker = b"plain-marker-" + uuid.uuid4().hex.encode()
    _store(kms, marker)
    files = [cloud.state_dir / f"key_manager.db{suffix}" for suffix in ("", "-wal")]
    if not files[0].exists():
        pytest.skip("the key manager's database is on a database server")
    for path in files:
        if path.exists():
            assert marker not in path.read_bytes()
    key_file = cloud.state_dir / "key-manager" / "master.key"
    assert oct(key_file.stat().st_mode & 0o777) == "0o600"


# -- in-process, as Block Storage and Compute call it -----------------------------------


def test_another_service_stores_and_reads_a_volume_key_in_process(cloud: CloudRunner):
    """What cumulo.volume does for an encrypted volume: POST the key with the user's token
    through ServiceClient on the app, then read the bytes back and delete them."""
    from cumulo.common.service_client import ServiceClient
    from cumulo.key_manager.app import create_key_manager_app

    token = cloud.token("demo", project="demo")
    key = os.urandom(64)

    async def round_trip() -> tuple[str, bytes, int, int]:
        assert cloud.cloud is not None and cloud.cloud.key_manager is not None
        kms = ServiceClient("key-manager", app=create_key_manager_app(cloud.cloud.key_manager))
        try:
            made = await kms.json(
                "POST",
                "/v1/secrets",
                token,
                json={
                    "name": "volume-key",
                    "secret_type": "symmetric",
                    "algorithm": "aes",
                    "bit_length": 512,
                    "mode": "xts",
                    "payload": base64.b64encode(key).decode(),
                    "payload_content_type": "application/octet-stream",
                    "payload_content_encoding": "base64",
                },
            )
            secret_id = _id(made["secret_ref"])
            payload = await kms.request(
                "GET",
                f"/v1/secrets/{secret_id}/payload",
                token,
                headers={"Accept": "application/octet-stream"},
            )
            deleted = await kms.request("DELETE", f"/v1/secrets/{secret_id}", token)
            gone = await kms.request("GET", f"/v1/secrets/{secret_id}", token, ok=(404,))
            return made["secret_ref"], payload.content, deleted.status_code, gone.status_code
        finally:
            await kms.close()

    ref, payload, deleted, gone = cloud.run_async(round_trip())
    assert ref.startswith(f"http://127.0.0.1:{cloud.config.ports.key_manager}/v1/secrets/")
    assert (payload, deleted, gone) == (key, 204, 404)
