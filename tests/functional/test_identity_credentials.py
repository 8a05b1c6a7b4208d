"""Credentials and EC2 keys as users handle them: the openstack CLI, then signed requests.

The signatures sent to /v3/ec2tokens and /v3/s3tokens are made by botocore's own
signers (what boto3 and awscli use), never by cumulo's code.
"""

from __future__ import annotations

import base64
import hashlib
import json
import urllib.parse
import uuid
from typing import Any

import pytest
from botocore.auth import HmacV1Auth, S3SigV4Auth, SigV2Auth, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from sqlalchemy import select

from cumulo.identity.models import Credential
from tests.cloudrunner import CloudRunner

EC2_HOST = "ec2.cumulo.test:8788"


@pytest.fixture(scope="module")
def ids(cloud: CloudRunner) -> dict[str, str]:
    """Ids of the bootstrap users and projects."""
    admin = cloud.openstack("token", "issue", "-f", "json")
    demo = cloud.openstack("token", "issue", "-f", "json", cloud="cumulo-demo")
    return {
        "admin_user": admin["user_id"],
        "admin_project": admin["project_id"],
        "demo_user": demo["user_id"],
        "demo_project": demo["project_id"],
    }


@pytest.fixture(scope="module")
def admin_http(cloud: CloudRunner, admin_token: str):
    with cloud.http(admin_token) as client:
        yield client


@pytest.fixture(scope="module")
def demo_http(cloud: CloudRunner):
    with cloud.http(cloud.token("demo", project="demo")) as client:
        yield client


@pytest.fixture(scope="module")
def anon(cloud: CloudRunner):
    with cloud.http() as client:
        yield client


@pytest.fixture(scope="module")
def demo_keys(cloud: CloudRunner) -> Credentials:
    """An EC2 key pair the demo user made for the demo project."""
    made = cloud.openstack("ec2", "credentials", "create", "-f", "json", cloud="cumulo-demo")
    return Credentials(made["access"], made["secret"])


# -- what signed requests look like once the EC2 front end has taken them apart ------


def sigv2_request(keys: Credentials, signed_at: str | None = None) -> dict[str, Any]:
    request = AWSRequest(
        method="GET",
        url=f"http://{EC2_HOST}/",
        params={"Action": "DescribeInstances", "Version": "2016-11-15"},
    )
    signer = SigV2Auth(keys)
    signer.add_auth(request)
    signed = {k: str(v) for k, v in request.params.items()}
    if signed_at is not None:
        # A request signed at another time (add_auth always stamps "now").
        signed["Timestamp"] = signed_at
        signed["Signature"] = signer.calc_signature(request, signed)[1]
    return {
        "access": keys.access_key,
        "signature": signed.pop("Signature"),
        "host": EC2_HOST,
        "verb": "GET",
        "path": "/",
        "params": signed,
    }


def sigv4_request(keys: Credentials) -> dict[str, Any]:
    body = "Action=DescribeRegions&Version=2016-11-15"
    request = AWSRequest(
        method="POST",
        url=f"http://{EC2_HOST}/",
        data=body,
        headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"},
    )
    SigV4Auth(keys, "ec2", "RegionOne").add_auth(request)
    headers = {**dict(request.headers.items()), "Host": EC2_HOST}
    return {
        "access": keys.access_key,
        "signature": headers["Authorization"].rsplit("Signature=", 1)[1],
        "host": EC2_HOST,
        "verb": "POST",
        "path": "/",
        "params": {},
        "headers": headers,
        "body_hash": hashlib.sha256(body.encode()).hexdigest(),
    }


def s3_string_to_sign(keys: Credentials, version: int) -> tuple[str, str]:
    """(base64 string to sign, signature) of a PUT an S3 client signs."""
    request = AWSRequest(method="PUT", url="http://s3.cumulo.test/bucket/key", data=b"hi")
    if version == 2:
        request.headers["Date"] = "Tue, 27 Mar 2007 19:36:42 +0000"
        signer = HmacV1Auth(keys)
        split = urllib.parse.urlsplit(request.url)
        string = signer.canonical_string("PUT", split, request.headers)
        signature = signer.get_signature("PUT", split, request.headers)
    else:
        signer = S3SigV4Auth(keys, "s3", "RegionOne")
        seen: list[str] = []
        original = signer.string_to_sign
        signer.string_to_sign = lambda *a: seen.append(original(*a)) or seen[-1]  # type: ignore[method-assign]
        signer.add_auth(request)
        string = seen[0]
        signature = request.headers["Authorization"].rsplit("Signature=", 1)[1]
    return base64.urlsafe_b64encode(string.encode()).decode(), signature


def assert_keystone_401(response) -> None:
    assert response.status_code == 401, response.text
    error = response.json()["error"]
    assert error["code"] == 401 and error["title"] == "Unauthorized" and error["message"]


# -- EC2 credentials with the CLI ------------------------------------------------------


def test_admin_creates_shows_lists_and_deletes_ec2_credentials(cloud: CloudRunner, ids):
    made = cloud.openstack("ec2", "credentials", "create", "-f", "json")
    assert made["project_id"] == ids["admin_project"]
    assert made["user_id"] == ids["admin_user"]
    assert len(made["access"]) == 32 and len(made["secret"]) == 32
    assert made["trust_id"] is None

    shown = cloud.openstack("ec2", "credentials", "show", made["access"], "-f", "json")
    assert shown["secret"] == made["secret"] and shown["project_id"] == ids["admin_project"]
    listed = cloud.openstack("ec2", "credentials", "list", "-f", "json")
    assert {"Access": made["access"], "Secret": made["secret"]}.items() <= next(
        c for c in listed if c["Access"] == made["access"]
    ).items()

    cloud.openstack("ec2", "credentials", "delete", made["access"])
    gone = cloud.openstack("ec2", "credentials", "show", made["access"], check=False)
    assert gone.returncode != 0 and "404" in gone.stderr


def test_admin_makes_ec2_credentials_for_another_project(cloud: CloudRunner, ids):
    made = cloud.openstack("ec2", "credentials", "create", "--project", "demo", "-f", "json")
    assert made["project_id"] == ids["demo_project"]
    cloud.openstack("ec2", "credentials", "delete", made["access"])


def test_demo_user_manages_own_ec2_credentials(cloud: CloudRunner, ids):
    made = cloud.openstack("ec2", "credentials", "create", "-f", "json", cloud="cumulo-demo")
    assert made["user_id"] == ids["demo_user"] and made["project_id"] == ids["demo_project"]
    listed = cloud.openstack("ec2", "credentials", "list", "-f", "json", cloud="cumulo-demo")
    assert made["access"] in {c["Access"] for c in listed}
    assert {c["User ID"] for c in listed} == {ids["demo_user"]}
    cloud.openstack("ec2", "credentials", "delete", made["access"], cloud="cumulo-demo")


def test_demo_user_cannot_see_or_touch_admin_credentials(
    cloud: CloudRunner, ids, admin_http, demo_http
):
    admin_made = cloud.openstack("ec2", "credentials", "create", "-f", "json")
    admin_user, access = ids["admin_user"], admin_made["access"]
    cred_id = hashlib.sha256(access.encode()).hexdigest()
    try:
        # OS-EC2 under the admin's path: the policy refuses.
        r = demo_http.get(f"/v3/users/{admin_user}/credentials/OS-EC2")
        assert r.status_code == 403 and r.json()["error"]["code"] == 403
        admin_key = f"/v3/users/{admin_user}/credentials/OS-EC2/{access}"
        assert demo_http.get(admin_key).status_code == 403
        # Naming the admin's key under the demo user's own path does not fool the policy.
        r = demo_http.get(f"/v3/users/{ids['demo_user']}/credentials/OS-EC2/{access}")
        assert r.status_code == 403
        assert demo_http.delete(admin_key).status_code == 403
        # /v3/credentials: 403 on the admin's, and the list leaves it out.
        assert demo_http.get(f"/v3/credentials/{cred_id}").status_code == 403
        assert demo_http.delete(f"/v3/credentials/{cred_id}").status_code == 403
        r = demo_http.patch(f"/v3/credentials/{cred_id}", json={"credential": {"type": "x"}})
        assert r.status_code == 403
        visible = demo_http.get("/v3/credentials").json()["credentials"]
        assert cred_id not in {c["id"] for c in visible}
        assert {c["user_id"] for c in visible} <= {ids["demo_user"]}
        # Nor can the demo user create credentials in the admin's name.
        r = demo_http.post(f"/v3/users/{admin_user}/credentials/OS-EC2", json={"tenant_id": "x"})
        assert r.status_code == 403
        cli = cloud.openstack(
            "ec2", "credentials", "list", "--user", admin_user, cloud="cumulo-demo", check=False
        )
        assert cli.returncode != 0
        # The admin still sees it.
        assert admin_http.get(f"/v3/credentials/{cred_id}").status_code == 200
    finally:
        cloud.openstack("ec2", "credentials", "delete", access)


def test_ec2_credential_for_a_missing_project_or_user_is_404(admin_http, ids):
    r = admin_http.post(
        f"/v3/users/{ids['admin_user']}/credentials/OS-EC2", json={"tenant_id": "nope"}
    )
    assert r.status_code == 404 and "nope" in r.json()["error"]["message"]
    r = admin_http.post("/v3/users/nobody/credentials/OS-EC2", json={"tenant_id": "x"})
    assert r.status_code == 404
    r = admin_http.post(f"/v3/users/{ids['admin_user']}/credentials/OS-EC2", json={})
    assert r.status_code == 400


# -- /v3/credentials with the CLI ------------------------------------------------------


def test_credential_create_ec2_show_set_list_delete(cloud: CloudRunner, ids):
    access, secret = uuid.uuid4().hex, uuid.uuid4().hex
    blob = json.dumps({"access": access, "secret": secret})
    made = cloud.openstack(
        "credential", "create", "--type", "ec2", "--project", "demo", "demo", blob, "-f", "json"
    )
    # Keystone names an ec2 credential by the hash of its access key.
    assert made["id"] == hashlib.sha256(access.encode()).hexdigest()
    assert made["type"] == "ec2" and made["project_id"] == ids["demo_project"]
    assert made["user_id"] == ids["demo_user"]
    assert json.loads(made["blob"]) == {"access": access, "secret": secret}

    shown = cloud.openstack("credential", "show", made["id"], "-f", "json")
    assert json.loads(shown["blob"])["secret"] == secret
    # The demo user sees it both ways: as a credential and as an EC2 key.
    ec2 = cloud.openstack("ec2", "credentials", "show", access, "-f", "json", cloud="cumulo-demo")
    assert ec2["secret"] == secret

    listed = cloud.openstack("credential", "list", "--type", "ec2", "--user", "demo", "-f", "json")
    assert made["id"] in {c["ID"] for c in listed}
    assert {c["User ID"] for c in listed} == {ids["demo_user"]}

    new_secret = uuid.uuid4().hex
    cloud.openstack(
        "credential", "set", "--user", "demo", "--type", "ec2", "--project", "demo",
        "--data", json.dumps({"access": access, "secret": new_secret}), made["id"],
    )  # fmt: skip
    shown = cloud.openstack("credential", "show", made["id"], "-f", "json")
    assert json.loads(shown["blob"])["secret"] == new_secret

    cloud.openstack("credential", "delete", made["id"])
    assert cloud.openstack("credential", "show", made["id"], check=False).returncode != 0


def test_other_credential_types_get_random_ids(cloud: CloudRunner, ids, admin_http):
    made = cloud.openstack(
        "credential", "create", "--type", "totp", "admin", "MZXW6YTBOI", "-f", "json"
    )
    assert len(made["id"]) == 32 and made["id"] != hashlib.sha256(b"MZXW6YTBOI").hexdigest()
    assert made["blob"] == "MZXW6YTBOI" and made["project_id"] is None
    r = admin_http.get("/v3/credentials", params={"type": "totp"})
    assert made["id"] in {c["id"] for c in r.json()["credentials"]}
    assert r.json()["links"]["self"]
    cloud.openstack("credential", "delete", made["id"])


def test_blob_is_encrypted_at_rest(cloud: CloudRunner, admin_http, ids):
    secret = "s3cr3t-" + uuid.uuid4().hex
    r = admin_http.post(
        "/v3/credentials",
        json={
            "credential": {
                "type": "ec2",
                "user_id": ids["admin_user"],
                "project_id": ids["admin_project"],
                "blob": json.dumps({"access": uuid.uuid4().hex, "secret": secret}),
            }
        },
    )
    assert r.status_code == 201
    cred_id = r.json()["credential"]["id"]

    async def stored() -> str:
        assert cloud.cloud is not None and cloud.cloud.identity is not None
        async with cloud.cloud.identity.read() as session:
            return await session.scalar(
                select(Credential.encrypted_blob).where(Credential.id == cred_id)
            )

    encrypted = cloud.run_async(stored())
    assert secret not in encrypted and "access" not in encrypted
    assert admin_http.delete(f"/v3/credentials/{cred_id}").status_code == 204


def test_credential_bad_input(admin_http, ids):
    def create(**fields: Any):
        return admin_http.post("/v3/credentials", json={"credential": fields})

    user = ids["admin_user"]
    good_blob = json.dumps({"access": uuid.uuid4().hex, "secret": "x"})
    # ec2 needs a project, a JSON blob, and an access key in it.
    assert create(type="ec2", user_id=user, blob=good_blob).status_code == 400
    r = create(type="ec2", user_id=user, project_id=ids["admin_project"], blob="{not json")
    assert r.status_code == 400
    r = create(type="ec2", user_id=user, project_id=ids["admin_project"], blob='{"secret": "x"}')
    assert r.status_code == 400 and "access" in r.json()["error"]["message"]
    assert create(type="ec2", user_id=user, blob=good_blob, project_id=7).status_code == 400
    assert create(type="totp", user_id=user).status_code == 400
    assert create(type="totp", blob="x").status_code == 400
    assert create(type="totp", user_id="nobody", blob="x").status_code == 404
    # The same access key twice is a conflict.
    body = {"type": "ec2", "user_id": user, "project_id": ids["admin_project"], "blob": good_blob}
    first = create(**body)
    assert first.status_code == 201
    assert create(**body).status_code == 409
    # An ec2 credential may get a new access key (as Keystone and Tempest's test), not a
    # delegation it did not carry.
    cred_id = first.json()["credential"]["id"]
    other = json.dumps({"access": uuid.uuid4().hex, "secret": "y"})
    r = admin_http.patch(f"/v3/credentials/{cred_id}", json={"credential": {"blob": other}})
    assert r.status_code == 200 and r.json()["credential"]["blob"] == other
    delegated = json.dumps({"access": uuid.uuid4().hex, "secret": "y", "app_cred_id": "x"})
    r = admin_http.patch(f"/v3/credentials/{cred_id}", json={"credential": {"blob": delegated}})
    assert r.status_code == 400
    r = admin_http.patch(f"/v3/credentials/{cred_id}", json={"credential": {"id": "other"}})
    assert r.status_code == 400
    assert admin_http.get("/v3/credentials/nope").status_code == 404
    assert admin_http.delete(f"/v3/credentials/{cred_id}").status_code == 204
    assert admin_http.delete(f"/v3/credentials/{cred_id}").status_code == 404


# -- /v3/ec2tokens and /v3/s3tokens ----------------------------------------------------


def assert_demo_token(cloud: CloudRunner, response, ids) -> None:
    assert response.status_code == 200, response.text
    token = response.json()["token"]
    assert token["project"]["id"] == ids["demo_project"]
    assert token["user"]["id"] == ids["demo_user"]
    assert token["methods"] == ["ec2credential"]
    assert {r["name"] for r in token["roles"]} >= {"member"}
    assert token["catalog"]
    # The token works like any other.
    with cloud.http(response.headers["X-Subject-Token"]) as client:
        assert client.get("/v3/auth/projects").status_code == 200


def test_ec2tokens_with_a_signature_v2(cloud: CloudRunner, anon, demo_keys, ids):
    r = anon.post("/v3/ec2tokens", json={"credentials": sigv2_request(demo_keys)})
    assert_demo_token(cloud, r, ids)


def test_ec2tokens_with_a_signature_v4(cloud: CloudRunner, anon, demo_keys, ids):
    r = anon.post("/v3/ec2tokens", json={"credentials": sigv4_request(demo_keys)})
    assert_demo_token(cloud, r, ids)
    # Older front ends name the body ec2Credentials.
    r = anon.post("/v3/ec2tokens", json={"ec2Credentials": sigv4_request(demo_keys)})
    assert_demo_token(cloud, r, ids)


def test_ec2tokens_refuses_wrong_signatures_and_unknown_keys(anon, demo_keys):
    wrong = Credentials(demo_keys.access_key, "not-the-secret")
    assert_keystone_401(anon.post("/v3/ec2tokens", json={"credentials": sigv2_request(wrong)}))
    assert_keystone_401(anon.post("/v3/ec2tokens", json={"credentials": sigv4_request(wrong)}))
    # A signed request changed after signing.
    tampered = sigv2_request(demo_keys)
    tampered["params"]["Action"] = "TerminateInstances"
    assert_keystone_401(anon.post("/v3/ec2tokens", json={"credentials": tampered}))
    stranger = Credentials(uuid.uuid4().hex, uuid.uuid4().hex)
    assert_keystone_401(anon.post("/v3/ec2tokens", json={"credentials": sigv2_request(stranger)}))
    # An old request replayed after the signature's lifetime.
    old = sigv2_request(demo_keys, signed_at="2015-08-30T12:36:00Z")
    r = anon.post("/v3/ec2tokens", json={"credentials": old})
    assert_keystone_401(r)
    assert "expired" in r.json()["error"]["message"]
    no_signature = {**sigv2_request(demo_keys), "signature": ""}
    assert_keystone_401(anon.post("/v3/ec2tokens", json={"credentials": no_signature}))
    assert anon.post("/v3/ec2tokens", json={}).status_code == 400
    assert anon.get("/v3/ec2tokens").status_code == 405


@pytest.mark.parametrize("version", [2, 4])
def test_s3tokens(cloud: CloudRunner, anon, demo_keys, ids, version: int):
    token, signature = s3_string_to_sign(demo_keys, version)
    body = {"credentials": {"access": demo_keys.access_key, "token": token, "signature": signature}}
    assert_demo_token(cloud, anon.post("/v3/s3tokens", json=body), ids)
    body["credentials"]["signature"] = signature[:-4] + "AAAA"
    assert_keystone_401(anon.post("/v3/s3tokens", json=body))


def test_deleted_key_no_longer_signs(cloud: CloudRunner, anon, ids):
    made = cloud.openstack("ec2", "credentials", "create", "-f", "json", cloud="cumulo-demo")
    keys = Credentials(made["access"], made["secret"])
    assert anon.post("/v3/ec2tokens", json={"credentials": sigv2_request(keys)}).status_code == 200
    cloud.openstack("ec2", "credentials", "delete", made["access"], cloud="cumulo-demo")
    assert_keystone_401(anon.post("/v3/ec2tokens", json={"credentials": sigv2_request(keys)}))


def test_token_from_an_ec2_signature_cannot_mint_more_keys(
    cloud: CloudRunner, anon, demo_keys, ids
):
    r = anon.post("/v3/ec2tokens", json={"credentials": sigv2_request(demo_keys)})
    with cloud.http(r.headers["X-Subject-Token"]) as client:
        r = client.post(
            f"/v3/users/{ids['demo_user']}/credentials/OS-EC2",
            json={"tenant_id": ids["demo_project"]},
        )
    assert r.status_code == 403
