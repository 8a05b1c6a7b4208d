"""Silent renewal of dashboard sessions with Keystone trusts, against a real cloud whose
tokens last a minute: a login makes a trust (trustor the user, trustee the dashboard's
own `dashboard` user, impersonation, the session's project and roles); an active user's
session then outlives its first token, each new token made from the trust and acting as
the user; logout deletes the trust; the user disabled (or the trust deleted) ends the
session at the next renewal and the login page says why; at the session's maximum
lifetime the password dialog renews it as before; a project switch moves the trust.

The dashboard runs in this process (its session store at hand, to bring a renewal
forward instead of waiting for it); the cloud it talks to over HTTP is a real one."""

from __future__ import annotations

import base64
import html
import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from starlette.testclient import TestClient

from cumulo.dashboard.app import create_dashboard_app
from cumulo.dashboard.catalog import CatalogApis
from cumulo.dashboard.pages.auth import REASONS
from cumulo.dashboard.renewal import Trustee
from cumulo.dashboard.sessions import Session, SessionStore
from cumulo.identity import totp
from cumulo.identity.bootstrap import DASHBOARD_USER
from tests.cloudrunner import CloudRunner, running_cloud
from tests.functional.dashboard_helpers import CSRF, alerts

TOKEN_SECONDS = 60  # the shortest token lifetime Identity takes


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CloudRunner]:
    def configure(config) -> None:
        config.identity.token_expiration = TOKEN_SECONDS

    state = tmp_path_factory.mktemp("dashboard-trusts") / "state"
    with running_cloud(state, configure, timeout=60) as runner:
        yield runner


@contextmanager
def dashboard(cloud: CloudRunner, max_lifetime: float = 3600) -> Iterator[tuple[Any, ...]]:
    store = SessionStore()
    trustee = Trustee(DASHBOARD_USER, cloud.config.dashboard.service_password, max_lifetime)
    app = create_dashboard_app(CatalogApis(cloud.auth_url), store, trustee)
    with TestClient(app, follow_redirects=False) as client:
        yield client, store


def new_user(cloud: CloudRunner, *projects: str) -> tuple[str, str, str]:
    """A member of `projects`: (id, name, password)."""
    name, password = f"tr-{uuid.uuid4().hex[:6]}", "trust-user-pw-1"
    user = cloud.openstack("user", "create", name, "--password", password, "-f", "json")
    for project in projects:
        cloud.openstack("role", "add", "--user", user["id"], "--project", project, "member")
    return user["id"], name, password


def log_in(client: TestClient, store: SessionStore, name: str, password: str) -> Session:
    csrf = CSRF.search(client.get("/login").text)[1]
    form = {"csrf_token": csrf, "domain": "Default", "username": name, "password": password}
    answer = client.post("/login", data=form)
    assert answer.status_code == 303, alerts(answer.text)
    [session] = [r for r in store.sessions.values() if isinstance(r, Session)]
    return session


def keystone(cloud: CloudRunner, path: str, **headers: str) -> tuple[int, dict]:
    with cloud.http(cloud.token()) as identity:
        answer = identity.get(path, headers=headers)
    return answer.status_code, answer.json() if answer.status_code == 200 else {}


def token_of(cloud: CloudRunner, token: str) -> tuple[int, dict]:
    status, body = keystone(cloud, "/v3/auth/tokens", **{"X-Subject-Token": token})
    return status, body.get("token", {})


def trust_of(cloud: CloudRunner, trust_id: str) -> tuple[int, dict]:
    status, body = keystone(cloud, f"/v3/OS-TRUST/trusts/{trust_id}")
    return status, body.get("trust", {})


def bring_renewal_forward(session: Session) -> None:
    """As if the token had run most of its life (the dashboard's view of it only)."""
    session.expires_at = time.time() + 10


def test_an_active_users_session_outlives_its_first_token(cloud):
    user_id, name, password = new_user(cloud, "demo")
    with dashboard(cloud) as (client, store):
        started = time.time()
        session = log_in(client, store, name, password)
        first, first_expires = session.token, session.expires_at
        status, first_body = token_of(cloud, first)
        assert status == 200 and "OS-TRUST:trust" not in first_body
        roles = sorted(r["name"] for r in first_body["roles"])

        # The trust the login made, as Keystone shows it.
        status, trust = trust_of(cloud, session.trust_id)
        assert status == 200, trust
        dashboard_user = cloud.openstack("user", "show", DASHBOARD_USER, "-f", "json")
        assert trust["trustor_user_id"] == user_id
        assert trust["trustee_user_id"] == dashboard_user["id"]
        assert trust["impersonation"] is True
        assert trust["project_id"] == session.project_id
        assert sorted(r["name"] for r in trust["roles"]) == roles
        assert abs(session.trust_expires - (started + 3600)) < 30
        assert not session.trust_token

        # The user keeps working: past half the token's life a page renews it.
        time.sleep(max(0.0, first_expires - TOKEN_SECONDS / 2 - time.time()) + 1)
        assert client.get("/instances").status_code == 200
        assert session.token != first and session.trust_token
        assert session.expires_at > first_expires
        assert token_status_only(cloud, first) == 404  # the old token revoked

        # Past the first token's end the session goes on (renewed again as needed).
        time.sleep(max(0.0, first_expires - time.time()) + 1)
        page = client.get("/instances")
        assert page.status_code == 200 and name in page.text
        assert session.expires_at > time.time()

        # The token in the session is the trust's, acting as the user with her roles.
        status, body = token_of(cloud, session.token)
        assert status == 200, body
        assert body["user"]["id"] == user_id
        assert sorted(r["name"] for r in body["roles"]) == roles
        assert body["project"]["id"] == session.project_id
        assert body["OS-TRUST:trust"]["id"] == session.trust_id
        assert body["OS-TRUST:trust"]["impersonation"] is True


def token_status_only(cloud: CloudRunner, token: str) -> int:
    return token_of(cloud, token)[0]


def test_logout_deletes_the_trust_and_an_htmx_part_tells_the_page(cloud):
    _, name, password = new_user(cloud, "demo")
    with dashboard(cloud) as (client, store):
        session = log_in(client, store, name, password)
        trust_id = session.trust_id
        bring_renewal_forward(session)
        # A part of a page renews the session and tells the page its new expiry.
        part = client.get("/instances", headers={"HX-Request": "true"})
        assert part.status_code == 200 and session.trust_token
        assert f'"expires_at":{session.expires_at}' in part.headers["hx-trigger"]
        # "Stay logged in" renews from the trust too, no password asked.
        token = session.token
        answer = client.post(
            "/session/renew", data={"silent": "1"}, headers={"X-CSRF-Token": session.csrf}
        )
        assert answer.status_code == 200, answer.text
        assert session.token != token and answer.json()["expires_at"] == session.expires_at

        answer = client.post("/logout", data={"csrf_token": session.csrf})
        assert answer.headers["location"] == "/login?reason=logout"
        assert trust_of(cloud, trust_id)[0] == 404
        assert token_status_only(cloud, session.token) == 404
        assert store.sessions == {}

        # A session left until its token ended: its trust goes with it (deleted with a
        # token the trust itself gives, the session's own being dead).
        session = log_in(client, store, name, password)
        trust_id = session.trust_id
        with cloud.http(cloud.token()) as identity:
            revoked = identity.delete("/v3/auth/tokens", headers={"X-Subject-Token": session.token})
        assert revoked.status_code == 204
        session.expires_at = time.time() - 5
        assert client.get("/instances").headers["location"] == "/login?reason=expired"
        assert trust_of(cloud, trust_id)[0] == 404


def test_disabling_the_user_or_deleting_the_trust_ends_the_session_at_the_next_renewal(cloud):
    user_id, name, password = new_user(cloud, "demo")
    with dashboard(cloud) as (client, store):
        session = log_in(client, store, name, password)
        cloud.openstack("user", "set", "--disable", user_id)
        bring_renewal_forward(session)
        answer = client.get("/instances")
        assert answer.headers["location"] == "/login?reason=renewal"
        assert REASONS["renewal"] in html.unescape(client.get(answer.headers["location"]).text)
        assert store.sessions == {}
        cloud.openstack("user", "set", "--enable", user_id)

        session = log_in(client, store, name, password)
        with cloud.http(cloud.token()) as identity:
            gone = identity.delete(f"/v3/OS-TRUST/trusts/{session.trust_id}")
        assert gone.status_code == 204
        bring_renewal_forward(session)
        assert client.get("/").headers["location"] == "/login?reason=renewal"
        assert store.sessions == {}


def test_at_the_maximum_lifetime_the_password_renews_the_session(cloud):
    _, name, password = new_user(cloud, "demo")
    # The trust ends before the first token: nothing to renew from it.
    with dashboard(cloud, max_lifetime=TOKEN_SECONDS / 2) as (client, store):
        session = log_in(client, store, name, password)
        first, first_trust = session.token, session.trust_id
        assert first_trust and session.trust_expires < session.expires_at
        bring_renewal_forward(session)
        assert client.get("/instances").status_code == 200
        assert session.token == first  # not silently
        answer = client.post(
            "/session/renew", data={"silent": "1"}, headers={"X-CSRF-Token": session.csrf}
        )
        assert answer.status_code == 409 and answer.json()["needs_password"] is True
        # The page warns and its dialog asks for the password, as without trusts.
        page = client.get("/instances").text
        assert 'id="session-warning"' in page and 'id="renew-dialog"' in page
        answer = client.post(
            "/session/renew",
            data={"renew_password": password, "renew_passcode": ""},
            headers={"X-CSRF-Token": session.csrf},
        )
        assert answer.status_code == 200, answer.text
        assert session.token != first and not session.trust_token
        assert token_status_only(cloud, first) == 404
        # The password given again starts a new trust; the old one is gone.
        assert session.trust_id and session.trust_id != first_trust
        assert trust_of(cloud, first_trust)[0] == 404
        assert trust_of(cloud, session.trust_id)[0] == 200


def test_a_project_switch_moves_the_trust_and_after_a_renewal_asks_the_password(cloud):
    other = cloud.openstack("project", "create", f"tr-{uuid.uuid4().hex[:6]}", "-f", "json")
    user_id, name, password = new_user(cloud, "demo", other["id"])
    with dashboard(cloud) as (client, store):
        session = log_in(client, store, name, password)
        first_project, first_trust = session.project_id, session.trust_id
        target = other["id"] if first_project != other["id"] else session.projects[0]["id"]
        # With the login's token: re-scoped, a trust for the new project, the old deleted.
        form = {"csrf_token": session.csrf, "project_id": target}
        answer = client.post("/switch-project", data=form)
        assert answer.status_code == 303, alerts(answer.text)
        assert session.project_id == target and session.trust_id != first_trust
        assert trust_of(cloud, first_trust)[0] == 404
        status, trust = trust_of(cloud, session.trust_id)
        assert status == 200 and trust["project_id"] == target
        assert trust["trustor_user_id"] == user_id

        # A token made from the trust is not re-scoped: the password is asked.
        bring_renewal_forward(session)
        assert client.get("/").status_code == 200 and session.trust_token
        second_trust, renewed = session.trust_id, session.token
        form = {"csrf_token": session.csrf, "project_id": first_project}
        answer = client.post("/switch-project", data=form)
        assert answer.status_code == 200 and 'id="switch-form"' in answer.text
        assert session.project_id == target
        answer = client.post("/switch-project", data={**form, "switch_password": "not-it"})
        assert answer.status_code == 401 and "wrong" in " ".join(alerts(answer.text))
        answer = client.post("/switch-project", data={**form, "switch_password": password})
        assert answer.status_code == 303, alerts(answer.text)
        assert session.project_id == first_project and not session.trust_token
        assert trust_of(cloud, second_trust)[0] == 404
        assert token_status_only(cloud, renewed) == 404  # ended with its trust
        status, trust = trust_of(cloud, session.trust_id)
        assert status == 200 and trust["project_id"] == first_project


def test_a_totp_users_session_renews_from_its_trust_without_the_passcode(cloud):
    user_id, name, password = new_user(cloud, "demo")
    secret = base64.b32encode(os.urandom(20)).decode().rstrip("=")
    cloud.openstack("credential", "create", "--type", "totp", user_id, secret)
    cloud.openstack("user", "set", "--multi-factor-auth-rule", "password,totp", user_id)
    with dashboard(cloud) as (client, store):
        csrf = CSRF.search(client.get("/login").text)[1]
        form = {"csrf_token": csrf, "domain": "Default", "username": name, "password": password}
        assert 'action="/login/passcode"' in client.post("/login", data=form).text
        answer = client.post(
            "/login/passcode", data={"csrf_token": csrf, "passcode": totp.passcode(secret)}
        )
        assert answer.status_code == 303, alerts(answer.text)
        [session] = [r for r in store.sessions.values() if isinstance(r, Session)]
        assert session.trust_id
        # The user's multi-factor rules are hers; the trustee's renewal needs neither.
        bring_renewal_forward(session)
        assert client.get("/instances").status_code == 200 and session.trust_token
        status, body = token_of(cloud, session.token)
        assert status == 200 and body["user"]["id"] == user_id
