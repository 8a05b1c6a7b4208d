"""Consumers: services registering their use of a secret (/v1/secrets/{id}/consumers,
microversion 1.1) or of a container (/v1/containers/{id}/consumers) (Barbican api-ref:
Secret Consumers, Container Consumers)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cumulo.common.faults import NotFound
from cumulo.key_manager import containers, validation
from cumulo.key_manager.api.common import (
    at_least,
    container_fields,
    isotime,
    json,
    json_body,
    secret_fields,
)
from cumulo.key_manager.api.containers import authorized_container
from cumulo.key_manager.api.secrets import authorized_secret
from cumulo.key_manager.core import KeyManagerService


def _page(
    service: KeyManagerService,
    request: Request,
    base: str,
    consumers: Sequence[Any],
    fields: Callable[[Any], dict[str, Any]],
) -> Response:
    """Barbican's consumer list: paged, each with its dates and status, `total`."""
    settings = service.settings
    offset, limit = validation.paging(
        request.query_params.get("offset"),
        request.query_params.get("limit"),
        settings.default_limit_paging,
        settings.max_limit_paging,
    )
    shown = consumers[offset : offset + limit]
    body: dict[str, Any] = {
        "consumers": [
            {
                "created": isotime(c.created_at),
                "updated": isotime(c.created_at),
                "status": "ACTIVE",
                **fields(c),
            }
            for c in shown
        ],
        "total": len(consumers),
    }
    if shown and offset > 0:
        body["previous"] = f"{base}?limit={limit}&offset={max(0, offset - limit)}"
    if shown and len(consumers) > offset + limit:
        body["next"] = f"{base}?limit={limit}&offset={offset + limit}"
    return json(body)


# -- secrets --------------------------------------------------------------------------


def _require_1_1(request: Request) -> None:
    # Below 1.1 Barbican has no consumers under a secret.
    if not at_least(request, "1.1"):
        raise NotFound("The resource could not be found.")


async def list_secret_consumers(request: Request) -> Response:
    _require_1_1(request)
    service, _, view = await authorized_secret(
        request, "secret_consumers:get", "SecretConsumers(s) retrieval"
    )
    base = f"{service.href('secrets', view.secret.id)}/consumers"
    return _page(
        service,
        request,
        base,
        view.consumers,
        lambda c: {
            "service": c.service,
            "resource_type": c.resource_type,
            "resource_id": c.resource_id,
        },
    )


async def _change_secret(request: Request, rule: str, operation: str, add: bool) -> Response:
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


async def add_secret_consumer(request: Request) -> Response:
    """POST: register (again: no change) -> 200 with the secret's metadata."""
    return await _change_secret(request, "secret_consumers:post", "SecretConsumer creation", True)


async def remove_secret_consumer(request: Request) -> Response:
    return await _change_secret(
        request, "secret_consumers:delete", "SecretConsumer deletion", False
    )


# -- containers -----------------------------------------------------------------------


async def list_container_consumers(request: Request) -> Response:
    service, _, view = await authorized_container(
        request, "container_consumers:get", "ContainerConsumers(s) retrieval"
    )
    base = f"{service.href('containers', view.container.id)}/consumers"
    return _page(service, request, base, view.consumers, lambda c: {"name": c.name, "URL": c.url})


async def _change_container(request: Request, rule: str, operation: str, add: bool) -> Response:
    service, _, view = await authorized_container(request, rule, operation)
    name, url = validation.container_consumer_body(await json_body(request))
    change = containers.add_consumer if add else containers.remove_consumer
    await change(service, view.container.id, name, url)
    fresh = await containers.get_container(service, view.container.id)
    ref = f"{service.href('containers', view.container.id)}/consumers"
    return json(container_fields(service, fresh), headers={"Location": ref} if add else None)


async def add_container_consumer(request: Request) -> Response:
    """POST: register (again: no change) -> 200 with the container."""
    return await _change_container(
        request, "container_consumers:post", "ContainerConsumer creation", True
    )


async def remove_container_consumer(request: Request) -> Response:
    return await _change_container(
        request, "container_consumers:delete", "ContainerConsumer deletion", False
    )


routes = [
    route
    for path in ("/v1/secrets/{secret_id}/consumers", "/v1/secrets/{secret_id}/consumers/")
    for route in (
        Route(path, list_secret_consumers, methods=["GET"]),
        Route(path, add_secret_consumer, methods=["POST"]),
        Route(path, remove_secret_consumer, methods=["DELETE"]),
    )
] + [
    route
    for path in (
        "/v1/containers/{container_id}/consumers",
        "/v1/containers/{container_id}/consumers/",
    )
    for route in (
        Route(path, list_container_consumers, methods=["GET"]),
        Route(path, add_container_consumer, methods=["POST"]),
        Route(path, remove_container_consumer, methods=["DELETE"]),
    )
]
