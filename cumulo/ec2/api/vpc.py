"""The VPC set as ec2-api mapped it onto Network: a VPC is a router, a subnet is a
network with one subnet plugged into the VPC's router, an internet gateway sets the
router's external gateway, the main route table is the router's, a network interface
is a port."""

from __future__ import annotations

import ipaddress
import json
import uuid
from typing import Any

from sqlalchemy import select

from cumulo.common.service_client import url_path
from cumulo.ec2 import filters
from cumulo.ec2.api import action
from cumulo.ec2.api.security_groups import group_of
from cumulo.ec2.api.tags import set_tags, tag_set, tags_from_specs, tags_of
from cumulo.ec2.core import Ctx
from cumulo.ec2.errors import Ec2Error, not_found
from cumulo.ec2.models import Item


async def _items(ctx: Ctx, kind: str) -> list[Item]:
    def read(s) -> list[Item]:
        return list(
            s.scalars(
                select(Item)
                .where(Item.kind == kind, Item.project_id == ctx.project_id)
                .order_by(Item.created_at)
            )
        )

    return await ctx.service.db.run_read(read)


def _data(item: Item) -> dict[str, Any]:
    return json.loads(item.data) if item.data else {}


def _network(cidr: Any, label: str) -> ipaddress.IPv4Network:
    try:
        net = ipaddress.IPv4Network(str(cidr), strict=True)
    except ValueError:
        raise Ec2Error(
            "InvalidParameterValue", f"Value ({cidr}) for parameter {label} is invalid."
        ) from None
    if not 16 <= net.prefixlen <= 28:
        raise Ec2Error(
            "InvalidVpc.Range" if label == "cidrBlock" else "InvalidSubnet.Range",
            f"The CIDR '{cidr}' is invalid: the prefix is /16 to /28.",
        )
    return net


async def _routers(ctx: Ctx) -> dict[str, dict[str, Any]]:
    routers = (await ctx.network("GET", f"/v2.0/routers?project_id={ctx.project_id}"))["routers"]
    return {r["id"]: r for r in routers}


async def _vpcs(ctx: Ctx) -> list[tuple[Item, dict[str, Any]]]:
    routers = await _routers(ctx)
    return [
        (item, routers[item.os_id]) for item in await _items(ctx, "vpc") if item.os_id in routers
    ]


async def vpc_of(ctx: Ctx, vpc_id: Any) -> tuple[Item, dict[str, Any]]:
    """A VPC of the caller's project and its router; InvalidVpcID.NotFound otherwise."""
    await ctx.ids.os_id(vpc_id, "vpc")
    for item, router in await _vpcs(ctx):
        if item.id == vpc_id:
            return item, router
    raise not_found("vpc", vpc_id)


def _describe_vpc(ctx: Ctx, item: Item, tags: dict) -> dict[str, Any]:
    cidr = _data(item)["cidr"]
    return {
        "VpcId": item.id,
        "CidrBlock": cidr,
        "State": "available",
        "DhcpOptionsId": "default",
        "InstanceTenancy": "default",
        "IsDefault": False,
        "OwnerId": ctx.project_id,
        "CidrBlockAssociationSet": [
            {
                "AssociationId": f"vpc-cidr-assoc-{item.id[4:]}",
                "CidrBlock": cidr,
                "CidrBlockState": {"State": "associated"},
            }
        ],
        "Tags": tag_set(tags),
    }


@action("CreateVpc")
async def create_vpc(ctx: Ctx, p: dict[str, Any]) -> dict:
    cidr = _network(p.get("CidrBlock"), "cidrBlock")
    router = (
        await ctx.network(
            "POST",
            "/v2.0/routers",
            json={"router": {"name": "vpc"}},
            errors={"quota": "VpcLimitExceeded"},
        )
    )["router"]
    vpc_id = await ctx.ids.ec2_id("vpc", router["id"], ctx.project_id)
    await ctx.ids.record(vpc_id, data={"cidr": str(cidr)})
    await ctx.network(
        "PUT", url_path("/v2.0/routers/{}", router["id"]), json={"router": {"name": vpc_id}}
    )
    tags = tags_from_specs(p.get("TagSpecifications"), "vpc")
    await set_tags(ctx, [vpc_id], tags)
    item = (await ctx.ids.items([vpc_id]))[vpc_id]
    return {"Vpc": _describe_vpc(ctx, item, tags)}


@action("DescribeVpcs")
async def describe_vpcs(ctx: Ctx, p: dict[str, Any]) -> dict:
    wanted = filters.check(
        p.get("Filters"), ("cidr", "cidr-block", "state", "vpc-id", "is-default", "owner-id")
    )
    vpcs = await _vpcs(ctx)
    known = {item.id for item, _ in vpcs}
    for vpc_id in p.get("VpcIds") or []:
        if vpc_id not in known:
            raise not_found("vpc", vpc_id)
    tags = await tags_of(ctx, list(known))
    out = []
    for item, _ in vpcs:
        if p.get("VpcIds") and item.id not in p["VpcIds"]:
            continue
        d = _describe_vpc(ctx, item, tags.get(item.id, {}))
        values = {
            "cidr": d["CidrBlock"],
            "cidr-block": d["CidrBlock"],
            "state": "available",
            "vpc-id": item.id,
            "is-default": False,
            "owner-id": ctx.project_id,
        }
        if filters.matches(wanted, values, tags.get(item.id, {})):
            out.append(d)
    return {"Vpcs": out}


@action("DeleteVpc")
async def delete_vpc(ctx: Ctx, p: dict[str, Any]) -> dict:
    item, router = await vpc_of(ctx, p["VpcId"])
    if any(s["VpcId"] == item.id for s in await _subnets(ctx)):
        raise Ec2Error(
            "DependencyViolation", f"The vpc '{item.id}' has dependencies and cannot be deleted."
        )
    if router.get("external_gateway_info"):
        raise Ec2Error(
            "DependencyViolation", f"The vpc '{item.id}' has an internet gateway attached."
        )
    await ctx.network(
        "DELETE",
        url_path("/v2.0/routers/{}", router["id"]),
        errors={"conflict": "DependencyViolation"},
    )
    await ctx.ids.forget([item.id])
    return {}


async def _subnets(ctx: Ctx) -> list[dict[str, Any]]:
    items = await _items(ctx, "subnet")
    if not items:
        return []
    subnets = {
        s["id"]: s
        for s in (await ctx.network("GET", f"/v2.0/subnets?project_id={ctx.project_id}"))["subnets"]
    }
    tags = await tags_of(ctx, [i.id for i in items])
    out = []
    for item in items:
        subnet = subnets.get(item.os_id)
        if subnet is None:
            continue
        net = ipaddress.IPv4Network(subnet["cidr"])
        out.append(
            {
                "SubnetId": item.id,
                "VpcId": _data(item)["vpc"],
                "CidrBlock": subnet["cidr"],
                "State": "available",
                "AvailabilityZone": _data(item).get("zone") or "nova",
                "AvailableIpAddressCount": max(net.num_addresses - 5, 0),
                "DefaultForAz": False,
                "MapPublicIpOnLaunch": False,
                "OwnerId": ctx.project_id,
                "Tags": tag_set(tags.get(item.id)),
                "_network": subnet["network_id"],
            }
        )
    return out


@action("CreateSubnet")
async def create_subnet(ctx: Ctx, p: dict[str, Any]) -> dict:
    item, router = await vpc_of(ctx, p["VpcId"])
    cidr = _network(p.get("CidrBlock"), "cidrBlock.subnet")
    if not cidr.subnet_of(ipaddress.IPv4Network(_data(item)["cidr"])):
        raise Ec2Error(
            "InvalidSubnet.Range", f"The CIDR '{cidr}' is invalid for the vpc {item.id}."
        )
    for other in await _subnets(ctx):
        if other["VpcId"] == item.id and ipaddress.IPv4Network(other["CidrBlock"]).overlaps(cidr):
            raise Ec2Error(
                "InvalidSubnet.Conflict", f"The CIDR '{cidr}' conflicts with another subnet"
            )
    network = (
        await ctx.network(
            "POST",
            "/v2.0/networks",
            json={"network": {"name": "subnet"}},
            errors={"quota": "SubnetLimitExceeded"},
        )
    )["network"]
    try:
        subnet = (
            await ctx.network(
                "POST",
                "/v2.0/subnets",
                json={"subnet": {"network_id": network["id"], "cidr": str(cidr), "ip_version": 4}},
            )
        )["subnet"]
        await ctx.network(
            "PUT",
            url_path("/v2.0/routers/{}/add_router_interface", router["id"]),
            json={"subnet_id": subnet["id"]},
        )
    except Ec2Error:
        await ctx.network(
            "DELETE", url_path("/v2.0/networks/{}", network["id"])
        )  # nothing half-made
        raise
    subnet_id = await ctx.ids.ec2_id("subnet", subnet["id"], ctx.project_id)
    zone = p.get("AvailabilityZone") or "nova"
    await ctx.ids.record(subnet_id, data={"vpc": item.id, "zone": zone})
    for kind, os_id in (("networks", network["id"]), ("subnets", subnet["id"])):
        await ctx.network(
            "PUT", url_path("/v2.0/{}/{}", kind, os_id), json={kind[:-1]: {"name": subnet_id}}
        )
    await set_tags(ctx, [subnet_id], tags_from_specs(p.get("TagSpecifications"), "subnet"))
    for s in await _subnets(ctx):
        if s["SubnetId"] == subnet_id:
            s.pop("_network")
            return {"Subnet": s}
    raise Ec2Error("InternalError", "The subnet disappeared while it was made.")


@action("DescribeSubnets")
async def describe_subnets(ctx: Ctx, p: dict[str, Any]) -> dict:
    wanted = filters.check(
        p.get("Filters"),
        (
            "cidr",
            "cidr-block",
            "cidrBlock",
            "availability-zone",
            "state",
            "subnet-id",
            "vpc-id",
            "default-for-az",
        ),
    )
    subnets = await _subnets(ctx)
    known = {s["SubnetId"] for s in subnets}
    for subnet_id in p.get("SubnetIds") or []:
        if subnet_id not in known:
            raise not_found("subnet", subnet_id)
    out = []
    for s in subnets:
        s.pop("_network")
        if p.get("SubnetIds") and s["SubnetId"] not in p["SubnetIds"]:
            continue
        values = {
            "cidr": s["CidrBlock"],
            "cidr-block": s["CidrBlock"],
            "cidrBlock": s["CidrBlock"],
            "availability-zone": s["AvailabilityZone"],
            "state": "available",
            "subnet-id": s["SubnetId"],
            "vpc-id": s["VpcId"],
            "default-for-az": False,
        }
        if filters.matches(wanted, values, {t["Key"]: t["Value"] for t in s["Tags"] or []}):
            out.append(s)
    return {"Subnets": out}


@action("DeleteSubnet")
async def delete_subnet(ctx: Ctx, p: dict[str, Any]) -> dict:
    await ctx.ids.os_id(p["SubnetId"], "subnet")
    subnet = next((s for s in await _subnets(ctx) if s["SubnetId"] == p["SubnetId"]), None)
    if subnet is None:
        raise not_found("subnet", p["SubnetId"])
    network_id = subnet["_network"]
    ports = (await ctx.network("GET", f"/v2.0/ports?network_id={network_id}"))["ports"]
    if any(
        x.get("device_owner", "").startswith("compute:") or not x.get("device_owner") for x in ports
    ):
        raise Ec2Error(
            "DependencyViolation",
            f"The subnet '{p['SubnetId']}' has dependencies and cannot be deleted.",
        )
    _, router = await vpc_of(ctx, subnet["VpcId"])
    os_subnet = await ctx.ids.os_id(p["SubnetId"], "subnet")
    try:
        await ctx.network(
            "PUT",
            url_path("/v2.0/routers/{}/remove_router_interface", router["id"]),
            json={"subnet_id": os_subnet},
            errors={"not_found": "Gone"},
        )
    except Ec2Error as err:
        if err.code != "Gone":  # already unplugged: fine
            raise
    await ctx.network(
        "DELETE",
        url_path("/v2.0/networks/{}", network_id),
        errors={"conflict": "DependencyViolation"},
    )
    await ctx.ids.forget([p["SubnetId"]])
    return {}


# -- internet gateways: a router's external gateway ---------------------------------


async def _gateways(ctx: Ctx) -> list[dict[str, Any]]:
    items = await _items(ctx, "igw")
    tags = await tags_of(ctx, [i.id for i in items])
    return [
        {
            "InternetGatewayId": i.id,
            "OwnerId": ctx.project_id,
            "Tags": tag_set(tags.get(i.id)),
            "Attachments": [{"VpcId": _data(i)["vpc"], "State": "available"}]
            if _data(i).get("vpc")
            else [],
        }
        for i in items
    ]


async def _gateway(ctx: Ctx, igw_id: Any) -> dict[str, Any]:
    await ctx.ids.os_id(igw_id, "igw")
    for gw in await _gateways(ctx):
        if gw["InternetGatewayId"] == igw_id:
            return gw
    raise not_found("igw", igw_id)


@action("CreateInternetGateway")
async def create_internet_gateway(ctx: Ctx, p: dict[str, Any]) -> dict:
    igw_id = await ctx.ids.ec2_id("igw", str(uuid.uuid4()), ctx.project_id)
    await set_tags(ctx, [igw_id], tags_from_specs(p.get("TagSpecifications"), "internet-gateway"))
    return {"InternetGateway": await _gateway(ctx, igw_id)}


@action("DescribeInternetGateways")
async def describe_internet_gateways(ctx: Ctx, p: dict[str, Any]) -> dict:
    wanted = filters.check(
        p.get("Filters"),
        ("attachment.state", "attachment.vpc-id", "internet-gateway-id", "owner-id"),
    )
    gateways = await _gateways(ctx)
    for igw_id in p.get("InternetGatewayIds") or []:
        if igw_id not in {g["InternetGatewayId"] for g in gateways}:
            raise not_found("igw", igw_id)
    out = []
    for g in gateways:
        if p.get("InternetGatewayIds") and g["InternetGatewayId"] not in p["InternetGatewayIds"]:
            continue
        values = {
            "attachment.state": [a["State"] for a in g["Attachments"]],
            "attachment.vpc-id": [a["VpcId"] for a in g["Attachments"]],
            "internet-gateway-id": g["InternetGatewayId"],
            "owner-id": ctx.project_id,
        }
        if filters.matches(wanted, values, {t["Key"]: t["Value"] for t in g["Tags"] or []}):
            out.append(g)
    return {"InternetGateways": out}


@action("AttachInternetGateway")
async def attach_internet_gateway(ctx: Ctx, p: dict[str, Any]) -> dict:
    from cumulo.ec2.api.addresses import _external_network

    gw = await _gateway(ctx, p["InternetGatewayId"])
    if gw["Attachments"]:
        raise Ec2Error(
            "Resource.AlreadyAssociated", f"{gw['InternetGatewayId']} is already attached."
        )
    _, router = await vpc_of(ctx, p["VpcId"])
    if router.get("external_gateway_info"):
        raise Ec2Error(
            "Resource.AlreadyAssociated", f"{p['VpcId']} already has an internet gateway."
        )
    external = await _external_network(ctx)
    await ctx.network(
        "PUT",
        url_path("/v2.0/routers/{}", router["id"]),
        json={"router": {"external_gateway_info": {"network_id": external["id"]}}},
    )
    await ctx.ids.record(gw["InternetGatewayId"], data={"vpc": p["VpcId"]})
    return {}


@action("DetachInternetGateway")
async def detach_internet_gateway(ctx: Ctx, p: dict[str, Any]) -> dict:
    gw = await _gateway(ctx, p["InternetGatewayId"])
    if [a["VpcId"] for a in gw["Attachments"]] != [p["VpcId"]]:
        raise Ec2Error(
            "Gateway.NotAttached", f"{gw['InternetGatewayId']} is not attached to {p['VpcId']}."
        )
    _, router = await vpc_of(ctx, p["VpcId"])
    await ctx.network(
        "PUT",
        url_path("/v2.0/routers/{}", router["id"]),
        json={"router": {"external_gateway_info": {}}},
        errors={"conflict": "DependencyViolation"},
    )
    await ctx.ids.record(gw["InternetGatewayId"], data={})
    return {}


@action("DeleteInternetGateway")
async def delete_internet_gateway(ctx: Ctx, p: dict[str, Any]) -> dict:
    gw = await _gateway(ctx, p["InternetGatewayId"])
    if gw["Attachments"]:
        raise Ec2Error(
            "DependencyViolation", f"{gw['InternetGatewayId']} is attached: detach it first."
        )
    await ctx.ids.forget([gw["InternetGatewayId"]])
    return {}


@action("DescribeRouteTables")
async def describe_route_tables(ctx: Ctx, p: dict[str, Any]) -> dict:
    wanted = filters.check(
        p.get("Filters"), ("vpc-id", "route-table-id", "association.main", "association.subnet-id")
    )
    vpcs = await _vpcs(ctx)
    tables = await ctx.ids.ec2_ids("rtb", [router["id"] for _, router in vpcs], ctx.project_id)
    gateways = {
        a["VpcId"]: g["InternetGatewayId"] for g in await _gateways(ctx) for a in g["Attachments"]
    }
    for rtb_id in p.get("RouteTableIds") or []:
        if rtb_id not in tables.values():
            raise not_found("rtb", rtb_id)
    subnets = await _subnets(ctx)
    out = []
    for item, router in vpcs:
        rtb = tables[router["id"]]
        routes = [
            {
                "DestinationCidrBlock": _data(item)["cidr"],
                "GatewayId": "local",
                "State": "active",
                "Origin": "CreateRouteTable",
            }
        ]
        if item.id in gateways:
            routes.append(
                {
                    "DestinationCidrBlock": "0.0.0.0/0",
                    "GatewayId": gateways[item.id],
                    "State": "active",
                    "Origin": "CreateRoute",
                }
            )
        assoc = [
            {"RouteTableAssociationId": f"rtbassoc-{rtb[4:]}", "RouteTableId": rtb, "Main": True}
        ]
        assoc += [
            {
                "RouteTableAssociationId": f"rtbassoc-{s['SubnetId'][7:]}",
                "RouteTableId": rtb,
                "SubnetId": s["SubnetId"],
                "Main": False,
            }
            for s in subnets
            if s["VpcId"] == item.id
        ]
        table = {
            "RouteTableId": rtb,
            "VpcId": item.id,
            "Routes": routes,
            "Associations": assoc,
            "OwnerId": ctx.project_id,
            "PropagatingVgws": [],
        }
        if p.get("RouteTableIds") and rtb not in p["RouteTableIds"]:
            continue
        values = {
            "vpc-id": item.id,
            "route-table-id": rtb,
            "association.main": True,
            "association.subnet-id": [a.get("SubnetId") for a in assoc],
        }
        if filters.matches(wanted, values):
            out.append(table)
    return {"RouteTables": out}


# -- network interfaces: ports -------------------------------------------------------


async def _describe_ports(ctx: Ctx, ports: list[dict[str, Any]]) -> list[dict[str, Any]]:
    from cumulo.ec2.api.instances import _security_groups

    enis = await ctx.ids.ec2_ids("eni", [x["id"] for x in ports], ctx.project_id)
    subnet_ids = [ip["subnet_id"] for x in ports for ip in x.get("fixed_ips", [])]
    known = {s["SubnetId"]: s for s in await _subnets(ctx)}
    by_os = {}
    for item in await _items(ctx, "subnet"):
        if item.os_id in subnet_ids:
            by_os[item.os_id] = item.id
    servers = [x["device_id"] for x in ports if x.get("device_owner", "").startswith("compute:")]
    instances = await ctx.ids.ec2_ids("i", servers, ctx.project_id)
    groups = {g["id"]: g["name"] for g in await _security_groups(ctx)}
    group_ids = await ctx.ids.ec2_ids("sg", list(groups), ctx.project_id)
    tags = await tags_of(ctx, list(enis.values()))
    out = []
    for x in ports:
        ips = [ip["ip_address"] for ip in x.get("fixed_ips", [])]
        subnet = by_os.get(x["fixed_ips"][0]["subnet_id"]) if x.get("fixed_ips") else None
        d: dict[str, Any] = {
            "NetworkInterfaceId": enis[x["id"]],
            "Description": x.get("description") or "",
            "OwnerId": ctx.project_id,
            "Status": "in-use" if x.get("device_id") else "available",
            "MacAddress": x.get("mac_address"),
            "PrivateIpAddress": ips[0] if ips else None,
            "PrivateIpAddresses": [
                {"PrivateIpAddress": ip, "Primary": i == 0} for i, ip in enumerate(ips)
            ],
            "Groups": [
                {"GroupId": group_ids.get(g, ""), "GroupName": groups.get(g, "")}
                for g in x.get("security_groups", [])
            ],
            "SourceDestCheck": True,
            "InterfaceType": "interface",
            "RequesterManaged": False,
            "AvailabilityZone": "nova",
            "Tags": tag_set(tags.get(enis[x["id"]])),
        }
        if subnet:
            d["SubnetId"], d["VpcId"] = subnet, known.get(subnet, {}).get("VpcId")
        if x.get("device_id") in instances:
            d["Attachment"] = {
                "InstanceId": instances[x["device_id"]],
                "DeviceIndex": 0,
                "Status": "attached",
                "AttachmentId": f"eni-attach-{enis[x['id']][4:]}",
                "DeleteOnTermination": True,
            }
        out.append(d)
    return out


@action("CreateNetworkInterface")
async def create_network_interface(ctx: Ctx, p: dict[str, Any]) -> dict:
    os_subnet = await ctx.ids.os_id(p["SubnetId"], "subnet")
    subnet = (
        await ctx.network(
            "GET",
            url_path("/v2.0/subnets/{}", os_subnet),
            errors={"not_found": "InvalidSubnetID.NotFound"},
        )
    )["subnet"]
    fixed: dict[str, Any] = {"subnet_id": os_subnet}
    if p.get("PrivateIpAddress"):
        fixed["ip_address"] = p["PrivateIpAddress"]
    body: dict[str, Any] = {
        "network_id": subnet["network_id"],
        "fixed_ips": [fixed],
        "description": p.get("Description") or "",
    }
    if p.get("Groups"):
        body["security_groups"] = [(await group_of(ctx, g, None))["id"] for g in p["Groups"]]
    port = (
        await ctx.network(
            "POST",
            "/v2.0/ports",
            json={"port": body},
            errors={"conflict": "InvalidIPAddress.InUse", "quota": "NetworkInterfaceLimitExceeded"},
        )
    )["port"]
    d = (await _describe_ports(ctx, [port]))[0]
    await set_tags(
        ctx,
        [d["NetworkInterfaceId"]],
        tags_from_specs(p.get("TagSpecifications"), "network-interface"),
    )
    return {"NetworkInterface": d}


@action("DescribeNetworkInterfaces")
async def describe_network_interfaces(ctx: Ctx, p: dict[str, Any]) -> dict:
    wanted = filters.check(
        p.get("Filters"),
        (
            "network-interface-id",
            "subnet-id",
            "vpc-id",
            "status",
            "attachment.instance-id",
            "private-ip-address",
            "mac-address",
            "group-id",
        ),
    )
    ports = (await ctx.network("GET", f"/v2.0/ports?project_id={ctx.project_id}"))["ports"]
    ports = [x for x in ports if not x.get("device_owner", "").startswith("network:")]
    described = await _describe_ports(ctx, ports)
    known = {d["NetworkInterfaceId"] for d in described}
    for eni in p.get("NetworkInterfaceIds") or []:
        if eni not in known:
            raise not_found("eni", eni)
    out = []
    for d in described:
        if p.get("NetworkInterfaceIds") and d["NetworkInterfaceId"] not in p["NetworkInterfaceIds"]:
            continue
        values = {
            "network-interface-id": d["NetworkInterfaceId"],
            "subnet-id": d.get("SubnetId"),
            "vpc-id": d.get("VpcId"),
            "status": d["Status"],
            "attachment.instance-id": (d.get("Attachment") or {}).get("InstanceId"),
            "private-ip-address": [i["PrivateIpAddress"] for i in d["PrivateIpAddresses"]],
            "mac-address": d["MacAddress"],
            "group-id": [g["GroupId"] for g in d["Groups"]],
        }
        if filters.matches(wanted, values, {t["Key"]: t["Value"] for t in d["Tags"] or []}):
            out.append(d)
    return {"NetworkInterfaces": out}


@action("DeleteNetworkInterface")
async def delete_network_interface(ctx: Ctx, p: dict[str, Any]) -> dict:
    os_id = await ctx.ids.os_id(p["NetworkInterfaceId"], "eni")
    port = (
        await ctx.network(
            "GET",
            url_path("/v2.0/ports/{}", os_id),
            errors={"not_found": "InvalidNetworkInterfaceID.NotFound"},
        )
    )["port"]
    if port.get("device_id"):
        raise Ec2Error(
            "InvalidNetworkInterface.InUse", f"Interface {p['NetworkInterfaceId']} is in use."
        )
    await ctx.network("DELETE", url_path("/v2.0/ports/{}", os_id))
    return {}
