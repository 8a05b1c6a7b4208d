"""What Nova's proxy APIs share: they forward to the Network, Image and Block Storage
services with the caller's token, and exist only below the microversion that removed
them (2.36 for the network, image and volume proxies), 404 from it, as Nova answers."""

from __future__ import annotations

import json as jsonlib
from typing import Any

from starlette.requests import Request

from cumulo.common.context import RequestContext
from cumulo.common.faults import ERRORS_BY_STATUS, ApiError, BadRequest, NotFound
from cumulo.common.service_client import ServiceClient, ServiceError
from cumulo.compute.api.common import authorize, compute_of, version
from cumulo.compute.api.wire import is_uuid

# The last microversion of the network, image and volume proxy APIs (Nova's
# MAX_PROXY_API_SUPPORT_VERSION).
MAX_PROXY_VERSION = (2, 35)


def require_below(request: Request, removed_at: tuple[int, int]) -> None:
    """404 at and above the microversion that removed the API."""
    if version(request) >= removed_at:
        raise NotFound("The resource could not be found.")


async def proxy_context(request: Request, removed_at: tuple[int, int] = (2, 36)) -> RequestContext:
    require_below(request, removed_at)
    return await authorize(request, "compute:servers:index")


def client(request: Request, service: str) -> ServiceClient:
    found = getattr(compute_of(request), service)
    if found is None:
        raise NotFound(f"This cloud has no {service} service.")
    return found


def check_uuid(value: str, what: str) -> str:
    if not is_uuid(value):
        raise BadRequest(f"{what} id should be uuid")
    return value


def service_message(exc: ServiceError) -> str:
    """The message of another service's error body (any of the OpenStack dialects)."""
    try:
        body = jsonlib.loads(exc.body)
    except ValueError:
        return exc.body[:300]
    if isinstance(body, dict):
        inner = next(iter(body.values()), None) if len(body) == 1 else body
        if isinstance(inner, dict) and isinstance(inner.get("message"), str):
            return inner["message"].split("<br />")[0]
        if isinstance(body.get("message"), str):
            return body["message"].split("<br />")[0]
    return exc.body[:300]


def as_compute_error(exc: ServiceError, statuses: dict[int, int] | None = None) -> ApiError:
    """Another service's error as Nova answers it (`statuses` maps theirs to Nova's)."""
    status = (statuses or {}).get(exc.status, exc.status)
    err = ERRORS_BY_STATUS.get(status, ApiError)(service_message(exc))
    err.status = status
    return err


async def call(
    request: Request,
    ctx: RequestContext,
    service: str,
    method: str,
    path: str,
    statuses: dict[int, int] | None = None,
    **kwargs: Any,
) -> Any:
    """One request to another service with the caller's token; its errors as Nova's."""
    try:
        return await client(request, service).json(method, path, ctx.auth_token, **kwargs)
    except ServiceError as exc:
        raise as_compute_error(exc, statuses) from None
