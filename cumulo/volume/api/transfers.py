"""Volume transfers (Block Storage v3 api-ref, "Volume transfer"): the owner offers an
available volume (it waits in `awaiting-transfer`), another project takes it with the
transfer's id and auth key. `/os-volume-transfer`, and `/volume-transfers` from 3.55
(`no_snapshots`); 3.57 shows the source, destination and `accepted`."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from typing import Any

from sqlalchemy import select, update
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cumulo.common.app import json_body
from cumulo.common.context import RequestContext
from cumulo.common.db import utcnow
from cumulo.common.faults import BadRequest, NotFound
from cumulo.volume import quotas, states
from cumulo.volume.api.common import (
    accepted,
    at_least,
    authorize,
    isotime,
    json,
    links,
    list_body,
    page_of,
    page_params,
    parse_bool,
    service_of,
)
from cumulo.volume.api.volumes import require_unencrypted
from cumulo.volume.models import Snapshot, Transfer, Volume

AUTH_KEY_LENGTH = 16


def _crypt_hash(salt: str, auth_key: str) -> str:
    return hashlib.sha256(f"{salt}{auth_key}".encode()).hexdigest()


def _view(request: Request, t: Transfer, *, detail: bool, auth_key: str | None = None) -> dict:
    body: dict[str, Any] = {
        "id": t.id,
        "name": t.name,
        "volume_id": t.volume_id,
        "links": links(request, "os-volume-transfer", t.id),
    }
    if not detail:
        return body
    body["created_at"] = isotime(t.created_at)
    if auth_key is not None:
        body["auth_key"] = auth_key
    if at_least(request, 3, 55):
        body["no_snapshots"] = t.no_snapshots
    if at_least(request, 3, 57):
        body.update(
            destination_project_id=t.destination_project_id,
            source_project_id=t.source_project_id,
            accepted=t.accepted,
        )
    return body


def _require_new_path(request: Request) -> None:
    if "/volume-transfers" in request.url.path and not at_least(request, 3, 55):
        raise NotFound("Could not find the requested resource.")


async def _load(request: Request, ctx: RequestContext, transfer_id: str) -> Transfer:
    service = service_of(request)
    async with service.db.read() as session:
        t = await session.get(Transfer, transfer_id)
    if (
        t is None
        or t.accepted
        or (t.source_project_id != ctx.project_id and not service.is_admin(ctx))
    ):
        raise NotFound(f"Transfer {transfer_id} could not be found.")
    return t


async def create_transfer(request: Request) -> Response:
    _require_new_path(request)
    body = await json_body(request)
    spec = body.get("transfer") if isinstance(body, dict) else None
    if not isinstance(spec, dict):
        raise BadRequest("Missing required element 'transfer' in request body.")
    volume_id = spec.get("volume_id")
    if not isinstance(volume_id, str):
        raise BadRequest("Invalid input received: 'volume_id' must be specified.")
    name = spec.get("name", spec.get("display_name"))
    if name is not None and (not isinstance(name, str) or len(name) > 255):
        raise BadRequest(f"Invalid input for field/attribute name. Value: {name}.")
    no_snapshots = False
    if at_least(request, 3, 55) and "no_snapshots" in spec:
        no_snapshots = bool(parse_bool(str(spec["no_snapshots"]), "no_snapshots"))
    ctx = await authorize(request, "volume:create_transfer")
    service = service_of(request)
    auth_key = secrets.token_hex(AUTH_KEY_LENGTH // 2)
    salt = secrets.token_hex(8)
    transfer = Transfer(
        id=str(uuid.uuid4()),
        volume_id=volume_id,
        name=name,
        salt=salt,
        crypt_hash=_crypt_hash(salt, auth_key),
        no_snapshots=no_snapshots,
        accepted=False,
    )
    async with service.db.write() as session:
        volume = await session.scalar(
            select(Volume).where(Volume.id == volume_id).with_for_update()
        )
        if volume is None or (volume.project_id != ctx.project_id and not service.is_admin(ctx)):
            raise NotFound(f"Volume {volume_id} could not be found.")
        require_unencrypted(volume, "Transferring")
        states.require_volume_status(volume.status, (states.AVAILABLE,), "transfer it")
        if not no_snapshots:
            for snap in await session.scalars(
                select(Snapshot).where(Snapshot.volume_id == volume_id)
            ):
                if snap.status != states.AVAILABLE:
                    raise BadRequest(
                        f"Invalid volume: snapshot: {snap.id} status must be available"
                    )
        transfer.source_project_id = volume.project_id
        volume.status, volume.updated_at = states.AWAITING_TRANSFER, utcnow()
        session.add(transfer)
    return accepted({"transfer": _view(request, transfer, detail=True, auth_key=auth_key)})


async def _list(request: Request, detail: bool) -> Response:
    _require_new_path(request)
    ctx = await authorize(request, "volume:get_all_transfers")
    service = service_of(request)
    limit, marker, offset = page_params(request, service.config.volume.list_limit)
    where: list[Any] = [Transfer.accepted.is_(False)]
    if not (
        service.is_admin(ctx) and parse_bool(request.query_params.get("all_tenants"), "all_tenants")
    ):
        where.append(Transfer.source_project_id == ctx.project_id)
    if request.query_params.get("name"):
        where.append(Transfer.name == request.query_params["name"])
    async with service.db.read() as session:
        rows = list(
            await session.scalars(
                select(Transfer).where(*where).order_by(Transfer.created_at.desc(), Transfer.id)
            )
        )
    by_id = {t.id: t for t in rows}
    page, more = page_of([t.id for t in rows], marker, limit, offset)
    items = [_view(request, by_id[i], detail=detail) for i in page]
    collection = "os-volume-transfer/detail" if detail else "os-volume-transfer"
    return json(list_body(request, "transfers", items, collection, page, more))


async def list_transfers(request: Request) -> Response:
    return await _list(request, detail=False)


async def list_transfers_detail(request: Request) -> Response:
    return await _list(request, detail=True)


async def show_transfer(request: Request) -> Response:
    _require_new_path(request)
    ctx = await authorize(request, "volume:get_transfer")
    transfer = await _load(request, ctx, request.path_params["id"])
    return json({"transfer": _view(request, transfer, detail=True)})


async def delete_transfer(request: Request) -> Response:
    _require_new_path(request)
    ctx = await authorize(request, "volume:delete_transfer")
    transfer = await _load(request, ctx, request.path_params["id"])
    async with service_of(request).db.write() as session:
        await session.delete(await session.get(Transfer, transfer.id))
        await session.execute(
            update(Volume)
            .where(Volume.id == transfer.volume_id, Volume.status == states.AWAITING_TRANSFER)
            .values(status=states.AVAILABLE, updated_at=utcnow())
        )
    return accepted()


async def accept_transfer(request: Request) -> Response:
    """The caller's project takes the volume (and its snapshots unless no_snapshots),
    within its quota; the transfer is kept as accepted (3.57's history), no longer listed."""
    _require_new_path(request)
    transfer_id = request.path_params["id"]
    body = await json_body(request)
    spec = body.get("accept") if isinstance(body, dict) else None
    auth_key = spec.get("auth_key") if isinstance(spec, dict) else None
    if not isinstance(auth_key, str):
        raise BadRequest("Invalid input received: 'auth_key' must be specified.")
    ctx = await authorize(request, "volume:accept_transfer")
    service = service_of(request)
    async with service.db.write() as session:
        transfer = await session.get(Transfer, transfer_id)
        if transfer is None or transfer.accepted:
            raise NotFound(f"Transfer {transfer_id} could not be found.")
        if not hmac.compare_digest(transfer.crypt_hash, _crypt_hash(transfer.salt, auth_key)):
            raise BadRequest(
                f"Invalid auth key: Attempt to transfer {transfer_id} with invalid auth key."
            )
        volume = await session.scalar(
            select(Volume).where(Volume.id == transfer.volume_id).with_for_update()
        )
        assert volume is not None
        states.require_volume_status(
            volume.status, (states.AWAITING_TRANSFER,), "accept its transfer"
        )
        snapshots = (
            []
            if transfer.no_snapshots
            else list(
                await session.scalars(select(Snapshot).where(Snapshot.volume_id == volume.id))
            )
        )
        await quotas.check(
            session,
            service.config.volume.quota,
            ctx.project_id or "",
            volumes=1,
            snapshots=len(snapshots),
            gigabytes=volume.size + sum(s.size for s in snapshots),
            size=volume.size,
        )
        volume.project_id, volume.user_id = ctx.project_id or "", ctx.user_id or ""
        volume.status, volume.updated_at = states.AVAILABLE, utcnow()
        for snap in snapshots:
            snap.project_id, snap.user_id = volume.project_id, volume.user_id
        transfer.accepted = True
        transfer.destination_project_id = ctx.project_id
    return accepted({"transfer": _view(request, transfer, detail=False)})


routes = [
    route
    for prefix in ("/v3/os-volume-transfer", "/v3/volume-transfers")
    for route in (
        Route(prefix, create_transfer, methods=["POST"]),
        Route(prefix, list_transfers, methods=["GET"]),
        Route(f"{prefix}/detail", list_transfers_detail, methods=["GET"]),
        Route(f"{prefix}/{{id}}", show_transfer, methods=["GET"]),
        Route(f"{prefix}/{{id}}", delete_transfer, methods=["DELETE"]),
        Route(f"{prefix}/{{id}}/accept", accept_transfer, methods=["POST"]),
    )
]
