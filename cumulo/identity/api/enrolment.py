"""POST /cumulo/enrol: a new host redeems its enrolment token for the controller's config
(cumulo.operations.enrolment). Not a Keystone API: cumulo's own, on the Identity port
every host already reaches."""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from cumulo.common.app import json_body
from cumulo.common.faults import BadRequest, Unauthorized
from cumulo.identity.api.common import identity_of
from cumulo.operations import enrolment


async def enrol(request: Request) -> Response:
    body = await json_body(request)
    token = body.get("token") if isinstance(body, dict) else None
    if not isinstance(token, str) or not token:
        raise BadRequest("Invalid input for field 'token': a string is required")
    identity = identity_of(request)
    if not await asyncio.to_thread(enrolment.redeem, identity.state_dir, token):
        raise Unauthorized("The enrolment token is unknown, expired or used up.")
    return JSONResponse(enrolment.host_config(identity.config, identity.state_dir))


routes = [Route("/cumulo/enrol", enrol, methods=["POST"])]
