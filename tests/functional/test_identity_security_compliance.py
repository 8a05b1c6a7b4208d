"""Keystone's security compliance rules on a cloud that turns them on, as users meet them."""

from __future__ import annotations

import time
import uuid
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
import yaml
from sqlalchemy import update

from cumulo.common.config import SecurityComplianceConfig, load_config, write_config
from cumulo.common.db import utcnow
from cumulo.identity.models import User
from tests.cloudrunner import CloudRunner, configure_state_dir, password_auth

LOCKOUT_ATTEMPTS = 3
LOCKOUT_SECONDS = 3
RULE = "at least 7 characters, with a letter and a digit"


@pytest.fixture(scope="module")
def strict_cloud(tmp_path_factory: pytest.TempPathFactory):
    """A cloud of its own: these rules are cloud-wide, as Keystone's [security_compliance]."""
    state_dir = tmp_path_factory.mktemp("cumulo-compliance")
    configure_state_dir(state_dir)
    config = load_config(state_dir)
    config.identity.security_compliance = SecurityComplianceConfig(
        lockout_failure_attempts=LOCKOUT_ATTEMPTS,
        lockout_duration=LOCKOUT_SECONDS,
        password_expires_days=90,
        unique_last_password_count=2,
        minimum_password_age=1,
        change_password_upon_first_use=True,
        password_regex=r"^(?=.*\d)(?=.*[a-zA-Z]).{7,}$",
        password_regex_description=RULE,
    )
    write_config(state_dir, config)
    runner = CloudRunner(state_dir).start()
    yield runner
    runner.stop()


def _user(cloud: CloudRunner, password: str, *options: str) -> str:
    name = f"sc-{uuid.uuid4().hex[:8]}"
    user = cloud.openstack("user", "create", name, "--password", password, *options, "-f", "json")
    cloud.openstack("role", "add", "--user", user["id"], "--project", "demo", "member")
    return user["id"]


def _env(cloud: CloudRunner, tmp_path: Path, user_id: str, password: str) -> dict[str, str]:
    path = tmp_path / f"clouds-{uuid.uuid4().hex[:6]}.yaml"
    auth = {
        "auth_url": cloud.auth_url,
        "user_id": user_id,
        "password": password,
        "project_name": "demo",
        "project_domain_id": "default",
    }
    path.write_text(yaml.safe_dump({"clouds": {"user": {"auth": auth}}}))
    return {"OS_CLIENT_CONFIG_FILE": str(path), "OS_CLOUD": "user"}


def _token_issue(cloud: CloudRunner, tmp_path: Path, user_id: str, password: str):
    return cloud.openstack(
        "token", "issue", "-f", "json", env=_env(cloud, tmp_path, user_id, password), check=False
    )


def _change_own_password(cloud: CloudRunner, user_id: str, old: str, new: str) -> httpx.Response:
    """POST /v3/users/{id}/password without a token: how a user with an expired password
    changes it (Keystone allows it; the original password is the proof)."""
    return httpx.post(
        f"{cloud.auth_url}/users/{user_id}/password",
        json={"user": {"original_password": old, "password": new}},
    )


def _set_columns(cloud: CloudRunner, user_id: str, **values) -> None:
    """Move a user's password timestamps, standing for days passing."""

    async def write() -> None:
        async with cloud.cloud.identity.write() as session:
            await session.execute(update(User).where(User.id == user_id).values(**values))

    cloud.run_async(write())


def test_locked_out_user_is_refused_with_keystones_message(strict_cloud, tmp_path):
    user_id = _user(strict_cloud, "first1pass", "--ignore-change-password-upon-first-use")
    assert _token_issue(strict_cloud, tmp_path, user_id, "first1pass").returncode == 0

    for _ in range(LOCKOUT_ATTEMPTS):
        wrong = _token_issue(strict_cloud, tmp_path, user_id, "wrong1pass")
        assert "The request you have made requires authentication" in wrong.stderr
    locked = _token_issue(strict_cloud, tmp_path, user_id, "first1pass")
    assert locked.returncode != 0
    assert f"The account is locked for user: {user_id}." in locked.stderr
    assert "HTTP 401" in locked.stderr

    # The lockout runs out...
    time.sleep(LOCKOUT_SECONDS + 0.5)
    assert _token_issue(strict_cloud, tmp_path, user_id, "first1pass").returncode == 0
    # ...and an admin enabling the user ends one at once.
    for _ in range(LOCKOUT_ATTEMPTS):
        _token_issue(strict_cloud, tmp_path, user_id, "wrong1pass")
    assert "locked" in _token_issue(strict_cloud, tmp_path, user_id, "first1pass").stderr
    # (`openstack user set --enable` sends nothing for a user that is enabled already.)
    with strict_cloud.http(strict_cloud.token()) as admin:
        r = admin.patch(f"/v3/users/{user_id}", json={"user": {"enabled": True}})
    assert r.status_code == 200, r.text
    assert _token_issue(strict_cloud, tmp_path, user_id, "first1pass").returncode == 0


def test_user_ignoring_lockout_is_never_locked(strict_cloud, tmp_path):
    user_id = _user(
        strict_cloud,
        "first2pass",
        "--ignore-change-password-upon-first-use",
        "--ignore-lockout-failure-attempts",
    )
    for _ in range(LOCKOUT_ATTEMPTS + 1):
        _token_issue(strict_cloud, tmp_path, user_id, "wrong2pass")
    assert _token_issue(strict_cloud, tmp_path, user_id, "first2pass").returncode == 0


def test_new_user_must_change_the_password_an_admin_gave(strict_cloud, tmp_path):
    user_id = _user(strict_cloud, "given3pass")
    shown = strict_cloud.openstack("user", "show", user_id, "-f", "json")
    assert shown["password_expires_at"] is not None
    refused = _token_issue(strict_cloud, tmp_path, user_id, "given3pass")
    assert f"The password is expired and needs to be changed for user: {user_id}." in refused.stderr

    assert _change_own_password(strict_cloud, user_id, "given3pass", "mine3pass").status_code == 204
    token = _token_issue(strict_cloud, tmp_path, user_id, "mine3pass")
    assert token.returncode == 0, token.stderr
    # The new password expires after password_expires_days, shown in tokens and users.
    expires = strict_cloud.openstack("user", "show", user_id, "-f", "json")["password_expires_at"]
    assert expires.startswith(str((utcnow() + timedelta(days=90)).date()))
    admin_token = strict_cloud.token()
    with strict_cloud.http(admin_token) as admin:
        r = admin.get("/v3/auth/tokens", headers={"X-Subject-Token": admin_token})
    # Passwords set before the rules (the bootstrap admin's) never expire.
    assert r.json()["token"]["user"]["password_expires_at"] is None

    # An admin's reset must be changed again.
    strict_cloud.openstack("user", "set", "--password", "reset3pass", user_id)
    assert "expired" in _token_issue(strict_cloud, tmp_path, user_id, "reset3pass").stderr


def test_expired_password_is_refused_until_changed_or_exempted(strict_cloud, tmp_path):
    user_id = _user(strict_cloud, "first4pass", "--ignore-change-password-upon-first-use")
    token = httpx.post(
        f"{strict_cloud.auth_url}/auth/tokens", json=password_auth({"id": user_id}, "first4pass")
    )
    assert token.status_code == 201
    assert token.json()["token"]["user"]["password_expires_at"].endswith(".000000")

    _set_columns(strict_cloud, user_id, password_expires_at=utcnow() - timedelta(seconds=1))
    assert "is expired" in _token_issue(strict_cloud, tmp_path, user_id, "first4pass").stderr
    with strict_cloud.http(strict_cloud.token()) as admin:
        now = f"{utcnow().isoformat()}Z"
        past = admin.get("/v3/users", params={"password_expires_at": f"lt:{now}"}).json()
        future = admin.get("/v3/users", params={"password_expires_at": f"gt:{now}"}).json()
    assert user_id in [u["id"] for u in past["users"]]
    assert user_id not in [u["id"] for u in future["users"]]

    strict_cloud.openstack("user", "set", "--ignore-password-expiry", user_id)
    assert _token_issue(strict_cloud, tmp_path, user_id, "first4pass").returncode == 0
    strict_cloud.openstack("user", "set", "--no-ignore-password-expiry", user_id)
    assert _token_issue(strict_cloud, tmp_path, user_id, "first4pass").returncode != 0
    assert (
        _change_own_password(strict_cloud, user_id, "first4pass", "second4pass").status_code == 204
    )
    assert _token_issue(strict_cloud, tmp_path, user_id, "second4pass").returncode == 0


def test_password_history_and_minimum_age_on_self_service_changes(strict_cloud, tmp_path):
    user_id = _user(strict_cloud, "first5pass", "--ignore-change-password-upon-first-use")
    assert (
        _change_own_password(strict_cloud, user_id, "first5pass", "second5pass").status_code == 204
    )

    too_soon = _change_own_password(strict_cloud, user_id, "second5pass", "third5pass")
    assert too_soon.status_code == 400
    assert too_soon.json()["error"]["message"] == (
        "You cannot change your password at this time due to the minimum password age. "
        "Once you change your password, it must be used for 1 day(s) before it can be "
        "changed. Please try again in 0 day(s) or contact your administrator to reset "
        "your password."
    )

    # A day later: the current and the previous password (count 2) may not come back.
    _set_columns(strict_cloud, user_id, password_created_at=utcnow() - timedelta(days=1))
    for reused in ("second5pass", "first5pass"):
        r = _change_own_password(strict_cloud, user_id, "second5pass", reused)
        assert r.status_code == 400
        assert r.json()["error"]["message"] == (
            "The new password cannot be identical to a previous password. The total number "
            "which includes the new password must be unique is 2."
        )
    assert (
        _change_own_password(strict_cloud, user_id, "second5pass", "third5pass").status_code == 204
    )

    # An admin's reset is not held to the history (Tempest's
    # test_password_history_not_enforced_in_admin_reset).
    strict_cloud.openstack(
        "user",
        "set",
        "--password",
        "third5pass",
        "--ignore-change-password-upon-first-use",
        user_id,
    )


def test_passwords_must_match_the_regex(strict_cloud):
    weak = strict_cloud.openstack("user", "create", "weakling", "--password", "abc", check=False)
    assert weak.returncode != 0
    assert f"The password does not match the requirements: {RULE}." in weak.stderr
    assert "400" in weak.stderr
    assert strict_cloud.openstack("user", "show", "weakling", check=False).returncode != 0

    user_id = _user(strict_cloud, "first6pass", "--ignore-change-password-upon-first-use")
    # A user can read the rules before choosing a password (Keystone's domain config API).
    with strict_cloud.http(strict_cloud.token()) as admin:
        rules = admin.get("/v3/domains/default/config/security_compliance").json()["config"]
    assert rules["password_regex_description"] == RULE and rules["password_regex"]
    r = _change_own_password(strict_cloud, user_id, "first6pass", "letters")
    assert r.status_code == 400 and RULE in r.json()["error"]["message"]
    weak_reset = strict_cloud.openstack(
        "user", "set", "--password", "1234567", user_id, check=False
    )
    assert RULE in weak_reset.stderr


def test_services_keep_working_under_the_rules(strict_cloud):
    """The services' own user is exempt: no lockout or expiry can cut them off."""
    config = load_config(strict_cloud.state_dir)
    for _ in range(LOCKOUT_ATTEMPTS + 1):
        httpx.post(
            f"{strict_cloud.auth_url}/auth/tokens",
            json=password_auth({"name": "cumulo", "domain": {"id": "default"}}, "wrong"),
        )
    token = strict_cloud.token("cumulo", config.identity.service_password, project="service")
    assert token
    assert strict_cloud.openstack("image", "list", "-f", "json") is not None
