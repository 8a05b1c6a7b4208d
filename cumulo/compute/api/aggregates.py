"""Host aggregates (api-ref: Host aggregates (os-aggregates)), for admins.

An aggregate groups compute hosts and carries metadata; its `availability_zone`
metadata puts its hosts in that zone, as in Nova: the service rows' zone (what the
scheduler, `availability zone list` and `compute service list` read) follows the
aggregates at once, and the conductor keeps it when the host reports (a host in no
zoned aggregate keeps the zone it reports itself). A host is in one zone only, and an
aggregate whose hosts run servers cannot change zone (the servers would move zone).
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cumulo.common.app import json_body
from cumulo.common.db import utcnow
from cumulo.common.faults import BadRequest, Conflict, NotFound
from cumulo.common.openapi import describes, wrapped
from cumulo.compute.api import wire
from cumulo.compute.api.common import authorize, compute_of, json, version
from cumulo.compute.models import (
    Aggregate,
    AggregateHost,
    AggregateMetadata,
    ComputeService,
    Instance,
)
from cumulo.compute.scheduler.claims import COMPUTE_BINARY

AZ_KEY = "availability_zone"
RULE = "compute:aggregates"


def _view(request: Request, agg: Aggregate, hosts: list[str], meta: dict[str, str]) -> dict:
    body: dict[str, Any] = {
        "availability_zone": meta.get(AZ_KEY),
        "created_at": wire.timestamp(agg.created_at),
        "deleted": False,
        "deleted_at": None,
        "hosts": hosts,
        "id": agg.id,
        "metadata": meta,
        "name": agg.name,
        "updated_at": wire.timestamp(agg.updated_at),
    }
    if version(request) >= (2, 41):
        body["uuid"] = agg.uuid
    return body


async def _parts(s: AsyncSession, ids: list[int]) -> tuple[dict, dict]:
    hosts: dict[int, list[str]] = {i: [] for i in ids}
    meta: dict[int, dict[str, str]] = {i: {} for i in ids}
    for agg_id, host in await s.execute(
        select(AggregateHost.aggregate_id, AggregateHost.host)
        .where(AggregateHost.aggregate_id.in_(ids))
        .order_by(AggregateHost.host)
    ):
        hosts[agg_id].append(host)
    for agg_id, key, value in await s.execute(
        select(AggregateMetadata.aggregate_id, AggregateMetadata.key, AggregateMetadata.value)
        .where(AggregateMetadata.aggregate_id.in_(ids))
        .order_by(AggregateMetadata.key)
    ):
        meta[agg_id][key] = value
    return hosts, meta


async def _one(request: Request, s: AsyncSession, agg_id: int) -> dict:
    agg = await _get(s, agg_id)
    hosts, meta = await _parts(s, [agg.id])
    return _view(request, agg, hosts[agg.id], meta[agg.id])


async def _get(s: AsyncSession, agg_id: int) -> Aggregate:
    agg = await s.get(Aggregate, agg_id)
    if agg is None:
        raise NotFound(f"Aggregate {agg_id} could not be found.")
    return agg


def _aggregate_id(request: Request) -> int:
    raw = request.path_params["aggregate_id"]
    try:
        return int(raw)
    except ValueError:
        raise NotFound(f"Aggregate {raw} could not be found.") from None


def _name(value: Any, field: str = "name") -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > 255:
        raise BadRequest(f"Invalid input for field/attribute {field}: 1-255 characters.")
    return value.strip()


def _zone(value: Any) -> str | None:
    if value is None:
        return None
    zone = _name(value, AZ_KEY)
    if ":" in zone:
        raise BadRequest("Invalid input for field/attribute availability_zone: no ':'.")
    return zone


async def _zones_of_hosts(
    s: AsyncSession, hosts: list[str], excluding: int | None = None
) -> list[tuple[str, str]]:
    """(host, zone) for each zoned aggregate of these hosts (but `excluding`)."""
    query = (
        select(AggregateHost.host, AggregateMetadata.value)
        .join(AggregateMetadata, AggregateMetadata.aggregate_id == AggregateHost.aggregate_id)
        .where(AggregateHost.host.in_(hosts), AggregateMetadata.key == AZ_KEY)
    )
    if excluding is not None:
        query = query.where(AggregateHost.aggregate_id != excluding)
    return [(host, zone) for host, zone in await s.execute(query)]


async def _zone_of_hosts(s: AsyncSession, hosts: list[str]) -> dict[str, str]:
    """The zone each of these hosts gets from its zoned aggregates (if any)."""
    return dict(await _zones_of_hosts(s, hosts))


async def _apply_zones(request: Request, s: AsyncSession, hosts: list[str]) -> None:
    """Service rows follow the aggregates: a zoned aggregate's zone, else the default
    (until the host's next report brings back the zone it is configured with)."""
    if not hosts:
        return
    zones = await _zone_of_hosts(s, hosts)
    default = compute_of(request).config.compute.availability_zone
    services = await s.scalars(
        select(ComputeService).where(
            ComputeService.host.in_(hosts), ComputeService.binary == COMPUTE_BINARY
        )
    )
    for service in services:
        service.availability_zone = zones.get(service.host, default)


async def _check_zone_change(s: AsyncSession, agg: Aggregate, hosts: list[str], zone) -> None:
    """A host in one zone only; a zone does not change under running servers."""
    others = await _zones_of_hosts(s, hosts, excluding=agg.id)
    clashing = sorted({other for _, other in others if other != zone})
    if zone is not None and clashing:
        raise Conflict(
            f"Cannot update aggregate {agg.id}. Reason: One or more hosts already in "
            f"availability zone(s) {clashing}."
        )
    busy = await s.scalar(
        select(func.count())
        .select_from(Instance)
        .where(Instance.host.in_(hosts), Instance.deleted.is_(False))
    )
    if hosts and busy:
        raise BadRequest(
            f"Cannot update aggregate {agg.id}. Reason: One or more hosts contain instances "
            "in this zone."
        )


async def _set_zone(
    request: Request, s: AsyncSession, agg: Aggregate, hosts: list[str], meta: dict, zone
) -> None:
    if zone == meta.get(AZ_KEY):
        return
    await _check_zone_change(s, agg, hosts, zone)
    await s.execute(
        delete(AggregateMetadata).where(
            AggregateMetadata.aggregate_id == agg.id, AggregateMetadata.key == AZ_KEY
        )
    )
    if zone is not None:
        s.add(AggregateMetadata(aggregate_id=agg.id, key=AZ_KEY, value=zone))
    await s.flush()
    await _apply_zones(request, s, hosts)


async def list_aggregates(request: Request) -> Response:
    await authorize(request, RULE)
    async with compute_of(request).db.read() as s:
        aggs = list(await s.scalars(select(Aggregate).order_by(Aggregate.id)))
        hosts, meta = await _parts(s, [a.id for a in aggs])
    return json({"aggregates": [_view(request, a, hosts[a.id], meta[a.id]) for a in aggs]})


@describes(
    body=wrapped("aggregate", ("name", "availability_zone"), required=("name",)),
    resource="aggregate",
)
async def create_aggregate(request: Request) -> Response:
    await authorize(request, RULE)
    data = await json_body(request)
    body = data.get("aggregate") if isinstance(data, dict) else None
    if not isinstance(body, dict) or set(body) - {"name", AZ_KEY}:
        raise BadRequest("Invalid input for field/attribute aggregate.")
    name, zone = _name(body.get("name")), _zone(body.get(AZ_KEY))
    service = compute_of(request)
    try:
        async with service.db.write() as s:
            if await s.scalar(select(Aggregate.id).where(Aggregate.name == name)) is not None:
                raise Conflict(f"Aggregate {name} already exists.")
            agg = Aggregate(uuid=str(uuid.uuid4()), name=name)
            s.add(agg)
            await s.flush()
            if zone is not None:
                s.add(AggregateMetadata(aggregate_id=agg.id, key=AZ_KEY, value=zone))
                await s.flush()
            view = await _one(request, s, agg.id)
    except IntegrityError:
        raise Conflict(f"Aggregate {name} already exists.") from None
    # The create answer has neither hosts nor metadata (api-ref).
    del view["hosts"], view["metadata"]
    return json({"aggregate": view})


async def show_aggregate(request: Request) -> Response:
    await authorize(request, RULE)
    async with compute_of(request).db.read() as s:
        return json({"aggregate": await _one(request, s, _aggregate_id(request))})


async def update_aggregate(request: Request) -> Response:
    await authorize(request, RULE)
    data = await json_body(request)
    body = data.get("aggregate") if isinstance(data, dict) else None
    if not isinstance(body, dict) or not body or set(body) - {"name", AZ_KEY}:
        raise BadRequest("Invalid input for field/attribute aggregate.")
    service = compute_of(request)
    try:
        async with service.db.write() as s:
            agg = await _get(s, _aggregate_id(request))
            hosts, meta = await _parts(s, [agg.id])
            if "name" in body:
                name = _name(body["name"])
                taken = await s.scalar(
                    select(Aggregate.id).where(Aggregate.name == name, Aggregate.id != agg.id)
                )
                if taken is not None:
                    raise Conflict(f"Aggregate {name} already exists.")
                agg.name = name
            if AZ_KEY in body:
                zone = _zone(body[AZ_KEY])
                await _set_zone(request, s, agg, hosts[agg.id], meta[agg.id], zone)
            agg.updated_at = utcnow()
            await s.flush()
            view = await _one(request, s, agg.id)
    except IntegrityError:
        raise Conflict(f"Aggregate {body.get('name')} already exists.") from None
    return json({"aggregate": view})


async def delete_aggregate(request: Request) -> Response:
    await authorize(request, RULE)
    async with compute_of(request).db.write() as s:
        agg = await _get(s, _aggregate_id(request))
        hosts, _ = await _parts(s, [agg.id])
        if hosts[agg.id]:
            raise BadRequest(
                f"Cannot perform action 'delete' on aggregate {agg.id}. "
                "Reason: Host aggregate is not empty."
            )
        await s.delete(agg)
    return Response(status_code=200)


async def aggregate_action(request: Request) -> Response:
    await authorize(request, RULE)
    data = await json_body(request)
    if not isinstance(data, dict) or len(data) != 1:
        raise BadRequest("Malformed request body: one action is expected.")
    [(action, args)] = data.items()
    if action not in ("add_host", "remove_host", "set_metadata") or not isinstance(args, dict):
        raise BadRequest(f"Invalid input for field/attribute {action}.")
    async with compute_of(request).db.write() as s:
        agg = await _get(s, _aggregate_id(request))
        hosts, meta = await _parts(s, [agg.id])
        members, metadata = hosts[agg.id], meta[agg.id]
        if action == "set_metadata":
            await _set_metadata(request, s, agg, members, metadata, args.get("metadata"))
        else:
            host = _name(args.get("host"), "host")
            if action == "add_host":
                await _add_host(request, s, agg, members, metadata, host)
            else:
                await _remove_host(request, s, agg, members, host)
        agg.updated_at = utcnow()
        await s.flush()
        view = await _one(request, s, agg.id)
    return json({"aggregate": view})


async def _add_host(request, s, agg: Aggregate, members, metadata, host: str) -> None:
    known = await s.scalar(
        select(ComputeService.id).where(
            ComputeService.host == host, ComputeService.binary == COMPUTE_BINARY
        )
    )
    if known is None:
        raise NotFound(f"Compute host {host} could not be found.")
    if host in members:
        raise Conflict(f"Aggregate {agg.id} already has host {host}.")
    zone = metadata.get(AZ_KEY)
    if zone is not None:
        current = (await _zone_of_hosts(s, [host])).get(host)
        if current is not None and current != zone:
            raise Conflict(
                f"Cannot add host to aggregate {agg.id}. Reason: One or more hosts already "
                f"in availability zone(s) ['{current}']."
            )
    s.add(AggregateHost(aggregate_id=agg.id, host=host))
    await s.flush()
    await _apply_zones(request, s, [host])


async def _remove_host(request, s, agg: Aggregate, members, host: str) -> None:
    if host not in members:
        raise NotFound(f"Aggregate {agg.id} has no host {host}.")
    await s.execute(
        delete(AggregateHost).where(
            AggregateHost.aggregate_id == agg.id, AggregateHost.host == host
        )
    )
    await s.flush()
    await _apply_zones(request, s, [host])


async def _set_metadata(request, s, agg: Aggregate, members, metadata, changes) -> None:
    """Merge: a value sets the key, null removes it."""
    if not isinstance(changes, dict) or not all(
        isinstance(k, str) and 1 <= len(k) <= 255 and (v is None or isinstance(v, str))
        for k, v in changes.items()
    ):
        raise BadRequest("Invalid input for field/attribute metadata.")
    if AZ_KEY in changes:
        zone = _zone(changes[AZ_KEY])
        await _set_zone(request, s, agg, members, metadata, zone)
    for key, value in changes.items():
        if key == AZ_KEY:
            continue
        if len(value or "") > 255:
            raise BadRequest(f"Invalid input for field/attribute metadata: {key} is too long.")
        await s.execute(
            delete(AggregateMetadata).where(
                AggregateMetadata.aggregate_id == agg.id, AggregateMetadata.key == key
            )
        )
        if value is not None:
            s.add(AggregateMetadata(aggregate_id=agg.id, key=key, value=value))


def _image_ids(data: Any) -> list[str]:
    """{"cache": [{"id": <image uuid>}, ...]}: at least one, no duplicates."""
    cache = data.get("cache") if isinstance(data, dict) else None
    if not isinstance(data, dict) or set(data) != {"cache"}:
        raise BadRequest("Invalid input for field/attribute cache. 'cache' is a required property")
    if not isinstance(cache, list) or not cache:
        raise BadRequest(f"Invalid input for field/attribute cache. Value: {cache}.")
    ids = []
    for item in cache:
        if not isinstance(item, dict) or set(item) != {"id"}:
            raise BadRequest(f"Invalid input for field/attribute cache. Value: {item}.")
        if not isinstance(item["id"], str) or not wire.is_uuid(item["id"]):
            raise wire.invalid("id", item["id"], f"{item['id']!r} is not a 'uuid'")
        ids.append(item["id"])
    if len(set(ids)) != len(ids):
        raise BadRequest("Duplicate images in request")
    return ids


async def cache_images(request: Request) -> Response:
    """POST /os-aggregates/{id}/images (2.81): the aggregate's hosts fetch the images
    into their image caches; 202 once they are asked."""
    if version(request) < (2, 81):
        raise NotFound("The resource could not be found.")
    ctx = await authorize(request, RULE)
    raw_id = request.path_params["aggregate_id"]
    image_ids = _image_ids(await json_body(request))
    agg_id = wire.integer("id", raw_id, 0)  # Nova: a malformed id is a 400 here
    async with compute_of(request).db.read() as s:
        agg = await _get(s, agg_id)
        hosts, _ = await _parts(s, [agg.id])
    await compute_of(request).cache_images(ctx, hosts[agg.id], image_ids)
    return Response(status_code=202)


routes = [
    Route("/v2.1/os-aggregates", list_aggregates, methods=["GET"]),
    Route("/v2.1/os-aggregates", create_aggregate, methods=["POST"]),
    Route("/v2.1/os-aggregates/{aggregate_id}", show_aggregate, methods=["GET"]),
    Route("/v2.1/os-aggregates/{aggregate_id}", update_aggregate, methods=["PUT"]),
    Route("/v2.1/os-aggregates/{aggregate_id}", delete_aggregate, methods=["DELETE"]),
    Route("/v2.1/os-aggregates/{aggregate_id}/action", aggregate_action, methods=["POST"]),
    Route("/v2.1/os-aggregates/{aggregate_id}/images", cache_images, methods=["POST"]),
]
