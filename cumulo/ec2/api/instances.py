"""Instances: Compute servers seen as EC2 instances. RunInstances, DescribeInstances,
Terminate/Stop/Start/RebootInstances, GetConsoleOutput, GetPasswordData,
Describe/ModifyInstanceAttribute, DescribeInstanceStatus."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select

from cumulo.common.service_client import url_path
from cumulo.ec2 import filters
from cumulo.ec2.api import action
from cumulo.ec2.api.images import ROOT_DEVICE, image_by_os_id, image_ids, resolve_image
from cumulo.ec2.api.tags import paginate, set_tags, tag_set, tags_from_specs, tags_of
from cumulo.ec2.api.volumes import snapshot_of
from cumulo.ec2.core import Ctx
from cumulo.ec2.errors import Ec2Error, not_found
from cumulo.ec2.ids import new_id
from cumulo.ec2.models import Item

# EC2 instance states: (code, name).
PENDING, RUNNING, SHUTTING_DOWN = (0, "pending"), (16, "running"), (32, "shutting-down")
TERMINATED, STOPPING, STOPPED = (48, "terminated"), (64, "stopping"), (80, "stopped")
TERMINATED_KEPT = timedelta(hours=1)  # how long EC2 still shows a terminated instance
DEFAULT_TYPE = "m1.small"
FILTERS = (
    "architecture",
    "availability-zone",
    "image-id",
    "instance-id",
    "instance-state-code",
    "instance-state-name",
    "instance-type",
    "ip-address",
    "kernel-id",
    "key-name",
    "launch-index",
    "private-ip-address",
    "ramdisk-id",
    "reservation-id",
    "root-device-name",
    "root-device-type",
    "group-id",
    "group-name",
    "instance.group-id",
    "instance.group-name",
    "owner-id",
    "client-token",
    "dns-name",
    "private-dns-name",
    "subnet-id",
    "vpc-id",
)
ERRORS = {"not_found": "InvalidInstanceID.NotFound", "conflict": "IncorrectInstanceState"}


def state_of(server: dict[str, Any]) -> tuple[int, str]:
    status = server.get("status", "")
    task = server.get("OS-EXT-STS:task_state")
    if status == "BUILD":
        return PENDING
    if task == "deleting" or status in ("DELETED", "SOFT_DELETED"):
        return SHUTTING_DOWN if status not in ("DELETED", "SOFT_DELETED") else TERMINATED
    if status == "ERROR":
        return TERMINATED  # as AWS shows a launch that failed (StateReason tells why)
    if task in ("powering-off", "suspending", "pausing", "shelving"):
        return STOPPING
    if task in ("powering-on", "resuming", "unpausing", "unshelving", "spawning"):
        return PENDING
    if status in ("SHUTOFF", "SUSPENDED", "PAUSED", "SHELVED", "SHELVED_OFFLOADED"):
        return STOPPED
    return RUNNING


def _state(pair: tuple[int, str]) -> dict[str, Any]:
    return {"Code": pair[0], "Name": pair[1]}


def reservation_of(server_id: str, item: Item | None) -> str:
    """The reservation of an instance: RunInstances' own, else one made from its id."""
    if item is not None and item.reservation_id:
        return item.reservation_id
    return "r-" + hashlib.sha256(server_id.encode()).hexdigest()[:17]


async def server_of(ctx: Ctx, ec2_id: Any) -> dict[str, Any]:
    """The live server of an `i-` id of the caller's project; NotFound otherwise."""
    os_id = await ctx.ids.os_id(ec2_id, "i")
    try:
        return (await ctx.compute("GET", f"/servers/{os_id}", errors=ERRORS))["server"]
    except Ec2Error as err:
        if err.code == "InvalidInstanceID.NotFound":
            items = await ctx.ids.items([ec2_id])
            if ec2_id in items and items[ec2_id].project_id == ctx.project_id:
                raise Ec2Error(
                    "IncorrectInstanceState",
                    f"The instance '{ec2_id}' is not in a state from which it can be "
                    "used: it is terminated.",
                ) from None
            raise not_found("i", ec2_id) from None
        raise


async def _security_groups(ctx: Ctx, fresh: bool = False) -> list[dict[str, Any]]:
    """The project's security groups (ids and names: what instances are described with)."""

    async def load() -> list[dict[str, Any]]:
        path = f"/v2.0/security-groups?project_id={ctx.project_id}&fields=id&fields=name"
        return (await ctx.network("GET", path))["security_groups"]

    return await ctx.recent(("security_groups", ctx.project_id), load, fresh=fresh)


async def _group_ids(ctx: Ctx) -> tuple[dict[str, str], dict[str, str]]:
    """The project's security groups: name -> OpenStack id, OpenStack id -> EC2 id."""

    async def load() -> dict[str, str]:
        return await ctx.ids.ec2_ids("sg", [g["id"] for g in groups], ctx.project_id)

    groups = await _security_groups(ctx)
    ids = await ctx.recent(("sg_ids", ctx.project_id, *sorted(g["id"] for g in groups)), load)
    return {g["name"]: g["id"] for g in groups}, ids


async def _flavor_by_type(ctx: Ctx, instance_type: str) -> dict[str, Any]:
    async def load() -> list[dict[str, Any]]:
        return (await ctx.compute("GET", "/flavors"))["flavors"]

    for fresh in (False, True):  # a flavor made a moment ago is not in the kept list
        for flavor in await ctx.recent(("flavors", ctx.project_id), load, fresh=fresh):
            if flavor["name"] == instance_type:
                return flavor
    raise Ec2Error("InvalidParameterValue", f"Invalid value '{instance_type}' for InstanceType.")


async def describe_servers(
    ctx: Ctx,
    servers: list[dict[str, Any]],
    items: dict[str, Item],
    tags: dict[str, dict[str, str]] | None = None,
) -> list[dict[str, Any]]:
    """EC2 instances (boto3's Instance shape) of Compute servers, with their ids;
    `items`: those known by EC2 id, `tags`: by EC2 id when the caller knows them."""
    ids = {item.os_id: item.id for item in items.values()}
    unknown = [s["id"] for s in servers if s["id"] not in ids]
    if unknown:
        ids.update(await ctx.ids.ec2_ids("i", unknown, ctx.project_id))
    image_refs: list[str] = []
    for s in servers:
        if s.get("image"):
            image_refs.append(s["image"]["id"])
            image = await image_by_os_id(ctx, s["image"]["id"])
            if image:
                image_refs += [image.get("kernel_id"), image.get("ramdisk_id")]
    images = await image_ids(ctx, [i for i in image_refs if i])
    volumes = await ctx.ids.ec2_ids(
        "vol",
        [v["id"] for s in servers for v in s.get("os-extended-volumes:volumes_attached", [])],
        ctx.project_id,
    )
    groups, group_ids = await _group_ids(ctx) if servers else ({}, {})
    all_tags = tags if tags is not None else await tags_of(ctx, list(ids.values()))
    out = []
    for s in servers:
        ec2_id = ids[s["id"]]
        out.append(
            _describe(
                ctx,
                s,
                ec2_id,
                items.get(ec2_id),
                images,
                volumes,
                groups,
                group_ids,
                all_tags.get(ec2_id, {}),
            )
        )
    return out


def _describe(ctx, s, ec2_id, item, images, volumes, groups, group_ids, tags) -> dict[str, Any]:
    state = state_of(s)
    fixed = [
        a
        for net in (s.get("addresses") or {}).values()
        for a in net
        if a.get("OS-EXT-IPS:type", "fixed") == "fixed"
    ]
    floating = [
        a
        for net in (s.get("addresses") or {}).values()
        for a in net
        if a.get("OS-EXT-IPS:type") == "floating"
    ]
    v4 = [a["addr"] for a in fixed if a.get("version", 4) == 4]
    public = [a["addr"] for a in floating if a.get("version", 4) == 4]
    image_id = (s.get("image") or {}).get("id")
    image = None
    data = json.loads(item.data) if item is not None and item.data else {}
    flavor = s.get("flavor") or {}
    sgs = [
        {"GroupName": g["name"], "GroupId": group_ids.get(groups.get(g["name"], ""), "")}
        for g in s.get("security_groups") or []
    ]
    described: dict[str, Any] = {
        "InstanceId": ec2_id,
        "ImageId": images.get(image_id, "") if image_id else "",
        "State": _state(state),
        "PrivateDnsName": s.get("OS-EXT-SRV-ATTR:hostname") or s.get("name", ""),
        "PublicDnsName": public[0] if public else "",
        "StateTransitionReason": data.get("reason", ""),
        "KeyName": s.get("key_name"),
        "AmiLaunchIndex": data.get("launch_index", 0),
        "ProductCodes": [],
        "InstanceType": flavor.get("original_name") or flavor.get("id") or "",
        "LaunchTime": s.get("OS-SRV-USG:launched_at") or s.get("created"),
        "Placement": {
            "AvailabilityZone": s.get("OS-EXT-AZ:availability_zone") or "nova",
            "GroupName": "",
            "Tenancy": "default",
        },
        "Monitoring": {"State": "disabled"},
        "PrivateIpAddress": v4[0] if v4 else None,
        "PublicIpAddress": public[0] if public else None,
        "Architecture": "x86_64",
        "RootDeviceType": "ebs" if not image_id else "instance-store",
        "RootDeviceName": ROOT_DEVICE,
        "BlockDeviceMappings": [
            {
                "DeviceName": v.get("device") or "",
                "Ebs": {
                    "VolumeId": volumes.get(v["id"], ""),
                    "Status": "attached",
                    "DeleteOnTermination": bool(v.get("delete_on_termination")),
                },
            }
            for v in s.get("os-extended-volumes:volumes_attached", [])
        ],
        "VirtualizationType": "hvm",
        "ClientToken": item.client_token if item is not None and item.client_token else "",
        "Tags": tag_set(tags),
        "SecurityGroups": sgs,
        "Hypervisor": "xen",
        "OwnerId": ctx.project_id,
        "ReservationId": reservation_of(s["id"], item),
    }
    if image_id:
        image = ctx.cache.get("image", {}).get(image_id)
    if image:
        if image.get("kernel_id") in images:
            described["KernelId"] = images[image["kernel_id"]]
        if image.get("ramdisk_id") in images:
            described["RamdiskId"] = images[image["ramdisk_id"]]
    if s.get("status") == "ERROR":
        message = (s.get("fault") or {}).get("message", "The instance failed to launch.")
        described["StateReason"] = {"Code": "Server.InternalError", "Message": message}
    elif state == STOPPED:
        described["StateReason"] = {
            "Code": "Client.UserInitiatedShutdown",
            "Message": "Client.UserInitiatedShutdown: User initiated shutdown",
        }
    return described


def _terminated(item: Item) -> dict[str, Any] | None:
    """What EC2 still shows of an instance that is gone, for an hour."""
    data = json.loads(item.data) if item.data else {}
    gone = data.get("terminated_at")
    if gone and datetime.fromisoformat(gone) < datetime.now(UTC) - TERMINATED_KEPT:
        return None
    described = dict(
        data.get("last")
        or {
            "InstanceId": item.id,
            "ImageId": "",
            "InstanceType": "",
            "ReservationId": reservation_of(item.os_id, item),
        }
    )
    described.update(
        State=_state(TERMINATED),
        PrivateIpAddress=None,
        PublicIpAddress=None,
        PublicDnsName="",
        BlockDeviceMappings=[],
    )
    described["StateReason"] = {
        "Code": "Client.UserInitiatedShutdown",
        "Message": "Client.UserInitiatedShutdown: User initiated shutdown",
    }
    return described


def _filter_values(d: dict[str, Any]) -> dict[str, Any]:
    return {
        "architecture": d.get("Architecture"),
        "availability-zone": (d.get("Placement") or {}).get("AvailabilityZone"),
        "image-id": d.get("ImageId"),
        "instance-id": d["InstanceId"],
        "instance-state-code": d["State"]["Code"],
        "instance-state-name": d["State"]["Name"],
        "instance-type": d.get("InstanceType"),
        "ip-address": d.get("PublicIpAddress"),
        "kernel-id": d.get("KernelId"),
        "key-name": d.get("KeyName"),
        "launch-index": d.get("AmiLaunchIndex"),
        "private-ip-address": d.get("PrivateIpAddress"),
        "ramdisk-id": d.get("RamdiskId"),
        "reservation-id": d.get("ReservationId"),
        "root-device-name": d.get("RootDeviceName"),
        "root-device-type": d.get("RootDeviceType"),
        "group-id": [g["GroupId"] for g in d.get("SecurityGroups") or []],
        "group-name": [g["GroupName"] for g in d.get("SecurityGroups") or []],
        "instance.group-id": [g["GroupId"] for g in d.get("SecurityGroups") or []],
        "instance.group-name": [g["GroupName"] for g in d.get("SecurityGroups") or []],
        "owner-id": d.get("OwnerId"),
        "client-token": d.get("ClientToken"),
        "dns-name": d.get("PublicDnsName"),
        "private-dns-name": d.get("PrivateDnsName"),
        "subnet-id": d.get("SubnetId"),
        "vpc-id": d.get("VpcId"),
    }


async def _all_servers(ctx: Ctx) -> list[dict[str, Any]]:
    servers, path = [], "/servers/detail?limit=1000"
    while path:
        page = await ctx.compute("GET", path)
        servers += page["servers"]
        nxt = [link["href"] for link in page.get("servers_links", []) if link.get("rel") == "next"]
        path = nxt[0].split("/v2.1", 1)[-1] if nxt else None
    return servers


async def instances(ctx: Ctx, ec2_ids: list[str] | None) -> list[dict[str, Any]]:
    """The caller's instances (all, or those of `ec2_ids`), terminated ones included."""
    if ec2_ids:
        os_ids = await ctx.ids.os_ids(ec2_ids, "i")
        items = await ctx.ids.items(ec2_ids)
        found = []
        for ec2_id in ec2_ids:
            if items[ec2_id].project_id != ctx.project_id:
                raise not_found("i", ec2_id)
        servers = await asyncio.gather(
            *(
                ctx.compute("GET", f"/servers/{os_ids[i]}", errors={"not_found": "Gone"})
                for i in ec2_ids
            ),
            return_exceptions=True,
        )
        live = []
        for ec2_id, answer in zip(ec2_ids, servers, strict=True):
            if isinstance(answer, Ec2Error) and answer.code == "Gone":
                gone = _terminated(items[ec2_id])
                if gone is None:
                    raise not_found("i", ec2_id)
                found.append(gone)
            elif isinstance(answer, BaseException):
                raise answer
            else:
                live.append(answer["server"])
        return await describe_servers(ctx, live, items) + found
    servers = await _all_servers(ctx)
    items = await ctx.service.db.run_read(_project_instances, ctx.project_id)
    by_os = {item.os_id: item for item in items.values()}
    described = await describe_servers(
        ctx, servers, {by_os[s["id"]].id: by_os[s["id"]] for s in servers if s["id"] in by_os}
    )
    live = {s["id"] for s in servers}
    for item in items.values():
        if item.os_id not in live and (gone := _terminated(item)) is not None:
            described.append(gone)
    return described


def _project_instances(s, project_id: str) -> dict[str, Item]:
    rows = s.scalars(select(Item).where(Item.kind == "i", Item.project_id == project_id))
    return {row.id: row for row in rows}


def reservations(described: list[dict[str, Any]], owner: str) -> list[dict[str, Any]]:
    grouped: dict[str, dict[str, Any]] = {}
    for d in described:
        rid = d.pop("ReservationId")
        res = grouped.setdefault(
            rid, {"ReservationId": rid, "OwnerId": owner, "Groups": [], "Instances": []}
        )
        res["Instances"].append(d)
    return list(grouped.values())


@action("DescribeInstances")
async def describe_instances(ctx: Ctx, p: dict[str, Any]) -> dict:
    wanted = filters.check(p.get("Filters"), FILTERS)
    if p.get("MaxResults") is not None and p.get("InstanceIds"):
        raise Ec2Error(
            "InvalidParameterCombination",
            "The parameter instancesSet cannot be used with the parameter maxResults",
        )
    described = await instances(ctx, p.get("InstanceIds"))
    tags = await tags_of(ctx, [d["InstanceId"] for d in described])
    chosen = [
        d
        for d in described
        if filters.matches(wanted, _filter_values(d), tags.get(d["InstanceId"], {}))
    ]
    chosen.sort(key=lambda d: (d.get("LaunchTime") or "", d["InstanceId"]))
    page = paginate(chosen, p, "Instances")
    out = {"Reservations": reservations(page["Instances"], ctx.project_id)}
    if "NextToken" in page:
        out["NextToken"] = page["NextToken"]
    return out


async def _networks(ctx: Ctx, p: dict[str, Any], count: int) -> Any:
    subnet_id = p.get("SubnetId")
    private_ip = p.get("PrivateIpAddress")
    for nic in p.get("NetworkInterfaces") or []:
        if nic.get("DeviceIndex", 0) == 0:
            subnet_id = subnet_id or nic.get("SubnetId")
            private_ip = private_ip or nic.get("PrivateIpAddress")
    if not subnet_id:
        if private_ip:
            raise Ec2Error("InvalidParameterCombination", "PrivateIpAddress needs a SubnetId.")
        return "auto"
    os_subnet = await ctx.ids.os_id(subnet_id, "subnet")
    subnet = (
        await ctx.network(
            "GET",
            url_path("/v2.0/subnets/{}", os_subnet),
            errors={"not_found": "InvalidSubnetID.NotFound"},
        )
    )["subnet"]
    net: dict[str, Any] = {"uuid": subnet["network_id"]}
    if private_ip:
        if count > 1:
            raise Ec2Error(
                "InvalidParameterCombination",
                "PrivateIpAddress can be given for one instance only.",
            )
        net["fixed_ip"] = private_ip
    return [net]


async def _group_names(ctx: Ctx, p: dict[str, Any]) -> list[str]:
    wanted = list(p.get("SecurityGroupIds") or [])
    for nic in p.get("NetworkInterfaces") or []:
        wanted += nic.get("Groups") or []
    if not wanted and not p.get("SecurityGroups"):
        return []
    groups = await _security_groups(ctx, fresh=True)
    names = []
    for name in p.get("SecurityGroups") or []:
        if not any(g["name"] == name for g in groups):
            raise Ec2Error("InvalidGroup.NotFound", f"The security group '{name}' does not exist")
        names.append(name)
    if wanted:
        os_ids = await ctx.ids.os_ids(wanted, "sg")
        by_id = {g["id"]: g["name"] for g in groups}
        for ec2_id in wanted:
            if os_ids[ec2_id] not in by_id:
                raise not_found("sg", ec2_id)
            names.append(by_id[os_ids[ec2_id]])
    return list(dict.fromkeys(names))


async def _block_devices(ctx: Ctx, mappings: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for m in mappings:
        ebs = m.get("Ebs")
        if m.get("NoDevice") is not None or not ebs:
            continue  # instance-store and suppressed devices: nothing to make
        bdm: dict[str, Any] = {
            "destination_type": "volume",
            "boot_index": -1,
            "device_name": m.get("DeviceName"),
            "delete_on_termination": ebs.get("DeleteOnTermination", True),
        }
        if ebs.get("SnapshotId"):
            bdm["source_type"] = "snapshot"
            bdm["uuid"] = (await snapshot_of(ctx, ebs["SnapshotId"]))["id"]
        else:
            if not ebs.get("VolumeSize"):
                raise Ec2Error(
                    "InvalidBlockDeviceMapping",
                    f"The device {m.get('DeviceName')} needs a SnapshotId or a VolumeSize.",
                )
            bdm["source_type"] = "blank"
        if ebs.get("VolumeSize"):
            bdm["volume_size"] = ebs["VolumeSize"]
        if ebs.get("VolumeType") and ebs["VolumeType"] not in ("standard", "gp2", "gp3"):
            bdm["volume_type"] = ebs["VolumeType"]
        out.append(bdm)
    return out


async def _by_client_token(ctx: Ctx, token: str) -> list[str]:
    def read(s) -> list[str]:
        return list(
            s.scalars(
                select(Item.id).where(Item.project_id == ctx.project_id, Item.client_token == token)
            )
        )

    return await ctx.service.db.run_read(read)


@action("RunInstances")
async def run_instances(ctx: Ctx, p: dict[str, Any]) -> dict:
    min_count, max_count = p.get("MinCount", 1), p.get("MaxCount", 1)
    if min_count < 1 or max_count < min_count:
        raise Ec2Error(
            "InvalidParameterValue", "MinCount must be at least 1 and MaxCount at least MinCount."
        )
    token = p.get("ClientToken")
    if token:
        if len(token) > 64:
            raise Ec2Error("InvalidParameterValue", "ClientToken is longer than 64 characters.")
        earlier = await _by_client_token(ctx, token)
        if earlier:  # the same request again: the same reservation, nothing new
            described = await instances(ctx, earlier)
            return reservations(described, ctx.project_id)[0]
    if not p.get("ImageId"):
        raise Ec2Error("MissingParameter", "The request must contain the parameter ImageId")
    image = await resolve_image(ctx, p["ImageId"], ("ami",))
    for key, prop in (("KernelId", "kernel_id"), ("RamdiskId", "ramdisk_id")):
        if p.get(key):
            chosen = await resolve_image(ctx, p[key], ("aki",) if key == "KernelId" else ("ari",))
            if chosen["id"] != image.get(prop):
                raise Ec2Error(
                    "InvalidParameterCombination",
                    f"{key} {p[key]} is not the one {p['ImageId']} boots with; this "
                    "cloud boots an image with the kernel and ramdisk it names.",
                )
    flavor = await _flavor_by_type(ctx, p.get("InstanceType") or DEFAULT_TYPE)
    if p.get("KeyName"):
        await ctx.compute(
            "GET",
            url_path("/os-keypairs/{}", p["KeyName"]),
            errors={"not_found": "InvalidKeyPair.NotFound"},
        )
    instance_tags = tags_from_specs(p.get("TagSpecifications"), "instance")
    server: dict[str, Any] = {
        "name": instance_tags.get("Name") or "ec2-instance",
        "imageRef": image["id"],
        "flavorRef": flavor["id"],
        "min_count": min_count,
        "max_count": max_count,
        "return_reservation_id": True,
        "networks": await _networks(ctx, p, max_count),
    }
    if p.get("KeyName"):
        server["key_name"] = p["KeyName"]
    names = await _group_names(ctx, p)
    if names:
        server["security_groups"] = [{"name": n} for n in names]
    if p.get("UserData"):
        user_data = p["UserData"]
        try:
            base64.b64decode(user_data, validate=True)
        except ValueError:
            user_data = base64.b64encode(user_data.encode()).decode()
        server["user_data"] = user_data
    zone = (p.get("Placement") or {}).get("AvailabilityZone")
    if zone:
        server["availability_zone"] = zone
    if p.get("BlockDeviceMappings"):
        bdms = await _block_devices(ctx, p["BlockDeviceMappings"])
        if bdms:
            server["block_device_mapping_v2"] = [
                {
                    "uuid": image["id"],
                    "source_type": "image",
                    "destination_type": "local",
                    "boot_index": 0,
                    "delete_on_termination": True,
                },
                *bdms,
            ]
    # Its id first: one instance is created under its own id as its name (the same in
    # both APIs' listings); several are renamed once Compute has made them (as many as
    # the quota allows between MinCount and MaxCount: ids only for those).
    first = new_id("i")
    if "Name" not in instance_tags:
        server["name"] = first
    if max_count == 1:
        server.pop("return_reservation_id")
    made = await ctx.compute(
        "POST",
        "/servers",
        json={"server": server},
        errors={
            "quota": "InstanceLimitExceeded",
            "not_found": "InvalidParameterValue",
            "conflict": "InvalidParameterValue",
        },
    )
    if max_count == 1:
        reservation = new_id("r")
        servers = [_pending(made["server"]["id"], server, flavor, image["id"], names)]
    else:
        reservation = made["reservation_id"]
        path = f"/servers/detail?reservation_id={reservation}"
        servers = (await ctx.compute("GET", path))["servers"]
        servers.sort(key=lambda s: (s.get("created") or "", s["name"]))
    ids = {s["id"]: first if i == 0 else new_id("i") for i, s in enumerate(servers)}
    items = [
        Item(
            id=ids[s["id"]],
            kind="i",
            os_id=s["id"],
            project_id=ctx.project_id,
            reservation_id=reservation,
            client_token=token,
            data=json.dumps({"launch_index": i, "user_data": server.get("user_data")}),
        )
        for i, s in enumerate(servers)
    ]
    await ctx.ids.add(items)
    if "Name" not in instance_tags and max_count > 1:
        await asyncio.gather(
            *(
                ctx.compute("PUT", f"/servers/{s['id']}", json={"server": {"name": ids[s["id"]]}})
                for s in servers
            )
        )
        for s in servers:
            s["name"] = ids[s["id"]]
    await set_tags(ctx, list(ids.values()), instance_tags)
    known = {item.id: item for item in items}
    described = await describe_servers(ctx, servers, known, {i: instance_tags for i in known})
    return reservations(described, ctx.project_id)[0]


def _pending(server_id: str, request: dict, flavor: dict, image_id: str, groups: list) -> dict:
    """What Compute would show of a server it has just accepted (BUILD, no addresses yet)."""
    return {
        "id": server_id,
        "name": request["name"],
        "status": "BUILD",
        "created": datetime.now(UTC).isoformat(),
        "key_name": request.get("key_name"),
        "flavor": {"original_name": flavor["name"]},
        "image": {"id": image_id},
        "security_groups": [{"name": n} for n in groups or ["default"]],
        "addresses": {},
        "OS-EXT-AZ:availability_zone": request.get("availability_zone") or "nova",
    }


async def _change_states(
    ctx: Ctx, ec2_ids: list[str], act, after: tuple[int, str]
) -> list[dict[str, Any]]:
    """Run `act(server)` on each instance (once, however often it is named); their
    previous and current states."""
    ec2_ids = list(dict.fromkeys(ec2_ids))
    changes = []
    servers = [await server_of(ctx, i) for i in ec2_ids]  # all known before any changes
    for ec2_id, server in zip(ec2_ids, servers, strict=True):
        before = state_of(server)
        await act(server)
        changes.append(
            {"InstanceId": ec2_id, "PreviousState": _state(before), "CurrentState": _state(after)}
        )
    return changes


def _server_action(body: dict[str, Any]):
    async def act_on(server: dict[str, Any], ctx: Ctx) -> None:
        await ctx.compute("POST", f"/servers/{server['id']}/action", json=body, errors=ERRORS)

    return act_on


@action("StopInstances")
async def stop_instances(ctx: Ctx, p: dict[str, Any]) -> dict:
    async def stop(server: dict[str, Any]) -> None:
        if state_of(server) in (STOPPED, STOPPING):
            return
        if state_of(server) != RUNNING:
            raise Ec2Error(
                "IncorrectInstanceState",
                f"The instance '{server['name']}' is not in a state from which it can be stopped.",
            )
        await _server_action({"os-stop": None})(server, ctx)

    return {"StoppingInstances": await _change_states(ctx, p["InstanceIds"], stop, STOPPING)}


@action("StartInstances")
async def start_instances(ctx: Ctx, p: dict[str, Any]) -> dict:
    async def start(server: dict[str, Any]) -> None:
        if state_of(server) in (RUNNING, PENDING):
            return
        if state_of(server) != STOPPED:
            raise Ec2Error(
                "IncorrectInstanceState",
                f"The instance '{server['name']}' is not in a state from which it can be started.",
            )
        body = (
            {"os-start": None}
            if server["status"] == "SHUTOFF"
            else ({"resume": None} if server["status"] == "SUSPENDED" else {"unpause": None})
        )
        await _server_action(body)(server, ctx)

    return {"StartingInstances": await _change_states(ctx, p["InstanceIds"], start, PENDING)}


@action("RebootInstances")
async def reboot_instances(ctx: Ctx, p: dict[str, Any]) -> dict:
    async def reboot(server: dict[str, Any]) -> None:
        if state_of(server) != RUNNING:
            raise Ec2Error(
                "IncorrectInstanceState", f"The instance '{server['name']}' is not running."
            )
        await _server_action({"reboot": {"type": "SOFT"}})(server, ctx)

    await _change_states(ctx, p["InstanceIds"], reboot, RUNNING)
    return {}


@action("TerminateInstances")
async def terminate_instances(ctx: Ctx, p: dict[str, Any]) -> dict:
    ec2_ids = list(dict.fromkeys(p["InstanceIds"]))
    os_ids = await ctx.ids.os_ids(ec2_ids, "i")
    items = await ctx.ids.items(ec2_ids)
    changes = []
    for ec2_id in ec2_ids:
        if items[ec2_id].project_id != ctx.project_id:
            raise not_found("i", ec2_id)
    for ec2_id in ec2_ids:
        try:
            server = (
                await ctx.compute("GET", f"/servers/{os_ids[ec2_id]}", errors={"not_found": "Gone"})
            )["server"]
        except Ec2Error as err:
            if err.code != "Gone":
                raise
            changes.append(
                {
                    "InstanceId": ec2_id,
                    "PreviousState": _state(TERMINATED),
                    "CurrentState": _state(TERMINATED),
                }
            )
            continue
        last = (await describe_servers(ctx, [server], items))[0]
        now = datetime.now(UTC)
        last["StateTransitionReason"] = f"User initiated ({now:%Y-%m-%d %H:%M:%S} GMT)"
        data = json.loads(items[ec2_id].data) if items[ec2_id].data else {}
        data.update(last=last, terminated_at=now.isoformat(), reason=last["StateTransitionReason"])
        await ctx.ids.record(ec2_id, data=data)
        await ctx.compute(
            "DELETE", f"/servers/{server['id']}", errors={**ERRORS, "not_found": "Gone"}
        )
        changes.append(
            {
                "InstanceId": ec2_id,
                "PreviousState": last["State"],
                "CurrentState": _state(SHUTTING_DOWN),
            }
        )
    return {"TerminatingInstances": changes}


@action("GetConsoleOutput")
async def get_console_output(ctx: Ctx, p: dict[str, Any]) -> dict:
    server = await server_of(ctx, p["InstanceId"])
    answer = await ctx.compute(
        "POST",
        f"/servers/{server['id']}/action",
        json={"os-getConsoleOutput": {"length": None}},
        errors=ERRORS,
    )
    output = answer.get("output") or ""
    return {
        "InstanceId": p["InstanceId"],
        "Timestamp": datetime.now(UTC),
        "Output": base64.b64encode(output.encode()).decode(),  # boto3 decodes it
    }


@action("GetPasswordData")
async def get_password_data(ctx: Ctx, p: dict[str, Any]) -> dict:
    server = await server_of(ctx, p["InstanceId"])
    answer = await ctx.compute("GET", f"/servers/{server['id']}/os-server-password", errors=ERRORS)
    return {
        "InstanceId": p["InstanceId"],
        "Timestamp": datetime.now(UTC),
        "PasswordData": answer.get("password") or "",
    }


@action("DescribeInstanceStatus")
async def describe_instance_status(ctx: Ctx, p: dict[str, Any]) -> dict:
    names = (
        "availability-zone",
        "instance-state-name",
        "instance-state-code",
        "instance-status.status",
        "system-status.status",
    )
    wanted = filters.check(p.get("Filters"), names)
    described = await instances(ctx, p.get("InstanceIds"))
    out = []
    for d in described:
        running = d["State"]["Name"] == "running"
        if not running and not p.get("IncludeAllInstances"):
            continue
        status = "ok" if running else "not-applicable"
        detail = [{"Name": "reachability", "Status": "passed"}] if running else []
        values = {
            "availability-zone": d["Placement"]["AvailabilityZone"] if "Placement" in d else None,
            "instance-state-name": d["State"]["Name"],
            "instance-state-code": d["State"]["Code"],
            "instance-status.status": status,
            "system-status.status": status,
        }
        if filters.matches(wanted, values):
            out.append(
                {
                    "InstanceId": d["InstanceId"],
                    "AvailabilityZone": values["availability-zone"],
                    "InstanceState": d["State"],
                    "InstanceStatus": {"Status": status, "Details": detail},
                    "SystemStatus": {"Status": status, "Details": detail},
                }
            )
    return paginate(out, p, "InstanceStatuses")


@action("DescribeInstanceAttribute")
async def describe_instance_attribute(ctx: Ctx, p: dict[str, Any]) -> dict:
    ec2_id = p["InstanceId"]
    server = await server_of(ctx, ec2_id)
    items = await ctx.ids.items([ec2_id])
    d = (await describe_servers(ctx, [server], items))[0]
    data = json.loads(items[ec2_id].data) if items[ec2_id].data else {}
    attribute = p["Attribute"]
    out: dict[str, Any] = {"InstanceId": ec2_id}
    values = {
        "instanceType": ("InstanceType", {"Value": d["InstanceType"]}),
        "kernel": ("KernelId", {"Value": d.get("KernelId")} if d.get("KernelId") else {}),
        "ramdisk": ("RamdiskId", {"Value": d.get("RamdiskId")} if d.get("RamdiskId") else {}),
        "userData": ("UserData", {"Value": data["user_data"]} if data.get("user_data") else {}),
        "disableApiTermination": ("DisableApiTermination", {"Value": bool(server.get("locked"))}),
        "instanceInitiatedShutdownBehavior": (
            "InstanceInitiatedShutdownBehavior",
            {"Value": "stop"},
        ),
        "rootDeviceName": ("RootDeviceName", {"Value": d["RootDeviceName"]}),
        "blockDeviceMapping": ("BlockDeviceMappings", d["BlockDeviceMappings"]),
        "groupSet": ("Groups", d["SecurityGroups"]),
        "sourceDestCheck": ("SourceDestCheck", {"Value": True}),
        "ebsOptimized": ("EbsOptimized", {"Value": False}),
        "productCodes": ("ProductCodes", []),
    }
    if attribute not in values:
        raise Ec2Error(
            "InvalidParameterValue", f"Value ({attribute}) for parameter attribute is invalid."
        )
    key, value = values[attribute]
    out[key] = value
    return out


@action("ModifyInstanceAttribute")
async def modify_instance_attribute(ctx: Ctx, p: dict[str, Any]) -> dict:
    ec2_id = p["InstanceId"]
    server = await server_of(ctx, ec2_id)
    instance_type = (p.get("InstanceType") or {}).get("Value")
    if p.get("Attribute") == "instanceType":
        instance_type = p.get("Value")
    if instance_type:
        if state_of(server) != STOPPED:
            raise Ec2Error(
                "IncorrectInstanceState", f"The instance '{ec2_id}' is not in the 'stopped' state."
            )
        flavor = await _flavor_by_type(ctx, instance_type)
        await ctx.compute(
            "POST",
            f"/servers/{server['id']}/action",
            json={"resize": {"flavorRef": flavor["id"]}},
            errors=ERRORS,
        )
        task = asyncio.create_task(_confirm_resize(ctx, server["id"]))
        ctx.service.tasks.add(task)
        task.add_done_callback(ctx.service.tasks.discard)
        return {}
    if p.get("Groups"):
        await _set_groups(ctx, server, p["Groups"])
        return {}
    if p.get("DisableApiTermination") is not None:
        lock = p["DisableApiTermination"].get("Value")
        await _server_action({"lock": None} if lock else {"unlock": None})(server, ctx)
        return {}
    if p.get("UserData") is not None or p.get("Attribute") == "userData":
        raise Ec2Error(
            "UnsupportedOperation",
            "Changing an instance's user data is not supported by this cloud: "
            "Compute keeps the user data a server was created with.",
        )
    raise Ec2Error("InvalidParameterCombination", "Name one attribute to modify.")


async def _confirm_resize(ctx: Ctx, server_id: str, timeout: float = 600.0) -> None:
    """EC2 changes a stopped instance's type in one step: confirm the resize once done."""
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        server = (await ctx.compute("GET", f"/servers/{server_id}"))["server"]
        if server["status"] == "VERIFY_RESIZE":
            await ctx.compute("POST", f"/servers/{server_id}/action", json={"confirmResize": None})
            return
        if server["status"] in ("ERROR", "SHUTOFF", "ACTIVE"):
            return
        await asyncio.sleep(0.5)


async def _set_groups(ctx: Ctx, server: dict[str, Any], wanted: list[str]) -> None:
    groups = await _security_groups(ctx)
    os_ids = await ctx.ids.os_ids(wanted, "sg")
    by_id = {g["id"]: g["name"] for g in groups}
    for ec2_id in wanted:
        if os_ids[ec2_id] not in by_id:
            raise not_found("sg", ec2_id)
    names = {by_id[o] for o in os_ids.values()}
    current = {g["name"] for g in server.get("security_groups") or []}
    for name in names - current:
        await _server_action({"addSecurityGroup": {"name": name}})(server, ctx)
    for name in current - names:
        await _server_action({"removeSecurityGroup": {"name": name}})(server, ctx)
