"""/v1/secrets/{id}/acl and /v1/containers/{id}/acl: who besides the project may read
(Barbican api-ref: ACL API)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cumulo.key_manager import containers, validation
from cumulo.key_manager.api.common import acl_fields, caller, json, json_body

_KINDS = {"secrets": ("secret", "Secret"), "containers": ("container", "Container")}


async def _entity(request: Request, action: str, what: str):
    """(service, kind, entity id, ref) once the caller passes <kind>_acls:<action>."""
    collection = request.url.path.split("/")[2]
    kind, title = _KINDS[collection]
    service, ctx = await caller(request)
    if kind == "secret":
        view = await service.get_secret(request.path_params["entity_id"])
        target = service.secret_target(view, ctx)
        entity_id = view.secret.id
    else:
        cview = await containers.get_container(service, request.path_params["entity_id"])
        target = service.container_target(cview, ctx)
        entity_id = cview.container.id
    service.authorize(f"{kind}_acls:{action}", ctx, f"{title}ACL(s) {what}", target)
    return service, kind, entity_id, f"{service.href(collection, entity_id)}/acl"


async def show_acl(request: Request) -> Response:
    service, kind, entity_id, _ = await _entity(request, "get", "retrieval")
    return json(acl_fields(await service.acl(kind, entity_id)))


async def _set(request: Request, replace: bool) -> Response:
    service, kind, entity_id, ref = await _entity(request, "put_patch", "Update")
    body = validation.acl_body(await json_body(request))
    await service.set_acl(kind, entity_id, body, replace=replace)
    return json({"acl_ref": ref})


async def replace_acl(request: Request) -> Response:
    """PUT: the ACL replaced (project-access true and no users unless given)."""
    return await _set(request, replace=True)


async def update_acl(request: Request) -> Response:
    """PATCH: only the fields given change."""
    return await _set(request, replace=False)


async def delete_acl(request: Request) -> Response:
    """DELETE: back to the implicit ACL (project access) -> 200, no body."""
    service, kind, entity_id, _ = await _entity(request, "delete", "deletion")
    await service.delete_acl(kind, entity_id)
    return Response(status_code=200)


routes = [
    route
    for collection in _KINDS
    for route in (
        Route(f"/v1/{collection}/{{entity_id}}/acl", show_acl, methods=["GET"]),
        Route(f"/v1/{collection}/{{entity_id}}/acl", replace_acl, methods=["PUT"]),
        Route(f"/v1/{collection}/{{entity_id}}/acl", update_acl, methods=["PATCH"]),
        Route(f"/v1/{collection}/{{entity_id}}/acl", delete_acl, methods=["DELETE"]),
    )
]
