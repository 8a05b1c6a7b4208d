"""/v1/containers: named groups of a project's secrets (Barbican api-ref: Containers API)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cumulo.common.context import RequestContext
from cumulo.common.faults import BadRequest
from cumulo.key_manager import containers, validation
from cumulo.key_manager.api.common import caller, container_fields, json, json_body, page_body
from cumulo.key_manager.core import ContainerView, KeyManagerService


async def authorized_container(
    request: Request, rule: str, operation: str
) -> tuple[KeyManagerService, RequestContext, ContainerView]:
    service, ctx = await caller(request)
    view = await containers.get_container(service, request.path_params["container_id"])
    service.authorize(rule, ctx, operation, service.container_target(view, ctx))
    return service, ctx, view


async def create_container(request: Request) -> Response:
    """POST /v1/containers -> 201 {"container_ref"}; every secret must be the project's."""
    service, ctx = await caller(request)
    service.authorize("containers:post", ctx, "Container creation")
    new = validation.new_container(await json_body(request), service.host_href)
    container = await containers.create_container(service, ctx, new)
    ref = service.href("containers", container.id)
    return json({"container_ref": ref}, 201, {"Location": ref})


async def list_containers(request: Request) -> Response:
    service, ctx = await caller(request)
    service.authorize("containers:get", ctx, "Containers(s) retrieval")
    q = request.query_params
    settings = service.settings
    offset, limit = validation.paging(
        q.get("offset"), q.get("limit"), settings.default_limit_paging, settings.max_limit_paging
    )
    page = await containers.list_containers(
        service, ctx.project_id or "", q.get("name") or None, q.get("type") or None, offset, limit
    )
    items = [container_fields(service, view) for view in page.items]
    return json(page_body(service, request, "containers", items, page.total, offset, limit))


async def show_container(request: Request) -> Response:
    service, _, view = await authorized_container(request, "container:get", "Container retrieval")
    return json(container_fields(service, view))


async def delete_container(request: Request) -> Response:
    """DELETE: the container only (its secrets stay)."""
    service, _, view = await authorized_container(request, "container:delete", "Container deletion")
    await containers.delete_container(service, view.container.id)
    return Response(status_code=204)


async def add_secret(request: Request) -> Response:
    """POST /v1/containers/{id}/secrets: a secret into a generic container -> 201."""
    service, _, view = await authorized_container(
        request, "container_secret:post", "Container Secret creation"
    )
    if view.container.type != "generic":
        raise BadRequest("Only 'generic' containers can be modified.")
    name, secret_id = validation.container_secret(await json_body(request))
    await containers.add_container_secret(service, view.container, name, secret_id)
    ref = service.href("containers", view.container.id)
    return json({"container_ref": ref}, 201, {"Location": ref})


async def remove_secret(request: Request) -> Response:
    service, _, view = await authorized_container(
        request, "container_secret:delete", "Container Secret deletion"
    )
    body = await json_body(request)
    name, secret_id = validation.container_secret(body)
    await containers.remove_container_secret(
        service, view.container, name, secret_id, body["secret_ref"]
    )
    return Response(status_code=204)


routes = [
    Route("/v1/containers", list_containers, methods=["GET"]),
    Route("/v1/containers/", list_containers, methods=["GET"]),
    Route("/v1/containers", create_container, methods=["POST"]),
    Route("/v1/containers/", create_container, methods=["POST"]),
    Route("/v1/containers/{container_id}", show_container, methods=["GET"]),
    Route("/v1/containers/{container_id}", delete_container, methods=["DELETE"]),
    Route("/v1/containers/{container_id}/secrets", add_secret, methods=["POST"]),
    Route("/v1/containers/{container_id}/secrets", remove_secret, methods=["DELETE"]),
    Route("/v1/containers/{container_id}/secrets/", add_secret, methods=["POST"]),
    Route("/v1/containers/{container_id}/secrets/", remove_secret, methods=["DELETE"]),
]
