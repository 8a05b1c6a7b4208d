"""/v2/images: create, list, show, JSON-patch update, delete, actions, tags."""

from __future__ import annotations

import logging
import re
import uuid
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from sqlalchemy import and_, delete, exists, func, or_, select
from sqlalchemy.exc import IntegrityError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cumulo.common.app import json_body
from cumulo.common.db import utcnow
from cumulo.common.faults import (
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    ServiceUnavailable,
    UnsupportedMediaType,
)
from cumulo.common.key_manager_client import delete_secret
from cumulo.common.openapi import describes
from cumulo.image import locations
from cumulo.image.api.common import (
    authorize,
    extras,
    json,
    located,
    no_content,
    render_image,
    service_of,
    visible_image_body,
)
from cumulo.image.api.data import forward_to_stage_host
from cumulo.image.core import (
    CONTAINER_FORMATS,
    DISK_FORMATS,
    IMPORT_METHODS,
    VISIBILITIES,
    locations_in,
    write_locations,
)
from cumulo.image.models import Image, ImageProperty, ImageTag

READ_ONLY = (
    "created_at", "updated_at", "status", "checksum", "size", "virtual_size", "direct_url",
    "self", "file", "schema", "id", "os_hash_algo", "os_hash_value", "stores",
)  # fmt: skip
LOG = logging.getLogger(__name__)
ENCRYPTION_KEY_PROPERTIES = ("cinder_encryption_key_id", "cinder_encryption_key_deletion_policy")

RESERVED = ("location", "deleted", "deleted_at")
RESERVED_PREFIX = "os_glance"
WRITABLE_BASE = (
    "name", "visibility", "protected", "os_hidden", "min_ram", "min_disk",
    "disk_format", "container_format", "owner", "tags",
)  # fmt: skip
SORT_KEYS = (
    "name", "status", "container_format", "disk_format", "size", "id", "created_at", "updated_at",
)  # fmt: skip
MAX_TAGS = 128
MAX_PROPERTIES = 128
UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")
PATCH_TYPES = {
    "application/openstack-images-v2.0-json-patch": 4,
    "application/openstack-images-v2.1-json-patch": 10,
}


def _schema_error(detail: str) -> BadRequest:
    return BadRequest(f"Provided object does not match schema 'image': {detail}")


def _typename(value: Any) -> str:
    return repr(value) if not isinstance(value, str) else f"'{value}'"


def check_value(name: str, value: Any) -> Any:
    """Validate one attribute against the image schema (base or custom property)."""
    nullable_str = ("name", "owner", "disk_format", "container_format")
    if name in nullable_str:
        if value is not None and not isinstance(value, str):
            raise _schema_error(f"{_typename(value)} is not of type 'null', 'string'")
        if isinstance(value, str) and len(value) > 255:
            raise _schema_error(f"{_typename(value)} is too long")
        enum = {"disk_format": DISK_FORMATS, "container_format": CONTAINER_FORMATS}.get(name)
        if enum and value is not None and value not in enum:
            raise _schema_error(f"{_typename(value)} is not one of {[None, *enum]}")
    elif name == "visibility":
        if value not in VISIBILITIES:
            raise _schema_error(f"{_typename(value)} is not one of {list(VISIBILITIES)}")
    elif name in ("protected", "os_hidden"):
        if not isinstance(value, bool):
            raise _schema_error(f"{_typename(value)} is not of type 'boolean'")
    elif name in ("min_ram", "min_disk"):
        if not isinstance(value, int) or isinstance(value, bool):
            raise _schema_error(f"{_typename(value)} is not of type 'integer'")
        if value < 0:
            raise _schema_error(f"{value} is less than the minimum of 0")
    elif name == "tags":
        if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
            raise _schema_error(f"{_typename(value)} is not of type 'array' of strings")
        if any(len(t) > 255 or not t for t in value):
            raise _schema_error("tags must be 1 to 255 characters")
        if len(set(value)) > MAX_TAGS:
            raise PayloadTooLarge(f"Maximum number of tags exceeded: {MAX_TAGS}.")
        return list(dict.fromkeys(value))
    else:
        _check_custom_name(name)
        if not isinstance(value, str):
            raise _schema_error(f"{_typename(value)} is not of type 'string'")
    return value


def _check_custom_name(name: str) -> None:
    if len(name) > 255:
        raise BadRequest("Custom property should not be greater than 255 characters.")
    if name in RESERVED or name.startswith(RESERVED_PREFIX):
        raise Forbidden(f"Attribute '{name}' is reserved.")


# -- create ------------------------------------------------------------------------


@describes(
    body={
        "type": "object",
        "properties": {
            a: {}
            for a in (
                "name",
                "id",
                "disk_format",
                "container_format",
                "visibility",
                "min_disk",
                "min_ram",
                "protected",
                "tags",
                "os_hidden",
            )
        },
    },
    resource="",
)
async def create_image(request: Request) -> Response:
    """POST /v2/images (api-ref: Create image)."""
    image, props, tags = await add_image(request, await json_body(request))
    ctx = await authorize(request, "image:get_image")
    return json(
        render_image(image, props, sorted(tags), located(service_of(request), image, [], ctx)),
        status=201,
        headers={
            "Location": f"/v2/images/{image.id}",
            "OpenStack-image-import-methods": ",".join(IMPORT_METHODS),
        },
    )


async def add_image(request: Request, body: Any) -> tuple[Image, dict[str, Any], list[str]]:
    """A new queued image from a create body (also a legacy import task's properties)."""
    service = service_of(request)
    if not isinstance(body, dict):
        raise BadRequest("Body expected in request.")
    for key in ("direct_url", "self", "file", "schema", "stores"):
        if key in body:
            raise Forbidden(f"Attribute '{key}' is read-only.")
    if "locations" in body:  # given with JSON patch once the image exists, as in Glance
        raise Forbidden("Attribute 'locations' is reserved.")
    for key in READ_ONLY:
        if key in body and key != "id":
            raise Forbidden(f"Attribute '{key}' is read-only.")
    image_id = body.pop("id", None) or str(uuid.uuid4())
    if not isinstance(image_id, str) or not UUID_RE.match(image_id):
        raise _schema_error(f"{_typename(image_id)} does not match the image id pattern")
    values = {k: check_value(k, body.pop(k)) for k in list(body) if k in WRITABLE_BASE}
    props = {k: check_value(k, v) for k, v in body.items()}
    if len(props) > MAX_PROPERTIES:
        raise PayloadTooLarge(f"Maximum number of image properties exceeded: {MAX_PROPERTIES}.")
    ctx = await authorize(request, "image:get_image")
    owner = values.pop("owner", None) or ctx.project_id
    visibility = values.pop("visibility", "shared")
    await authorize(request, "image:add_image", owner)
    if visibility == "public":
        await authorize(request, "image:publicize_image", owner)
    if visibility == "community":
        await authorize(request, "image:communitize_image", owner)
    await service.check_image_count(owner)
    tags = values.pop("tags", [])
    now = utcnow()
    image = Image(
        id=image_id,
        status="queued",
        visibility=visibility,
        owner=owner,
        protected=values.pop("protected", False),
        os_hidden=values.pop("os_hidden", False),
        min_ram=values.pop("min_ram", 0),
        min_disk=values.pop("min_disk", 0),
        created_at=now,
        updated_at=now,
        **values,
    )
    try:
        async with service.db.write() as session:
            session.add(image)
            await session.flush()
            session.add_all(
                ImageProperty(image_id=image_id, name=k, value=v) for k, v in props.items()
            )
            session.add_all(ImageTag(image_id=image_id, value=t) for t in tags)
    except IntegrityError:
        raise Conflict(f"Image with identifier {image_id} already exists!") from None
    return image, props, tags


# -- list --------------------------------------------------------------------------

_COMPARATORS = {"eq", "neq", "gt", "gte", "lt", "lte"}


def _compare(column, raw: str, parse):
    op, _, value = raw.partition(":")
    if not value or op not in _COMPARATORS:
        op, value = "eq", raw
    try:
        v = parse(value)
    except ValueError:
        raise BadRequest(f"Unable to filter on a value of {raw!r}.") from None
    return {
        "eq": column == v,
        "neq": column != v,
        "gt": column > v,
        "gte": column >= v,
        "lt": column < v,
        "lte": column <= v,
    }[op]


def _time(value: str) -> datetime:
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(UTC).replace(tzinfo=None)
    return parsed


def _int(name: str, raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise BadRequest(f"Invalid {name} value: {raw}") from None


def _in_or_eq(column, raw: str):
    if raw.startswith("in:"):
        return column.in_([v.strip('"') for v in raw[3:].split(",")])
    return column == raw


def _sorting(request: Request) -> list[tuple[str, str]]:
    q = request.query_params
    keys: list[str] = []
    dirs: list[str] = []
    if "sort" in q:
        if "sort_key" in q or "sort_dir" in q:
            raise BadRequest("Old and new sorting syntax cannot be combined")
        for part in q["sort"].strip().split(","):
            key, _, direction = part.partition(":")
            keys.append(key.strip())
            dirs.append((direction or "desc").strip())
    else:
        keys = [k.strip() for k in q.getlist("sort_key")]
        dirs = [d.strip() for d in q.getlist("sort_dir")]
        if len(dirs) > 1 and len(dirs) != len(keys):
            raise BadRequest("Number of sort dirs does not match the number of sort keys")
    for key in keys:
        if key not in SORT_KEYS:
            raise BadRequest(
                f"Invalid sort key: {key}. It must be one of the following: {', '.join(SORT_KEYS)}."
            )
    for d in dirs:
        if d not in ("asc", "desc"):
            raise BadRequest(f"Invalid sort direction: {d}")
    keys = keys or ["created_at"]
    dirs = dirs or ["desc"]
    if len(dirs) == 1:
        dirs = dirs * len(keys)
    pairs = list(zip(keys, dirs, strict=True))
    if "id" not in keys:
        pairs.append(("id", dirs[-1]))
    return pairs


def _sort_column(key: str):
    column = getattr(Image, key)
    if key == "size":
        return func.coalesce(column, -1)
    if key in ("name", "disk_format", "container_format"):
        return func.coalesce(column, "")
    return column


def _after_marker(pairs: list[tuple[str, str]], marker: Image):
    """Keyset condition: rows strictly after the marker in the sort order."""
    clauses = []
    for i, (key, direction) in enumerate(pairs):
        column = _sort_column(key)
        value = getattr(marker, key)
        if key == "size":
            value = -1 if value is None else value
        elif key in ("name", "disk_format", "container_format"):
            value = value or ""
        equal = [_sort_column(k) == _marker_value(marker, k) for k, _ in pairs[:i]]
        clauses.append(and_(*equal, column > value if direction == "asc" else column < value))
    return or_(*clauses)


def _marker_value(marker: Image, key: str):
    value = getattr(marker, key)
    if key == "size":
        return -1 if value is None else value
    if key in ("name", "disk_format", "container_format"):
        return value or ""
    return value


async def list_images(request: Request) -> Response:
    """GET /v2/images (api-ref: List images), with filters, sorting and pagination."""
    service = service_of(request)
    ctx = await authorize(request, "image:get_images")
    q = request.query_params
    member_status = q.get("member_status", "accepted")
    if member_status not in ("pending", "accepted", "rejected", "all"):
        raise BadRequest(f"Invalid status: {member_status}")
    visibility = q.get("visibility")
    if visibility and visibility not in (*VISIBILITIES, "all"):
        raise BadRequest(f"Invalid visibility value: {visibility}")
    limit = service.config.image.list_limit
    if "limit" in q:
        limit = _int("limit", q["limit"])
        if limit < 0:
            raise BadRequest("limit param must be positive")
        limit = min(limit, service.config.image.max_list_limit)
    pairs = _sorting(request)

    query = select(Image)
    admin = service.is_admin(ctx)
    if not admin:
        query = query.where(service.visible_clause(ctx, member_status))
    if visibility in VISIBILITIES:
        query = query.where(Image.visibility == visibility)
    elif visibility != "all" and not admin:
        # The default list: no other project's community images.
        query = query.where((Image.visibility != "community") | (Image.owner == ctx.project_id))
    hidden = q.get("os_hidden", "false").lower()
    if hidden not in ("true", "false"):
        raise BadRequest(f"Invalid value for os_hidden: {q['os_hidden']}")
    query = query.where(Image.os_hidden == (hidden == "true"))
    for name in ("name", "status", "owner", "disk_format", "container_format", "id"):
        if name in q:
            query = query.where(_in_or_eq(getattr(Image, name), q[name]))
    if "protected" in q:
        if q["protected"] not in ("true", "false"):
            raise BadRequest(f"Invalid value for protected: {q['protected']}")
        query = query.where(Image.protected == (q["protected"] == "true"))
    if "size_min" in q:
        query = query.where(Image.size >= _int("size_min", q["size_min"]))
    if "size_max" in q:
        query = query.where(Image.size <= _int("size_max", q["size_max"]))
    for name in ("created_at", "updated_at"):
        if name in q:
            query = query.where(_compare(getattr(Image, name), q[name], _time))
    if "changes-since" in q:
        query = query.where(_compare(Image.updated_at, "gte:" + q["changes-since"], _time))
    for tag in q.getlist("tag"):
        query = query.where(
            exists().where(ImageTag.image_id == Image.id, ImageTag.value == tag.strip())
        )
    known = {
        "limit", "marker", "sort", "sort_key", "sort_dir", "member_status", "visibility",
        "os_hidden", "name", "status", "owner", "disk_format", "container_format", "id",
        "protected", "size_min", "size_max", "created_at", "updated_at", "changes-since", "tag",
    }  # fmt: skip
    for name, value in q.multi_items():
        if name not in known:
            query = query.where(
                exists().where(
                    ImageProperty.image_id == Image.id,
                    ImageProperty.name == name,
                    ImageProperty.value == value,
                )
            )

    async with service.db.read() as session:
        if "marker" in q:
            marker = await session.get(Image, q["marker"])
            if marker is None:
                raise BadRequest(f"Invalid marker. Image {q['marker']} could not be found.")
            query = query.where(_after_marker(pairs, marker))
        order = [_sort_column(k).asc() if d == "asc" else _sort_column(k).desc() for k, d in pairs]
        rows = (await session.scalars(query.order_by(*order).limit(limit + 1))).all()
        page = rows[:limit]
        props, tags, held = await session.run_sync(extras, [i.id for i in page])
    params = [(k, v) for k, v in q.multi_items() if k != "marker"]
    body: dict[str, Any] = {
        "images": [
            render_image(i, props[i.id], tags[i.id], located(service, i, held[i.id], ctx))
            for i in page
        ],
        "first": "/v2/images" + (f"?{_encode(params)}" if params else ""),
        "schema": "/v2/schemas/images",
    }
    if len(rows) > limit and page:
        body["next"] = f"/v2/images?{_encode([*params, ('marker', page[-1].id)])}"
    return json(body)


def _encode(params: list[tuple[str, str]]) -> str:
    return urlencode(params)


# -- show / delete -------------------------------------------------------------------


async def no_such_image(request: Request) -> Response:
    await authorize(request, "image:get_image")
    raise NotFound("No image found with ID ")


async def show_image(request: Request) -> Response:
    ctx = await authorize(request, "image:get_image")
    image_id = request.path_params["image_id"]
    body = await visible_image_body(request, ctx, image_id)
    if body is None:
        raise NotFound(f"No image found with ID {image_id}")
    return json(body)


async def delete_image(request: Request) -> Response:
    """DELETE /v2/images/{id}: refused for protected images; data removed from the store."""
    service = service_of(request)
    ctx = await authorize(request, "image:get_image")
    image = await service.get_visible(ctx, request.path_params["image_id"])
    await authorize(request, "image:delete_image", image.owner)
    if image.status in ("uploading", "importing"):
        # Its staged data is on another node: that node deletes it (and the image).
        host = await service.staged_elsewhere(image)
        if host is not None:
            try:
                return await forward_to_stage_host(request, host)
            except ServiceUnavailable as exc:  # as Glance: deleted here all the same
                LOG.warning("image %s: %s; deleting it here", image.id, exc.message)
    async with service.db.write() as session:
        row = await session.get(Image, image.id)
        if row is None:
            raise NotFound(f"No image found with ID {image.id}")
        if row.protected:
            raise Forbidden(f"Image {image.id} is protected and cannot be deleted.")
        held = (await session.run_sync(locations_in, [image.id]))[image.id]
        key_id = await _encryption_key_to_delete(session, image.id)
        await session.execute(delete(Image).where(Image.id == image.id))
    await service.delete_data(image.id, held)
    if key_id is not None:
        await _delete_encryption_key(service, ctx.auth_token, image.id, key_id)
    return no_content()


async def _encryption_key_to_delete(session: Any, image_id: str) -> str | None:
    """The key an image of an encrypted volume's container names (Block Storage's
    cinder_encryption_key_id), when its cinder_encryption_key_deletion_policy says it
    goes with the image (Glance's _delete_encryption_key)."""
    rows = await session.execute(
        select(ImageProperty.name, ImageProperty.value).where(
            ImageProperty.image_id == image_id,
            ImageProperty.name.in_(ENCRYPTION_KEY_PROPERTIES),
        )
    )
    properties = dict(rows.all())
    if properties.get("cinder_encryption_key_deletion_policy") != "on_image_deletion":
        return None
    return properties.get("cinder_encryption_key_id") or None


async def _delete_encryption_key(service: Any, token: str, image_id: str, key_id: str) -> None:
    """Deleted with the deleter's token; a refusal or failure is logged, as Glance's."""
    if service.key_manager is None:
        LOG.warning("image %s: its encryption key %s stays (no Key Manager)", image_id, key_id)
        return
    try:
        await delete_secret(service.key_manager, token, key_id)
    except Exception as exc:  # noqa: BLE001 - the image is gone all the same
        LOG.warning("image %s: its encryption key %s stays: %s", image_id, key_id, exc)


# -- update (JSON patch) --------------------------------------------------------------


# JSON-pointer depth of each operation on `/locations` (Glance's _path_depth_limits):
# add and remove name a position (`/locations/-`, `/locations/0`); replace the list.
LOCATION_DEPTH = {"add": 2, "remove": 2, "replace": 1}


def _decode_pointer(pointer: Any, op: str) -> tuple[str, str | None]:
    """The attribute a pointer names, and the position it gives (`/locations` only)."""
    if not isinstance(pointer, str) or not pointer.startswith("/"):
        raise BadRequest(f'Pointer `{pointer}` does not start with "/".')
    if re.search("~[^01]", pointer) or pointer.endswith("~"):
        raise BadRequest(
            f'Pointer `{pointer}` contains "~" not part of a recognized escape sequence.'
        )
    parts = [p.replace("~1", "/").replace("~0", "~") for p in pointer[1:].split("/")]
    depth = LOCATION_DEPTH[op] if parts[0] == "locations" else 1
    if len(parts) != depth or not all(parts):
        raise BadRequest(f"Invalid JSON pointer for this resource: '{pointer}'")
    return parts[0], parts[1] if depth == 2 else None


# A change: (op, attribute, value, position in `/locations`).
Change = tuple[str, str, Any, str | None]


def _parse_changes(body: Any, draft: int) -> list[Change]:
    if not isinstance(body, list):
        raise BadRequest("Request body must be a JSON array of operation objects.")
    changes = []
    for raw in body:
        if not isinstance(raw, dict):
            raise BadRequest("Operations must be JSON objects.")
        if draft == 10:
            op = raw.get("op")
            if op not in ("add", "remove", "replace"):
                raise BadRequest(
                    f"Invalid operation: `{op}`. It must be one of the following: "
                    "add, remove, replace."
                )
            if "path" not in raw:
                raise BadRequest("Unable to find 'path' in JSON Schema change")
            path = raw["path"]
        else:
            ops = [k for k in ("add", "remove", "replace") if k in raw]
            if len(ops) != 1:
                raise BadRequest(
                    'Operation objects must contain exactly one member named "add", '
                    '"remove", or "replace".'
                )
            op, path = ops[0], raw[ops[0]]
        name, position = _decode_pointer(path, op)
        if name in READ_ONLY:
            raise Forbidden(f"Attribute '{name}' is read-only.")
        if name in RESERVED or name.startswith(RESERVED_PREFIX):
            raise Forbidden(f"Attribute '{name}' is reserved.")
        value = None
        if op != "remove":
            if "value" not in raw:
                raise BadRequest(f'Operation "{op}" requires a member named "value".')
            if name != "locations":
                value = check_value(name, raw["value"])
            elif op == "add":
                value = locations.check_location(raw["value"])
            else:
                value = locations.check_locations(raw["value"])
        changes.append((op, name, value, position))
    return changes


async def update_image(request: Request) -> Response:
    """PATCH /v2/images/{id} (api-ref: Update image), JSON patch; `/locations` as
    cumulo.image.locations says."""
    service = service_of(request)
    content_type = request.headers.get("content-type", "").split(";")[0].strip()
    if content_type not in PATCH_TYPES:
        raise UnsupportedMediaType(headers={"Accept-Patch": ", ".join(sorted(PATCH_TYPES))})
    changes = _parse_changes(await json_body(request), PATCH_TYPES[content_type])
    ctx = await authorize(request, "image:get_image")
    image = await service.get_visible(ctx, request.path_params["image_id"])
    await authorize(request, "image:modify_image", image.owner)
    for op, name, value, _ in changes:
        if name == "visibility" and op != "remove" and value == "public":
            await authorize(request, "image:publicize_image", image.owner)
        if name == "visibility" and op != "remove" and value == "community":
            await authorize(request, "image:communitize_image", image.owner)
        if name == "owner" and op != "remove" and value != image.owner:
            await authorize(request, "image:set_image_owner", image.owner)
        if name == "locations":
            rule = "image:delete_image_location" if op == "remove" else "image:set_image_location"
            await authorize(request, rule, image.owner)
    moves = [(op, position, value) for op, name, value, position in changes if name == "locations"]
    # New locations are probed (a HEAD each) before the write transaction, not in it;
    # never where locations are not managed (the change is refused).
    probed = {}
    if service.config.image.show_multiple_locations and any(op != "remove" for op, *_ in moves):
        held = await service.locations(image.id)
        probed = await locations.probe_all(service, locations.new_urls(service, held, moves))
    async with service.db.write() as session:
        row = await session.get(Image, image.id)
        if row is None:
            raise NotFound(f"No image found with ID {image.id}")
        props, tags, held = await session.run_sync(extras, [row.id])
        custom, tag_list, before = props[row.id], tags[row.id], held[row.id]
        after = before
        for op, name, value, position in changes:
            if name == "locations":
                after = locations.apply_change(service, row, after, op, position, value, probed)
            elif name == "tags":
                if op == "remove":
                    raise Forbidden("Cannot remove the base property 'tags'.")
                tag_list = value
            elif name in WRITABLE_BASE:
                if op == "remove":
                    raise Forbidden(f"Properties {name} cannot be removed: it is a base property.")
                if name in ("disk_format", "container_format") and row.status != "queued":
                    if getattr(row, name) != value:
                        raise Forbidden(
                            f"Attribute {name} can be only replaced for a queued image."
                        )
                setattr(row, name, value)
            elif op == "add":
                custom[name] = value
            elif name not in custom:
                raise Conflict(f"Property {name} does not exist.")
            elif op == "replace":
                custom[name] = value
            else:
                del custom[name]
        if len(custom) > MAX_PROPERTIES:
            raise PayloadTooLarge(f"Maximum number of image properties exceeded: {MAX_PROPERTIES}.")
        row.updated_at = utcnow()
        await session.execute(delete(ImageProperty).where(ImageProperty.image_id == row.id))
        await session.execute(delete(ImageTag).where(ImageTag.image_id == row.id))
        session.add_all(ImageProperty(image_id=row.id, name=k, value=v) for k, v in custom.items())
        session.add_all(ImageTag(image_id=row.id, value=t) for t in tag_list)
        if moves:
            await write_locations(session, row.id, after)
    for loc in set(before) - set(after):  # removed: its data goes (not the web server's)
        await service.forget(loc)
    return json(render_image(row, custom, sorted(tag_list), located(service, row, after, ctx)))


# -- actions and tags ----------------------------------------------------------------


async def _owned(request: Request, rule: str) -> Image:
    service = service_of(request)
    ctx = await authorize(request, "image:get_image")
    image = await service.get_visible(ctx, request.path_params["image_id"])
    await authorize(request, rule, image.owner)
    return image


async def deactivate(request: Request) -> Response:
    """POST /v2/images/{id}/actions/deactivate: active -> deactivated (data not served)."""
    image = await _owned(request, "image:deactivate")
    if image.status not in ("active", "deactivated"):
        raise Forbidden(f"Not allowed to deactivate image in status '{image.status}'")
    if not await service_of(request).set_status(image.id, ("active", "deactivated"), "deactivated"):
        raise Conflict("Image status changed during the request.")
    return no_content()


async def reactivate(request: Request) -> Response:
    image = await _owned(request, "image:reactivate")
    if image.status not in ("active", "deactivated"):
        raise Forbidden(f"Not allowed to reactivate image in status '{image.status}'")
    if not await service_of(request).set_status(image.id, ("active", "deactivated"), "active"):
        raise Conflict("Image status changed during the request.")
    return no_content()


async def add_tag(request: Request) -> Response:
    """PUT /v2/images/{id}/tags/{tag}."""
    tag = request.path_params["tag"]
    if len(tag) > 255:
        raise BadRequest("Tag must be at most 255 characters.")
    image = await _owned(request, "image:modify_image")
    service = service_of(request)
    async with service.db.write() as session:
        count = await session.scalar(
            select(func.count()).select_from(ImageTag).where(ImageTag.image_id == image.id)
        )
        if await session.get(ImageTag, {"image_id": image.id, "value": tag}) is None:
            if (count or 0) >= MAX_TAGS:
                raise PayloadTooLarge(f"Maximum number of tags exceeded: {MAX_TAGS}.")
            session.add(ImageTag(image_id=image.id, value=tag))
            row = await session.get(Image, image.id)
            if row is not None:
                row.updated_at = utcnow()
    return no_content()


async def delete_tag(request: Request) -> Response:
    tag = request.path_params["tag"]
    image = await _owned(request, "image:modify_image")
    async with service_of(request).db.write() as session:
        result = await session.execute(
            delete(ImageTag).where(ImageTag.image_id == image.id, ImageTag.value == tag)
        )
        if result.rowcount == 0:
            raise NotFound(f"Tag {tag} not found.")
    return no_content()


routes = [
    Route("/v2/images", create_image, methods=["POST"]),
    Route("/v2/images", list_images, methods=["GET"]),
    # An empty image id (`/v2/images/`) names no image, as in Glance.
    Route("/v2/images/", no_such_image, methods=["GET", "PATCH", "DELETE"]),
    Route("/v2/images/{image_id}", show_image, methods=["GET"]),
    Route("/v2/images/{image_id}", update_image, methods=["PATCH"]),
    Route("/v2/images/{image_id}", delete_image, methods=["DELETE"]),
    Route("/v2/images/{image_id}/actions/deactivate", deactivate, methods=["POST"]),
    Route("/v2/images/{image_id}/actions/reactivate", reactivate, methods=["POST"]),
    Route("/v2/images/{image_id}/tags/{tag}", add_tag, methods=["PUT"]),
    Route("/v2/images/{image_id}/tags/{tag}", delete_tag, methods=["DELETE"]),
]
