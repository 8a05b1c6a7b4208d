"""AMIs: Image service images seen as EC2 images (`ami-` machine images, `aki-` kernels,
`ari-` ramdisks). DescribeImages, CreateImage, DeregisterImage, RegisterImage,
Describe/Modify/ResetImageAttribute (launch permissions are image members)."""

from __future__ import annotations

import asyncio
from typing import Any

from cumulo.common.service_client import url_path
from cumulo.ec2 import filters
from cumulo.ec2.api import action
from cumulo.ec2.api.tags import paginate, set_tags, tag_set, tags_from_specs, tags_of
from cumulo.ec2.core import Ctx
from cumulo.ec2.errors import Ec2Error, not_found
from cumulo.ec2.ids import IMAGE_KINDS

STATES = {
    "active": "available",
    "queued": "pending",
    "saving": "pending",
    "importing": "pending",
    "uploading": "pending",
    "killed": "failed",
    "deactivated": "deregistered",
    "pending_delete": "deregistered",
    "deleted": "deregistered",
}
TYPES = {"ami": "machine", "aki": "kernel", "ari": "ramdisk"}
ROOT_DEVICE = "/dev/vda"
FILTERS = (
    "architecture",
    "description",
    "image-id",
    "image-type",
    "is-public",
    "kernel-id",
    "name",
    "owner-id",
    "ramdisk-id",
    "root-device-name",
    "root-device-type",
    "state",
    "virtualization-type",
    "hypervisor",
    "owner-alias",
)


def kind_of_image(image: dict[str, Any]) -> str:
    fmt = image.get("disk_format") or image.get("container_format")
    return fmt if fmt in ("aki", "ari") else "ami"


async def visible_images(ctx: Ctx) -> dict[str, dict[str, Any]]:
    """Every image the caller sees, by OpenStack id (one walk of the image list per request)."""
    if "images" not in ctx.cache:
        # A launch permission is granted at once in EC2: images shared with the caller's
        # project show whether or not it has accepted them in the Image service.
        images = []
        for path in ("/v2/images?limit=1000", "/v2/images?limit=1000&member_status=pending"):
            while path:
                page = await ctx.image("GET", path)
                images += page.get("images", [])
                path = page.get("next")
        ctx.cache["images"] = {i["id"]: i for i in images}
    return ctx.cache["images"]


async def image_by_os_id(ctx: Ctx, os_id: str) -> dict[str, Any] | None:
    cached = ctx.cache.setdefault("image", {})
    if os_id not in cached:
        try:
            cached[os_id] = await ctx.image(
                "GET",
                url_path("/v2/images/{}", os_id),
                errors={"not_found": "InvalidAMIID.NotFound"},
            )
        except Ec2Error as err:
            if err.code != "InvalidAMIID.NotFound":
                raise
            cached[os_id] = None
    return cached[os_id]


async def resolve_image(ctx: Ctx, ec2_id: Any, kinds: tuple[str, ...] = IMAGE_KINDS) -> dict:
    """The image of an `ami-`/`aki-`/`ari-` id the caller may see, or InvalidAMIID.NotFound."""
    os_id = await ctx.ids.os_id(ec2_id, kinds)
    image = await image_by_os_id(ctx, os_id)
    if image is None or image.get("status") in ("deleted", "pending_delete"):
        raise not_found("ami", ec2_id)
    return image


async def own_image(ctx: Ctx, ec2_id: Any) -> dict:
    """An image of the caller's project: NotFound for one it cannot see, AuthFailure for
    one it may launch but not change (public or shared with it), as EC2 answers."""
    image = await resolve_image(ctx, ec2_id)
    if image.get("owner") != ctx.project_id:
        raise Ec2Error("AuthFailure", f"Not authorized for image:{ec2_id}")
    return image


async def image_ids(ctx: Ctx, os_ids: list[str]) -> dict[str, str]:
    """EC2 ids of images by OpenStack id (their kind read from the image)."""
    out = await ctx.ids.known(IMAGE_KINDS, os_ids)
    by_kind: dict[str, list[str]] = {}
    for os_id in set(filter(None, os_ids)) - out.keys():
        image = await image_by_os_id(ctx, os_id)
        by_kind.setdefault(kind_of_image(image) if image else "ami", []).append(os_id)
    for kind, ids in by_kind.items():
        out.update(await ctx.ids.ec2_ids(kind, ids))
    return out


async def launch_permissions(ctx: Ctx, image: dict[str, Any]) -> set[str]:
    """The projects an image is shared with (its image members, each a launch permission)."""
    cached = ctx.cache.setdefault("members", {})
    if image["id"] not in cached:
        members = await ctx.image("GET", url_path("/v2/images/{}/members", image["id"]))
        cached[image["id"]] = {m["member_id"] for m in members.get("members", [])}
    return cached[image["id"]]


async def launchable_by(ctx: Ctx, image: dict[str, Any], users: list[str]) -> bool:
    """DescribeImages' ExecutableUsers, of an image the caller sees: whether one of the
    users may launch it. `all`: a public image; `self` (or the caller's project): any;
    another project: its own images, public ones, and those of the caller's shared with
    it (who else another project's image is shared with is that project's to know, as
    EC2 shows launch permissions to the image's owner only)."""
    public = image.get("visibility") == "public"
    owner = image.get("owner")
    for user in users:
        if user == "all":
            if public:
                return True
        elif user in ("self", ctx.project_id) or public or owner == user:
            return True
        elif owner == ctx.project_id and image.get("visibility") == "shared":
            if user in await launch_permissions(ctx, image):
                return True
    return False


def _describe(image: dict[str, Any], ec2_id: str, refs: dict[str, str], tags: dict) -> dict:
    kind = ec2_id.split("-", 1)[0]
    bdm = []
    described: dict[str, Any] = {
        "ImageId": ec2_id,
        "ImageLocation": image.get("image_location") or f"{image.get('owner')}/{image.get('name')}",
        "State": STATES.get(image.get("status", ""), "pending"),
        "OwnerId": image.get("owner") or "",
        "CreationDate": image.get("created_at"),
        "Public": image.get("visibility") == "public",
        "Architecture": image.get("architecture") or image.get("hw_architecture") or "x86_64",
        "ImageType": TYPES[kind],
        "Name": image.get("name") or "",
        "Description": image.get("description"),
        "VirtualizationType": "hvm",
        "Hypervisor": "xen",
        "Tags": tag_set(tags),
    }
    if kind == "ami":
        described["RootDeviceType"] = "instance-store"
        described["RootDeviceName"] = image.get("root_device_name") or ROOT_DEVICE
        described["BlockDeviceMappings"] = bdm
        if image.get("kernel_id") in refs:
            described["KernelId"] = refs[image["kernel_id"]]
        if image.get("ramdisk_id") in refs:
            described["RamdiskId"] = refs[image["ramdisk_id"]]
    if image.get("status") == "killed":
        described["StateReason"] = {
            "Code": "Client.ImageLoadFailure",
            "Message": "The image failed to load.",
        }
    return described


@action("DescribeImages")
async def describe_images(ctx: Ctx, p: dict[str, Any]) -> dict:
    wanted = filters.check(p.get("Filters"), FILTERS)
    if p.get("ImageIds"):
        chosen = [await resolve_image(ctx, i) for i in p["ImageIds"]]
    else:
        chosen = list((await visible_images(ctx)).values())
    owners = p.get("Owners") or []
    executable = p.get("ExecutableUsers") or []
    refs = await image_ids(
        ctx,
        [i["id"] for i in chosen] + [i.get(k) for i in chosen for k in ("kernel_id", "ramdisk_id")],
    )
    all_tags = await tags_of(ctx, list(refs.values()))
    out = []
    for image in chosen:
        public = image.get("visibility") == "public"
        owner = image.get("owner") or ""
        if owners and not any(
            (o == "self" and owner == ctx.project_id)
            or (o == "amazon" and public and owner != ctx.project_id)
            or o == owner
            for o in owners
        ):
            continue
        if executable and not await launchable_by(ctx, image, executable):
            continue
        ec2_id = refs[image["id"]]
        tags = all_tags.get(ec2_id, {})
        described = _describe(image, ec2_id, refs, tags)
        values = {
            "architecture": described["Architecture"],
            "description": described["Description"],
            "image-id": ec2_id,
            "image-type": described["ImageType"],
            "is-public": described["Public"],
            "kernel-id": described.get("KernelId"),
            "name": described["Name"],
            "owner-id": owner,
            "ramdisk-id": described.get("RamdiskId"),
            "root-device-name": described.get("RootDeviceName"),
            "root-device-type": described.get("RootDeviceType"),
            "state": described["State"],
            "virtualization-type": "hvm",
            "hypervisor": "xen",
            "owner-alias": "amazon" if public else "self",
        }
        if described["State"] != "deregistered" and filters.matches(wanted, values, tags):
            out.append(described)
    out.sort(key=lambda d: d["ImageId"])
    return paginate(out, p, "Images")


@action("CreateImage")
async def create_image(ctx: Ctx, p: dict[str, Any]) -> dict:
    from cumulo.ec2.api.instances import server_of

    server = await server_of(ctx, p["InstanceId"])
    metadata = {}
    base = await image_by_os_id(ctx, server["image"]["id"]) if server.get("image") else None
    for prop in ("kernel_id", "ramdisk_id", "os_command_line", "architecture"):
        if base and base.get(prop):
            metadata[prop] = base[prop]
    if p.get("Description"):
        metadata["description"] = p["Description"]
    response = await ctx.compute(
        "POST",
        f"/servers/{server['id']}/action",
        json={"createImage": {"name": p["Name"], "metadata": metadata}},
        errors={"conflict": "IncorrectInstanceState", "bad_request": "InvalidParameterValue"},
    )
    ec2_id = await ctx.ids.ec2_id("ami", response["image_id"], ctx.project_id)
    await set_tags(ctx, [ec2_id], tags_from_specs(p.get("TagSpecifications"), "image"))
    return {"ImageId": ec2_id}


@action("DeregisterImage")
async def deregister_image(ctx: Ctx, p: dict[str, Any]) -> dict:
    image = await own_image(ctx, p["ImageId"])
    await ctx.image(
        "DELETE",
        url_path("/v2/images/{}", image["id"]),
        errors={"not_found": "InvalidAMIID.NotFound"},
    )
    return {"Return": True}


@action("RegisterImage")
async def register_image(ctx: Ctx, p: dict[str, Any]) -> dict:
    """An AMI from a bundle manifest in S3 (ImageLocation), or from an EBS snapshot named
    as the root device's (BlockDeviceMappings): its bytes become the image's disk."""
    if p.get("ImageLocation"):
        from cumulo.ec2.api.imports import register_bundle

        return await register_bundle(ctx, p)
    root = p.get("RootDeviceName") or ROOT_DEVICE
    snapshot = None
    for mapping in p.get("BlockDeviceMappings") or []:
        ebs = mapping.get("Ebs") or {}
        if ebs.get("SnapshotId") and mapping.get("DeviceName") in (root, None):
            snapshot = ebs["SnapshotId"]
    if snapshot is None:
        raise Ec2Error(
            "InvalidParameterCombination",
            "RegisterImage needs an ImageLocation (a bundle manifest in S3) or a "
            f"BlockDeviceMapping whose device {root} is an EBS snapshot.",
        )
    if not p.get("Name"):
        raise Ec2Error("MissingParameter", "The request must contain the parameter Name")
    from cumulo.ec2.api.imports import image_from_snapshot

    props: dict[str, Any] = {"root_device_name": root}
    for key, prop, kinds in (
        ("KernelId", "kernel_id", ("aki",)),
        ("RamdiskId", "ramdisk_id", ("ari",)),
    ):
        if p.get(key):
            props[prop] = (await resolve_image(ctx, p[key], kinds))["id"]
    if p.get("Architecture"):
        props["architecture"] = p["Architecture"]
    if p.get("Description"):
        props["description"] = p["Description"]
    os_id = await image_from_snapshot(ctx, snapshot, p["Name"], props)
    return {"ImageId": await ctx.ids.ec2_id("ami", os_id, ctx.project_id)}


@action("CopyImage")
async def copy_image(ctx: Ctx, p: dict[str, Any]) -> dict:
    """A private copy of an image the caller can see (its disk copied in the background)."""
    if p.get("SourceRegion") not in (None, ctx.service.config.region):
        raise Ec2Error("InvalidParameterValue", f"Unknown source region '{p['SourceRegion']}'.")
    if p.get("Encrypted"):
        raise Ec2Error("InvalidParameterValue", "Encrypted images are not supported by this cloud.")
    source = await resolve_image(ctx, p["SourceImageId"])
    if source.get("status") != "active":
        raise Ec2Error("IncorrectState", f"The image {p['SourceImageId']} is not available.")
    from cumulo.ec2.api.imports import copy_image_data

    os_id = await copy_image_data(ctx, source, p["Name"], p.get("Description"))
    return {"ImageId": await ctx.ids.ec2_id(kind_of_image(source), os_id, ctx.project_id)}


@action("DescribeImageAttribute")
async def describe_image_attribute(ctx: Ctx, p: dict[str, Any]) -> dict:
    image = await resolve_image(ctx, p["ImageId"])
    attribute = p["Attribute"]
    out: dict[str, Any] = {"ImageId": p["ImageId"]}
    if attribute == "launchPermission":
        perms = []
        if image.get("visibility") == "public":
            perms.append({"Group": "all"})
        if image.get("visibility") == "shared" and image.get("owner") == ctx.project_id:
            members = await ctx.image("GET", url_path("/v2/images/{}/members", image["id"]))
            perms += [{"UserId": m["member_id"]} for m in members.get("members", [])]
        out["LaunchPermissions"] = perms
    elif attribute == "description":
        out["Description"] = {"Value": image.get("description")} if image.get("description") else {}
    elif attribute == "kernel":
        refs = await image_ids(ctx, [image.get("kernel_id")])
        out["KernelId"] = (
            {"Value": refs[image["kernel_id"]]} if image.get("kernel_id") in refs else {}
        )
    elif attribute == "ramdisk":
        refs = await image_ids(ctx, [image.get("ramdisk_id")])
        out["RamdiskId"] = (
            {"Value": refs[image["ramdisk_id"]]} if image.get("ramdisk_id") in refs else {}
        )
    elif attribute == "blockDeviceMapping":
        out["BlockDeviceMappings"] = []
    elif attribute == "productCodes":
        out["ProductCodes"] = []
    else:
        raise Ec2Error("InvalidRequest", f"The attribute {attribute} is not supported.")
    return out


async def _patch_image(ctx: Ctx, image: dict, ops: list[dict]) -> None:
    await ctx.image(
        "PATCH",
        url_path("/v2/images/{}", image["id"]),
        json=ops,
        headers={"Content-Type": "application/openstack-images-v2.1-json-patch"},
    )


@action("ModifyImageAttribute")
async def modify_image_attribute(ctx: Ctx, p: dict[str, Any]) -> dict:
    image = await own_image(ctx, p["ImageId"])
    if p.get("Description"):
        await _patch_image(
            ctx,
            image,
            [{"op": "add", "path": "/description", "value": p["Description"].get("Value", "")}],
        )
        return {}
    perms = p.get("LaunchPermission") or {}
    adds = list(perms.get("Add") or [])
    removes = list(perms.get("Remove") or [])
    operation = p.get("OperationType")
    if p.get("UserIds") or p.get("UserGroups"):  # the older flat form
        flat = [{"UserId": u} for u in p.get("UserIds") or []] + [
            {"Group": g} for g in p.get("UserGroups") or []
        ]
        (removes if operation == "remove" else adds).extend(flat)
    if not adds and not removes:
        raise Ec2Error("MissingParameter", "The request must name a launch permission to change.")
    for perm in adds:
        if perm.get("Group") == "all":
            await _patch_image(
                ctx, image, [{"op": "replace", "path": "/visibility", "value": "public"}]
            )
        elif perm.get("UserId"):
            if image.get("visibility") != "shared":
                await _patch_image(
                    ctx, image, [{"op": "replace", "path": "/visibility", "value": "shared"}]
                )
                image["visibility"] = "shared"
            await ctx.image(
                "POST",
                url_path("/v2/images/{}/members", image["id"]),
                json={"member": perm["UserId"]},
                errors={"conflict": "InvalidParameterValue"},
            )
    for perm in removes:
        if perm.get("Group") == "all":
            await _patch_image(
                ctx, image, [{"op": "replace", "path": "/visibility", "value": "private"}]
            )
        elif perm.get("UserId"):
            await ctx.image(
                "DELETE",
                url_path("/v2/images/{}/members/{}", image["id"], perm["UserId"]),
                errors={"not_found": "InvalidUserID.NotFound"},
            )
    return {}


@action("ResetImageAttribute")
async def reset_image_attribute(ctx: Ctx, p: dict[str, Any]) -> dict:
    image = await own_image(ctx, p["ImageId"])
    if p["Attribute"] != "launchPermission":
        raise Ec2Error("InvalidRequest", f"The attribute {p['Attribute']} cannot be reset.")
    if image.get("visibility") in ("public", "shared"):
        members = await ctx.image("GET", url_path("/v2/images/{}/members", image["id"]))
        await asyncio.gather(
            *(
                ctx.image(
                    "DELETE", url_path("/v2/images/{}/members/{}", image["id"], m["member_id"])
                )
                for m in members.get("members", [])
            )
        )
        await _patch_image(
            ctx, image, [{"op": "replace", "path": "/visibility", "value": "private"}]
        )
    return {"Return": True}
