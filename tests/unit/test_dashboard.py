"""The dashboard's pieces that need no cloud: error messages, session cookies, fields."""

from __future__ import annotations

import time

from sqlalchemy import func, select

from cumulo.common.db import Database
from cumulo.dashboard.apis import ApiFailure, error_message
from cumulo.dashboard.models import DashboardSession
from cumulo.dashboard.pages.compute import _field_of
from cumulo.dashboard.sessions import DatabaseSessionStore, Session, SessionStore, token_expiry


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
    token in the clear; another secret finds nothing; expired rows go."""
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
        raw = await db.run_read(lambda s: s.scalar(select(DashboardSession.data)))
        assert b"keystone-token" not in raw and b"PRIVATE KEY" not in raw
        assert await DatabaseSessionStore(db, b"t" * 32).find(cookie) is None
        await first.end(cookie)
        assert await second.find(cookie) is None
        old = _session()
        old.expires_at = time.time() - 1
        await first.create(old)
        await first.create(_session())  # a new session clears the expired rows
        assert await db.run_read(lambda s: s.scalar(select(func.count(DashboardSession.id)))) == 1
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
