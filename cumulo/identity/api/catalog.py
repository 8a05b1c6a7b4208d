"""/v3/regions, /v3/services, /v3/endpoints: the service catalog (api-ref: Service catalog
and endpoints, Regions).

Every write goes through `Identity.write()`, which drops the cached catalog, so the next
token and `GET /v3/auth/catalog` show the change at once.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, StrictBool, StrictStr
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cumulo.common.app import json_body, validate
from cumulo.common.faults import BadRequest, Conflict, Forbidden
from cumulo.identity.api.common import (
    Body,
    Name,
    authorize,
    extras_of,
    get_or_404,
    identity_of,
    json,
    list_rows,
    missing_reference,
    new_id,
    no_content,
    section,
    self_link,
    update_body,
)
from cumulo.identity.models import Endpoint, Region, Service

INTERFACES = ("public", "internal", "admin")
# Keystone's endpoint url schema: a scheme, a colon, something after it.
URL_PATTERN = r"^[a-zA-Z0-9+.-]+:.+"
# The only $(name)s substitutions Keystone accepts in an endpoint URL.
URL_SUBSTITUTIONS = frozenset(
    (
        "tenant_id",
        "project_id",
        "user_id",
        "public_bind_host",
        "admin_bind_host",
        "compute_host",
        "admin_port",
        "public_port",
        "public_endpoint",
        "admin_endpoint",
    )
)
_SUBSTITUTION = re.compile(r"\$\((\w*)\)s")


# -- regions ------------------------------------------------------------------------

_REGION_FIELDS = {"id", "description", "parent_region_id", "links"}


class RegionBody(Body):
    id: StrictStr | None = Field(None, max_length=255)
    description: StrictStr | None = None
    parent_region_id: StrictStr | None = None


def render_region(request: Request, r: Region) -> dict[str, Any]:
    return {
        **(r.extra or {}),
        "id": r.id,
        "description": r.description or "",
        "parent_region_id": r.parent_region_id,
        "links": self_link(request, f"regions/{r.id}"),
    }


async def _store_region(request: Request, body: RegionBody) -> Response:
    region = Region(
        id=body.id or new_id(),
        description=body.description or "",
        parent_region_id=body.parent_region_id,
        extra=extras_of(body, _REGION_FIELDS),
    )
    try:
        async with identity_of(request).write() as session:
            if await session.get(Region, region.id) is not None:
                raise Conflict(
                    f"Conflict occurred attempting to store region - Duplicate ID, {region.id}."
                )
            if region.parent_region_id is not None:
                await get_or_404(session, Region, region.parent_region_id)
            session.add(region)
    except IntegrityError:
        raise Conflict(f"Conflict occurred attempting to store region {region.id}.") from None
    return json({"region": render_region(request, region)}, status=201)


async def create_region(request: Request) -> Response:
    """POST /v3/regions: the id is optional (generated when absent)."""
    await authorize(request, "identity:create_region")
    body = validate(RegionBody, section(await json_body(request), "region"))
    return await _store_region(request, body)


async def create_region_with_id(request: Request) -> Response:
    """PUT /v3/regions/{region_id}: create with the id in the path."""
    await authorize(request, "identity:create_region")
    region_id = request.path_params["region_id"]
    body = validate(RegionBody, section(await json_body(request), "region"))
    if body.id is not None and body.id != region_id:
        raise BadRequest(f'Conflicting region IDs specified: "{region_id}" != "{body.id}"')
    body.id = region_id
    return await _store_region(request, body)


async def list_regions(request: Request) -> Response:
    await authorize(request, "identity:list_regions")
    filters = {"parent_region_id": Region.parent_region_id}
    return await list_rows(request, "regions", Region, filters, render_region)


async def show_region(request: Request) -> Response:
    await authorize(request, "identity:get_region")
    async with identity_of(request).read() as session:
        region = await get_or_404(session, Region, request.path_params["region_id"])
    return json({"region": render_region(request, region)})


async def update_region(request: Request) -> Response:
    await authorize(request, "identity:update_region")
    region_id = request.path_params["region_id"]
    body = await update_body(request, "region", RegionBody, region_id)
    fields = body.model_fields_set
    async with identity_of(request).write() as session:
        region = await get_or_404(session, Region, region_id)
        if "parent_region_id" in fields and body.parent_region_id is not None:
            await _check_no_cycle(session, region_id, body.parent_region_id)
        if "parent_region_id" in fields:
            region.parent_region_id = body.parent_region_id
        if "description" in fields:
            region.description = body.description or ""
        if extras := extras_of(body, _REGION_FIELDS):
            region.extra = {**(region.extra or {}), **extras}
    return json({"region": render_region(request, region)})


async def _check_no_cycle(session: AsyncSession, region_id: str, parent_id: str) -> None:
    seen: set[str] = set()
    current: str | None = parent_id
    while current is not None and current not in seen:
        if current == region_id:
            raise BadRequest(
                f"The specified parent region {parent_id} would create a circular region hierarchy."
            )
        seen.add(current)
        current = (await get_or_404(session, Region, current)).parent_region_id


async def delete_region(request: Request) -> Response:
    """Keystone deletes the child regions too, and refuses while any of them has endpoints."""
    await authorize(request, "identity:delete_region")
    region_id = request.path_params["region_id"]
    async with identity_of(request).write() as session:
        await get_or_404(session, Region, region_id)
        tree = [region_id]
        frontier = [region_id]
        while frontier:
            children = (
                await session.scalars(
                    select(Region.id).where(Region.parent_region_id.in_(frontier))
                )
            ).all()
            frontier = [c for c in children if c not in tree]
            tree += frontier
        in_use = await session.scalar(
            select(Endpoint.id).where(Endpoint.region_id.in_(tree)).limit(1)
        )
        if in_use is not None:
            raise Forbidden(
                f"Unable to delete region {region_id} because it or its child regions "
                "have associated endpoints."
            )
        for rid in reversed(tree):  # leaves first: parent_region_id is a foreign key
            await session.execute(delete(Region).where(Region.id == rid))
    return no_content()


# -- services -----------------------------------------------------------------------

_SERVICE_FIELDS = {"id", "type", "name", "description", "enabled", "links"}


class ServiceCreate(Body):
    type: StrictStr = Field(min_length=1, max_length=255)
    name: StrictStr | None = Name(255, required=False)
    description: StrictStr | None = None
    enabled: StrictBool = True


class ServiceUpdate(Body):
    type: StrictStr | None = Field(None, min_length=1, max_length=255)
    name: StrictStr | None = Name(255, required=False)
    description: StrictStr | None = None
    enabled: StrictBool | None = None


def render_service(request: Request, s: Service) -> dict[str, Any]:
    body = {
        **(s.extra or {}),
        "id": s.id,
        "type": s.type,
        "name": s.name or "",
        "enabled": s.enabled,
        "links": self_link(request, f"services/{s.id}"),
    }
    if s.description is not None:  # Keystone shows it only when it was given
        body["description"] = s.description
    return body


async def create_service(request: Request) -> Response:
    await authorize(request, "identity:create_service")
    body = validate(ServiceCreate, section(await json_body(request), "service"))
    service = Service(
        id=new_id(),
        type=body.type,
        name=body.name or "",
        description=body.description,
        enabled=body.enabled,
        extra=extras_of(body, _SERVICE_FIELDS),
    )
    async with identity_of(request).write() as session:
        session.add(service)
    return json({"service": render_service(request, service)}, status=201)


async def list_services(request: Request) -> Response:
    await authorize(request, "identity:list_services")
    filters = {"type": Service.type, "name": Service.name}
    return await list_rows(request, "services", Service, filters, render_service)


async def show_service(request: Request) -> Response:
    await authorize(request, "identity:get_service")
    async with identity_of(request).read() as session:
        service = await get_or_404(session, Service, request.path_params["service_id"])
    return json({"service": render_service(request, service)})


async def update_service(request: Request) -> Response:
    await authorize(request, "identity:update_service")
    service_id = request.path_params["service_id"]
    body = await update_body(request, "service", ServiceUpdate, service_id)
    fields = body.model_fields_set
    async with identity_of(request).write() as session:
        service = await get_or_404(session, Service, service_id)
        for name in ("type", "name", "enabled"):
            if name in fields and getattr(body, name) is not None:
                setattr(service, name, getattr(body, name))
        if "description" in fields:
            service.description = body.description
        if extras := extras_of(body, _SERVICE_FIELDS):
            service.extra = {**(service.extra or {}), **extras}
    return json({"service": render_service(request, service)})


async def delete_service(request: Request) -> Response:
    """Deleting a service deletes its endpoints, as Keystone does."""
    await authorize(request, "identity:delete_service")
    service_id = request.path_params["service_id"]
    async with identity_of(request).write() as session:
        await get_or_404(session, Service, service_id)
        await session.execute(delete(Endpoint).where(Endpoint.service_id == service_id))
        await session.execute(delete(Service).where(Service.id == service_id))
    return no_content()


# -- endpoints ----------------------------------------------------------------------

_ENDPOINT_FIELDS = {
    "id",
    "interface",
    "region",
    "region_id",
    "service_id",
    "url",
    "enabled",
    "links",
}


class EndpointCreate(Body):
    interface: Literal["public", "internal", "admin"]
    service_id: StrictStr
    url: StrictStr = Field(max_length=225, pattern=URL_PATTERN)
    region_id: StrictStr | None = None
    region: StrictStr | None = None  # deprecated in v3.2; still accepted
    enabled: StrictBool = True


class EndpointUpdate(Body):
    interface: Literal["public", "internal", "admin"] | None = None
    service_id: StrictStr | None = None
    url: StrictStr | None = Field(None, max_length=225, pattern=URL_PATTERN)
    region_id: StrictStr | None = None
    region: StrictStr | None = None
    enabled: StrictBool | None = None


def render_endpoint(request: Request, e: Endpoint) -> dict[str, Any]:
    return {
        **(e.extra or {}),
        "id": e.id,
        "interface": e.interface,
        "region_id": e.region_id,
        "region": e.region_id,
        "service_id": e.service_id,
        "url": e.url,
        "enabled": e.enabled,
        "links": self_link(request, f"endpoints/{e.id}"),
    }


def _check_url(url: str) -> None:
    for name in _SUBSTITUTION.findall(url):
        if name not in URL_SUBSTITUTIONS:
            raise BadRequest(f"Invalid endpoint URL ({url}): unknown substitution $({name})s.")


async def _endpoint_region(
    session: AsyncSession, body: EndpointCreate | EndpointUpdate
) -> str | None:
    """The region to store; the legacy `region` key creates its region when missing."""
    if body.region_id is None and body.region is not None:
        if await session.get(Region, body.region) is None:
            session.add(Region(id=body.region, description="", extra={}))
            await session.flush()
        return body.region
    if body.region_id is not None and await session.get(Region, body.region_id) is None:
        raise missing_reference("endpoint region_id", "region table")
    return body.region_id


async def _check_service(session: AsyncSession, service_id: str) -> None:
    if await session.get(Service, service_id) is None:
        raise missing_reference("endpoint service_id", "service table")


async def create_endpoint(request: Request) -> Response:
    await authorize(request, "identity:create_endpoint")
    body = validate(EndpointCreate, section(await json_body(request), "endpoint"))
    _check_url(body.url)
    async with identity_of(request).write() as session:
        await _check_service(session, body.service_id)
        endpoint = Endpoint(
            id=new_id(),
            service_id=body.service_id,
            interface=body.interface,
            url=body.url,
            region_id=await _endpoint_region(session, body),
            enabled=body.enabled,
            extra=extras_of(body, _ENDPOINT_FIELDS),
        )
        session.add(endpoint)
    return json({"endpoint": render_endpoint(request, endpoint)}, status=201)


async def list_endpoints(request: Request) -> Response:
    await authorize(request, "identity:list_endpoints")
    interface = request.query_params.get("interface")
    if interface is not None and interface not in INTERFACES:
        raise BadRequest(
            f"Invalid input for field 'interface': {interface!r} is not one of {list(INTERFACES)}."
        )
    filters = {
        "interface": Endpoint.interface,
        "service_id": Endpoint.service_id,
        "region_id": Endpoint.region_id,
    }
    return await list_rows(request, "endpoints", Endpoint, filters, render_endpoint)


async def show_endpoint(request: Request) -> Response:
    await authorize(request, "identity:get_endpoint")
    async with identity_of(request).read() as session:
        endpoint = await get_or_404(session, Endpoint, request.path_params["endpoint_id"])
    return json({"endpoint": render_endpoint(request, endpoint)})


async def update_endpoint(request: Request) -> Response:
    await authorize(request, "identity:update_endpoint")
    endpoint_id = request.path_params["endpoint_id"]
    body = await update_body(request, "endpoint", EndpointUpdate, endpoint_id)
    if body.url is not None:
        _check_url(body.url)
    fields = body.model_fields_set
    async with identity_of(request).write() as session:
        endpoint = await get_or_404(session, Endpoint, endpoint_id)
        if body.service_id is not None:
            await _check_service(session, body.service_id)
            endpoint.service_id = body.service_id
        if fields & {"region_id", "region"}:
            endpoint.region_id = await _endpoint_region(session, body)
        for name in ("interface", "url", "enabled"):
            if name in fields and getattr(body, name) is not None:
                setattr(endpoint, name, getattr(body, name))
        if extras := extras_of(body, _ENDPOINT_FIELDS):
            endpoint.extra = {**(endpoint.extra or {}), **extras}
    return json({"endpoint": render_endpoint(request, endpoint)})


async def delete_endpoint(request: Request) -> Response:
    await authorize(request, "identity:delete_endpoint")
    endpoint_id = request.path_params["endpoint_id"]
    async with identity_of(request).write() as session:
        await get_or_404(session, Endpoint, endpoint_id)
        await session.execute(delete(Endpoint).where(Endpoint.id == endpoint_id))
    return no_content()


routes = [
    Route("/v3/regions", create_region, methods=["POST"]),
    Route("/v3/regions", list_regions, methods=["GET"]),
    Route("/v3/regions/{region_id}", show_region, methods=["GET"]),
    Route("/v3/regions/{region_id}", create_region_with_id, methods=["PUT"]),
    Route("/v3/regions/{region_id}", update_region, methods=["PATCH"]),
    Route("/v3/regions/{region_id}", delete_region, methods=["DELETE"]),
    Route("/v3/services", create_service, methods=["POST"]),
    Route("/v3/services", list_services, methods=["GET"]),
    Route("/v3/services/{service_id}", show_service, methods=["GET"]),
    Route("/v3/services/{service_id}", update_service, methods=["PATCH"]),
    Route("/v3/services/{service_id}", delete_service, methods=["DELETE"]),
    Route("/v3/endpoints", create_endpoint, methods=["POST"]),
    Route("/v3/endpoints", list_endpoints, methods=["GET"]),
    Route("/v3/endpoints/{endpoint_id}", show_endpoint, methods=["GET"]),
    Route("/v3/endpoints/{endpoint_id}", update_endpoint, methods=["PATCH"]),
    Route("/v3/endpoints/{endpoint_id}", delete_endpoint, methods=["DELETE"]),
]
