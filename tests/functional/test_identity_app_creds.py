"""Application credentials as a user delegates them to an application, with the real CLI."""

from __future__ import annotations

import subprocess
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from tests.cloudrunner import VENV_BIN, CloudRunner


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _as_app(cloud: CloudRunner, cred_id: str, secret: str, *args: str):
    """Run the CLI authenticated by the application credential only (no clouds.yaml)."""
    env = {k: v for k, v in cloud.env().items() if k not in ("OS_CLOUD", "OS_CLIENT_CONFIG_FILE")}
    return subprocess.run(
        [
            str(VENV_BIN / "openstack"),
            "--os-auth-type",
            "v3applicationcredential",
            "--os-application-credential-id",
            cred_id,
            "--os-application-credential-secret",
            secret,
            "--os-auth-url",
            cloud.auth_url,
            "--os-identity-api-version",
            "3",
            *args,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def _app_token(cloud: CloudRunner, cred_id: str, secret: str):
    with cloud.http() as anon:
        return anon.post(
            "/v3/auth/tokens",
            json={
                "auth": {
                    "identity": {
                        "methods": ["application_credential"],
                        "application_credential": {"id": cred_id, "secret": secret},
                    }
                }
            },
        )


@pytest.fixture(scope="module")
def demo_ids(cloud: CloudRunner) -> dict[str, str]:
    token = cloud.openstack("token", "issue", "-f", "json", cloud="cumulo-demo")
    return {"user": token["user_id"], "project": token["project_id"]}


def test_demo_user_delegates_member_role_and_the_app_gets_a_token(cloud: CloudRunner, demo_ids):
    name = _unique("backup")
    cred = cloud.openstack(
        "application",
        "credential",
        "create",
        name,
        "--role",
        "member",
        "--description",
        "nightly backups",
        "-f",
        "json",
        cloud="cumulo-demo",
    )
    assert cred["Name"] == name and cred["Secret"]
    assert cred["Project ID"] == demo_ids["project"]
    assert [r["name"] for r in cred["Roles"]] == ["member"] and cred["Unrestricted"] is False
    cred_id, secret = cred["ID"], cred["Secret"]

    proc = _as_app(cloud, cred_id, secret, "token", "issue", "-f", "json")
    assert proc.returncode == 0, proc.stderr
    assert f'"project_id": "{demo_ids["project"]}"' in proc.stdout
    assert f'"user_id": "{demo_ids["user"]}"' in proc.stdout

    # The token carries the delegated role (and what it implies), never more.
    r = _app_token(cloud, cred_id, secret)
    assert r.status_code == 201
    token = r.json()["token"]
    assert token["methods"] == ["application_credential"]
    assert token["project"]["id"] == demo_ids["project"]
    assert {role["name"] for role in token["roles"]} == {"member", "reader"}
    assert token["application_credential"] == {"id": cred_id, "name": name, "restricted": True}

    listed = cloud.openstack("application", "credential", "list", "-f", "json", cloud="cumulo-demo")
    assert name in {c["Name"] for c in listed}
    shown = cloud.openstack(
        "application", "credential", "show", name, "-f", "json", cloud="cumulo-demo"
    )
    assert shown["ID"] == cred_id and "Secret" not in shown

    app_token = r.headers["X-Subject-Token"]
    cloud.openstack("application", "credential", "delete", name, cloud="cumulo-demo")
    # Deleted: it no longer authenticates, and the tokens made from it stop validating.
    assert _app_token(cloud, cred_id, secret).status_code == 401
    proc = _as_app(cloud, cred_id, secret, "token", "issue")
    assert proc.returncode != 0
    with cloud.http(app_token) as app:
        assert app.get("/v3/auth/projects").status_code == 401


def test_delegating_only_reader_gives_a_reader_token(cloud: CloudRunner, demo_ids):
    token = cloud.token("demo", project="demo")
    with cloud.http(token) as demo:
        r = demo.post(
            f"/v3/users/{demo_ids['user']}/application_credentials",
            json={
                "application_credential": {
                    "name": _unique("ro"),
                    "roles": [{"name": "reader"}],
                    "secret": "a chosen secret",
                }
            },
        )
    assert r.status_code == 201
    cred = r.json()["application_credential"]
    assert cred["secret"] == "a chosen secret"
    assert [role["name"] for role in cred["roles"]] == ["reader"]
    assert set(cred) == {
        "id",
        "name",
        "description",
        "expires_at",
        "project_id",
        "roles",
        "unrestricted",
        "access_rules",
        "links",
        "secret",
    }
    app = _app_token(cloud, cred["id"], "a chosen secret")
    assert [role["name"] for role in app.json()["token"]["roles"]] == ["reader"]
    assert _app_token(cloud, cred["id"], "wrong secret").status_code == 401


def test_roles_must_be_held_and_names_unique(cloud: CloudRunner, demo_ids):
    token = cloud.token("demo", project="demo")
    url = f"/v3/users/{demo_ids['user']}/application_credentials"
    name = _unique("dup")
    with cloud.http(token) as demo:
        r = demo.post(
            url, json={"application_credential": {"name": name, "roles": [{"name": "admin"}]}}
        )
        assert r.status_code == 400
        r = demo.post(
            url, json={"application_credential": {"name": name, "roles": [{"name": "nope"}]}}
        )
        assert r.status_code == 404
        # No roles given: every role of the token.
        r = demo.post(url, json={"application_credential": {"name": name}})
        assert r.status_code == 201
        assert {x["name"] for x in r.json()["application_credential"]["roles"]} == {
            "member",
            "reader",
        }
        r = demo.post(url, json={"application_credential": {"name": name}})
        assert r.status_code == 409
        r = demo.get(url, params={"name": name})
        assert [c["name"] for c in r.json()["application_credentials"]] == [name]
        assert "secret" not in r.json()["application_credentials"][0]
        for bad in (
            {"path": "/v2.1/servers", "method": "FETCH", "service": "compute"},
            {"path": "v2.1/servers", "method": "GET", "service": "compute"},
            {"method": "GET", "service": "compute"},
        ):
            body = {"application_credential": {"name": _unique("ar"), "access_rules": [bad]}}
            assert demo.post(url, json=body).status_code == 400, bad
        # Not for another user, even with a valid token.
        r = demo.post(
            "/v3/users/someone-else/application_credentials",
            json={"application_credential": {"name": "x"}},
        )
        assert r.status_code == 403


def test_expired_credential_is_refused(cloud: CloudRunner, demo_ids):
    token = cloud.token("demo", project="demo")
    url = f"/v3/users/{demo_ids['user']}/application_credentials"
    with cloud.http(token) as demo:
        past = (datetime.now(UTC) - timedelta(minutes=5)).isoformat()
        r = demo.post(
            url, json={"application_credential": {"name": _unique("old"), "expires_at": past}}
        )
        assert r.status_code == 400
        assert (
            demo.post(
                url, json={"application_credential": {"name": _unique("bad"), "expires_at": "soon"}}
            ).status_code
            == 400
        )
        expiry = datetime.now(UTC) + timedelta(seconds=4)
        soon = expiry.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        r = demo.post(
            url, json={"application_credential": {"name": _unique("short"), "expires_at": soon}}
        )
    assert r.status_code == 201
    cred = r.json()["application_credential"]
    assert cred["expires_at"].startswith(soon[:19])
    cred_id, secret = cred["id"], cred["secret"]
    first = _app_token(cloud, cred_id, secret)
    assert first.status_code == 201
    # A token never outlives the credential it came from.
    assert first.json()["token"]["expires_at"][:19] <= soon[:19]
    time.sleep(max(0.0, (expiry - datetime.now(UTC)).total_seconds()) + 0.5)
    assert _app_token(cloud, cred_id, secret).status_code == 401


def test_cli_expiration_option(cloud: CloudRunner):
    future = (datetime.now(UTC) + timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%S")
    cred = cloud.openstack(
        "application",
        "credential",
        "create",
        _unique("later"),
        "--expiration",
        future,
        "-f",
        "json",
        cloud="cumulo-demo",
    )
    assert cred["Expires At"].startswith(future)


def test_restricted_credential_cannot_make_or_delete_credentials(cloud: CloudRunner, demo_ids):
    url = f"/v3/users/{demo_ids['user']}/application_credentials"
    with cloud.http(cloud.token("demo", project="demo")) as demo:
        restricted = demo.post(url, json={"application_credential": {"name": _unique("r")}})
        unrestricted = demo.post(
            url, json={"application_credential": {"name": _unique("u"), "unrestricted": True}}
        )
    restricted = restricted.json()["application_credential"]
    unrestricted = unrestricted.json()["application_credential"]

    proc = _as_app(
        cloud, restricted["id"], restricted["secret"], "application", "credential", "create", "x"
    )
    assert proc.returncode != 0 and "403" in proc.stderr
    r_token = _app_token(cloud, restricted["id"], restricted["secret"]).headers["X-Subject-Token"]
    with cloud.http(r_token) as app:
        assert app.delete(f"{url}/{restricted['id']}").status_code == 403
        # Reading them is still allowed.
        assert app.get(url).status_code == 200

    proc = _as_app(
        cloud,
        unrestricted["id"],
        unrestricted["secret"],
        "application",
        "credential",
        "create",
        _unique("child"),
        "-f",
        "json",
    )
    assert proc.returncode == 0, proc.stderr


def test_admin_may_look_but_other_users_may_not(cloud: CloudRunner, demo_ids, admin_http):
    url = f"/v3/users/{demo_ids['user']}/application_credentials"
    admin_id = admin_http.get(
        "/v3/auth/tokens", headers={"X-Subject-Token": admin_http.headers["X-Auth-Token"]}
    ).json()["token"]["user"]["id"]
    with cloud.http(cloud.token("demo", project="demo")) as demo:
        cred = demo.post(url, json={"application_credential": {"name": _unique("seen")}})
        assert demo.get(f"/v3/users/{admin_id}/application_credentials").status_code == 403
    cred_id = cred.json()["application_credential"]["id"]
    assert admin_http.get(f"{url}/{cred_id}").status_code == 200
    # Looked up under the wrong user, the credential does not exist.
    assert (
        admin_http.get(f"/v3/users/{admin_id}/application_credentials/{cred_id}").status_code == 404
    )
    assert admin_http.get("/v3/users/nobody/application_credentials").status_code == 404
    assert admin_http.delete(f"{url}/{cred_id}").status_code == 204


def test_access_rules_limit_what_the_credentials_token_reaches(cloud: CloudRunner, demo_ids):
    """A monitoring app may list images and servers, and nothing else."""
    rules = (
        '[{"service": "image", "method": "GET", "path": "/v2/images"},'
        ' {"service": "compute", "method": "GET", "path": "/v2.1/servers/**"}]'
    )
    name = _unique("monitor")
    cred = cloud.openstack(
        "application", "credential", "create", name, "--access-rules", rules, "-f", "json",
        cloud="cumulo-demo",
    )  # fmt: skip
    shown = sorted(cred["Access Rules"], key=lambda r: r["service"])
    assert [(r["service"], r["method"], r["path"]) for r in shown] == [
        ("compute", "GET", "/v2.1/servers/**"),
        ("image", "GET", "/v2/images"),
    ]
    token = _app_token(cloud, cred["ID"], cred["Secret"]).json()["token"]
    assert len(token["application_credential"]["access_rules"]) == 2

    assert _as_app(cloud, cred["ID"], cred["Secret"], "image", "list").returncode == 0
    assert _as_app(cloud, cred["ID"], cred["Secret"], "server", "list").returncode == 0
    refused = _as_app(cloud, cred["ID"], cred["Secret"], "network", "list")
    assert refused.returncode != 0 and "401" in refused.stderr
    refused = _as_app(cloud, cred["ID"], cred["Secret"], "image", "create", "--private", "x")
    assert refused.returncode != 0

    # The rules are the user's own: listed, reused by a second credential, kept after the
    # credentials go, deletable only when no credential names them.
    url = f"/v3/users/{demo_ids['user']}/access_rules"
    with cloud.http(cloud.token("demo", project="demo")) as demo:
        listed = demo.get(url, params={"service": "image"}).json()["access_rules"]
        assert [r["path"] for r in listed] == ["/v2/images"]
        rule_id = listed[0]["id"]
        again = demo.post(
            f"/v3/users/{demo_ids['user']}/application_credentials",
            json={
                "application_credential": {"name": _unique("m2"), "access_rules": [{"id": rule_id}]}
            },
        ).json()["application_credential"]
        assert again["access_rules"][0]["id"] == rule_id
        assert demo.get(f"{url}/{rule_id}").json()["access_rule"]["method"] == "GET"
        assert demo.delete(f"{url}/{rule_id}").status_code == 403
        for cred_id in (cred["ID"], again["id"]):
            r = demo.delete(f"/v3/users/{demo_ids['user']}/application_credentials/{cred_id}")
            assert r.status_code == 204
        assert demo.delete(f"{url}/{rule_id}").status_code == 204
        assert demo.get(f"{url}/{rule_id}").status_code == 404
