"""Log in (password, then the passcode where the user's multi-factor rules want one),
renew the session in place, switch project or domain, log out.

Keystone caps a token made from a token at its parent's expiry and the dashboard keeps
no password. A project-scoped session has a trust instead (renewal.py): while its user
is active its token is renewed from the trust, silently, up to `[dashboard]
session_max_lifetime`. Beyond that, and for domain-scoped sessions, the page asks for
the password (and passcode) in a dialog before the token ends and the session gets a new
token without the page being left, so a half-filled form keeps what was typed."""

from __future__ import annotations

import hmac
import json
import secrets
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from cumulo.dashboard.apis import Api, ApiFailure, optional
from cumulo.dashboard.catalog import CatalogApis
from cumulo.dashboard.renewal import (
    MIN_GAIN,
    RenewalRefused,
    drop_trust,
    renew_from_trust,
    set_token,
    start_trust,
    trustee_of,
)
from cumulo.dashboard.sessions import (
    COOKIE,
    EXPIRED_KEPT,
    PENDING_COOKIE,
    PendingLogin,
    Session,
    token_expiry,
)
from cumulo.dashboard.web import (
    apis_of,
    end_session,
    form_of,
    page,
    redirect,
    render,
    session_of,
    store_of,
)

LOGIN_CSRF = "cumulo_login_csrf"
REASONS = {
    "expired": "Your session ended: its token expired. Log in again.",
    "revoked": "Your session ended: the API refused its token (expired or revoked). Log in again.",
    "logout": "You logged out.",
    "renewal": "Your session ended: Identity refused to renew it (the user was disabled or "
    "deleted, lost their role on the project, or the session's trust was deleted). "
    "Log in again.",
    "receipt": "The time to give the passcode ran out: log in again with the password.",
    "login": "",
}
RECEIPT_HEADER = "Openstack-Auth-Receipt"
WRONG_PASSCODE = "The passcode is wrong: try the one your authenticator app shows now."


def _identity(request: Request, token: str = "") -> Api:
    return Api(request.app.state.apis.clients["identity"], token)


async def _token(
    request: Request, auth: dict[str, Any], receipt: str = ""
) -> tuple[str, dict[str, Any]]:
    # A login has no token yet: the client sends an empty X-Auth-Token, which Keystone
    # ignores on POST /v3/auth/tokens.
    headers = {RECEIPT_HEADER: receipt} if receipt else {}
    response = await _identity(request).call(
        "POST", "/v3/auth/tokens", json={"auth": auth}, headers=headers
    )
    return response.headers["x-subject-token"], response.json()["token"]


def _receipt_of(exc: ApiFailure) -> tuple[str, dict[str, Any]] | None:
    """Keystone's auth receipt, when a 401 carries one: the methods given were right,
    the user's rules want more (api-ref: Authenticating with a Receipt)."""
    receipt = exc.headers.get(RECEIPT_HEADER.lower())
    if exc.status != 401 or not receipt:
        return None
    try:
        body = json.loads(exc.body).get("receipt", {})
    except ValueError:
        body = {}
    return receipt, body if isinstance(body, dict) else {}


def _receipt_expiry(body: dict[str, Any]) -> float:
    # Keystone's default receipt lifetime (5 minutes) when the body does not say.
    expires_at = body.get("expires_at")
    return token_expiry(expires_at) if isinstance(expires_at, str) else time.time() + 300


def _passcode_only(user: dict[str, Any], passcode: str) -> dict[str, Any]:
    """The second step, as keystoneauth sends it: the totp method alone, with the receipt."""
    return {"methods": ["totp"], "totp": {"user": {**user, "passcode": passcode}}}


def _receipt_gone(exc: ApiFailure) -> bool:
    """Keystone no longer knows the receipt (expired, or its keys rotated away)."""
    return exc.status == 401 and "receipt" in exc.message.lower()


async def _rescope(
    request: Request, token: str, scope: dict[str, Any]
) -> tuple[str, dict[str, Any]]:
    return await _token(
        request, {"identity": {"methods": ["token"], "token": {"id": token}}, "scope": scope}
    )


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
    token, body = await _rescope(request, unscoped, {"project": {"id": chosen["id"]}})
    apis = request.app.state.apis
    if isinstance(apis, CatalogApis):  # served alone: the APIs are where the catalog says
        apis.learn_catalog(body.get("catalog", []))
    session = Session(
        token=token,
        user_id=user["id"],
        user_name=user["name"],
        domain_name=user.get("domain", {}).get("name", ""),
        project_id=chosen["id"],
        project_name=chosen["name"],
        roles=[],
        expires_at=0.0,
        projects=[{"id": p["id"], "name": p["name"]} for p in projects],
        domains=[{"id": d["id"], "name": d["name"]} for d in domains],
    )
    set_token(session, token, body)
    await start_trust(request, session, body)  # silent renewal from here on
    return session


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
        if (receipt := _receipt_of(exc)) is not None:
            # The password was right; the user's rules want a passcode too. The receipt
            # stands for the password: only the passcode is asked now.
            pending = PendingLogin(
                receipt=receipt[0],
                user_id=receipt[1].get("user", {}).get("id", ""),
                user_name=user["name"],
                domain_name=user["domain"]["name"],
                expires_at=_receipt_expiry(receipt[1]),
            )
            return await _passcode_step(request, expected, pending)
        message = (
            "The user name, password or passcode is wrong."
            if exc.status == 401
            else exc.explanation
        )
        return render(
            request,
            "login.html",
            status=401,
            reason="",
            csrf=expected,
            form=form,
            error=message,
            request_id=exc.request_id,
        )
    return await _logged_in(request, session)


async def _logged_in(request: Request, session: Session) -> Response:
    cookie = await store_of(request).create(session)
    response = redirect(request, "/")
    secure = request.url.scheme == "https"
    response.set_cookie(COOKIE, cookie, httponly=True, samesite="lax", secure=secure)
    response.delete_cookie(LOGIN_CSRF)
    response.delete_cookie(PENDING_COOKIE)
    return response


async def _passcode_step(request: Request, csrf: str, pending: PendingLogin) -> Response:
    """The passcode form, the receipt kept on the server under a cookie of its own."""
    cookie = await store_of(request).create(pending)
    response = _passcode_form(request, csrf, pending, error=None)
    secure = request.url.scheme == "https"
    response.set_cookie(PENDING_COOKIE, cookie, httponly=True, samesite="strict", secure=secure)
    return response


def _passcode_form(
    request: Request, csrf: str, pending: PendingLogin, error: str | None, status: int = 200
) -> Response:
    return render(
        request,
        "login.html",
        status=status,
        reason="",
        csrf=csrf,
        form={},
        error=error,
        pending=pending,
        minutes_left=max(1, round((pending.expires_at - time.time()) / 60)),
    )


async def login_passcode(request: Request) -> Response:
    """POST /login/passcode: the second step, the receipt sent back with the passcode."""
    form = await form_of(request)
    expected = request.cookies.get(LOGIN_CSRF, "")
    store = store_of(request)
    found = await store.find_pending(request.cookies.get(PENDING_COOKIE))
    csrf_ok = bool(expected) and hmac.compare_digest(form.get("csrf_token", ""), expected)
    if found is None or not csrf_ok:
        return _back_to_password(request, "login")
    sid, pending = found
    if pending.expired:
        await store.end(request.cookies.get(PENDING_COOKIE))
        return _back_to_password(request, "receipt")
    user: dict[str, Any] = (
        {"id": pending.user_id}
        if pending.user_id
        else {"name": pending.user_name, "domain": {"name": pending.domain_name}}
    )
    passcode = str(form.get("passcode", "")).strip()
    try:
        unscoped, body = await _token(
            request, {"identity": _passcode_only(user, passcode)}, pending.receipt
        )
        session = await _scoped_session(request, unscoped, body["user"], None)
    except ApiFailure as exc:
        if _receipt_gone(exc):
            await store.end(request.cookies.get(PENDING_COOKIE))
            return _back_to_password(request, "receipt")
        if (receipt := _receipt_of(exc)) is not None:  # rules wanting yet another method
            pending.receipt, pending.expires_at = receipt[0], _receipt_expiry(receipt[1])
            await store.save(sid, pending)
        error = WRONG_PASSCODE if exc.status == 401 else exc.explanation
        return _passcode_form(request, expected, pending, error, status=exc.status)
    await store.end(request.cookies.get(PENDING_COOKIE))
    return await _logged_in(request, session)


def _back_to_password(request: Request, reason: str) -> Response:
    response = redirect(request, f"/login?reason={reason}")
    response.delete_cookie(PENDING_COOKIE)
    return response


async def renew_session(request: Request) -> Response:
    """POST /session/renew (the page's dialog, JSON): the password again (and the passcode,
    in the same request or, after Keystone's receipt, alone) gives the session a new token
    on the same scope. The session keeps its id and CSRF token, so the page that asked,
    and what was typed in it, carry on; the old token is revoked. An expired session
    can be renewed for EXPIRED_KEPT seconds."""
    store = store_of(request)
    found = await store.find(request.cookies.get(COOKIE))
    if found is None or time.time() > found[1].expires_at + EXPIRED_KEPT:
        return _renew_answer(401, error=REASONS["expired"], login="/login?reason=expired")
    sid, session = found
    sent = request.headers.get("x-csrf-token", "")
    if not hmac.compare_digest(sent, session.csrf):
        return _renew_answer(403, error="The form's CSRF token is missing or wrong.")
    form = await form_of(request)
    if form.get("silent"):
        return await _renew_silently(request, sid, session)
    password = str(form.get("renew_password", ""))
    passcode = str(form.get("renew_passcode", "")).strip()
    user = {"id": session.user_id}
    receipt = ""
    if password:
        identity: dict[str, Any] = {
            "methods": ["password"],
            "password": {"user": {**user, "password": password}},
        }
        if passcode:
            identity["methods"].append("totp")
            identity["totp"] = {"user": {**user, "passcode": passcode}}
    elif session.renew_receipt and time.time() < session.renew_receipt_expires:
        identity, receipt = _passcode_only(user, passcode), session.renew_receipt
    else:
        session.renew_receipt = ""
        await store.save(sid, session)
        return _renew_answer(400, error="Enter the password.", needs_password=True)
    scope: dict[str, Any] = (
        {"domain": {"id": session.scope_domain_id}}
        if session.scope_domain_id
        else {"project": {"id": session.project_id}}
    )
    try:
        unscoped, _ = await _token(request, {"identity": identity}, receipt)
        token, body = await _rescope(request, unscoped, scope)
    except ApiFailure as exc:
        if (got := _receipt_of(exc)) is not None:
            session.renew_receipt, session.renew_receipt_expires = got[0], _receipt_expiry(got[1])
            await store.save(sid, session)
            message = "Now the passcode from your authenticator app."
            return _renew_answer(200, needs_passcode=True, message=message)
        if receipt and _receipt_gone(exc):
            session.renew_receipt = ""
            await store.save(sid, session)
            message = "The time to give the passcode ran out: enter the password again."
            return _renew_answer(401, error=message, needs_password=True)
        if exc.status == 401:
            message = WRONG_PASSCODE if receipt else "The password or passcode is wrong."
            return _renew_answer(401, error=message, needs_passcode=bool(receipt))
        return _renew_answer(exc.status, error=exc.explanation)
    old = session.token
    session.renew_receipt = ""
    set_token(session, token, body)
    # The password was given again: a new trust, for a new maximum lifetime.
    await start_trust(request, session, body)
    await store.save(sid, session)
    await _revoke(request, token, old)
    return _renew_answer(200, expires_at=session.expires_at, now=time.time())


async def _revoke(request: Request, token: str, old: str) -> None:
    try:  # the old token is of no more use: Keystone forgets it (it may be expired already)
        await _identity(request, token).call(
            "DELETE", "/v3/auth/tokens", headers={"X-Subject-Token": old}
        )
    except ApiFailure:
        pass


async def _renew_silently(request: Request, sid: str, session: Session) -> Response:
    """A page's "Stay logged in" (or its script, the user typing in it): the user is
    there, so the trust renews the session while its token lasts; else (no trust, token
    expired, trust ending) 409 and the page asks for the password."""
    if (
        trustee_of(request) is None
        or not session.trust_id
        or session.expired
        or session.trust_expires - session.expires_at < MIN_GAIN
    ):
        return _renew_answer(409, needs_password=True)
    try:
        await renew_from_trust(request, session)
    except RenewalRefused:
        await end_session(request, session)
        return _renew_answer(
            401, error=REASONS["renewal"], login="/login?reason=renewal", needs_password=True
        )
    except ApiFailure as exc:
        return _renew_answer(exc.status, error=exc.explanation, needs_password=True)
    await store_of(request).save(sid, session)
    return _renew_answer(200, expires_at=session.expires_at, now=time.time())


def _renew_answer(status: int, **fields: Any) -> JSONResponse:
    return JSONResponse(fields, status_code=status, headers={"Cache-Control": "no-store"})


@page
async def logout(request: Request) -> Response:
    session = session_of(request)
    if session.trust_id:  # first: deleting it ends every token made from it
        await drop_trust(request, session.token, session.trust_id)
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
    one of their domains; a project gets a new trust (the old one deleted). A token the
    trust made cannot be re-scoped (Keystone's rule): then the password is asked."""
    session = session_of(request)
    form = await form_of(request)
    chosen = str(form.get("project_id", ""))
    kind, _, domain_id = chosen.partition(":")
    domains = {d["id"]: d["name"] for d in session.domains}
    projects = {p["id"]: p["name"] for p in session.projects}
    if kind == "domain" and domain_id in domains:
        scope: dict[str, Any] = {"domain": {"id": domain_id}}
        target = f"{domains[domain_id]} (domain)"
    elif chosen in projects:
        scope = {"project": {"id": chosen}}
        target = projects[chosen]
    else:
        raise ApiFailure("identity", 404, f"Could not find project: {chosen}.")
    if not session.trust_token:
        token, body = await _rescope(request, session.token, scope)
    else:
        password = str(form.get("switch_password", ""))
        if not password:
            return _switch_form(request, chosen, target, None)
        user = {"id": session.user_id}
        identity: dict[str, Any] = {
            "methods": ["password"],
            "password": {"user": {**user, "password": password}},
        }
        if passcode := str(form.get("switch_passcode", "")).strip():
            identity["methods"].append("totp")
            identity["totp"] = {"user": {**user, "passcode": passcode}}
        try:
            token, body = await _token(request, {"identity": identity, "scope": scope})
        except ApiFailure as exc:
            if _receipt_of(exc) is not None:
                message = "The password is right; your account needs the passcode too."
            elif exc.status == 401:
                message = "The password or passcode is wrong."
            else:
                raise
            return _switch_form(request, chosen, target, message, status=401)
    project, domain = body.get("project") or {}, body.get("domain") or {}
    session.project_id, session.project_name = project.get("id", ""), project.get("name", "")
    session.scope_domain_id = domain.get("id", "")
    session.scope_domain_name = domain.get("name", "")
    set_token(session, token, body)
    # A trust for the new project, none on a domain; the old trust deleted (and with it
    # the old token, when the trust made it).
    await start_trust(request, session, body)
    return redirect(request, "/")


def _switch_form(
    request: Request, chosen: str, target: str, error: str | None, status: int = 200
) -> Response:
    return render(request, "switch.html", status=status, chosen=chosen, target=target, error=error)


routes = [
    Route("/login", login_form, methods=["GET"]),
    Route("/login", login, methods=["POST"]),
    Route("/login/passcode", login_passcode, methods=["POST"]),
    Route("/session/renew", renew_session, methods=["POST"]),
    Route("/logout", logout, methods=["POST"]),
    Route("/switch-project", switch_project, methods=["POST"]),
]
