"""/v2/images/{id}/members: sharing an image with other projects.

api-ref rules: only `shared` images have members; the owner adds and removes
them; only the member project itself accepts or rejects; the owner sees every
membership, a member only its own.
"""

from __future__ import annotations

from sqlalchemy import func, select
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cumulo.common.app import json_body
from cumulo.common.context import RequestContext
from cumulo.common.db import utcnow
from cumulo.common.faults import BadRequest, Conflict, Forbidden, NotFound, PayloadTooLarge
from cumulo.image.api.common import authorize, json, no_content, render_member, service_of
from cumulo.image.models import Image, ImageMember

STATUSES = ("pending", "accepted", "rejected")


async def _image(request: Request) -> tuple[RequestContext, Image]:
    ctx = await authorize(request, "image:get_image")
    image = await service_of(request).get_visible(ctx, request.path_params["image_id"])
    return ctx, image


def _body_field(body: object, name: str) -> object:
    if not isinstance(body, dict) or name not in body:
        raise BadRequest(f"Request body must contain '{name}'.")
    return body[name]


async def add_member(request: Request) -> Response:
    """POST /v2/images/{id}/members (api-ref: Create image member)."""
    member = _body_field(await json_body(request), "member")
    if not isinstance(member, str) or not member or len(member) > 255:
        raise BadRequest("Invalid member: a project id is required.")
    _, image = await _image(request)
    await authorize(request, "image:add_member", image.owner)
    if image.visibility != "shared":
        raise Forbidden("Only shared images have members.")
    service = service_of(request)
    async with service.db.write() as session:
        if await session.get(ImageMember, {"image_id": image.id, "member": member}):
            raise Conflict(f"Member {member} already exists for image {image.id}.")
        count = await session.scalar(
            select(func.count()).select_from(ImageMember).where(ImageMember.image_id == image.id)
        )
        if (count or 0) >= service.config.image.max_members:
            raise PayloadTooLarge("Maximum number of image members exceeded.")
        now = utcnow()
        row = ImageMember(
            image_id=image.id, member=member, status="pending", created_at=now, updated_at=now
        )
        session.add(row)
    return json(render_member(row))


async def list_members(request: Request) -> Response:
    ctx, image = await _image(request)
    await authorize(request, "image:get_members", image.owner)
    if image.visibility != "shared":
        raise Forbidden("Only shared images have members.")
    query = select(ImageMember).where(ImageMember.image_id == image.id)
    if image.owner != ctx.project_id and not service_of(request).is_admin(ctx):
        query = query.where(ImageMember.member == ctx.project_id)
    async with service_of(request).db.read() as session:
        rows = (await session.scalars(query.order_by(ImageMember.created_at))).all()
    return json({"members": [render_member(m) for m in rows], "schema": "/v2/schemas/members"})


async def _member(request: Request, ctx: RequestContext, image: Image) -> ImageMember:
    member_id = request.path_params["member_id"]
    async with service_of(request).db.read() as session:
        row = await session.get(ImageMember, {"image_id": image.id, "member": member_id})
    sees_all = image.owner == ctx.project_id or service_of(request).is_admin(ctx)
    if row is None or (not sees_all and member_id != ctx.project_id):
        raise NotFound(f"{member_id} is not a member of image {image.id}.")
    return row


async def show_member(request: Request) -> Response:
    ctx, image = await _image(request)
    await authorize(request, "image:get_member", image.owner)
    return json(render_member(await _member(request, ctx, image)))


async def update_member(request: Request) -> Response:
    """PUT /v2/images/{id}/members/{member_id}: the member accepts, rejects or defers."""
    status = _body_field(await json_body(request), "status")
    if status not in STATUSES:
        raise BadRequest(f"Invalid status: {status}")
    ctx, image = await _image(request)
    row = await _member(request, ctx, image)
    if ctx.project_id != row.member:
        raise Forbidden("You are not permitted to modify 'status' on this image member.")
    await authorize(request, "image:modify_member", image.owner, member_id=row.member)
    async with service_of(request).db.write() as session:
        current = await session.get(ImageMember, {"image_id": image.id, "member": row.member})
        if current is None:
            raise NotFound(f"{row.member} is not a member of image {image.id}.")
        current.status = status
        current.updated_at = utcnow()
    return json(render_member(current))


async def remove_member(request: Request) -> Response:
    ctx, image = await _image(request)
    row = await _member(request, ctx, image)
    await authorize(request, "image:delete_member", image.owner)
    async with service_of(request).db.write() as session:
        current = await session.get(ImageMember, {"image_id": image.id, "member": row.member})
        if current is not None:
            await session.delete(current)
    return no_content()


routes = [
    Route("/v2/images/{image_id}/members", add_member, methods=["POST"]),
    Route("/v2/images/{image_id}/members", list_members, methods=["GET"]),
    Route("/v2/images/{image_id}/members/{member_id}", show_member, methods=["GET"]),
    Route("/v2/images/{image_id}/members/{member_id}", update_member, methods=["PUT"]),
    Route("/v2/images/{image_id}/members/{member_id}", remove_member, methods=["DELETE"]),
]
