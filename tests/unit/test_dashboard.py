"""The dashboard's pieces that need no cloud: error messages, session cookies, fields."""

from __future__ import annotations

import time

from cumulo.dashboard.apis import ApiFailure, error_message
from cumulo.dashboard.pages.compute import _field_of
from cumulo.dashboard.sessions import Session, SessionStore, token_expiry


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


def test_a_session_cookie_is_signed_and_ends():
    store = SessionStore()
    cookie = store.create(_session())
    assert store.find(cookie)[1].user_name == "demo"
    sid = cookie.rsplit(".", 1)[0]
    assert store.find(f"{sid}.{'0' * 64}") is None  # a forged signature
    assert SessionStore().find(cookie) is None  # another process's secret
    store.end(cookie)
    assert store.find(cookie) is None


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
