"""Compute services: list, enable/disable, force down, delete (api-ref: Compute services
(os-services)). Ids are integers before 2.53 and UUIDs from 2.53."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cumulo.common.app import json_body
from cumulo.common.db import utcnow
from cumulo.common.faults import BadRequest, Conflict, NotFound
from cumulo.compute.api import wire
from cumulo.compute.api.common import authorize, compute_of, json, no_content, version
from cumulo.compute.models import ComputeNode, ComputeService, Instance
from cumulo.compute.scheduler.claims import COMPUTE_BINARY

# The compute agent's binary as clients name it (Nova's nova-compute: Tempest, the
# openstack CLI's --service); kept as COMPUTE_BINARY in the service records.
WIRE_COMPUTE_BINARY = "nova-compute"


def wire_binary(binary: str) -> str:
    return WIRE_COMPUTE_BINARY if binary == COMPUTE_BINARY else binary


def stored_binary(binary: str) -> str:
    return COMPUTE_BINARY if binary == WIRE_COMPUTE_BINARY else binary


def is_up(request: Request, service: ComputeService | None, now: datetime) -> bool:
    """Up: not forced down, and a heartbeat within service_down_time."""
    if service is None or service.forced_down or service.last_seen_up is None:
        return False
    down_time = timedelta(seconds=compute_of(request).config.compute.service_down_time)
    return now - service.last_seen_up <= down_time


def service_id(request: Request, service: ComputeService) -> int | str:
    return service.uuid if version(request) >= (2, 53) else service.id


def service_view(request: Request, service: ComputeService, now: datetime) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": service_id(request, service),
        "binary": wire_binary(service.binary),
        "host": service.host,
        "zone": service.availability_zone if service.binary == COMPUTE_BINARY else "internal",
        "status": "disabled" if service.disabled else "enabled",
        "state": "up" if is_up(request, service, now) else "down",
        "updated_at": wire.timestamp(service.last_seen_up or service.updated_at),
        "disabled_reason": service.disabled_reason,
    }
    if version(request) >= (2, 11):
        body["forced_down"] = bool(service.forced_down)
    return body


async def find_service(s: AsyncSession, request: Request, raw_id: str) -> ComputeService:
    """By UUID from 2.53, by integer id before."""
    if version(request) >= (2, 53):
        if not wire.is_uuid(raw_id):
            raise BadRequest(f"Invalid uuid {raw_id}")
        service = await s.scalar(select(ComputeService).where(ComputeService.uuid == raw_id))
    else:
        if not raw_id.isdecimal():
            raise BadRequest(f"Invalid ID {raw_id}")
        service = await s.get(ComputeService, int(raw_id))
    if service is None:
        raise NotFound(f"Service {raw_id} not found.")
    return service


async def list_services(request: Request) -> Response:
    """GET /os-services?host=&binary="""
    await authorize(request, "compute:services:list")
    query = select(ComputeService).order_by(ComputeService.id)
    if (host := request.query_params.get("host")) is not None:
        query = query.where(ComputeService.host == host)
    if (binary := request.query_params.get("binary")) is not None:
        query = query.where(ComputeService.binary == stored_binary(binary))
    async with compute_of(request).db.read() as s:
        services = list((await s.scalars(query)).all())
    now = utcnow()
    return json({"services": [service_view(request, svc, now) for svc in services]})


def _check_update_body(body: dict[str, Any]) -> dict[str, Any]:
    wire.reject_unknown(body, {"status", "disabled_reason", "forced_down"})
    status = body.get("status")
    if status is not None and status not in ("enabled", "disabled"):
        raise wire.invalid("status", status, f"'{status}' is not one of ['enabled', 'disabled']")
    reason = body.get("disabled_reason")
    if reason is not None and (not isinstance(reason, str) or not 1 <= len(reason) <= 255):
        raise wire.invalid("disabled_reason", reason, "must be a string of 1-255 characters")
    if "forced_down" in body:
        body["forced_down"] = wire.boolean("forced_down", body["forced_down"])
    if status is None and body.get("forced_down") is None:
        raise BadRequest(
            "No updates were requested. Fields 'status' or 'forced_down' should be specified."
        )
    if reason is not None and status != "disabled":
        raise BadRequest("Specifying 'disabled_reason' with status 'enabled' is invalid.")
    return body


async def update_service(request: Request) -> Response:
    """PUT /os-services/{service_id} (2.53): status, disabled_reason, forced_down."""
    raw = request.path_params["service_id"]
    if version(request) < (2, 53):
        return await _legacy_action(request, raw)
    await authorize(request, "compute:services:update")
    body = _check_update_body(wire.mapping(await json_body(request)))
    async with compute_of(request).db.write() as s:
        service = await find_service(s, request, raw)
        if service.binary != COMPUTE_BINARY and body.get("status"):
            raise BadRequest(
                f"Updating a {wire_binary(service.binary)} service is not supported. "
                f"Only {WIRE_COMPUTE_BINARY} services can be updated."
            )
        if body.get("status") is not None:
            service.disabled = body["status"] == "disabled"
            service.disabled_reason = body.get("disabled_reason") if service.disabled else None
        if body.get("forced_down") is not None:
            service.forced_down = body["forced_down"]
    return json({"service": service_view(request, service, utcnow())})


async def _legacy_action(request: Request, action: str) -> Response:
    """Before 2.53: PUT /os-services/{enable,disable,disable-log-reason,force-down}."""
    actions = {"enable", "disable", "disable-log-reason"}
    if version(request) >= (2, 11):
        actions.add("force-down")
    if action not in actions:
        raise NotFound("Unknown action")
    await authorize(request, "compute:services:update")
    body = wire.mapping(await json_body(request))
    host, binary = body.get("host"), body.get("binary")
    if not isinstance(host, str) or not isinstance(binary, str):
        raise BadRequest("Invalid input for field/attribute host/binary: both are required")
    reason = body.get("disabled_reason")
    if action == "disable-log-reason" and (
        not isinstance(reason, str) or not 1 <= len(reason) <= 255
    ):
        raise BadRequest("Missing disabled reason field")
    forced = (
        wire.boolean("forced_down", body.get("forced_down")) if action == "force-down" else None
    )
    async with compute_of(request).db.write() as s:
        service = await s.scalar(
            select(ComputeService).where(
                ComputeService.host == host, ComputeService.binary == stored_binary(binary)
            )
        )
        if service is None:
            raise NotFound(f"Compute host {host} with binary {binary} could not be found.")
        view: dict[str, Any] = {"host": host, "binary": binary}
        if action == "force-down":
            service.forced_down = bool(forced)
            view["forced_down"] = bool(forced)
        else:
            service.disabled = action != "enable"
            service.disabled_reason = reason if action == "disable-log-reason" else None
            view["status"] = "disabled" if service.disabled else "enabled"
            if action == "disable-log-reason":
                view["disabled_reason"] = reason
    return json({"service": view})


async def delete_service(request: Request) -> Response:
    """DELETE /os-services/{id}: a compute service still hosting servers is a 409."""
    await authorize(request, "compute:services:delete")
    async with compute_of(request).db.write() as s:
        service = await find_service(s, request, request.path_params["service_id"])
        if service.binary == COMPUTE_BINARY:
            hosting = await s.scalar(
                select(func.count(Instance.id)).where(
                    Instance.host == service.host, Instance.deleted.is_(False)
                )
            )
            if hosting:
                raise Conflict(
                    "Unable to delete compute service that is hosting instances. "
                    "Migrate or delete the instances first."
                )
            await s.execute(delete(ComputeNode).where(ComputeNode.host == service.host))
        await s.delete(service)
    return no_content(204)


routes = [
    Route("/v2.1/os-services", list_services, methods=["GET"]),
    Route("/v2.1/os-services/{service_id}", update_service, methods=["PUT"]),
    Route("/v2.1/os-services/{service_id}", delete_service, methods=["DELETE"]),
]
