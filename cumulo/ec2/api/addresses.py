"""Elastic IPs: Network floating IPs. AllocateAddress, AssociateAddress,
DisassociateAddress, ReleaseAddress, DescribeAddresses."""

from __future__ import annotations

from typing import Any

from cumulo.common.service_client import url_path
from cumulo.ec2 import filters
from cumulo.ec2.api import action
from cumulo.ec2.api.tags import set_tags, tag_set, tags_from_specs, tags_of
from cumulo.ec2.core import Ctx
from cumulo.ec2.errors import Ec2Error, not_found

FILTERS = (
    "allocation-id",
    "association-id",
    "domain",
    "instance-id",
    "network-interface-id",
    "private-ip-address",
    "public-ip",
)


async def _external_network(ctx: Ctx) -> dict[str, Any]:
    nets = (await ctx.network("GET", "/v2.0/networks?router:external=true"))["networks"]
    if not nets:
        raise Ec2Error(
            "InvalidParameterValue",
            "This cloud has no external network to allocate addresses from.",
        )
    return nets[0]


async def _floating_ips(ctx: Ctx) -> list[dict[str, Any]]:
    return (await ctx.network("GET", f"/v2.0/floatingips?project_id={ctx.project_id}"))[
        "floatingips"
    ]


async def address_of(ctx: Ctx, allocation_id: str | None, public_ip: str | None) -> dict[str, Any]:
    if allocation_id:
        os_id = await ctx.ids.os_id(allocation_id, "eipalloc")
        return (
            await ctx.network(
                "GET",
                url_path("/v2.0/floatingips/{}", os_id),
                errors={"not_found": "InvalidAllocationID.NotFound"},
            )
        )["floatingip"]
    if public_ip:
        for fip in await _floating_ips(ctx):
            if fip["floating_ip_address"] == public_ip:
                return fip
        raise Ec2Error("InvalidAddress.NotFound", f"Address '{public_ip}' not found.")
    raise Ec2Error(
        "MissingParameter", "The request must contain the parameter AllocationId or PublicIp"
    )


@action("AllocateAddress")
async def allocate_address(ctx: Ctx, p: dict[str, Any]) -> dict:
    net = await _external_network(ctx)
    body: dict[str, Any] = {"floating_network_id": net["id"]}
    if p.get("Address"):
        body["floating_ip_address"] = p["Address"]
    made = (
        await ctx.network(
            "POST",
            "/v2.0/floatingips",
            json={"floatingip": body},
            errors={"quota": "AddressLimitExceeded", "conflict": "InvalidAddress.InUse"},
        )
    )["floatingip"]
    alloc = await ctx.ids.ec2_id("eipalloc", made["id"], ctx.project_id)
    await set_tags(ctx, [alloc], tags_from_specs(p.get("TagSpecifications"), "elastic-ip"))
    return {
        "PublicIp": made["floating_ip_address"],
        "AllocationId": alloc,
        "Domain": "vpc",
        "PublicIpv4Pool": net["name"],
        "NetworkBorderGroup": ctx.service.config.region,
    }


@action("AssociateAddress")
async def associate_address(ctx: Ctx, p: dict[str, Any]) -> dict:
    from cumulo.ec2.api.instances import server_of

    fip = await address_of(ctx, p.get("AllocationId"), p.get("PublicIp"))
    if fip.get("port_id") and p.get("AllowReassociation") is False:
        raise Ec2Error("Resource.AlreadyAssociated", "The address is already associated.")
    if p.get("NetworkInterfaceId"):
        port_id = await ctx.ids.os_id(p["NetworkInterfaceId"], "eni")
        await ctx.network(
            "GET",
            url_path("/v2.0/ports/{}", port_id),
            errors={"not_found": "InvalidNetworkInterfaceID.NotFound"},
        )
    elif p.get("InstanceId"):
        server = await server_of(ctx, p["InstanceId"])
        ports = (await ctx.network("GET", f"/v2.0/ports?device_id={server['id']}"))["ports"]
        if p.get("PrivateIpAddress"):
            ports = [
                x
                for x in ports
                if any(ip["ip_address"] == p["PrivateIpAddress"] for ip in x["fixed_ips"])
            ]
        if not ports:
            raise Ec2Error(
                "InvalidInstanceID", f"The instance '{p['InstanceId']}' has no network interface."
            )
        port_id = ports[0]["id"]
    else:
        raise Ec2Error(
            "MissingParameter",
            "The request must contain the parameter InstanceId or NetworkInterfaceId",
        )
    body: dict[str, Any] = {"port_id": port_id}
    if p.get("PrivateIpAddress"):
        body["fixed_ip_address"] = p["PrivateIpAddress"]
    await ctx.network(
        "PUT",
        url_path("/v2.0/floatingips/{}", fip["id"]),
        json={"floatingip": body},
        errors={
            "not_found": "Gateway.NotAttached",
            "conflict": "Resource.AlreadyAssociated",
            "bad_request": "Gateway.NotAttached",
        },
    )
    return {"AssociationId": await ctx.ids.ec2_id("eipassoc", fip["id"], ctx.project_id)}


@action("DisassociateAddress")
async def disassociate_address(ctx: Ctx, p: dict[str, Any]) -> dict:
    if p.get("AssociationId"):
        os_id = await ctx.ids.os_id(p["AssociationId"], "eipassoc")
        fip = (
            await ctx.network(
                "GET",
                url_path("/v2.0/floatingips/{}", os_id),
                errors={"not_found": "InvalidAssociationID.NotFound"},
            )
        )["floatingip"]
        if not fip.get("port_id"):
            raise not_found("eipassoc", p["AssociationId"])
    else:
        fip = await address_of(ctx, None, p.get("PublicIp"))
    await ctx.network(
        "PUT", url_path("/v2.0/floatingips/{}", fip["id"]), json={"floatingip": {"port_id": None}}
    )
    return {}


@action("ReleaseAddress")
async def release_address(ctx: Ctx, p: dict[str, Any]) -> dict:
    fip = await address_of(ctx, p.get("AllocationId"), p.get("PublicIp"))
    if fip.get("port_id"):
        raise Ec2Error(
            "InvalidIPAddress.InUse", "The address is associated: disassociate it first."
        )
    await ctx.network(
        "DELETE",
        url_path("/v2.0/floatingips/{}", fip["id"]),
        errors={"not_found": "InvalidAllocationID.NotFound"},
    )
    return {}


@action("DescribeAddresses")
async def describe_addresses(ctx: Ctx, p: dict[str, Any]) -> dict:
    wanted = filters.check(p.get("Filters"), FILTERS)
    fips = await _floating_ips(ctx)
    allocs = await ctx.ids.ec2_ids("eipalloc", [f["id"] for f in fips], ctx.project_id)
    assocs = await ctx.ids.ec2_ids(
        "eipassoc", [f["id"] for f in fips if f.get("port_id")], ctx.project_id
    )
    ports = {}
    if any(f.get("port_id") for f in fips):
        ports = {
            x["id"]: x
            for x in (await ctx.network("GET", f"/v2.0/ports?project_id={ctx.project_id}"))["ports"]
        }
    servers = [
        ports[f["port_id"]]["device_id"]
        for f in fips
        if f.get("port_id") in ports
        and ports[f["port_id"]].get("device_owner", "").startswith("compute:")
    ]
    instance_ids = await ctx.ids.ec2_ids("i", servers, ctx.project_id)
    enis = await ctx.ids.ec2_ids(
        "eni", [f["port_id"] for f in fips if f.get("port_id")], ctx.project_id
    )
    tags = await tags_of(ctx, list(allocs.values()))
    for alloc in p.get("AllocationIds") or []:
        if alloc not in allocs.values():
            raise not_found("eipalloc", alloc)
    for ip in p.get("PublicIps") or []:
        if ip not in {f["floating_ip_address"] for f in fips}:
            raise Ec2Error("InvalidAddress.NotFound", f"Address '{ip}' not found.")
    out = []
    for f in fips:
        port = ports.get(f.get("port_id") or "")
        d: dict[str, Any] = {
            "PublicIp": f["floating_ip_address"],
            "AllocationId": allocs[f["id"]],
            "Domain": "vpc",
            "Tags": tag_set(tags.get(allocs[f["id"]])),
        }
        if f.get("port_id"):
            d.update(
                AssociationId=assocs[f["id"]],
                NetworkInterfaceId=enis.get(f["port_id"]),
                PrivateIpAddress=f.get("fixed_ip_address"),
                NetworkInterfaceOwnerId=ctx.project_id,
            )
            if port and port.get("device_id") in instance_ids:
                d["InstanceId"] = instance_ids[port["device_id"]]
        if p.get("AllocationIds") and d["AllocationId"] not in p["AllocationIds"]:
            continue
        if p.get("PublicIps") and d["PublicIp"] not in p["PublicIps"]:
            continue
        values = {
            "allocation-id": d["AllocationId"],
            "association-id": d.get("AssociationId"),
            "domain": "vpc",
            "instance-id": d.get("InstanceId"),
            "network-interface-id": d.get("NetworkInterfaceId"),
            "private-ip-address": d.get("PrivateIpAddress"),
            "public-ip": d["PublicIp"],
        }
        if filters.matches(wanted, values, tags.get(d["AllocationId"], {})):
            out.append(d)
    return {"Addresses": out}
