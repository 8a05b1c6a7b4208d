"""Tags on every taggable resource: CreateTags, DeleteTags, DescribeTags (kept in the EC2
API's own table: OpenStack's tags have no values, and not every resource has them)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from cumulo.ec2 import filters
from cumulo.ec2.api import action
from cumulo.ec2.core import Ctx
from cumulo.ec2.errors import Ec2Error, not_found
from cumulo.ec2.ids import IMAGE_KINDS, kind_of
from cumulo.ec2.models import Tag

RESOURCE_TYPES = {
    "i": "instance",
    "ami": "image",
    "aki": "image",
    "ari": "image",
    "vol": "volume",
    "snap": "snapshot",
    "sg": "security-group",
    "eipalloc": "elastic-ip",
    "vpc": "vpc",
    "subnet": "subnet",
    "igw": "internet-gateway",
    "rtb": "route-table",
    "eni": "network-interface",
    "key": "key-pair",
    "import-ami": "import-image-task",
}
MAX_TAGS = 50


async def tags_of(ctx: Ctx, item_ids: list[str]) -> dict[str, dict[str, str]]:
    """The caller's tags of each item: {item id: {key: value}}."""
    if not item_ids:
        return {}
    rows = await ctx.service.db.run_read(_read_tags, ctx.project_id, list(set(item_ids)))
    out: dict[str, dict[str, str]] = {}
    for tag in rows:
        out.setdefault(tag.item_id, {})[tag.key] = tag.value
    return out


def tag_set(tags: dict[str, str] | None) -> list[dict[str, str]] | None:
    return [{"Key": k, "Value": v} for k, v in sorted(tags.items())] if tags else None


def _read_tags(s: Session, project_id: str, item_ids: list[str] | None) -> list[Tag]:
    query = select(Tag).where(Tag.project_id == project_id)
    if item_ids is not None:
        query = query.where(Tag.item_id.in_(item_ids))
    return list(s.scalars(query.order_by(Tag.item_id, Tag.key)))


def _check_tags(tags: list[dict]) -> dict[str, str]:
    out = {}
    for tag in tags:
        key, value = tag.get("Key"), tag.get("Value") or ""
        if not key or len(key) > 128 or key.lower().startswith("aws:"):
            raise Ec2Error(
                "InvalidParameterValue",
                f"Tag key '{key}' is invalid: keys are 1 "
                "to 128 characters and may not start with 'aws:'.",
            )
        if len(value) > 256:
            raise Ec2Error(
                "InvalidParameterValue", f"The value of tag '{key}' is over 256 characters."
            )
        out[key] = value
    return out


async def set_tags(ctx: Ctx, item_ids: list[str], tags: dict[str, str]) -> None:
    if tags and item_ids:
        await ctx.service.db.run_write(_write_tags, ctx.project_id, item_ids, tags)


def _write_tags(s: Session, project_id: str, item_ids: list[str], tags: dict[str, str]) -> None:
    for item_id in item_ids:
        for key, value in tags.items():
            row = s.get(Tag, (project_id, item_id, key))
            if row is None:
                s.add(Tag(project_id=project_id, item_id=item_id, key=key, value=value))
            else:
                row.value = value
        count = len(
            s.scalars(
                select(Tag.key).where(Tag.project_id == project_id, Tag.item_id == item_id)
            ).all()
        )
        if count > MAX_TAGS:
            raise Ec2Error("TagLimitExceeded", f"{item_id} would have more than {MAX_TAGS} tags.")


def tags_from_specs(specs: list[dict] | None, resource_type: str) -> dict[str, str]:
    """TagSpecifications' tags for one resource type (RunInstances, CreateVolume...)."""
    out: dict[str, str] = {}
    for spec in specs or []:
        if spec.get("ResourceType") not in (resource_type, None):
            continue
        out.update(_check_tags(spec.get("Tags") or []))
    return out


async def _owned(ctx: Ctx, resource_ids: list[str]) -> None:
    """Refuse ids that are not of a taggable kind or not the caller's to see: an AMI the
    Image service shows the caller (a public or shared one carries each project's own
    tags), else what EC2 recorded as the caller's; an id recorded without its project
    (seen first through another resource) is asked of the service behind it."""
    from cumulo.ec2.api.images import resolve_image
    from cumulo.ec2.api.volumes import snapshot_of, volume_of

    for rid in resource_ids:
        if kind_of(rid) not in RESOURCE_TYPES:
            raise Ec2Error("InvalidID", f"The ID '{rid}' is not valid")
    items = await ctx.ids.items(resource_ids)
    visible = {"vol": volume_of, "snap": snapshot_of}
    for rid in resource_ids:
        item, kind = items.get(rid), kind_of(rid) or ""
        if item is None:
            raise not_found(kind, rid)
        if kind in IMAGE_KINDS:
            await resolve_image(ctx, rid)
        elif item.project_id is None and kind in visible:
            await visible[kind](ctx, rid)
        elif item.project_id != ctx.project_id:
            raise not_found(kind, rid)


@action("CreateTags")
async def create_tags(ctx: Ctx, p: dict[str, Any]) -> dict:
    resources = p.get("Resources") or []
    if not resources:
        raise Ec2Error("MissingParameter", "The request must contain the parameter ResourceId")
    tags = _check_tags(p.get("Tags") or [])
    await _owned(ctx, resources)
    await set_tags(ctx, resources, tags)
    return {}


@action("DeleteTags")
async def delete_tags(ctx: Ctx, p: dict[str, Any]) -> dict:
    resources = p.get("Resources") or []
    await _owned(ctx, resources)
    await ctx.service.db.run_write(_delete_tags, ctx.project_id, resources, p.get("Tags"))
    return {}


def _delete_tags(s: Session, project_id: str, item_ids: list[str], tags: list | None) -> None:
    for tag in s.scalars(
        select(Tag).where(Tag.project_id == project_id, Tag.item_id.in_(item_ids))
    ):
        # No tags: all of them; a tag with a value: only when the value matches.
        for wanted in tags if tags is not None else [{"Key": tag.key}]:
            if wanted.get("Key") == tag.key and wanted.get("Value") in (None, tag.value):
                s.delete(tag)
                break


@action("DescribeTags")
async def describe_tags(ctx: Ctx, p: dict[str, Any]) -> dict:
    wanted = filters.check(p.get("Filters"), ("key", "value", "resource-id", "resource-type"))
    rows = await ctx.service.db.run_read(_read_tags, ctx.project_id, None)
    out = []
    for tag in rows:
        rtype = RESOURCE_TYPES.get(kind_of(tag.item_id) or "", "")
        values = {
            "key": tag.key,
            "value": tag.value,
            "resource-id": tag.item_id,
            "resource-type": rtype,
        }
        if filters.matches(wanted, values):
            out.append(
                {
                    "Key": tag.key,
                    "Value": tag.value,
                    "ResourceId": tag.item_id,
                    "ResourceType": rtype,
                }
            )
    return paginate(out, p, "Tags")


def paginate(items: list[Any], p: dict[str, Any], key: str) -> dict[str, Any]:
    """MaxResults/NextToken over an already filtered list (the token is the offset)."""
    limit = p.get("MaxResults")
    token = p.get("NextToken")
    start = 0
    if token:
        if not str(token).isdecimal():
            raise Ec2Error("InvalidNextToken", f"The token '{token}' is invalid")
        start = int(token)
    if limit is None:
        return {key: items[start:]}
    if not 5 <= limit <= 1000:
        raise Ec2Error("InvalidParameterValue", "MaxResults must be between 5 and 1000.")
    page = items[start : start + limit]
    out: dict[str, Any] = {key: page}
    if start + limit < len(items):
        out["NextToken"] = str(start + limit)
    return out
