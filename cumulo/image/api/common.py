"""What every Image API module shares: the service, the caller, policy, rendering."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from cumulo.common.auth import request_context
from cumulo.common.context import RequestContext
from cumulo.image.core import STAGE_HOST, ImageService, Location, locations_in, visible_image
from cumulo.image.models import Image, ImageMember, ImageProperty, ImageTag


def service_of(request: Request) -> ImageService:
    return request.app.state.image


async def authorize(
    request: Request, rule: str, owner: str | None = None, **target: Any
) -> RequestContext:
    ctx = await request_context(request)
    service_of(request).policy.enforce(rule, ctx, {"owner": owner or "", **target})
    return ctx


def isotime(ts: datetime | None) -> str | None:
    """Glance's timestamps: 2016-06-29T16:13:07Z."""
    return ts.strftime("%Y-%m-%dT%H:%M:%SZ") if ts else None


def json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse(body, status_code=status, headers=headers)


def no_content() -> Response:
    return Response(status_code=204)


Extras = tuple[dict[str, dict[str, str]], dict[str, list[str]], dict[str, list[Location]]]


def extras(session: Session, image_ids: Sequence[str]) -> Extras:
    """Custom properties, tags and locations of several images, in three queries
    (synchronous: `await session.run_sync(extras, ids)` in async code)."""
    props: dict[str, dict[str, str]] = {i: {} for i in image_ids}
    tags: dict[str, list[str]] = {i: [] for i in image_ids}
    if image_ids:
        p = ImageProperty
        for image_id, name, value in session.execute(
            select(p.image_id, p.name, p.value).where(p.image_id.in_(image_ids))
        ):
            props[image_id][name] = value
        t = ImageTag
        for image_id, value in session.execute(
            select(t.image_id, t.value).where(t.image_id.in_(image_ids)).order_by(t.value)
        ):
            tags[image_id].append(value)
    return props, tags, locations_in(session, image_ids)


def located(
    service: ImageService,
    image: Image,
    locations: Sequence[Location],
    ctx: RequestContext | None,
) -> dict[str, Any]:
    """What an image body shows of where its data is: `stores` (always), `locations`
    ([image] show_multiple_locations: empty unless the caller may see them, as Glance
    when its get_image_location policy refuses) and `direct_url` (show_image_direct_url:
    the preferred location's URL)."""
    shown: dict[str, Any] = {}
    if locations:
        shown["stores"] = service.store_list(loc.store for loc in locations)
    cfg = service.config.image
    if not (cfg.show_multiple_locations or cfg.show_image_direct_url):
        return shown
    target = {"owner": image.owner or ""}
    allowed = ctx is not None and service.policy.check("image:get_image_location", ctx, target)
    if cfg.show_multiple_locations:
        shown["locations"] = (
            [{"url": service.url_of(loc), "metadata": loc.metadata} for loc in locations]
            if allowed
            else []
        )
    if cfg.show_image_direct_url and allowed and locations:
        shown["direct_url"] = service.url_of(service.by_preference(locations)[0])
    return shown


# Properties Glance keeps for itself and never shows (the node holding staged data).
HIDDEN_PROPERTIES = frozenset({STAGE_HOST})


def render_image(
    image: Image, props: dict[str, str], tags: list[str], shown: dict[str, Any]
) -> dict[str, Any]:
    """An image as the Image v2 api-ref shows it: base attributes and custom properties;
    shown: where its data is, as `located` gives it."""
    return {
        **{k: v for k, v in props.items() if k not in HIDDEN_PROPERTIES},
        "id": image.id,
        "name": image.name,
        "status": image.status,
        "visibility": image.visibility,
        "owner": image.owner,
        "disk_format": image.disk_format,
        "container_format": image.container_format,
        "size": image.size,
        "virtual_size": image.virtual_size,
        "checksum": image.checksum,
        "os_hash_algo": image.os_hash_algo,
        "os_hash_value": image.os_hash_value,
        "min_disk": image.min_disk,
        "min_ram": image.min_ram,
        "protected": image.protected,
        "os_hidden": image.os_hidden,
        "tags": tags,
        "created_at": isotime(image.created_at),
        "updated_at": isotime(image.updated_at),
        "self": f"/v2/images/{image.id}",
        "file": f"/v2/images/{image.id}/file",
        "schema": "/v2/schemas/image",
        **shown,
    }


def _visible_with_extras(
    session: Session, image_id: str, project_id: str | None, is_admin: bool
) -> tuple[Image, Extras] | None:
    image = visible_image(session, image_id, project_id, is_admin)
    return None if image is None else (image, extras(session, [image_id]))


async def visible_image_body(request: Request, ctx: RequestContext, image_id: str) -> dict | None:
    """The image as the API shows it, if the caller may see it: one database call."""
    service = service_of(request)
    found = await service.db.run_read(
        _visible_with_extras, image_id, ctx.project_id, service.is_admin(ctx)
    )
    if found is None:
        return None
    image, (props, tags, locations) = found
    shown = located(service, image, locations[image_id], ctx)
    return render_image(image, props[image_id], tags[image_id], shown)


def render_member(m: ImageMember) -> dict[str, Any]:
    return {
        "created_at": isotime(m.created_at),
        "image_id": m.image_id,
        "member_id": m.member,
        "schema": "/v2/schemas/member",
        "status": m.status,
        "updated_at": isotime(m.updated_at),
    }
