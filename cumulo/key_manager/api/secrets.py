"""/v1/secrets: store, list, show, add a payload, read it back, delete (Barbican api-ref:
Secrets API)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cumulo.common.context import RequestContext
from cumulo.common.db import utcnow
from cumulo.common.faults import Conflict, NotFound
from cumulo.key_manager import validation
from cumulo.key_manager.api.common import (
    caller,
    json,
    json_body,
    page_body,
    raw_body,
    secret_fields,
)
from cumulo.key_manager.core import KeyManagerService, SecretFilters, SecretView

# Barbican's GET /v1/secrets/{id}: these Accept values get the metadata, others the
# payload (deprecated in the api-ref; /payload is the way).
_METADATA_ACCEPT = ("", "application/json", "*/*")


async def authorized_secret(
    request: Request, rule: str, operation: str
) -> tuple[KeyManagerService, RequestContext, SecretView]:
    """The secret of the path, once the caller passes `rule` (404 before 403, as Barbican)."""
    service, ctx = await caller(request)
    view = await service.get_secret(request.path_params["secret_id"])
    service.authorize(rule, ctx, operation, service.secret_target(view, ctx))
    return service, ctx, view


async def create_secret(request: Request) -> Response:
    """POST /v1/secrets -> 201 {"secret_ref"} (Location: the ref)."""
    service, ctx = await caller(request)
    service.authorize("secrets:post", ctx, "Secret creation")
    body = await json_body(request)
    new = validation.new_secret(body, utcnow(), service.settings.max_allowed_secret_in_bytes)
    secret = await service.create_secret(ctx, new)
    ref = service.href("secrets", secret.id)
    return json({"secret_ref": ref}, 201, {"Location": ref})


async def list_secrets(request: Request) -> Response:
    """GET /v1/secrets: the project's live secrets, filtered, sorted and paged."""
    service, ctx = await caller(request)
    service.authorize("secrets:get", ctx, "Secret(s) retrieval")
    q = request.query_params
    try:
        bits = int(q.get("bits") or 0)
    except ValueError:
        bits = 0  # Barbican: an invalid bits filter is ignored
    filters = SecretFilters(
        name=q.get("name") or None,
        alg=q.get("alg") or None,
        mode=q.get("mode") or None,
        bits=bits,
        secret_type=q.get("secret_type") or None,
        created=validation.date_filter(q["created"]) if q.get("created") else [],
        updated=validation.date_filter(q["updated"]) if q.get("updated") else [],
        expiration=validation.date_filter(q["expiration"]) if q.get("expiration") else [],
        sort=validation.sort_keys(q["sort"]) if q.get("sort") else [],
        acl_only_user=ctx.user_id if (q.get("acl_only") or "").lower() == "true" else None,
    )
    settings = service.settings
    offset, limit = validation.paging(
        q.get("offset"), q.get("limit"), settings.default_limit_paging, settings.max_limit_paging
    )
    page = await service.list_secrets(ctx.project_id or "", filters, offset, limit)
    items = [secret_fields(service, view, request) for view in page.items]
    return json(page_body(service, request, "secrets", items, page.total, offset, limit))


async def show_secret(request: Request) -> Response:
    """GET /v1/secrets/{id}: the metadata, or (another Accept) the payload."""
    accept = request.headers.get("accept", "").strip()
    if accept not in _METADATA_ACCEPT:
        return await secret_payload(request)
    service, _, view = await authorized_secret(request, "secret:get", "Secret retrieval")
    return json(secret_fields(service, view, request))


async def secret_payload(request: Request) -> Response:
    """GET /v1/secrets/{id}/payload: the bytes stored, in the media type of Accept."""
    service, _, view = await authorized_secret(
        request, "secret:decrypt", "Secret payload retrieval"
    )
    secret = view.secret
    if secret.cipher_text is None or not secret.content_type:
        raise NotFound("Not Found. Sorry but your secret has no payload.")
    stored = await service.open_payload(secret)
    data, media_type = validation.payload_for(
        stored, secret.content_type, request.headers.get("accept")
    )
    return Response(data, media_type=media_type)


async def put_secret(request: Request) -> Response:
    """PUT /v1/secrets/{id}: the payload of a secret created without one (204)."""
    service, _, view = await authorized_secret(request, "secret:put", "Secret update")
    body = await raw_body(request)
    payload, content_type = validation.put_payload(
        body,
        request.headers.get("content-type"),
        request.headers.get("content-encoding"),
        service.settings.max_allowed_secret_in_bytes,
    )
    if view.secret.cipher_text is not None:
        raise Conflict("Secret already has data, cannot modify it.")
    await service.store_payload(view.secret, payload, content_type)
    return Response(status_code=204)


async def delete_secret(request: Request) -> Response:
    service, _, view = await authorized_secret(request, "secret:delete", "Secret deletion")
    await service.delete_secret(view.secret.id)
    return Response(status_code=204)


routes = [
    Route("/v1/secrets", list_secrets, methods=["GET"]),
    Route("/v1/secrets/", list_secrets, methods=["GET"]),
    Route("/v1/secrets", create_secret, methods=["POST"]),
    Route("/v1/secrets/", create_secret, methods=["POST"]),
    Route("/v1/secrets/{secret_id}", show_secret, methods=["GET"]),
    Route("/v1/secrets/{secret_id}", put_secret, methods=["PUT"]),
    Route("/v1/secrets/{secret_id}", delete_secret, methods=["DELETE"]),
    Route("/v1/secrets/{secret_id}/payload", secret_payload, methods=["GET"]),
]
