"""/v1/secrets/{id}/consumers: services registering their use of a secret (microversion
1.1; Barbican api-ref: Secret Consumers)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cumulo.common.faults import NotFound
from cumulo.key_manager import validation
from cumulo.key_manager.api.common import at_least, isotime, json, json_body, secret_fields
from cumulo.key_manager.api.secrets import authorized_secret


def _require_1_1(request: Request) -> None:
    # Below 1.1 Barbican has no consumers under a secret.
    if not at_least(request, "1.1"):
        raise NotFound("The resource could not be found.")


async def list_consumers(request: Request) -> Response:
    _require_1_1(request)
    service, _, view = await authorized_secret(
        request, "secret_consumers:get", "SecretConsumers(s) retrieval"
    )
    settings = service.settings
    offset, limit = validation.paging(
        request.query_params.get("offset"),
        request.query_params.get("limit"),
        settings.default_limit_paging,
        settings.max_limit_paging,
    )
    consumers = view.consumers[offset : offset + limit]
    body: dict = {
        "consumers": [
            {
                "created": isotime(c.created_at),
                "updated": isotime(c.created_at),
                "status": "ACTIVE",
                "service": c.service,
                "resource_type": c.resource_type,
                "resource_id": c.resource_id,
            }
            for c in consumers
        ],
        "total": len(view.consumers),
    }
    base = f"{service.href('secrets', view.secret.id)}/consumers"
    if consumers and offset > 0:
        body["previous"] = f"{base}?limit={limit}&offset={max(0, offset - limit)}"
    if consumers and len(view.consumers) > offset + limit:
        body["next"] = f"{base}?limit={limit}&offset={offset + limit}"
    return json(body)


async def _change(request: Request, rule: str, operation: str, add: bool) -> Response:
    _require_1_1(request)
    service, _, view = await authorized_secret(request, rule, operation)
    consumer = validation.consumer_body(await json_body(request))
    if add:
        await service.add_consumer(view.secret.id, *consumer)
    else:
        await service.remove_consumer(view.secret.id, *consumer)
    fresh = await service.get_secret(view.secret.id)
    headers = {"Location": f"{service.href('secrets', view.secret.id)}/consumers"} if add else None
    return json(secret_fields(service, fresh, request), headers=headers)


async def add_consumer(request: Request) -> Response:
    """POST: register (again: no change) -> 200 with the secret's metadata."""
    return await _change(request, "secret_consumers:post", "SecretConsumer creation", True)


async def remove_consumer(request: Request) -> Response:
    return await _change(request, "secret_consumers:delete", "SecretConsumer deletion", False)


routes = [
    Route("/v1/secrets/{secret_id}/consumers", list_consumers, methods=["GET"]),
    Route("/v1/secrets/{secret_id}/consumers", add_consumer, methods=["POST"]),
    Route("/v1/secrets/{secret_id}/consumers", remove_consumer, methods=["DELETE"]),
    Route("/v1/secrets/{secret_id}/consumers/", list_consumers, methods=["GET"]),
    Route("/v1/secrets/{secret_id}/consumers/", add_consumer, methods=["POST"]),
    Route("/v1/secrets/{secret_id}/consumers/", remove_consumer, methods=["DELETE"]),
]
