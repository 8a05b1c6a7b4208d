"""DescribeRegions and DescribeAvailabilityZones."""

from __future__ import annotations

from typing import Any

from cumulo.ec2 import filters
from cumulo.ec2.api import action
from cumulo.ec2.core import Ctx
from cumulo.ec2.errors import Ec2Error


@action("DescribeRegions")
async def describe_regions(ctx: Ctx, p: dict[str, Any]) -> dict:
    config = ctx.service.config
    wanted = filters.check(p.get("Filters"), ("endpoint", "region-name", "opt-in-status"))
    region = {
        "RegionName": config.region,
        "Endpoint": config.public_url(config.ports.ec2),
        "OptInStatus": "opt-in-not-required",
    }
    for name in p.get("RegionNames") or []:
        if name != config.region:
            raise Ec2Error("InvalidParameterValue", f"Invalid region: {name}")
    values = {
        "endpoint": region["Endpoint"],
        "region-name": region["RegionName"],
        "opt-in-status": region["OptInStatus"],
    }
    return {"Regions": [region] if filters.matches(wanted, values) else []}


@action("DescribeAvailabilityZones")
async def describe_availability_zones(ctx: Ctx, p: dict[str, Any]) -> dict:
    wanted = filters.check(p.get("Filters"), ("zone-name", "state", "region-name", "zone-type"))
    zones = (await ctx.compute("GET", "/os-availability-zone"))["availabilityZoneInfo"]
    out = []
    for zone in zones:
        state = "available" if (zone.get("zoneState") or {}).get("available") else "unavailable"
        described = {
            "ZoneName": zone["zoneName"],
            "State": state,
            "ZoneType": "availability-zone",
            "RegionName": ctx.service.config.region,
            "ZoneId": zone["zoneName"],
            "Messages": [],
            "OptInStatus": "opt-in-not-required",
        }
        values = {
            "zone-name": zone["zoneName"],
            "state": state,
            "zone-type": "availability-zone",
            "region-name": ctx.service.config.region,
        }
        if p.get("ZoneNames") and zone["zoneName"] not in p["ZoneNames"]:
            continue
        if filters.matches(wanted, values):
            out.append(described)
    for name in p.get("ZoneNames") or []:
        if name not in {z["zoneName"] for z in zones}:
            raise Ec2Error("InvalidParameterValue", f"Invalid availability zone: [{name}]")
    return {"AvailabilityZones": out}
