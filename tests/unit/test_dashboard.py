"""The dashboard's pieces that need no cloud: error messages, session cookies, fields."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import func, select
from starlette.testclient import TestClient

from cumulo.common.db import Database
from cumulo.dashboard.apis import ApiFailure, Apis, error_message
from cumulo.dashboard.app import create_dashboard_app
from cumulo.dashboard.models import DashboardSession
from cumulo.dashboard.pages.admin import _user_fields
from cumulo.dashboard.pages.compute import _field_of, rebuild_body
from cumulo.dashboard.pages.network import subnet_changes
from cumulo.dashboard.sessions import (
    EXPIRED_KEPT,
    DatabaseSessionStore,
    PendingLogin,
    Session,
    SessionStore,
    token_expiry,
)


def test_error_messages_are_found_in_every_service_s_dialect():
    assert error_message(b'{"badRequest": {"message": "Missing imageRef", "code": 400}}', 400) == (
        "Missing imageRef"
    )
    assert (
        error_message(b'{"NeutronError": {"type": "X", "message": "In use", "detail": ""}}', 409)
        == "In use"
    )
    assert (
        error_message(
            b'{"error": {"code": 401, "message": "Bad token", "title": "Unauthorized"}}', 401
        )
        == "Bad token"
    )
    assert error_message(b"<html>404 Not Found</html>", 404) == "<html>404 Not Found</html>"
    assert error_message(b"", 502) == "The request failed (502)."


def test_explanations_add_the_usual_fix():
    quota = ApiFailure("compute", 403, "Quota exceeded for instances.", "req-1")
    assert "ask an admin" in quota.explanation
    assert ApiFailure("compute", 400, "Flavor too small.").explanation == "Flavor too small."


def _session() -> Session:
    return Session("tok", "u", "demo", "Default", "p", "demo", ["member"], time.time() + 60)


async def test_a_session_cookie_is_signed_and_ends():
    store = SessionStore()
    cookie = await store.create(_session())
    assert (await store.find(cookie))[1].user_name == "demo"
    sid = cookie.rsplit(".", 1)[0]
    assert await store.find(f"{sid}.{'0' * 64}") is None  # a forged signature
    assert await SessionStore().find(cookie) is None  # another process's secret
    await store.end(cookie)
    assert await store.find(cookie) is None


async def test_sessions_in_the_database_are_shared_by_processes_and_sealed(tmp_path):
    """Two stores on one database with the same secret (two `cumulo api` workers): a
    session made by one is found, changed and ended through the other; the row holds no
    token in the clear; another secret finds nothing; rows expired for long go (an expired
    session is kept a while: its page may renew it)."""
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'dashboard.db'}", "dashboard")
    await db.migrate()
    try:
        first, second = (DatabaseSessionStore(db, b"s" * 32) for _ in range(2))
        session = _session()
        session.token = "gAAAA-the-keystone-token"
        session.private_keys["k1"] = "-----BEGIN OPENSSH PRIVATE KEY-----"
        cookie = await first.create(session)
        sid, found = await second.find(cookie)
        assert found.token == session.token and found.private_keys == session.private_keys
        found.views["v1"] = {"status": "<td>ACTIVE</td>"}
        await second.save(sid, found)
        assert (await first.find(cookie))[1].views == {"v1": {"status": "<td>ACTIVE</td>"}}
        # A page read the session before its renewal and saves after it: the renewed
        # token stays.
        _, stale = await first.find(cookie)
        _, renewed = await second.find(cookie)
        renewed.token, renewed.expires_at = "gAAAA-renewed", renewed.expires_at + 3600
        await second.save(sid, renewed)
        stale.views["v2"] = {}
        await first.save(sid, stale)
        assert (await first.find(cookie))[1].token == "gAAAA-renewed"
        raw = await db.run_read(lambda s: s.scalar(select(DashboardSession.data)))
        assert b"keystone-token" not in raw and b"PRIVATE KEY" not in raw
        assert await DatabaseSessionStore(db, b"t" * 32).find(cookie) is None
        await first.end(cookie)
        assert await second.find(cookie) is None
        old, recent = _session(), _session()
        old.expires_at = time.time() - EXPIRED_KEPT - 1
        recent.expires_at = time.time() - 1
        await first.create(old)
        recent_cookie = await first.create(recent)
        await first.create(_session())  # a new session clears the rows expired for long
        assert await db.run_read(lambda s: s.scalar(select(func.count(DashboardSession.id)))) == 2
        assert (await second.find(recent_cookie))[1].expired
    finally:
        await db.dispose()


async def test_a_pending_login_is_sealed_and_never_taken_for_a_session(tmp_path):
    """The auth receipt of a login waiting for its passcode: in the database encrypted,
    found only as a pending login."""
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'dashboard.db'}", "dashboard")
    await db.migrate()
    try:
        store = DatabaseSessionStore(db, b"s" * 32)
        pending = PendingLogin("gAAAA-the-receipt", "uid", "dora", "Default", time.time() + 60)
        cookie = await store.create(pending)
        raw = await db.run_read(lambda s: s.scalar(select(DashboardSession.data)))
        assert b"the-receipt" not in raw
        assert await DatabaseSessionStore(db, b"s" * 32).find(cookie) is None
        sid, found = await DatabaseSessionStore(db, b"s" * 32).find_pending(cookie)
        assert found == pending and not found.expired
        session_cookie = await store.create(_session())
        assert await store.find_pending(session_cookie) is None
    finally:
        await db.dispose()


def test_expiry_comes_from_the_token():
    assert token_expiry("2030-01-01T00:00:00.000000Z") == 1893456000.0
    expired = _session()
    expired.expires_at = time.time() - 1
    assert expired.expired and not _session().expired


def test_api_messages_go_next_to_their_field():
    assert _field_of("Quota exceeded for instances: Requested 500") == "_form"
    assert _field_of("Flavor's disk is too small for requested image.") == "flavor"
    assert _field_of("Image 123 could not be found.") == "image"
    assert _field_of("Invalid key_name provided.") == "key_name"


def test_a_user_form_sends_a_password_only_when_typed():
    form = {"name": "ann", "email": "a@example.org", "enabled": "on", "default_project_id": ""}
    assert _user_fields(form) == {
        "name": "ann",
        "email": "a@example.org",
        "enabled": True,
        "default_project_id": None,  # "(none)": the default project removed
    }
    reset = _user_fields({**form, "password": "new-pw", "default_project_id": "p1"})
    assert reset["password"] == "new-pw" and reset["default_project_id"] == "p1"
    assert _user_fields({"name": "ann"})["enabled"] is False  # the box left unticked


def test_the_subnet_form_becomes_one_neutron_update():
    changes = subnet_changes(
        {
            "name": "a",
            "current_gateway_ip": "10.0.0.1",
            "gateway_ip": "10.0.0.1",
            "allocation_pools": "10.0.0.10 - 10.0.0.20\r\n\r\n10.0.0.30-10.0.0.40",
            "dns_nameservers": " 192.0.2.53 \n",
            "host_routes": "192.168.0.0/24 10.0.0.254\n172.16.0.0/16,10.0.0.253",
        }
    )
    assert changes == {
        "name": "a",
        "enable_dhcp": False,  # the box left unticked
        "dns_nameservers": ["192.0.2.53"],
        "host_routes": [
            {"destination": "192.168.0.0/24", "nexthop": "10.0.0.254"},
            {"destination": "172.16.0.0/16", "nexthop": "10.0.0.253"},
        ],
        "allocation_pools": [
            {"start": "10.0.0.10", "end": "10.0.0.20"},
            {"start": "10.0.0.30", "end": "10.0.0.40"},
        ],
    }  # the gateway unchanged: not sent
    assert (
        subnet_changes({"current_gateway_ip": "10.0.0.1", "no_gateway": "1"})["gateway_ip"] is None
    )
    assert subnet_changes({"gateway_ip": "10.0.0.9"})["gateway_ip"] == "10.0.0.9"
    assert "allocation_pools" not in subnet_changes({})  # none given: the subnet's kept
    for bad in ({"allocation_pools": "10.0.0.10"}, {"host_routes": "10.1.0.0/16"}):
        with pytest.raises(ApiFailure) as refused:
            subnet_changes(bad)
        assert refused.value.status == 400


def test_the_rebuild_form_becomes_nova_s_rebuild_action():
    body = rebuild_body(
        {"image": "i1", "name": " web ", "metadata": "a=1\n\n b = x=y \n", "key": "keep"}
    )
    assert body == {
        "rebuild": {"imageRef": "i1", "name": "web", "metadata": {"a": "1", "b": "x=y"}}
    }
    assert rebuild_body({"image": "i1", "key": "none"})["rebuild"]["key_name"] is None
    assert rebuild_body({"image": "i1", "key": "key:k 1"})["rebuild"]["key_name"] == "k 1"
    assert rebuild_body({"image": "i1", "admin_pass": "pw"})["rebuild"]["adminPass"] == "pw"
    with pytest.raises(ApiFailure) as refused:
        rebuild_body({"image": "i1", "metadata": "no-equals"})
    assert refused.value.status == 400


def test_no_other_site_frames_a_page_of_the_dashboard():
    with TestClient(create_dashboard_app(Apis({}))) as client:
        for path in ("/login", "/static/app.css", "/instances"):
            answer = client.get(path, follow_redirects=False)
            assert answer.headers["x-frame-options"] == "SAMEORIGIN", path
            assert answer.headers["content-security-policy"] == "frame-ancestors 'self'", path
