"""The dashboard's login and session lifetime against a real cloud: a TOTP user gives the
passcode alone after the password (Keystone's auth receipt kept on the server), and a
session is renewed in place with the password (and passcode) before or after its token
expires: a new token, the old one revoked, the same CSRF token, so a form filled in
before the renewal is still accepted.

The dashboard runs in this process (its session store at hand, to move a token's expiry
forward instead of waiting for it); the cloud it talks to over HTTP is a real one."""

from __future__ import annotations

import base64
import os
import re
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
from starlette.testclient import TestClient

from cumulo.dashboard.app import create_dashboard_app
from cumulo.dashboard.catalog import CatalogApis
from cumulo.dashboard.pages.auth import REASONS, WRONG_PASSCODE
from cumulo.dashboard.sessions import PENDING_COOKIE, PendingLogin, Session, SessionStore
from cumulo.identity import totp
from tests.cloudrunner import CloudRunner, running_cloud
from tests.functional.dashboard_helpers import CSRF, alerts

# Long enough for a login's two steps on a slow machine, short enough to wait out.
RECEIPT_SECONDS = 6


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CloudRunner]:
    def configure(config) -> None:
        config.identity.receipt_expiration = RECEIPT_SECONDS

    state = tmp_path_factory.mktemp("dashboard-session") / "state"
    with running_cloud(state, configure, timeout=60) as runner:
        yield runner


@pytest.fixture(scope="module")
def mfa_user(cloud: CloudRunner) -> tuple[str, str, str]:
    """A member of the demo project whose rules want password and TOTP: (name, password,
    TOTP secret)."""
    name, password = f"mfa-{uuid.uuid4().hex[:6]}", "mfa-user-pw-1"
    user = cloud.openstack("user", "create", name, "--password", password, "-f", "json")
    cloud.openstack("role", "add", "--user", user["id"], "--project", "demo", "member")
    secret = base64.b32encode(os.urandom(20)).decode().rstrip("=")
    cloud.openstack("credential", "create", "--type", "totp", user["id"], secret)
    cloud.openstack("user", "set", "--multi-factor-auth-rule", "password,totp", user["id"])
    return name, password, secret


@contextmanager
def dashboard(cloud: CloudRunner) -> Iterator[tuple[TestClient, SessionStore]]:
    store = SessionStore()
    app = create_dashboard_app(CatalogApis(cloud.auth_url), store)
    with TestClient(app, follow_redirects=False) as client:
        yield client, store


def records(store: SessionStore, kind: type) -> list:
    return [r for r in store.sessions.values() if isinstance(r, kind)]


def password_step(client: TestClient, user: str, password: str) -> tuple[str, httpx.Response]:
    csrf = CSRF.search(client.get("/login").text)[1]
    form = {"csrf_token": csrf, "domain": "Default", "username": user, "password": password}
    return csrf, client.post("/login", data=form)


def wrong(passcode: str) -> str:
    return str((int(passcode) + 1) % 1_000_000).zfill(6)


def token_status(cloud: CloudRunner, token: str) -> int:
    with cloud.http(cloud.token()) as identity:
        return identity.get("/v3/auth/tokens", headers={"X-Subject-Token": token}).status_code


def renew(client: TestClient, session: Session, password: str = "", passcode: str = ""):
    return client.post(
        "/session/renew",
        data={"renew_password": password, "renew_passcode": passcode},
        headers={"X-CSRF-Token": session.csrf},
    )


def test_a_totp_user_gives_the_passcode_alone_after_the_password(cloud, mfa_user):
    name, password, secret = mfa_user
    with dashboard(cloud) as (client, store):
        csrf, answer = password_step(client, name, password)
        # Only the passcode is asked; the receipt stays on the server.
        assert answer.status_code == 200, alerts(answer.text)
        assert 'action="/login/passcode"' in answer.text
        assert 'name="password"' not in answer.text
        [pending] = records(store, PendingLogin)
        assert pending.receipt and pending.user_name == name
        assert pending.receipt not in client.cookies[PENDING_COOKIE]

        # A wrong passcode asks again, the receipt still good.
        answer = client.post(
            "/login/passcode", data={"csrf_token": csrf, "passcode": wrong(totp.passcode(secret))}
        )
        assert answer.status_code == 401
        assert alerts(answer.text) == [WRONG_PASSCODE]
        assert 'action="/login/passcode"' in answer.text

        answer = client.post(
            "/login/passcode", data={"csrf_token": csrf, "passcode": totp.passcode(secret)}
        )
        assert answer.status_code == 303 and answer.headers["location"] == "/"
        assert name in client.get("/").text
        [session] = records(store, Session)
        assert records(store, PendingLogin) == []
        with cloud.http(cloud.token()) as identity:
            shown = identity.get("/v3/auth/tokens", headers={"X-Subject-Token": session.token})
        assert {"password", "totp"} <= set(shown.json()["token"]["methods"])

        # Renewing this session asks for the password, then (with Keystone's receipt, kept
        # in the session) for the passcode alone.
        old = session.token
        answer = renew(client, session, password=password)
        assert answer.status_code == 200 and answer.json()["needs_passcode"] is True
        assert session.token == old and session.renew_receipt
        assert renew(client, session, passcode=wrong(totp.passcode(secret))).status_code == 401
        answer = renew(client, session, passcode=totp.passcode(secret))
        assert answer.status_code == 200, answer.text
        assert session.token != old and not session.renew_receipt
        assert token_status(cloud, old) == 404


def test_the_passcode_step_ends_with_its_receipt_and_the_login_page_says_why(cloud, mfa_user):
    name, password, secret = mfa_user
    with dashboard(cloud) as (client, store):
        # The receipt's expiry as Keystone gave it: the dashboard sends nothing after it.
        csrf, _ = password_step(client, name, password)
        [pending] = records(store, PendingLogin)
        pending.expires_at = time.time() - 1
        form = {"csrf_token": csrf, "passcode": totp.passcode(secret)}
        answer = client.post("/login/passcode", data=form)
        assert answer.headers["location"] == "/login?reason=receipt"
        assert REASONS["receipt"] in client.get(answer.headers["location"]).text
        assert records(store, PendingLogin) == []

        # Keystone itself no longer knows the receipt: back to the password too.
        csrf, _ = password_step(client, name, password)
        [pending] = records(store, PendingLogin)
        time.sleep(RECEIPT_SECONDS + 0.5)
        pending.expires_at = time.time() + 60
        answer = client.post("/login/passcode", data=form | {"csrf_token": csrf})
        assert answer.headers["location"] == "/login?reason=receipt"
        assert records(store, Session) == []


def test_a_session_is_renewed_in_place_and_a_wizard_filled_before_is_accepted(cloud):
    sdk = cloud.sdk("cumulo-demo")
    image = sdk.image.create_image(
        name="renew-img", data=b"\0" * 65536, disk_format="raw", container_format="bare"
    )
    network = sdk.network.find_network("private")
    password = cloud.config.identity.demo_password
    with dashboard(cloud) as (client, store):
        _, answer = password_step(client, "demo", password)
        assert answer.status_code == 303
        [session] = records(store, Session)
        wizard = client.get("/instances/launch").text
        csrf = CSRF.search(wizard)[1]

        # Two minutes left: the page says so.
        session.expires_at = time.time() + 120
        page = client.get("/instances/launch").text
        assert re.search(r'id="session-warning"\s*>Session ends in <span[^>]*>[12]</span>', page)

        # A wrong password renews nothing.
        old = session.token
        answer = renew(client, session, password="not-it")
        assert answer.status_code == 401 and "wrong" in answer.json()["error"]
        assert session.token == old

        answer = renew(client, session, password=password)
        assert answer.status_code == 200, answer.text
        assert session.token != old and session.csrf == csrf
        assert answer.json()["expires_at"] == session.expires_at > time.time() + 600
        assert token_status(cloud, old) == 404 and token_status(cloud, session.token) == 200

        # The token ran out while the page was open: a part of the page hears it (the
        # session is kept), the page renews it, and the wizard filled in before the
        # renewal is submitted with the CSRF token it was rendered with.
        session.expires_at = time.time() - 5
        part = client.get("/instances", headers={"HX-Request": "true"})
        assert part.status_code == 401 and part.headers["hx-trigger"] == "session-expired"
        assert records(store, Session) == [session]
        assert renew(client, session, password=password).status_code == 200
        answer = client.post(
            "/instances/launch",
            data={
                "csrf_token": csrf,
                "name": "after-renewal",
                "source": "image",
                "image": image.id,
                "flavor": "1",
                "count": "1",
                "networks": network.id,
            },
        )
        assert answer.status_code == 303, alerts(answer.text)
        server_id = answer.headers["location"].rsplit("/", 1)[1]
        assert sdk.compute.get_server(server_id).name == "after-renewal"
        sdk.compute.delete_server(server_id)

        # Without a renewal, leaving the page ends the session and says why.
        session.expires_at = time.time() - 5
        answer = client.get("/instances")
        assert answer.headers["location"] == "/login?reason=expired"
        assert records(store, Session) == []
        assert renew(client, session, password=password).json()["login"]
    sdk.image.delete_image(image.id)
    sdk.close()


def test_the_console_frame_keeps_an_expired_session_for_the_server_page_to_renew(cloud):
    """The server's console is a page of its own, framed in the server page: what the
    other pages answer with a page of the dashboard (the API's 404, the login page) it
    says inside the frame; a session found expired there is kept, for the page around
    the frame to renew in place. No other site may frame it."""
    with dashboard(cloud) as (client, store):
        password_step(client, "demo", cloud.config.identity.demo_password)
        [session] = records(store, Session)
        frame = f"/instances/{uuid.uuid4()}/console"

        # No such server (or another project's): the API's 404, without the dashboard
        # (its header, navigation and htmx) inside the frame.
        answer = client.get(frame)
        assert answer.status_code == 404 and "could not be found" in alerts(answer.text)[0]
        assert "Request id: req-" in answer.text and "htmx" not in answer.text
        assert answer.headers["x-frame-options"] == "SAMEORIGIN"
        assert answer.headers["content-security-policy"] == "frame-ancestors 'self'"

        session.expires_at = time.time() - 5
        answer = client.get(frame)
        assert answer.status_code == 401 and "session has expired" in alerts(answer.text)[0]
        assert f'<a href="{frame}">connect again</a>' in answer.text
        assert records(store, Session) == [session]
        assert renew(client, session, password=cloud.config.identity.demo_password).is_success

        # The session gone: a link takes the whole window (not the frame) to log in.
        client.cookies.clear()
        answer = client.get(frame)
        assert answer.status_code == 401 and "session has ended" in alerts(answer.text)[0]
        assert '<a href="/login?reason=login" target="_top">' in answer.text
