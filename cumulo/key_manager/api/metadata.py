"""/v1/secrets/{id}/metadata: a secret's user metadata (Barbican api-ref: Secret Metadata)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cumulo.common.faults import Conflict, NotFound
from cumulo.key_manager import validation
from cumulo.key_manager.api.common import json, json_body
from cumulo.key_manager.api.secrets import authorized_secret


async def show_metadata(request: Request) -> Response:
    service, _, view = await authorized_secret(
        request, "secret_meta:get", "Secret metadata retrieval"
    )
    return json({"metadata": await service.metadata(view.secret.id)})


async def replace_metadata(request: Request) -> Response:
    """PUT: the whole metadata replaced -> 201 {"metadata_ref"}."""
    service, _, view = await authorized_secret(
        request, "secret_meta:put", "Secret metadata creation"
    )
    metadata = validation.metadata_body(await json_body(request))
    await service.replace_metadata(view.secret.id, metadata)
    return json({"metadata_ref": service.href("secrets", view.secret.id) + "/metadata"}, 201)


async def add_metadatum(request: Request) -> Response:
    """POST: one new key (409 if it exists) -> 201 {"key", "value"}."""
    service, _, view = await authorized_secret(
        request, "secret_meta:post", "Secret metadatum creation"
    )
    key, value = validation.metadatum_body(await json_body(request))
    await service.set_metadatum(view.secret.id, key, value, create=True)
    location = f"{service.href('secrets', view.secret.id)}/metadata/{key}"
    return json({"key": key, "value": value}, 201, {"Location": location})


async def show_metadatum(request: Request) -> Response:
    service, _, view = await authorized_secret(
        request, "secret_meta:get", "Secret metadatum retrieval"
    )
    key = request.path_params["key"]
    metadata = await service.metadata(view.secret.id)
    if key not in metadata:
        raise NotFound("Secret metadata not found.")
    return json({"key": key, "value": metadata[key]})


async def update_metadatum(request: Request) -> Response:
    """PUT .../metadata/{key}: an existing key's value (the body names the same key)."""
    service, _, view = await authorized_secret(
        request, "secret_meta:put", "Secret metadatum update"
    )
    key, value = validation.metadatum_body(await json_body(request))
    if key != request.path_params["key"]:
        metadata = await service.metadata(view.secret.id)
        if request.path_params["key"] not in metadata:
            raise NotFound("Secret metadata not found.")
        raise Conflict("Key in request data does not match key in the request url.")
    await service.set_metadatum(view.secret.id, key, value, create=False)
    return json({"key": key, "value": value})


async def delete_metadatum(request: Request) -> Response:
    service, _, view = await authorized_secret(
        request, "secret_meta:delete", "Secret metadatum removal"
    )
    await service.delete_metadatum(view.secret.id, request.path_params["key"])
    return Response(status_code=204)


routes = [
    Route("/v1/secrets/{secret_id}/metadata", show_metadata, methods=["GET"]),
    Route("/v1/secrets/{secret_id}/metadata", replace_metadata, methods=["PUT"]),
    Route("/v1/secrets/{secret_id}/metadata", add_metadatum, methods=["POST"]),
    Route("/v1/secrets/{secret_id}/metadata/", show_metadata, methods=["GET"]),
    Route("/v1/secrets/{secret_id}/metadata/", replace_metadata, methods=["PUT"]),
    Route("/v1/secrets/{secret_id}/metadata/", add_metadatum, methods=["POST"]),
    Route("/v1/secrets/{secret_id}/metadata/{key}", show_metadatum, methods=["GET"]),
    Route("/v1/secrets/{secret_id}/metadata/{key}", update_metadatum, methods=["PUT"]),
    Route("/v1/secrets/{secret_id}/metadata/{key}", delete_metadatum, methods=["DELETE"]),
]
