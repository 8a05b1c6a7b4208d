"""/v3/OS-OAUTH1/consumers: OAuth 1.0a consumers (api-ref: OS-OAUTH1 API, consumers).

A consumer's secret is generated, shown once in the create answer, and kept
Fernet-encrypted with the credential keys. The delegation flow itself (request
tokens, authorization, access tokens, the `oauth1` auth method) is not implemented.
"""

from __future__ import annotations

import secrets
from typing import Any

from pydantic import StrictStr
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cumulo.common.app import json_body, validate
from cumulo.common.faults import BadRequest
from cumulo.identity.api.common import (
    Body,
    apply_update,
    authorize,
    delete_row,
    extras_of,
    get_or_404,
    identity_of,
    json,
    list_rows,
    new_id,
    section,
    self_link,
    update_body,
)
from cumulo.identity.models import OAuth1Consumer

_FIELDS = {"id", "description", "secret", "links"}


class ConsumerBody(Body):
    description: StrictStr | None = None


def render_consumer(request: Request, c: OAuth1Consumer) -> dict[str, Any]:
    return {
        **(c.extra or {}),
        "id": c.id,
        "description": c.description,
        "links": self_link(request, f"OS-OAUTH1/consumers/{c.id}"),
    }


async def _consumer(request: Request) -> OAuth1Consumer:
    async with identity_of(request).read() as session:
        return await get_or_404(session, OAuth1Consumer, request.path_params["consumer_id"])


async def create_consumer(request: Request) -> Response:
    await authorize(request, "identity:create_consumer")
    body = validate(ConsumerBody, section(await json_body(request), "consumer") or {})
    secret = secrets.token_hex(16)
    identity = identity_of(request)
    consumer = OAuth1Consumer(
        id=new_id(),
        description=body.description,
        encrypted_secret=identity.credential_fernet.encrypt(secret.encode()).decode(),
        extra=extras_of(body, _FIELDS),
    )
    async with identity.write() as session:
        session.add(consumer)
    return json({"consumer": {**render_consumer(request, consumer), "secret": secret}}, status=201)


async def list_consumers(request: Request) -> Response:
    await authorize(request, "identity:list_consumers")
    return await list_rows(request, "consumers", OAuth1Consumer, {}, render_consumer)


async def show_consumer(request: Request) -> Response:
    await authorize(request, "identity:get_consumer")
    return json({"consumer": render_consumer(request, await _consumer(request))})


async def update_consumer(request: Request) -> Response:
    await authorize(request, "identity:update_consumer")
    consumer_id = request.path_params["consumer_id"]
    body = await update_body(request, "consumer", ConsumerBody, consumer_id)
    if "secret" in (body.model_extra or {}):
        raise BadRequest("Invalid input for field 'consumer': the secret cannot be changed.")
    async with identity_of(request).write() as session:
        consumer = await get_or_404(session, OAuth1Consumer, consumer_id)
        if "description" in body.model_fields_set:
            consumer.description = body.description
        apply_update(consumer, body, (), _FIELDS)
    return json({"consumer": render_consumer(request, consumer)})


async def delete_consumer(request: Request) -> Response:
    await authorize(request, "identity:delete_consumer")
    return await delete_row(request, OAuth1Consumer, request.path_params["consumer_id"])


routes = [
    Route("/v3/OS-OAUTH1/consumers", create_consumer, methods=["POST"]),
    Route("/v3/OS-OAUTH1/consumers", list_consumers, methods=["GET"]),
    Route("/v3/OS-OAUTH1/consumers/{consumer_id}", show_consumer, methods=["GET"]),
    Route("/v3/OS-OAUTH1/consumers/{consumer_id}", update_consumer, methods=["PATCH"]),
    Route("/v3/OS-OAUTH1/consumers/{consumer_id}", delete_consumer, methods=["DELETE"]),
]
