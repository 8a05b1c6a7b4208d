"""The Object Storage (Swift v1) ASGI app, and the service behind it."""

from __future__ import annotations

import uuid
from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cumulo.common import limits
from cumulo.common.app import JSONResponse, create_app
from cumulo.common.auth import TokenValidator
from cumulo.common.config import CumuloConfig
from cumulo.common.faults import ApiError, render_identity
from cumulo.common.identity_client import IdentityClient
from cumulo.common.openapi import describes
from cumulo.object_store.api import accounts, containers, info, objects
from cumulo.object_store.api.cors import SwiftCors
from cumulo.object_store.core import ObjectStore, transaction_id
from cumulo.object_store.errors import SwiftError, as_swift_error
from cumulo.object_store.s3.gateway import S3Gateway

METHODS = ["GET", "HEAD", "PUT", "POST", "DELETE", "COPY"]


async def open_object_store(
    config: CumuloConfig,
    state_dir: Path,
    *,
    identity_app: ASGIApp | None = None,
    daemons: bool = True,
) -> ObjectStore:
    """Rings (created for the all-in-one devices when there are none) and the proxy;
    identity_app: validate tokens in-process; daemons: run the background daemons here
    (one API worker of several does)."""
    client = IdentityClient(config, app=identity_app)
    store = ObjectStore(config, state_dir, TokenValidator(client, config.identity.cache_time))
    if daemons:
        store.start_daemons()
    return store


async def on_error(request: Request, exc: Exception) -> Response:
    if isinstance(exc, HTTPException):
        err = SwiftError(exc.status_code)
    else:
        assert isinstance(exc, ApiError)
        err = as_swift_error(exc)
    headers = {"Content-Type": "text/html; charset=UTF-8", **err.headers}
    return Response(err.body(), status_code=err.status, headers=headers)


@describes(
    content_type="application/octet-stream",
    query=("multipart-manifest", "symlink", "version-id", "temp_url_sig", "temp_url_expires"),
    headers=(
        "Content-Type",
        "Range",
        "If-Match",
        "If-None-Match",
        "If-Modified-Since",
        "X-Delete-At",
        "X-Delete-After",
        "X-Object-Manifest",
        "X-Copy-From",
        "Destination",
        "X-Symlink-Target",
        "X-Object-Meta-Color",
        "X-Detect-Content-Type",
        "ETag",
    ),
)
async def container_or_object(request: Request) -> Response:
    # /v1/AUTH_x/c/ (an empty object name) is the container.
    if not request.path_params["object"]:
        return await containers.container(request)
    return await objects.obj(request)


class TransIdMiddleware:
    """Swift's transaction id on every answer, as X-Trans-Id and X-Openstack-Request-Id:
    tx<21 hex digits>-<10 hex digits of the time> (clients and Tempest check the form),
    made from the request id the logs carry."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_trans_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                # The request id middleware (inside this one) has set it by now.
                request_id = scope.get("state", {}).get("request_id") or uuid.uuid4().hex
                trans_id = transaction_id(request_id).encode()
                message["headers"] = [
                    (k, v)
                    for k, v in message.get("headers", [])
                    if k not in (b"x-openstack-request-id", b"x-trans-id")
                ] + [(b"x-trans-id", trans_id), (b"x-openstack-request-id", trans_id)]
            await send(message)

        await self.app(scope, receive, send_with_trans_id)


class SwiftRoutes:
    """The Swift API's routes, called without the app's middleware: how the S3 front
    carries out its operations (object_store/s3/gateway.py). The route's own handler
    checks the token, ACLs and quotas and updates the account and container as for a
    Swift client; what is left out is what the S3 request itself already went through
    once or does not show (its request id, access log line and metrics, the Swift
    transaction id, Swift's CORS). What an answer says is the Swift app's: the [limits]
    refusals, 404 where no route matches, errors rendered by the app's exception
    handlers; anything else propagates as it would through the app."""

    def __init__(self, routes: list[Route], app: Starlette) -> None:
        self.routes = routes
        self.router = app.router
        # The handlers the app's ExceptionMiddleware has (500 and Exception are its
        # ServerErrorMiddleware's, outside the S3 front too).
        handlers = {k: v for k, v in app.exception_handlers.items() if k not in (500, Exception)}
        self.handlers: tuple[dict, dict] = (
            {k: v for k, v in handlers.items() if not isinstance(k, int)},
            {k: v for k, v in handlers.items() if isinstance(k, int)},
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        refused = limits.refuse(scope)
        if refused is not None:
            answer = JSONResponse(render_identity(refused), refused.status, headers=refused.headers)
            await answer(scope, receive, send)
            return
        scope["router"] = self.router
        scope["starlette.exception_handlers"] = self.handlers
        chosen = partial = None
        for route in self.routes:
            match, child_scope = route.matches(scope)
            if match is Match.FULL:
                chosen = route
                break
            if match is Match.PARTIAL and partial is None:
                partial, partial_scope = route, child_scope
        if chosen is None and partial is not None:  # Swift's 405 for the method
            chosen, child_scope = partial, partial_scope
        try:
            if chosen is None:
                raise HTTPException(404)
            scope["route"] = chosen
            scope.update(child_scope)
            await chosen.handle(scope, receive, send)
        except HTTPException as exc:  # what the app's router raises itself (404, 405)
            response = await self.handlers[0][HTTPException](Request(scope, receive), exc)
            await response(scope, receive, send)


def create_object_store_app(store: ObjectStore) -> Starlette:
    # Objects first: most requests are theirs, and no other route matches their paths.
    swift_routes = [
        Route("/v1/{account}/{container}/{object:path}", container_or_object, methods=METHODS),
        Route("/v1/{account}/{container}", containers.container, methods=METHODS),
        Route("/v1/{account}", accounts.account, methods=METHODS),
        Route("/v1/{account}/", accounts.account, methods=METHODS),
    ]
    routes = [*swift_routes, *info.routes]
    app = create_app(
        "object-store", routes, render_identity, dialect="object-store", routes_first=True
    )
    app.add_exception_handler(ApiError, on_error)
    app.add_exception_handler(HTTPException, on_error)
    app.router.redirect_slashes = False
    # Cross-origin answers and preflights for containers and objects (Swift's CORS).
    app.add_middleware(SwiftCors, store=store)
    # Outside the request id middleware: it sees (and replaces) the id that one adds.
    app.add_middleware(TransIdMiddleware)
    app.state.object_store = store
    app.state.token_validator = store.validator
    # Outermost: S3 requests are told apart before anything Swift does with them, and
    # carried out on the Swift routes directly.
    app.add_middleware(S3Gateway, store=store, swift=SwiftRoutes(swift_routes, app))
    return app
