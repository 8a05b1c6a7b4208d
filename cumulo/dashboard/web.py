"""What every page shares: templates, the session gate, CSRF, errors, Server-Timing,
framing, SSE."""

from __future__ import annotations

import asyncio
import functools
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import orjson
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cumulo.common.app import with_headers
from cumulo.dashboard.apis import ApiFailure, UserApis, api_time
from cumulo.dashboard.renewal import (
    RenewalRefused,
    drop_trust,
    renew_from_trust,
    renewal_due,
    trustee_of,
)
from cumulo.dashboard.sessions import COOKIE, Session, SessionStore

LOG = logging.getLogger(__name__)
HERE = Path(__file__).parent
templates = Environment(
    loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["html"])
)
templates.filters["json"] = lambda value: orjson.dumps(value).decode()
templates.filters["explain"] = lambda message: ApiFailure("compute", 500, message).explanation
templates.globals["now"] = time.time
Handler = Callable[[Request], Awaitable[Response]]
# How often a live page's stream asks the API for what it shows.
LIVE_INTERVAL = 1.0


def store_of(request: Request) -> SessionStore:
    return request.app.state.sessions


def apis_of(request: Request) -> UserApis:
    return request.state.apis


def session_of(request: Request) -> Session:
    return request.state.session


def render(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    session = getattr(request.state, "session", None)
    html = templates.get_template(template).render(
        request=request, session=session, path=request.url.path, **context
    )
    return HTMLResponse(html, status_code=status)


def redirect(request: Request, url: str) -> Response:
    """Where to go next: htmx follows HX-Redirect, a plain form a 303."""
    if request.headers.get("hx-request"):
        return Response(status_code=204, headers={"HX-Redirect": url})
    return RedirectResponse(url, status_code=303)


def to_login(request: Request, reason: str, framed: bool = False) -> Response:
    """The login page, saying why; a framed page says it in its frame, its link taking
    the whole window there (not a login page inside a page)."""
    login = f"/login?{urlencode({'reason': reason})}"
    if framed:
        response: Response = render(request, "frame_error.html", status=401, login=login)
    else:
        response = redirect(request, login)
    response.delete_cookie(COOKIE)
    return response


async def end_session(request: Request, session: Session) -> None:
    """The session ends: its row, and its trust (renewal.py), if it has one."""
    await store_of(request).end(request.cookies.get(COOKIE))
    if session.trust_id:
        await drop_trust(request, session.token, session.trust_id)


def announce_renewal(request: Request, response: Response, session: Session) -> None:
    """A part of a page whose request renewed the session tells the page (htmx's
    HX-Trigger), so that its countdown follows the new token."""
    if not request.headers.get("hx-request"):
        return
    events: dict[str, Any] = {}
    if sent := response.headers.get("hx-trigger"):
        try:
            events = orjson.loads(sent) if sent.lstrip().startswith("{") else {}
        except orjson.JSONDecodeError:
            events = {}
        if not events:
            events = {name.strip(): None for name in sent.split(",") if name.strip()}
    events["session-renewed"] = {"expires_at": session.expires_at, "now": time.time()}
    response.headers["HX-Trigger"] = orjson.dumps(events).decode()


def error_page(request: Request, exc: ApiFailure, framed: bool = False) -> HTMLResponse:
    template = "frame_error.html" if framed else "error.html"
    return render(request, template, status=exc.status, error=exc)


async def form_of(request: Request) -> dict[str, Any]:
    """The submitted form (multi-valued fields as lists), read once per request."""
    if not hasattr(request.state, "form"):
        form = await request.form()
        request.state.form = {
            key: (values if len(values := form.getlist(key)) > 1 else values[0])
            for key in form.keys()
        }
    return request.state.form


def page(
    handler: Handler | None = None,
    *,
    admin: bool = False,
    read_form: bool = True,
    framed: bool = False,
):
    """A page for logged-in users: the session found (or the login page, saying why),
    CSRF checked on every POST, the API's 401 ending the session, its 403/404 shown.
    `framed`: a page shown in a frame of another page (the server page's console): an
    expired session is kept for the page around it to renew, as for a part of a page,
    and the frame itself says why it shows nothing (frame_error.html)."""

    def wrap(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def run(request: Request) -> Response:
            store = store_of(request)
            found = await store.find(request.cookies.get(COOKIE))
            if found is None:
                return to_login(request, "login", framed)
            sid, session = found
            if session.expired:
                if framed:
                    return render(request, "frame_error.html", status=401, expired=True)
                if request.headers.get("hx-request"):
                    # A part of an open page: the page asks for the password and renews
                    # the session in place (what is typed in it stays), so keep it.
                    return Response(status_code=401, headers={"HX-Trigger": "session-expired"})
                await end_session(request, session)
                return to_login(request, "expired")
            renewed = False
            if trustee_of(request) is not None and renewal_due(session):
                # The user is active and the token nears its end: the trust gives the
                # session a new one, silently.
                try:
                    await renew_from_trust(request, session)
                    await store.save(sid, session)
                    renewed = True
                except RenewalRefused:
                    await end_session(request, session)
                    return to_login(request, "renewal", framed)
                except ApiFailure as exc:  # Identity unreachable: the next page tries again
                    LOG.warning("session renewal failed: %s", exc)
            request.state.session = session
            try:
                await request.app.state.apis.ensure_clients(session.token)
            except ApiFailure as exc:
                if exc.status == 401:
                    await end_session(request, session)
                    return to_login(request, "revoked", framed)
                return error_page(request, exc, framed)
            request.state.apis = request.app.state.apis.for_token(session.token)
            if request.method not in ("GET", "HEAD"):
                sent = request.headers.get("x-csrf-token")
                if sent is None and read_form:
                    sent = (await form_of(request)).get("csrf_token")
                if sent != session.csrf:
                    failure = ApiFailure(
                        "dashboard", 403, "The form's CSRF token is missing or wrong."
                    )
                    return error_page(request, failure, framed)
            if admin and not session.is_admin:
                failure = ApiFailure("dashboard", 403, "This page is for administrators.")
                return error_page(request, failure, framed)
            try:
                response = await handler(request)
            except ApiFailure as exc:
                fresh = await renewed_session(request, session.token) if exc.status == 401 else None
                if fresh is not None and request.method in ("GET", "HEAD"):
                    # The session was renewed (this request's token revoked) while this
                    # request ran: a page only shows, so it is asked again with the new token.
                    session = request.state.session = fresh
                    request.state.apis = request.app.state.apis.for_token(session.token)
                    try:
                        response = await handler(request)
                    except ApiFailure as again:
                        response = error_page(request, again, framed)
                elif fresh is not None:
                    # A form is not sent twice behind the user's back.
                    failure = ApiFailure(
                        "dashboard", 409, "The session was renewed meanwhile: try again."
                    )
                    return error_page(request, failure, framed)
                elif exc.status == 401:
                    await end_session(request, session)
                    return to_login(request, "revoked", framed)
                response = error_page(request, exc, framed)
            if not getattr(request.state, "session_ended", False):
                await store.save(sid, session)  # what the page changed (views, scope, keys)
                if renewed:
                    announce_renewal(request, response, session)
            return response

        return run

    return wrap(handler) if handler is not None else wrap


async def renewed_session(request: Request, token: str) -> Session | None:
    """The session, when it now holds another token than the one a 401 answered
    (renewed by the page's dialog or another request, the old token revoked, while this
    request ran)."""
    found = await store_of(request).find(request.cookies.get(COOKIE))
    return found[1] if found is not None and found[1].token != token else None


async def renewed_meanwhile(request: Request, token: str) -> bool:
    return await renewed_session(request, token) is not None


class ServerTiming:
    """`Server-Timing: app;dur=…, api;dur=…;desc="n calls"` on every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        spent = [0.0, 0]
        token = api_time.set(spent)
        started = time.perf_counter()

        async def timed_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                total = (time.perf_counter() - started) * 1000
                # api: the API calls' times summed (parallel calls overlap).
                api = f'api;dur={spent[0] * 1000:.1f};desc="{spent[1]} calls, summed"'
                value = f"app;dur={total:.1f}, {api}"
                timing = (b"server-timing", value.encode())
                message["headers"] = [*message.get("headers", []), timing]
            await send(message)

        try:
            await self.app(scope, receive, timed_send)
        finally:
            api_time.reset(token)


class SameOriginFrames:
    """No other site frames the dashboard's pages (a page's buttons under a decoy's, to
    be clicked unawares): `X-Frame-Options: SAMEORIGIN` and CSP `frame-ancestors 'self'`
    on every response; the dashboard's own pages may (the server page's console)."""

    HEADERS = [
        (b"x-frame-options", b"SAMEORIGIN"),
        (b"content-security-policy", b"frame-ancestors 'self'"),
    ]

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, with_headers(send, self.HEADERS))


# Page views whose stream has not opened yet, kept per session (the newest ones).
MAX_VIEWS = 8


def remember_view(request: Request, fragments: dict[str, str]) -> str:
    """Keep the live fragments a page was rendered with; returns the view's id, for the
    page's stream URL."""
    views = session_of(request).views
    view = secrets.token_urlsafe(9)
    views[view] = fragments
    while len(views) > MAX_VIEWS:
        views.pop(next(iter(views)))
    return view


def live_stream(
    request: Request, fragments: Callable[[], Awaitable[dict[str, str]]]
) -> StreamingResponse:
    """One server-sent-events stream for a page: every LIVE_INTERVAL it asks the API
    (with the user's token) what the page shows and pushes only the HTML fragments
    that changed since the page was rendered, each as an event named after its element."""
    store = store_of(request)
    cookie = request.cookies.get(COOKIE)
    apis = apis_of(request)
    # What the page already shows (a stream opened without its view sends everything);
    # the `page` wrapper saves the session without it when this returns.
    sent = session_of(request).views.pop(request.query_params.get("view", ""), {})

    async def last(event: bytes) -> AsyncIterator[bytes]:
        """A stream's last event, then open until the page goes (a stream the server
        closes is an error the browser reports, and reconnects)."""
        yield event
        for _ in range(60):
            if await request.is_disconnected():
                return
            await asyncio.sleep(0.5)

    async def events() -> AsyncIterator[bytes]:
        while True:
            found = await store.find(cookie)
            if found is None or found[1].expired:
                # Kept: the page may renew it (sessions.EXPIRED_KEPT).
                async for chunk in last(b"event: session-ended\ndata: expired\n\n"):
                    yield chunk
                return
            if found[1].token != apis.token:  # renewed meanwhile: the old token is revoked
                apis.use_token(found[1].token)
            try:
                current = await fragments()
            except ApiFailure as exc:
                if exc.status == 401 and await renewed_meanwhile(request, apis.token):
                    continue  # the next round asks with the new token
                if exc.status == 401:
                    await store.end(cookie)
                    if found[1].trust_id:
                        await drop_trust(request, found[1].token, found[1].trust_id)
                    async for chunk in last(b"event: session-ended\ndata: revoked\n\n"):
                        yield chunk
                    return
                if exc.status == 404:  # what the page shows is gone (a deleted server)
                    async for chunk in last(b"event: gone\ndata: gone\n\n"):
                        yield chunk
                    return
                current = {}
            for name, html in current.items():
                if sent.get(name) != html:
                    sent[name] = html
                    data = "".join(f"data: {line}\n" for line in html.splitlines())
                    yield f"event: {name}\n{data}\n".encode()
            if await request.is_disconnected():
                return
            await asyncio.sleep(LIVE_INTERVAL)

    return StreamingResponse(
        events(), media_type="text/event-stream", headers={"Cache-Control": "no-store"}
    )


def fragment(name: str, **context: Any) -> str:
    """A template's named macro (a table row, a badge) rendered alone."""
    template_name, macro = name.split(":")
    return getattr(templates.get_template(template_name).module, macro)(**context)
