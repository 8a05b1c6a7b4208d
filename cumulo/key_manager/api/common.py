"""What every Key Manager API module shares: the service, the caller, microversions,
JSON bodies and Barbican's renderings of secrets, containers and orders."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import urlencode

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from cumulo.common import limits
from cumulo.common.app import JSONResponse, with_headers
from cumulo.common.auth import request_context
from cumulo.common.context import RequestContext
from cumulo.common.faults import (
    ApiError,
    BadRequest,
    ErrorRenderer,
    NotAcceptable,
    PayloadTooLarge,
    UnsupportedMediaType,
)
from cumulo.key_manager.core import AclView, ContainerView, KeyManagerService, SecretView
from cumulo.key_manager.models import Order

# Barbican's v1 microversions: 1.1 added secret consumers (and "consumers" in secrets).
MIN_VERSION, MAX_VERSION = "1.0", "1.1"
VERSIONS = ("1.0", "1.1")
_HEADER = b"openstack-api-version"


def service_of(request: Request) -> KeyManagerService:
    return request.app.state.key_manager


async def caller(request: Request) -> tuple[KeyManagerService, RequestContext]:
    return service_of(request), await request_context(request)


def microversion(request: Request) -> str:
    return request.scope.get("state", {}).get("key_manager_version", MIN_VERSION)


def at_least(request: Request, version: str) -> bool:
    return VERSIONS.index(microversion(request)) >= VERSIONS.index(version)


class MicroversionMiddleware:
    """microversion_parse's middleware as Barbican runs it: `OpenStack-API-Version:
    key-manager X` (or `latest`) picks the version (default 1.0), 406 outside 1.0-1.1,
    and every answer names the version served."""

    def __init__(self, app: ASGIApp, render_error: ErrorRenderer) -> None:
        self.app = app
        self.render_error = render_error

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            version = _requested(scope)
        except ApiError as err:
            answer = JSONResponse(self.render_error(err), err.status)
            await answer(scope, receive, send)
            return
        scope.setdefault("state", {})["key_manager_version"] = version
        extra = [
            (b"openstack-api-version", f"key-manager {version}".encode()),
            (b"vary", b"OpenStack-API-Version"),
        ]
        await self.app(scope, receive, with_headers(send, extra))


def _requested(scope: Scope) -> str:
    for name, value in scope.get("headers", ()):
        if name != _HEADER:
            continue
        for item in value.decode("latin-1").split(","):
            service, _, wanted = item.strip().partition(" ")
            if service.lower() != "key-manager":
                continue
            wanted = wanted.strip().lower()
            if wanted == "latest":
                return MAX_VERSION
            try:
                major, minor = (int(p) for p in wanted.split("."))
            except ValueError:
                raise BadRequest(f"invalid version string: {wanted}") from None
            normalized = f"{major}.{minor}"
            if normalized not in VERSIONS:
                raise NotAcceptable(f"Unacceptable version header: {wanted}")
            return normalized
    return MIN_VERSION


# -- bodies ---------------------------------------------------------------------------


async def json_body(request: Request, content_types: tuple[str, ...] = ("application/json",)):
    """The request's JSON body: 415 unless its Content-Type is one of `content_types`
    (Barbican's enforce_content_types), 413 over max_allowed_request_size_in_bytes,
    400 'Malformed JSON'."""
    mime = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if mime not in content_types:
        raise UnsupportedMediaType(
            f"Unexpected content type. Expected content types are: {list(content_types)}"
        )
    raw = await raw_body(request)
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise BadRequest("Malformed JSON") from None


async def raw_body(request: Request) -> bytes:
    limit = service_of(request).settings.max_allowed_request_size_in_bytes
    try:
        return await limits.read_body(request, limit)
    except PayloadTooLarge:
        raise PayloadTooLarge("Provided information too large to process") from None


def json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse(body, status_code=status, headers=headers)


def isotime(ts: datetime | None) -> str | None:
    """Barbican's timestamps: datetime.isoformat() of naive UTC."""
    return ts.isoformat() if ts else None


def secret_fields(service: KeyManagerService, view: SecretView, request: Request) -> dict:
    s = view.secret
    body: dict[str, Any] = {
        "created": isotime(s.created_at),
        "updated": isotime(s.updated_at),
        "status": "ACTIVE",
        "secret_ref": service.href("secrets", s.id),
        "name": s.name,
        "secret_type": s.secret_type,
        "expiration": isotime(s.expiration),
        "algorithm": s.algorithm,
        "bit_length": s.bit_length,
        "mode": s.mode,
        "creator_id": s.creator_id,
    }
    if at_least(request, "1.1"):
        body["consumers"] = [
            {"service": c.service, "resource_type": c.resource_type, "resource_id": c.resource_id}
            for c in view.consumers
        ]
    if s.cipher_text is not None and s.content_type:
        body["content_types"] = {"default": s.content_type}
    return body


def container_fields(service: KeyManagerService, view: ContainerView) -> dict:
    c = view.container
    return {
        "created": isotime(c.created_at),
        "updated": isotime(c.updated_at),
        "status": "ACTIVE",
        "container_ref": service.href("containers", c.id),
        "name": c.name,
        "type": c.type,
        "creator_id": c.creator_id,
        "secret_refs": [
            {"secret_ref": service.href("secrets", sid), "name": name} for name, sid in view.secrets
        ],
        "consumers": [{"name": c.name, "URL": c.url} for c in view.consumers],
    }


def order_fields(service: KeyManagerService, order: Order) -> dict:
    body: dict[str, Any] = {
        "created": isotime(order.created_at),
        "updated": isotime(order.updated_at),
        "status": order.status,
        "type": order.type,
        "meta": order.meta,
        "order_ref": service.href("orders", order.id),
    }
    if order.secret_id:
        body["secret_ref"] = service.href("secrets", order.secret_id)
    if order.container_id:
        body["container_ref"] = service.href("containers", order.container_id)
    if order.error_status_code:
        body["error_status_code"] = order.error_status_code
    if order.error_reason:
        body["error_reason"] = order.error_reason
    if order.creator_id:
        body["creator_id"] = order.creator_id
    return body


def acl_fields(acl: AclView | None) -> dict:
    """GET .../acl: the read ACL, or Barbican's implicit one."""
    if acl is None:
        return {"read": {"project-access": True}}
    return {
        "read": {
            "project-access": acl.project_access,
            "users": acl.users,
            "created": isotime(acl.created_at),
            "updated": isotime(acl.updated_at),
        }
    }


def page_body(
    service: KeyManagerService,
    request: Request,
    collection: str,
    items: list[dict],
    total: int,
    offset: int,
    limit: int,
) -> dict:
    """Barbican's list: items, `total`, and `previous`/`next` refs carrying the other
    query parameters."""
    if not items:
        return {collection: [], "total": total}
    kept = [(k, v) for k, v in request.query_params.multi_items() if k not in ("limit", "offset")]
    extra = f"&{urlencode(kept)}" if kept else ""
    base = f"{service.host_href}/v1/{collection}"
    body: dict[str, Any] = {collection: items}
    if offset > 0:
        body["previous"] = f"{base}?limit={limit}&offset={max(0, offset - limit)}{extra}"
    if total > offset + limit:
        body["next"] = f"{base}?limit={limit}&offset={offset + limit}{extra}"
    body["total"] = total
    return body
