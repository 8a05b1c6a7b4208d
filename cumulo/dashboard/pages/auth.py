"""Log in (password, TOTP where the user has it), switch project or domain, log out."""

from __future__ import annotations

import hmac
import secrets
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cumulo.dashboard.apis import Api, ApiFailure, optional
from cumulo.dashboard.catalog import CatalogApis
from cumulo.dashboard.sessions import COOKIE, Session, token_expiry
from cumulo.dashboard.web import apis_of, form_of, page, redirect, render, session_of, store_of

LOGIN_CSRF = "cumulo_login_csrf"
REASONS = {
    "expired": "Your session ended: its token expired. Log in again.",
    "revoked": "Your session ended: the API refused its token (expired or revoked). Log in again.",
    "logout": "You logged out.",
    "login": "",
}


def _identity(request: Request, token: str = "") -> Api:
    return Api(request.app.state.apis.clients["identity"], token)


async def _token(request: Request, auth: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    # A login has no token yet: the client sends an empty X-Auth-Token, which Keystone
    # ignores on POST /v3/auth/tokens.
    response = await _identity(request).call("POST", "/v3/auth/tokens", json={"auth": auth})
    return response.headers["x-subject-token"], response.json()["token"]


async def _scoped_session(
    request: Request, unscoped: str, user: dict[str, Any], project_id: str | None
) -> Session:
    identity = _identity(request, unscoped)
    projects = (await identity.get("/v3/auth/projects"))["projects"]
    projects.sort(key=lambda p: p["name"])
    domains = (await optional(identity.get("/v3/auth/domains"), {"domains": []}))["domains"]
    domains.sort(key=lambda d: d["name"])
    if not projects:
        raise ApiFailure("identity", 401, "This user has no role on any project.")
    chosen = next((p for p in projects if p["id"] == project_id), projects[0])
    token, body = await _token(
        request,
        {
            "identity": {"methods": ["token"], "token": {"id": unscoped}},
            "scope": {"project": {"id": chosen["id"]}},
        },
    )
    apis = request.app.state.apis
    if isinstance(apis, CatalogApis):  # served alone: the APIs are where the catalog says
        apis.learn_catalog(body.get("catalog", []))
    return Session(
        token=token,
        user_id=user["id"],
        user_name=user["name"],
        domain_name=user.get("domain", {}).get("name", ""),
        project_id=chosen["id"],
        project_name=chosen["name"],
        roles=[r["name"] for r in body.get("roles", [])],
        expires_at=token_expiry(body["expires_at"]),
        projects=[{"id": p["id"], "name": p["name"]} for p in projects],
        domains=[{"id": d["id"], "name": d["name"]} for d in domains],
    )


async def login_form(request: Request) -> Response:
    reason = REASONS.get(request.query_params.get("reason", ""), "")
    csrf = secrets.token_urlsafe(24)
    response = render(request, "login.html", reason=reason, csrf=csrf, form={}, error=None)
    response.set_cookie(LOGIN_CSRF, csrf, httponly=True, samesite="strict")
    return response


async def login(request: Request) -> Response:
    form = await form_of(request)
    expected = request.cookies.get(LOGIN_CSRF, "")
    if not expected or not hmac.compare_digest(form.get("csrf_token", ""), expected):
        return render(
            request,
            "login.html",
            status=403,
            reason="",
            csrf=expected,
            form=form,
            error="The form's CSRF token is missing or wrong: reload the page.",
        )
    user = {
        "name": form.get("username", ""),
        "domain": {"name": form.get("domain") or "Default"},
    }
    identity: dict[str, Any] = {
        "methods": ["password"],
        "password": {"user": {**user, "password": form.get("password", "")}},
    }
    if form.get("passcode"):
        identity["methods"].append("totp")
        identity["totp"] = {"user": {**user, "passcode": form["passcode"]}}
    try:
        unscoped, body = await _token(request, {"identity": identity})
        session = await _scoped_session(request, unscoped, body["user"], None)
    except ApiFailure as exc:
        # Keystone's auth receipt: the password was right, the rules want a passcode too.
        needs_totp = exc.status == 401 and "openstack-auth-receipt" in exc.headers
        if needs_totp:
            message = "This account also needs the passcode from its authenticator app."
        elif exc.status == 401:
            message = "The user name, password or passcode is wrong."
        else:
            message = exc.explanation
        return render(
            request,
            "login.html",
            status=401,
            reason="",
            csrf=expected,
            form=form,
            error=message,
            needs_totp=needs_totp,
            request_id=exc.request_id,
        )
    cookie = await store_of(request).create(session)
    response = redirect(request, "/")
    secure = request.url.scheme == "https"
    response.set_cookie(COOKIE, cookie, httponly=True, samesite="lax", secure=secure)
    response.delete_cookie(LOGIN_CSRF)
    return response


@page
async def logout(request: Request) -> Response:
    session = session_of(request)
    try:
        await apis_of(request).identity.call(
            "DELETE", "/v3/auth/tokens", headers={"X-Subject-Token": session.token}
        )
    except ApiFailure:
        pass  # an expired token is gone anyway
    await store_of(request).end(request.cookies.get(COOKIE))
    request.state.session_ended = True
    response = redirect(request, "/login?reason=logout")
    response.delete_cookie(COOKIE)
    return response


@page
async def switch_project(request: Request) -> Response:
    """Re-scope the session's token to one of the user's projects, or (`domain:ID`) to
    one of their domains."""
    session = session_of(request)
    chosen = str((await form_of(request)).get("project_id", ""))
    kind, _, domain_id = chosen.partition(":")
    if kind == "domain" and domain_id in {d["id"] for d in session.domains}:
        scope: dict[str, Any] = {"domain": {"id": domain_id}}
    elif chosen in {p["id"] for p in session.projects}:
        scope = {"project": {"id": chosen}}
    else:
        raise ApiFailure("identity", 404, f"Could not find project: {chosen}.")
    token, body = await _token(
        request,
        {"identity": {"methods": ["token"], "token": {"id": session.token}}, "scope": scope},
    )
    session.token = token
    project, domain = body.get("project") or {}, body.get("domain") or {}
    session.project_id, session.project_name = project.get("id", ""), project.get("name", "")
    session.scope_domain_id = domain.get("id", "")
    session.scope_domain_name = domain.get("name", "")
    session.roles = [r["name"] for r in body.get("roles", [])]
    session.expires_at = token_expiry(body["expires_at"])
    return redirect(request, "/")


routes = [
    Route("/login", login_form, methods=["GET"]),
    Route("/login", login, methods=["POST"]),
    Route("/logout", logout, methods=["POST"]),
    Route("/switch-project", switch_project, methods=["POST"]),
]
