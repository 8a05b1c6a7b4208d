"""TOTP and multi-factor rules, as a user with an authenticator app meets them."""

from __future__ import annotations

import base64
import os
import uuid
from pathlib import Path

import httpx
import yaml

from cumulo.identity import totp
from tests.cloudrunner import CloudRunner


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _mfa_user(cloud: CloudRunner, password: str, rules: list[str] | None = None) -> tuple[str, str]:
    """A member of the demo project with a TOTP secret; returns (user id, base32 secret)."""
    name = _name("mfa")
    user = cloud.openstack("user", "create", name, "--password", password, "-f", "json")
    cloud.openstack("role", "add", "--user", user["id"], "--project", "demo", "member")
    secret = base64.b32encode(os.urandom(20)).decode().rstrip("=")
    cloud.openstack("credential", "create", "--type", "totp", user["id"], secret)
    if rules:
        flags = [arg for rule in rules for arg in ("--multi-factor-auth-rule", rule)]
        cloud.openstack("user", "set", *flags, user["id"])
    return user["id"], secret


def _user_env(cloud: CloudRunner, tmp_path: Path, user_id: str, **auth) -> dict[str, str]:
    """The CLI's environment for a user of the demo project, with the given auth."""
    path = tmp_path / f"clouds-{uuid.uuid4().hex[:6]}.yaml"
    entry = {
        "auth": {
            "auth_url": cloud.auth_url,
            "user_id": user_id,
            "project_name": "demo",
            "project_domain_id": "default",
            **auth.pop("auth", {}),
        },
        **auth,
    }
    path.write_text(yaml.safe_dump({"clouds": {"mfa": entry}}))
    return {"OS_CLIENT_CONFIG_FILE": str(path), "OS_CLOUD": "mfa"}


def _auth(methods: dict, scope: bool = True) -> dict:
    body: dict = {"auth": {"identity": {"methods": list(methods), **methods}}}
    if scope:
        body["auth"]["scope"] = {"project": {"name": "demo", "domain": {"id": "default"}}}
    return body


def _password(user_id: str, password: str) -> dict:
    return {"password": {"user": {"id": user_id, "password": password}}}


def _totp(user_id: str, secret: str) -> dict:
    return {"totp": {"user": {"id": user_id, "passcode": totp.passcode(secret)}}}


def test_user_with_mfa_rules_gets_a_token_only_with_password_and_totp(cloud, tmp_path):
    user_id, secret = _mfa_user(cloud, "mfa-pass-1", rules=["password,totp"])
    rules = cloud.openstack("user", "show", user_id, "-f", "json")["options"]
    assert rules["multi_factor_auth_rules"] == [["password", "totp"]]

    # The password alone is not enough: keystoneauth reads Keystone's receipt answer.
    only_password = _user_env(cloud, tmp_path, user_id, auth={"password": "mfa-pass-1"})
    refused = cloud.openstack("token", "issue", env=only_password, check=False)
    assert refused.returncode != 0
    assert "Not all required auth rules were satisfied" in refused.stderr
    assert "password" in refused.stderr and "totp" in refused.stderr

    both = _user_env(
        cloud,
        tmp_path,
        user_id,
        auth_type="v3multifactor",
        auth_methods=["v3password", "v3totp"],
        auth={"password": "mfa-pass-1", "passcode": totp.passcode(secret)},
    )
    token = cloud.openstack("token", "issue", "-f", "json", env=both)
    assert token["user_id"] == user_id and token["project_id"]

    # A wrong passcode is refused like a wrong password.
    wrong = str((int(totp.passcode(secret)) + 1) % 1_000_000).zfill(6)
    bad = _user_env(
        cloud,
        tmp_path,
        user_id,
        auth_type="v3multifactor",
        auth_methods=["v3password", "v3totp"],
        auth={"password": "mfa-pass-1", "passcode": wrong},
    )
    assert cloud.openstack("token", "issue", env=bad, check=False).returncode != 0


def test_auth_receipt_completes_with_the_missing_factor(cloud):
    user_id, secret = _mfa_user(cloud, "mfa-pass-2", rules=["password,totp", "password,token"])
    url = f"{cloud.auth_url}/auth/tokens"

    first = httpx.post(url, json=_auth(_password(user_id, "mfa-pass-2")))
    assert first.status_code == 401, first.text
    receipt = first.headers["Openstack-Auth-Receipt"]
    body = first.json()
    assert body["receipt"]["methods"] == ["password"]
    assert body["receipt"]["user"]["id"] == user_id
    assert body["receipt"]["user"]["domain"] == {"id": "default", "name": "Default"}
    assert body["receipt"]["expires_at"] > body["receipt"]["issued_at"]
    assert sorted(body["required_auth_methods"]) == [["password", "token"], ["password", "totp"]]

    # The receipt stands for the password: the second request gives the passcode only.
    done = httpx.post(
        url, json=_auth(_totp(user_id, secret)), headers={"Openstack-Auth-Receipt": receipt}
    )
    assert done.status_code == 201, done.text
    token = done.json()["token"]
    assert sorted(token["methods"]) == ["password", "totp"]
    assert token["project"]["name"] == "demo"

    # The token that met the rules re-scopes; a passcode alone without a receipt does not.
    rescoped = httpx.post(url, json=_auth({"token": {"id": done.headers["X-Subject-Token"]}}))
    assert rescoped.status_code == 201, rescoped.text
    alone = httpx.post(url, json=_auth(_totp(user_id, secret)))
    assert alone.status_code == 401 and alone.json()["required_auth_methods"] == [
        ["password", "totp"]
    ]


def test_a_receipt_is_no_token_and_belongs_to_its_user(cloud, admin_http):
    user_id, secret = _mfa_user(cloud, "mfa-pass-3", rules=["password,totp"])
    other_id, other_secret = _mfa_user(cloud, "mfa-pass-4", rules=["password,totp"])
    url = f"{cloud.auth_url}/auth/tokens"
    receipt = httpx.post(url, json=_auth(_password(user_id, "mfa-pass-3"))).headers[
        "Openstack-Auth-Receipt"
    ]

    as_token = admin_http.get("/v3/auth/tokens", headers={"X-Subject-Token": receipt})
    assert as_token.status_code == 404
    assert (
        httpx.get(
            f"{cloud.auth_url}/users/{user_id}", headers={"X-Auth-Token": receipt}
        ).status_code
        == 401
    )

    stolen = httpx.post(
        url,
        json=_auth(_totp(other_id, other_secret)),
        headers={"Openstack-Auth-Receipt": receipt},
    )
    assert stolen.status_code == 401
    assert stolen.json()["error"]["message"] == f"Could not find auth receipt: {receipt}."
    forged = httpx.post(
        url, json=_auth(_totp(user_id, secret)), headers={"Openstack-Auth-Receipt": "x" * 100}
    )
    assert forged.status_code == 401 and "Could not find auth receipt" in forged.text


def test_disabled_mfa_rules_and_totp_alone(cloud, tmp_path):
    user_id, secret = _mfa_user(cloud, "mfa-pass-5", rules=["password,totp"])
    cloud.openstack("user", "set", "--disable-multi-factor-auth", user_id)
    only_password = _user_env(cloud, tmp_path, user_id, auth={"password": "mfa-pass-5"})
    assert cloud.openstack("token", "issue", "-f", "json", env=only_password)["user_id"] == user_id

    # Without rules, a TOTP passcode alone is a way in (Keystone's totp method).
    only_totp = _user_env(
        cloud, tmp_path, user_id, auth_type="v3totp", auth={"passcode": totp.passcode(secret)}
    )
    assert cloud.openstack("token", "issue", "-f", "json", env=only_totp)["user_id"] == user_id


def test_sdk_user_with_mfa_connects_with_both_factors(cloud):
    import openstack

    user_id, secret = _mfa_user(cloud, "mfa-pass-6", rules=["password,totp"])
    conn = openstack.connect(
        auth_type="v3multifactor",
        auth_methods=["v3password", "v3totp"],
        auth={
            "auth_url": cloud.auth_url,
            "user_id": user_id,
            "password": "mfa-pass-6",
            "passcode": totp.passcode(secret),
            "project_name": "demo",
            "project_domain_id": "default",
        },
        load_yaml_config=False,
        load_envvars=False,
    )
    assert conn.current_user_id == user_id
    assert conn.identity.get_user(user_id).id == user_id
