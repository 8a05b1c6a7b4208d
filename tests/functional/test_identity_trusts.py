"""OS-TRUST: a user delegates a role on a project to another, who then acts with it."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import yaml

from tests.cloudrunner import CloudRunner, password_auth


def _user(cloud: CloudRunner, password: str, project: str | None = None) -> str:
    user = cloud.openstack(
        "user", "create", f"tr-{uuid.uuid4().hex[:8]}", "--password", password, "-f", "json"
    )
    if project:
        cloud.openstack("role", "add", "--user", user["id"], "--project", project, "member")
    return user["id"]


def _env(cloud: CloudRunner, tmp_path: Path, user_id: str, password: str, **auth) -> dict:
    path = tmp_path / f"clouds-{uuid.uuid4().hex[:6]}.yaml"
    entry = {"auth": {"auth_url": cloud.auth_url, "user_id": user_id, "password": password, **auth}}
    path.write_text(yaml.safe_dump({"clouds": {"u": entry}}))
    return {"OS_CLIENT_CONFIG_FILE": str(path), "OS_CLOUD": "u"}


def test_trustee_acts_with_the_delegated_role_until_the_trust_goes(cloud, tmp_path, admin_http):
    project = cloud.openstack("project", "create", f"trp-{uuid.uuid4().hex[:8]}", "-f", "json")
    trustor = _user(cloud, "trustor-pw", project["id"])
    cloud.openstack("role", "add", "--user", trustor, "--project", project["id"], "reader")
    trustee = _user(cloud, "trustee-pw")
    as_trustor = _env(cloud, tmp_path, trustor, "trustor-pw", project_id=project["id"])

    # (A member cannot look roles up by name: the role is given by id, as Keystone needs.)
    member = cloud.openstack("role", "show", "member", "-f", "json")["id"]
    trust = cloud.openstack(
        "trust", "create", "--project", project["id"], "--role", member, "--impersonate",
        trustor, trustee, "-f", "json", env=as_trustor,
    )  # fmt: skip
    assert trust["is_impersonation"] is True and trust["project_id"] == project["id"]
    listed = cloud.openstack("trust", "list", "--trustor", trustor, "-f", "json", env=as_trustor)
    assert trust["id"] in [t["ID"] for t in listed]

    # The trustee asks for a token with the trust: it acts as the trustor, with member only.
    as_trustee = _env(cloud, tmp_path, trustee, "trustee-pw", trust_id=trust["id"])
    token = cloud.openstack("token", "issue", "-f", "json", env=as_trustee)
    assert token["user_id"] == trustor and token["project_id"] == project["id"]
    with cloud.http() as http:
        body = http.get(
            "/v3/auth/tokens",
            headers={"X-Auth-Token": token["id"], "X-Subject-Token": token["id"]},
        ).json()["token"]
    assert body["OS-TRUST:trust"]["trustee_user"] == {"id": trustee}
    assert sorted(r["name"] for r in body["roles"]) == ["member", "reader"]  # member implies reader

    # Another user cannot use it; deleting it ends the trustee's token at once.
    stranger = _user(cloud, "stranger-pw")
    assert cloud.openstack(
        "token", "issue", env=_env(cloud, tmp_path, stranger, "stranger-pw", trust_id=trust["id"]),
        check=False,
    ).returncode != 0  # fmt: skip
    cloud.openstack("trust", "delete", trust["id"], env=as_trustor)
    r = admin_http.get("/v3/auth/tokens", headers={"X-Subject-Token": token["id"]})
    assert r.status_code == 404


def test_trust_rules(cloud, admin_http):
    project = cloud.openstack("project", "create", f"trp-{uuid.uuid4().hex[:8]}", "-f", "json")
    trustor = _user(cloud, "trustor-pw", project["id"])
    trustee = _user(cloud, "trustee-pw")
    login = httpx.post(
        f"{cloud.auth_url}/auth/tokens",
        json=password_auth({"id": trustor}, "trustor-pw", {"project": {"id": project["id"]}}),
    )
    url = "/v3/OS-TRUST/trusts"
    body = {
        "trustor_user_id": trustor,
        "trustee_user_id": trustee,
        "project_id": project["id"],
        "impersonation": False,
        "roles": [{"name": "member"}],
        "remaining_uses": 1,
    }
    with cloud.http(login.headers["X-Subject-Token"]) as own:
        # Only roles the trustor holds, only as the trustor, a valid expiry.
        r = own.post(url, json={"trust": {**body, "roles": [{"name": "admin"}]}})
        assert r.status_code == 404
        r = own.post(url, json={"trust": {**body, "trustor_user_id": trustee}})
        assert r.status_code == 403
        assert own.post(url, json={"trust": {**body, "expires_at": "bad.123Z"}}).status_code == 400
        r = own.post(url, json={"trust": body})
        assert r.status_code == 201, r.text
        trust = r.json()["trust"]
        assert [role["name"] for role in trust["roles"]] == ["member"]
        roles = own.get(f"{url}/{trust['id']}/roles").json()["roles"]
        assert [role["name"] for role in roles] == ["member"]
        member_id = roles[0]["id"]
        assert own.head(f"{url}/{trust['id']}/roles/{member_id}").status_code == 200

    # No impersonation: the token is the trustee's; one use only.
    trust_auth = password_auth(
        {"id": trustee}, "trustee-pw", {"OS-TRUST:trust": {"id": trust["id"]}}
    )
    first = httpx.post(f"{cloud.auth_url}/auth/tokens", json=trust_auth)
    assert first.status_code == 201, first.text
    assert first.json()["token"]["user"]["id"] == trustee
    assert first.json()["token"]["OS-TRUST:trust"]["impersonation"] is False
    assert httpx.post(f"{cloud.auth_url}/auth/tokens", json=trust_auth).status_code == 401
    # A trust token is not rescoped.
    rescope = {
        "auth": {
            "identity": {"methods": ["token"], "token": {"id": first.headers["X-Subject-Token"]}}
        }
    }
    assert httpx.post(f"{cloud.auth_url}/auth/tokens", json=rescope).status_code == 401


def test_a_trust_token_cannot_mint_or_read_lasting_credentials(cloud, admin_http):
    """With impersonation the trustee acts as the trustor: never beyond the trust's life."""
    project = cloud.openstack("project", "create", f"trp-{uuid.uuid4().hex[:8]}", "-f", "json")
    trustor = _user(cloud, "trustor-pw", project["id"])
    trustee = _user(cloud, "trustee-pw")
    member = cloud.openstack("role", "show", "member", "-f", "json")["id"]
    r = admin_http.post(
        "/v3/credentials",
        json={"credential": {"user_id": trustor, "type": "totp", "blob": "GEZDGNBVGY3TQOJQ"}},
    )
    totp_id = r.json()["credential"]["id"]
    own = httpx.post(
        f"{cloud.auth_url}/auth/tokens",
        json=password_auth({"id": trustor}, "trustor-pw", {"project": {"id": project["id"]}}),
    ).headers["X-Subject-Token"]
    with cloud.http(own) as http:
        trust = http.post(
            "/v3/OS-TRUST/trusts",
            json={
                "trust": {
                    "trustor_user_id": trustor,
                    "trustee_user_id": trustee,
                    "project_id": project["id"],
                    "impersonation": True,
                    "roles": [{"id": member}],
                }
            },
        ).json()["trust"]
    token = httpx.post(
        f"{cloud.auth_url}/auth/tokens",
        json=password_auth({"id": trustee}, "trustee-pw", {"OS-TRUST:trust": {"id": trust["id"]}}),
    ).headers["X-Subject-Token"]
    with cloud.http(token) as http:
        secret = {"user_id": trustor, "type": "totp", "blob": "JBSWY3DPEHPK3PXP"}
        assert http.post("/v3/credentials", json={"credential": secret}).status_code == 403
        assert http.get(f"/v3/credentials/{totp_id}").status_code == 403
        assert http.get("/v3/credentials").status_code == 403
        ec2 = http.post(
            f"/v3/users/{trustor}/credentials/OS-EC2", json={"tenant_id": project["id"]}
        )
        assert ec2.status_code == 403
        app = {"application_credential": {"name": "forever"}}
        r = http.post(f"/v3/users/{trustor}/application_credentials", json=app)
        assert r.status_code == 403
        again = {**trust, "trustee_user_id": trustee}
        again = {
            k: again[k]
            for k in ("trustor_user_id", "trustee_user_id", "project_id", "impersonation")
        }
        r = http.post("/v3/OS-TRUST/trusts", json={"trust": {**again, "roles": [{"id": member}]}})
        assert r.status_code == 403
