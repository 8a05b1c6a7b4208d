"""The Object Storage (Swift v1) ASGI app, and the service behind it."""

from __future__ import annotations

from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp

from cumulo.common.app import create_app, request_id
from cumulo.common.auth import TokenValidator
from cumulo.common.config import CumuloConfig
from cumulo.common.faults import ApiError, render_identity
from cumulo.common.identity_client import IdentityClient
from cumulo.object_store.api import accounts, containers, info, objects
from cumulo.object_store.core import ObjectStore
from cumulo.object_store.errors import SwiftError, as_swift_error

METHODS = ["GET", "HEAD", "PUT", "POST", "DELETE", "COPY"]


async def open_object_store(
    config: CumuloConfig, state_dir: Path, *, identity_app: ASGIApp | None = None
) -> ObjectStore:
    """Rings (created for the all-in-one devices when there are none) and the proxy;
    identity_app: validate tokens in-process."""
    client = IdentityClient(config, app=identity_app)
    store = ObjectStore(config, state_dir, TokenValidator(client, config.identity.cache_time))
    store.start_daemons()
    return store


async def on_error(request: Request, exc: Exception) -> Response:
    if isinstance(exc, HTTPException):
        err = SwiftError(exc.status_code)
    else:
        assert isinstance(exc, ApiError)
        err = as_swift_error(exc)
    headers = {
        "Content-Type": "text/html; charset=UTF-8",
        **err.headers,
        "X-Trans-Id": request_id(request),
    }
    return Response(err.body(), status_code=err.status, headers=headers)


async def container_or_object(request: Request) -> Response:
    # /v1/AUTH_x/c/ (an empty object name) is the container.
    if not request.path_params["object"]:
        return await containers.container(request)
    return await objects.obj(request)


def create_object_store_app(store: ObjectStore) -> Starlette:
    routes = [
        *info.routes,
        Route("/v1/{account}", accounts.account, methods=METHODS),
        Route("/v1/{account}/", accounts.account, methods=METHODS),
        Route("/v1/{account}/{container}", containers.container, methods=METHODS),
        Route("/v1/{account}/{container}/{object:path}", container_or_object, methods=METHODS),
    ]
    app = create_app("object-store", routes, render_identity)
    app.add_exception_handler(ApiError, on_error)
    app.add_exception_handler(HTTPException, on_error)
    app.router.redirect_slashes = False
    app.state.object_store = store
    app.state.token_validator = store.validator
    return app
