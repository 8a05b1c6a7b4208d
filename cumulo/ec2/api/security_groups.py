"""Security groups: Network security groups. Create/Delete/DescribeSecurityGroups,
Authorize/RevokeSecurityGroupIngress and Egress (IpPermissions and the older flat form)."""

from __future__ import annotations

import asyncio
from typing import Any

from cumulo.common.service_client import url_path
from cumulo.ec2 import filters
from cumulo.ec2.api import action
from cumulo.ec2.api.tags import set_tags, tag_set, tags_from_specs, tags_of
from cumulo.ec2.core import Ctx
from cumulo.ec2.errors import Ec2Error, not_found

PROTOCOLS = {
    "tcp": "tcp",
    "udp": "udp",
    "icmp": "icmp",
    "6": "tcp",
    "17": "udp",
    "1": "icmp",
    "icmpv6": "ipv6-icmp",
    "58": "ipv6-icmp",
}
FILTERS = (
    "description",
    "group-id",
    "group-name",
    "owner-id",
    "vpc-id",
    "ip-permission.protocol",
    "ip-permission.from-port",
    "ip-permission.to-port",
    "ip-permission.cidr",
    "ip-permission.group-id",
)


async def _groups(ctx: Ctx) -> list[dict[str, Any]]:
    answer = await ctx.network("GET", f"/v2.0/security-groups?project_id={ctx.project_id}")
    return answer["security_groups"]


async def group_of(ctx: Ctx, group_id: str | None, group_name: str | None) -> dict[str, Any]:
    """A security group of the caller's project by `sg-` id or by name."""
    if group_id:
        os_id = await ctx.ids.os_id(group_id, "sg")
        answer = await ctx.network(
            "GET",
            url_path("/v2.0/security-groups/{}", os_id),
            errors={"not_found": "InvalidGroup.NotFound"},
        )
        group = answer["security_group"]
        if group.get("project_id") != ctx.project_id:
            raise not_found("sg", group_id)
        return group
    if group_name:
        for group in await _groups(ctx):
            if group["name"] == group_name:
                return group
        raise Ec2Error("InvalidGroup.NotFound", f"The security group '{group_name}' does not exist")
    raise Ec2Error(
        "MissingParameter", "The request must contain the parameter GroupId or GroupName"
    )


def _permissions(rules: list[dict], direction: str, ids: dict[str, str]) -> list[dict]:
    grouped: dict[tuple, dict[str, Any]] = {}
    for rule in rules:
        if rule["direction"] != direction:
            continue
        protocol = rule.get("protocol") or "-1"
        if protocol == "-1":
            key = ("-1", None, None)
        elif protocol in ("icmp", "ipv6-icmp"):
            key = (
                protocol,
                rule.get("port_range_min") if rule.get("port_range_min") is not None else -1,
                rule.get("port_range_max") if rule.get("port_range_max") is not None else -1,
            )
        else:
            key = (protocol, rule.get("port_range_min") or 0, rule.get("port_range_max") or 65535)
        perm = grouped.setdefault(
            key,
            {
                "IpProtocol": key[0],
                "IpRanges": [],
                "Ipv6Ranges": [],
                "UserIdGroupPairs": [],
                "PrefixListIds": [],
            },
        )
        if key[1] is not None:
            perm["FromPort"], perm["ToPort"] = key[1], key[2]
        if rule.get("remote_group_id"):
            perm["UserIdGroupPairs"].append(
                {"GroupId": ids.get(rule["remote_group_id"], ""), "UserId": rule.get("project_id")}
            )
        elif rule.get("ethertype") == "IPv6":
            perm["Ipv6Ranges"].append({"CidrIpv6": rule.get("remote_ip_prefix") or "::/0"})
        else:
            perm["IpRanges"].append({"CidrIp": rule.get("remote_ip_prefix") or "0.0.0.0/0"})
    return list(grouped.values())


async def describe(ctx: Ctx, groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    remote = [
        r["remote_group_id"]
        for g in groups
        for r in g.get("security_group_rules", [])
        if r.get("remote_group_id")
    ]
    ids = await ctx.ids.ec2_ids("sg", [g["id"] for g in groups] + remote, ctx.project_id)
    tags = await tags_of(ctx, [ids[g["id"]] for g in groups])
    return [
        {
            "GroupId": ids[g["id"]],
            "GroupName": g["name"],
            "Description": g.get("description") or "",
            "OwnerId": g.get("project_id"),
            "IpPermissions": _permissions(g.get("security_group_rules", []), "ingress", ids),
            "IpPermissionsEgress": _permissions(g.get("security_group_rules", []), "egress", ids),
            "Tags": tag_set(tags.get(ids[g["id"]])),
        }
        for g in groups
    ]


@action("CreateSecurityGroup")
async def create_security_group(ctx: Ctx, p: dict[str, Any]) -> dict:
    name, description = p["GroupName"], p["Description"]
    if not name or len(name) > 255 or name.lower().startswith("sg-"):
        raise Ec2Error("InvalidParameterValue", f"Invalid security group name '{name}'.")
    if p.get("VpcId"):  # groups are the project's, not a VPC's: the VPC is only checked
        from cumulo.ec2.api.vpc import vpc_of

        await vpc_of(ctx, p["VpcId"])
    if any(g["name"] == name for g in await _groups(ctx)):
        raise Ec2Error("InvalidGroup.Duplicate", f"The security group '{name}' already exists")
    made = await ctx.network(
        "POST",
        "/v2.0/security-groups",
        json={"security_group": {"name": name, "description": description}},
        errors={"conflict": "InvalidGroup.Duplicate", "quota": "SecurityGroupLimitExceeded"},
    )
    group_id = await ctx.ids.ec2_id("sg", made["security_group"]["id"], ctx.project_id)
    await set_tags(ctx, [group_id], tags_from_specs(p.get("TagSpecifications"), "security-group"))
    return {"GroupId": group_id}


@action("DeleteSecurityGroup")
async def delete_security_group(ctx: Ctx, p: dict[str, Any]) -> dict:
    group = await group_of(ctx, p.get("GroupId"), p.get("GroupName"))
    if group["name"] == "default":
        raise Ec2Error("CannotDelete", "The default security group cannot be deleted.")
    await ctx.network(
        "DELETE",
        url_path("/v2.0/security-groups/{}", group["id"]),
        errors={"conflict": "DependencyViolation", "not_found": "InvalidGroup.NotFound"},
    )
    return {"Return": True}


@action("DescribeSecurityGroups")
async def describe_security_groups(ctx: Ctx, p: dict[str, Any]) -> dict:
    wanted = filters.check(p.get("Filters"), FILTERS)
    groups = await _groups(ctx)
    if p.get("GroupIds"):
        os_ids = await ctx.ids.os_ids(p["GroupIds"], "sg")
        present = {g["id"] for g in groups}
        for ec2_id, os_id in os_ids.items():
            if os_id not in present:
                raise not_found("sg", ec2_id)
        groups = [g for g in groups if g["id"] in set(os_ids.values())]
    for name in p.get("GroupNames") or []:
        if not any(g["name"] == name for g in groups):
            raise Ec2Error("InvalidGroup.NotFound", f"The security group '{name}' does not exist")
    if p.get("GroupNames"):
        groups = [g for g in groups if g["name"] in p["GroupNames"]]
    described = await describe(ctx, groups)
    out = []
    for d in described:
        perms = d["IpPermissions"]
        values = {
            "description": d["Description"],
            "group-id": d["GroupId"],
            "group-name": d["GroupName"],
            "owner-id": d["OwnerId"],
            "vpc-id": None,
            "ip-permission.protocol": [x["IpProtocol"] for x in perms],
            "ip-permission.from-port": [x.get("FromPort") for x in perms],
            "ip-permission.to-port": [x.get("ToPort") for x in perms],
            "ip-permission.cidr": [r["CidrIp"] for x in perms for r in x["IpRanges"]],
            "ip-permission.group-id": [r["GroupId"] for x in perms for r in x["UserIdGroupPairs"]],
        }
        if filters.matches(wanted, values, {t["Key"]: t["Value"] for t in d["Tags"] or []}):
            out.append(d)
    return {"SecurityGroups": out}


async def _rules(ctx: Ctx, p: dict[str, Any], group: dict, direction: str) -> list[dict[str, Any]]:
    """Network security group rules of the request's permissions."""
    perms = list(p.get("IpPermissions") or [])
    if not perms and (p.get("IpProtocol") or p.get("CidrIp") or p.get("SourceSecurityGroupName")):
        flat: dict[str, Any] = {"IpProtocol": p.get("IpProtocol") or "-1"}
        if p.get("FromPort") is not None:
            flat["FromPort"], flat["ToPort"] = p["FromPort"], p.get("ToPort", p["FromPort"])
        if p.get("CidrIp"):
            flat["IpRanges"] = [{"CidrIp": p["CidrIp"]}]
        if p.get("SourceSecurityGroupName"):
            flat["UserIdGroupPairs"] = [{"GroupName": p["SourceSecurityGroupName"]}]
        perms = [flat]
    if not perms:
        raise Ec2Error("MissingParameter", "The request must contain the parameter IpPermissions")
    rules = []
    for perm in perms:
        raw = str(perm.get("IpProtocol", "")).lower()
        protocol = None if raw in ("-1", "all") else PROTOCOLS.get(raw)
        if raw not in ("-1", "all") and protocol is None:
            if raw.isdecimal() and 0 <= int(raw) <= 255:
                protocol = raw
            else:
                raise Ec2Error("InvalidParameterValue", f"Invalid value '{raw}' for IP protocol.")
        base: dict[str, Any] = {
            "security_group_id": group["id"],
            "direction": direction,
            "protocol": protocol,
        }
        lo, hi = perm.get("FromPort"), perm.get("ToPort")
        if protocol in ("tcp", "udp"):
            if lo is None or hi is None or not 0 <= lo <= hi <= 65535:
                raise Ec2Error(
                    "InvalidParameterValue",
                    f"Invalid port range {lo}-{hi} for protocol {protocol}.",
                )
            base["port_range_min"], base["port_range_max"] = lo, hi
        elif protocol in ("icmp", "ipv6-icmp"):
            if lo not in (None, -1):
                base["port_range_min"] = lo
                if hi not in (None, -1):
                    base["port_range_max"] = hi
        sources = 0
        for r in perm.get("IpRanges") or []:
            rules.append({**base, "ethertype": "IPv4", "remote_ip_prefix": r.get("CidrIp")})
            sources += 1
        for r in perm.get("Ipv6Ranges") or []:
            rules.append({**base, "ethertype": "IPv6", "remote_ip_prefix": r.get("CidrIpv6")})
            sources += 1
        for pair in perm.get("UserIdGroupPairs") or []:
            remote = await group_of(ctx, pair.get("GroupId"), pair.get("GroupName"))
            rules.append({**base, "ethertype": "IPv4", "remote_group_id": remote["id"]})
            sources += 1
        if not sources:
            raise Ec2Error(
                "MissingParameter", "A permission needs IpRanges, Ipv6Ranges or UserIdGroupPairs."
            )
    return rules


def _normal(rule: dict[str, Any]) -> tuple:
    prefix = rule.get("remote_ip_prefix")
    if not prefix and not rule.get("remote_group_id"):  # no source: anywhere
        prefix = "::/0" if rule.get("ethertype") == "IPv6" else "0.0.0.0/0"
    return tuple(
        rule.get(k)
        for k in (
            "direction",
            "protocol",
            "ethertype",
            "port_range_min",
            "port_range_max",
            "remote_group_id",
        )
    ) + (prefix,)


def _same(rule: dict[str, Any], existing: dict[str, Any]) -> bool:
    return _normal(rule) == _normal(existing)


async def _authorize(ctx: Ctx, p: dict[str, Any], direction: str) -> dict:
    group = await group_of(ctx, p.get("GroupId"), p.get("GroupName"))
    rules = await _rules(ctx, p, group, direction)
    for rule in rules:
        if any(_same(rule, r) for r in group.get("security_group_rules", [])):
            raise Ec2Error("InvalidPermission.Duplicate", "The specified rule already exists")
    made = await asyncio.gather(
        *(
            ctx.network(
                "POST",
                "/v2.0/security-group-rules",
                json={"security_group_rule": rule},
                errors={
                    "conflict": "InvalidPermission.Duplicate",
                    "quota": "RulesPerSecurityGroupLimitExceeded",
                },
            )
            for rule in rules
        )
    )
    rule_ids = await ctx.ids.ec2_ids(
        "sgr", [m["security_group_rule"]["id"] for m in made], ctx.project_id
    )
    return {
        "Return": True,
        "SecurityGroupRules": [
            {
                "SecurityGroupRuleId": rule_ids[m["security_group_rule"]["id"]],
                "GroupId": p.get("GroupId") or "",
                "IsEgress": direction == "egress",
                "IpProtocol": m["security_group_rule"].get("protocol") or "-1",
                "FromPort": m["security_group_rule"].get("port_range_min") or -1,
                "ToPort": m["security_group_rule"].get("port_range_max") or -1,
                "CidrIpv4": m["security_group_rule"].get("remote_ip_prefix"),
            }
            for m in made
        ],
    }


async def _revoke(ctx: Ctx, p: dict[str, Any], direction: str) -> dict:
    group = await group_of(ctx, p.get("GroupId"), p.get("GroupName"))
    rules = await _rules(ctx, p, group, direction)
    doomed = []
    for rule in rules:
        match = [r for r in group.get("security_group_rules", []) if _same(rule, r)]
        if not match:
            raise Ec2Error(
                "InvalidPermission.NotFound",
                "The specified rule does not exist in this security group.",
            )
        doomed.append(match[0]["id"])
    for rule_id in doomed:
        await ctx.network("DELETE", url_path("/v2.0/security-group-rules/{}", rule_id))
    return {"Return": True}


@action("AuthorizeSecurityGroupIngress")
async def authorize_ingress(ctx: Ctx, p: dict[str, Any]) -> dict:
    return await _authorize(ctx, p, "ingress")


@action("AuthorizeSecurityGroupEgress")
async def authorize_egress(ctx: Ctx, p: dict[str, Any]) -> dict:
    return await _authorize(ctx, p, "egress")


@action("RevokeSecurityGroupIngress")
async def revoke_ingress(ctx: Ctx, p: dict[str, Any]) -> dict:
    return await _revoke(ctx, p, "ingress")


@action("RevokeSecurityGroupEgress")
async def revoke_egress(ctx: Ctx, p: dict[str, Any]) -> dict:
    return await _revoke(ctx, p, "egress")
