"""EBS volumes and snapshots: Block Storage volumes and snapshots. Create/Describe/
Attach/Detach/DeleteVolume, DescribeVolumeStatus, Create/Describe/DeleteSnapshot."""

from __future__ import annotations

from typing import Any

from cumulo.ec2 import filters
from cumulo.ec2.api import action
from cumulo.ec2.api.tags import paginate, set_tags, tag_set, tags_from_specs, tags_of
from cumulo.ec2.core import Ctx
from cumulo.ec2.errors import Ec2Error

VOLUME_STATES = {
    "creating": "creating",
    "downloading": "creating",
    "available": "available",
    "reserved": "available",
    "attaching": "in-use",
    "in-use": "in-use",
    "detaching": "in-use",
    "deleting": "deleting",
    "error": "error",
    "error_deleting": "error",
    "error_restoring": "error",
    "error_extending": "error",
    "extending": "available",
    "maintenance": "available",
    "uploading": "in-use",
    "retyping": "available",
    "backing-up": "available",
    "restoring-backup": "creating",
    "awaiting-transfer": "available",
}
SNAPSHOT_STATES = {
    "creating": "pending",
    "available": "completed",
    "error": "error",
    "deleting": "pending",
    "error_deleting": "error",
    "backing-up": "completed",
    "restoring": "pending",
    "unmanaging": "pending",
}
VOLUME_ERRORS = {
    "not_found": "InvalidVolume.NotFound",
    "quota": "VolumeLimitExceeded",
    "conflict": "IncorrectState",
}
VOLUME_FILTERS = (
    "attachment.attach-time",
    "attachment.delete-on-termination",
    "attachment.device",
    "attachment.instance-id",
    "attachment.status",
    "availability-zone",
    "create-time",
    "encrypted",
    "size",
    "snapshot-id",
    "status",
    "volume-id",
    "volume-type",
)
SNAPSHOT_FILTERS = (
    "description",
    "owner-id",
    "progress",
    "snapshot-id",
    "start-time",
    "status",
    "volume-id",
    "volume-size",
    "encrypted",
)


async def volume_of(ctx: Ctx, ec2_id: Any) -> dict[str, Any]:
    """A volume the caller's project sees; InvalidVolume.NotFound otherwise."""
    os_id = await ctx.ids.os_id(ec2_id, "vol")
    return (await ctx.volume("GET", f"/volumes/{os_id}", errors=VOLUME_ERRORS))["volume"]


async def snapshot_of(ctx: Ctx, ec2_id: Any) -> dict[str, Any]:
    """A snapshot the caller's project sees; InvalidSnapshot.NotFound otherwise."""
    os_id = await ctx.ids.os_id(ec2_id, "snap")
    path = f"/snapshots/{os_id}"
    return (await ctx.volume("GET", path, errors={"not_found": "InvalidSnapshot.NotFound"}))[
        "snapshot"
    ]


async def describe_volumes_of(ctx: Ctx, volumes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    ids = await ctx.ids.ec2_ids("vol", [v["id"] for v in volumes], ctx.project_id)
    snaps = await ctx.ids.ec2_ids("snap", [v.get("snapshot_id") for v in volumes], ctx.project_id)
    servers = [
        a["server_id"] for v in volumes for a in v.get("attachments") or [] if a.get("server_id")
    ]
    instances = await ctx.ids.ec2_ids("i", servers, ctx.project_id)
    tags = await tags_of(ctx, list(ids.values()))
    out = []
    for v in volumes:
        state = VOLUME_STATES.get(v["status"], "error")
        attach_state = {"attaching": "attaching", "detaching": "detaching"}.get(
            v["status"], "attached"
        )
        out.append(
            {
                "VolumeId": ids[v["id"]],
                "Size": v["size"],
                "SnapshotId": snaps.get(v.get("snapshot_id"), ""),
                "AvailabilityZone": v.get("availability_zone") or "nova",
                "State": state,
                "CreateTime": v["created_at"],
                "VolumeType": v.get("volume_type") or "standard",
                "Encrypted": bool(v.get("encrypted")),
                "MultiAttachEnabled": bool(v.get("multiattach")),
                "Attachments": [
                    {
                        "AttachTime": a.get("attached_at")
                        or v.get("updated_at")
                        or v["created_at"],
                        "Device": a.get("device") or "",
                        "InstanceId": instances.get(a.get("server_id"), ""),
                        "State": attach_state,
                        "VolumeId": ids[v["id"]],
                        "DeleteOnTermination": False,
                    }
                    for a in v.get("attachments") or []
                ],
                "Tags": tag_set(tags.get(ids[v["id"]])),
            }
        )
    for d, v in zip(out, volumes, strict=True):
        if v["status"] == "attaching" and not d["Attachments"]:
            d["Attachments"] = [{"State": "attaching", "VolumeId": d["VolumeId"]}]
    return out


@action("CreateVolume")
async def create_volume(ctx: Ctx, p: dict[str, Any]) -> dict:
    body: dict[str, Any] = {}
    if p.get("SnapshotId"):
        body["snapshot_id"] = (await snapshot_of(ctx, p["SnapshotId"]))["id"]
    if p.get("Size"):
        body["size"] = p["Size"]
    elif not p.get("SnapshotId"):
        raise Ec2Error(
            "MissingParameter", "The request must contain the parameter size or snapshotId"
        )
    if p.get("AvailabilityZone"):
        body["availability_zone"] = p["AvailabilityZone"]
    if p.get("VolumeType") and p["VolumeType"] not in ("standard", "gp2", "gp3"):
        body["volume_type"] = p["VolumeType"]
    if p.get("Encrypted"):
        raise Ec2Error(
            "InvalidParameterValue", "Encrypted volumes are not supported by this cloud."
        )
    tags = tags_from_specs(p.get("TagSpecifications"), "volume")
    if tags.get("Name"):
        body["name"] = tags["Name"]
    made = (
        await ctx.volume(
            "POST",
            "/volumes",
            json={"volume": body},
            errors={**VOLUME_ERRORS, "not_found": "InvalidParameterValue"},  # a volume type
        )
    )["volume"]
    described = (await describe_volumes_of(ctx, [made]))[0]
    await set_tags(ctx, [described["VolumeId"]], tags)
    described["Tags"] = tag_set(tags)
    return described


@action("DescribeVolumes")
async def describe_volumes(ctx: Ctx, p: dict[str, Any]) -> dict:
    wanted = filters.check(p.get("Filters"), VOLUME_FILTERS)
    if p.get("VolumeIds"):
        volumes = [await volume_of(ctx, i) for i in p["VolumeIds"]]
    else:
        volumes = (await ctx.volume("GET", "/volumes/detail"))["volumes"]
    described = await describe_volumes_of(ctx, volumes)
    out = []
    for d in described:
        att = d["Attachments"]
        values = {
            "attachment.attach-time": [a.get("AttachTime") for a in att],
            "attachment.delete-on-termination": [a.get("DeleteOnTermination") for a in att],
            "attachment.device": [a.get("Device") for a in att],
            "attachment.instance-id": [a.get("InstanceId") for a in att],
            "attachment.status": [a.get("State") for a in att],
            "availability-zone": d["AvailabilityZone"],
            "create-time": d["CreateTime"],
            "encrypted": d["Encrypted"],
            "size": d["Size"],
            "snapshot-id": d["SnapshotId"],
            "status": d["State"],
            "volume-id": d["VolumeId"],
            "volume-type": d["VolumeType"],
        }
        if filters.matches(wanted, values, {t["Key"]: t["Value"] for t in d["Tags"] or []}):
            out.append(d)
    return paginate(out, p, "Volumes")


@action("DeleteVolume")
async def delete_volume(ctx: Ctx, p: dict[str, Any]) -> dict:
    volume = await volume_of(ctx, p["VolumeId"])
    if volume["status"] in ("in-use", "attaching", "detaching"):
        raise Ec2Error("VolumeInUse", f"Volume {p['VolumeId']} is currently attached.")
    await ctx.volume(
        "DELETE",
        f"/volumes/{volume['id']}",
        errors={**VOLUME_ERRORS, "bad_request": "IncorrectState"},
    )
    return {}


@action("AttachVolume")
async def attach_volume(ctx: Ctx, p: dict[str, Any]) -> dict:
    from cumulo.ec2.api.instances import server_of

    volume = await volume_of(ctx, p["VolumeId"])
    server = await server_of(ctx, p["InstanceId"])
    if volume["status"] != "available":
        raise Ec2Error("IncorrectState", f"vol '{p['VolumeId']}' is not 'available'.")
    body: dict[str, Any] = {"volumeId": volume["id"]}
    if p.get("Device"):
        body["device"] = p["Device"]
    made = await ctx.compute(
        "POST",
        f"/servers/{server['id']}/os-volume_attachments",
        json={"volumeAttachment": body},
        errors={
            "conflict": "IncorrectState",
            "not_found": "InvalidVolume.NotFound",
            "bad_request": "InvalidParameterValue",
        },
    )
    from datetime import UTC, datetime

    return {
        "AttachTime": datetime.now(UTC),
        "Device": made["volumeAttachment"].get("device") or "",
        "InstanceId": p["InstanceId"],
        "State": "attaching",
        "VolumeId": p["VolumeId"],
    }


@action("DetachVolume")
async def detach_volume(ctx: Ctx, p: dict[str, Any]) -> dict:
    volume = await volume_of(ctx, p["VolumeId"])
    attachments = volume.get("attachments") or []
    if not attachments:
        raise Ec2Error("IncorrectState", f"Volume '{p['VolumeId']}' is in the 'available' state.")
    attachment = attachments[0]
    if p.get("InstanceId"):
        from cumulo.ec2.api.instances import server_of

        server = await server_of(ctx, p["InstanceId"])
        matching = [a for a in attachments if a.get("server_id") == server["id"]]
        if not matching:
            raise Ec2Error(
                "IncorrectState",
                f"Volume '{p['VolumeId']}' is not attached to '{p['InstanceId']}'.",
            )
        attachment = matching[0]
    await ctx.compute(
        "DELETE",
        f"/servers/{attachment['server_id']}/os-volume_attachments/{volume['id']}",
        errors={"conflict": "IncorrectState", "not_found": "InvalidAttachment.NotFound"},
    )
    instance = await ctx.ids.ec2_id("i", attachment["server_id"], ctx.project_id)
    return {
        "AttachTime": attachment.get("attached_at") or volume["created_at"],
        "Device": attachment.get("device") or "",
        "InstanceId": instance,
        "State": "detaching",
        "VolumeId": p["VolumeId"],
    }


@action("DescribeVolumeStatus")
async def describe_volume_status(ctx: Ctx, p: dict[str, Any]) -> dict:
    described = (await describe_volumes(ctx, {"VolumeIds": p.get("VolumeIds")}))["Volumes"]
    wanted = filters.check(p.get("Filters"), ("availability-zone", "volume-status.status"))
    out = []
    for d in described:
        status = "impaired" if d["State"] == "error" else "ok"
        details = [{"Name": "io-enabled", "Status": "failed" if status == "impaired" else "passed"}]
        if filters.matches(
            wanted, {"availability-zone": d["AvailabilityZone"], "volume-status.status": status}
        ):
            out.append(
                {
                    "VolumeId": d["VolumeId"],
                    "AvailabilityZone": d["AvailabilityZone"],
                    "VolumeStatus": {"Status": status, "Details": details},
                    "Actions": [],
                    "Events": [],
                }
            )
    return paginate(out, p, "VolumeStatuses")


async def describe_snapshots_of(ctx: Ctx, snapshots: list[dict[str, Any]]) -> list[dict[str, Any]]:
    ids = await ctx.ids.ec2_ids("snap", [s["id"] for s in snapshots], ctx.project_id)
    vols = await ctx.ids.ec2_ids("vol", [s["volume_id"] for s in snapshots], ctx.project_id)
    tags = await tags_of(ctx, list(ids.values()))
    return [
        {
            "SnapshotId": ids[s["id"]],
            "VolumeId": vols.get(s["volume_id"], ""),
            "State": SNAPSHOT_STATES.get(s["status"], "error"),
            "StartTime": s["created_at"],
            "Progress": s.get("os-extended-snapshot-attributes:progress")
            or ("100%" if s["status"] == "available" else "0%"),
            "OwnerId": s.get("os-extended-snapshot-attributes:project_id") or ctx.project_id,
            "Description": s.get("description") or "",
            "VolumeSize": s["size"],
            "Encrypted": False,
            "Tags": tag_set(tags.get(ids[s["id"]])),
        }
        for s in snapshots
    ]


@action("CreateSnapshot")
async def create_snapshot(ctx: Ctx, p: dict[str, Any]) -> dict:
    volume = await volume_of(ctx, p["VolumeId"])
    body = {"volume_id": volume["id"], "force": True, "description": p.get("Description") or ""}
    made = (
        await ctx.volume(
            "POST",
            "/snapshots",
            json={"snapshot": body},
            errors={**VOLUME_ERRORS, "quota": "SnapshotLimitExceeded"},
        )
    )["snapshot"]
    described = (await describe_snapshots_of(ctx, [made]))[0]
    tags = tags_from_specs(p.get("TagSpecifications"), "snapshot")
    await set_tags(ctx, [described["SnapshotId"]], tags)
    described["Tags"] = tag_set(tags)
    return described


@action("DescribeSnapshots")
async def describe_snapshots(ctx: Ctx, p: dict[str, Any]) -> dict:
    wanted = filters.check(p.get("Filters"), SNAPSHOT_FILTERS)
    if p.get("SnapshotIds"):
        await ctx.ids.os_ids(p["SnapshotIds"], "snap")  # every id well-formed first
        snapshots = [await snapshot_of(ctx, i) for i in p["SnapshotIds"]]
    else:
        snapshots = (await ctx.volume("GET", "/snapshots/detail"))["snapshots"]
    owners = p.get("OwnerIds") or []
    out = []
    for d in await describe_snapshots_of(ctx, snapshots):
        if owners and not any(o in ("self", d["OwnerId"]) for o in owners):
            continue
        values = {
            "description": d["Description"],
            "owner-id": d["OwnerId"],
            "progress": d["Progress"],
            "snapshot-id": d["SnapshotId"],
            "start-time": d["StartTime"],
            "status": d["State"],
            "volume-id": d["VolumeId"],
            "volume-size": d["VolumeSize"],
            "encrypted": False,
        }
        if filters.matches(wanted, values, {t["Key"]: t["Value"] for t in d["Tags"] or []}):
            out.append(d)
    return paginate(out, p, "Snapshots")


@action("DeleteSnapshot")
async def delete_snapshot(ctx: Ctx, p: dict[str, Any]) -> dict:
    os_id = await ctx.ids.os_id(p["SnapshotId"], "snap")
    await ctx.volume(
        "DELETE",
        f"/snapshots/{os_id}",
        errors={
            "not_found": "InvalidSnapshot.NotFound",
            "bad_request": "InvalidSnapshot.InUse",
            "conflict": "InvalidSnapshot.InUse",
        },
    )
    return {}
