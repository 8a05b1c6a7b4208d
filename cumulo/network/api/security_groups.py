"""/v2.0/security-groups and /v2.0/security-group-rules (api-ref: Security groups)."""

from __future__ import annotations

import ipaddress
from typing import Any

from sqlalchemy import delete, select
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cumulo.common.context import RequestContext
from cumulo.common.faults import BadRequest
from cumulo.common.openapi import describes, wrapped
from cumulo.network import rbac
from cumulo.network.api.common import (
    apply_standard,
    caller,
    isotime,
    list_response,
    no_content,
    owner_of,
    resource_body,
    service_of,
    show,
    standard,
    tags_of,
    to_bool,
    to_str,
)
from cumulo.network.core import NetworkService, new_id
from cumulo.network.errors import (
    InvalidInput,
    SecurityGroupCannotRemoveDefault,
    SecurityGroupCannotUpdateDefault,
    SecurityGroupDefaultAlreadyExists,
    SecurityGroupInUse,
    SecurityGroupInvalidIcmpValue,
    SecurityGroupInvalidPortRange,
    SecurityGroupInvalidPortValue,
    SecurityGroupInvalidProtocolForPortRange,
    SecurityGroupMissingIcmpType,
    SecurityGroupNotFound,
    SecurityGroupProtocolRequiredWithPorts,
    SecurityGroupRemoteGroupAndRemoteIpPrefix,
    SecurityGroupRuleExists,
    SecurityGroupRuleInvalidProtocol,
    SecurityGroupRuleNotFound,
    SecurityGroupRuleParameterConflict,
)
from cumulo.network.models import PortSecurityGroup, SecurityGroup, SecurityGroupRule, Tag
from cumulo.network.ports import touch, write_retrying

PROTOCOLS = {
    "ah": 51, "dccp": 33, "egp": 8, "esp": 50, "gre": 47, "hopopt": 0, "icmp": 1, "icmpv6": 58,
    "igmp": 2, "ipip": 4, "ipv6-encap": 41, "ipv6-frag": 44, "ipv6-icmp": 58, "ipv6-nonxt": 59,
    "ipv6-opts": 60, "ipv6-route": 43, "ospf": 89, "pgm": 113, "rsvp": 46, "sctp": 132,
    "tcp": 6, "udp": 17, "udplite": 136, "vrrp": 112,
}  # fmt: skip
PORT_PROTOCOLS = ("tcp", "udp", "sctp", "dccp", "udplite", "6", "17", "132", "33", "136")
ICMP_PROTOCOLS = ("icmp", "icmpv6", "ipv6-icmp", "1", "58")
RULE_ATTRS = (
    "security_group_id", "direction", "ethertype", "protocol", "port_range_min",
    "port_range_max", "remote_ip_prefix", "remote_group_id", "remote_address_group_id",
    "description",
)  # fmt: skip


def render_rule(r: SecurityGroupRule, default_ids: set[str] | None = None) -> dict[str, Any]:
    normalized = None
    if r.remote_ip_prefix:
        normalized = str(ipaddress.ip_network(r.remote_ip_prefix, strict=False))
    return {
        "id": r.id,
        "security_group_id": r.security_group_id,
        "direction": r.direction,
        "ethertype": r.ethertype,
        "protocol": r.protocol,
        "port_range_min": r.port_range_min,
        "port_range_max": r.port_range_max,
        "remote_ip_prefix": r.remote_ip_prefix,
        "remote_group_id": r.remote_group_id,
        "remote_address_group_id": None,
        "normalized_cidr": normalized,
        "description": r.description,
        "project_id": r.project_id,
        "tenant_id": r.project_id,
        "created_at": isotime(r.created_at),
        "updated_at": isotime(r.updated_at),
        "revision_number": r.revision_number,
        "belongs_to_default_sg": r.security_group_id in (default_ids or set()),
    }


async def render_groups(
    service: NetworkService, ctx: RequestContext, groups: list[SecurityGroup]
) -> list[dict]:
    ids = [g.id for g in groups]
    rules: dict[str, list[dict]] = {i: [] for i in ids}
    defaults = {g.id for g in groups if g.is_default}
    async with service.db.read() as session:
        for chunk in range(0, len(ids), 500):
            rows = await session.scalars(
                select(SecurityGroupRule)
                .where(SecurityGroupRule.security_group_id.in_(ids[chunk : chunk + 500]))
                .order_by(SecurityGroupRule.created_at, SecurityGroupRule.id)
            )
            for r in rows:
                rules[r.security_group_id].append(render_rule(r, defaults))
        tags = await tags_of(session, ids)
        shared = await rbac.shared_with(session, "security_group", ids, ctx.project_id)
    return [
        {
            **standard(g, tags[g.id]),
            "security_group_rules": rules[g.id],
            "stateful": g.stateful,
            "shared": g.id in shared,
        }
        for g in groups
    ]


def _name_not_default(a: dict[str, Any]) -> None:
    """Only Neutron itself names a group `default` (any case): one per project."""
    name = a.get("name")
    if isinstance(name, str) and name.lower() == "default":
        raise SecurityGroupDefaultAlreadyExists("Default security group already exists.")


def groups_visible(service: NetworkService, ctx: RequestContext):
    """Own groups and those shared with the caller's project (admin: all)."""
    return rbac.visible(service, ctx, "security_group")


async def visible_group(service: NetworkService, ctx: RequestContext, sg_id: str) -> SecurityGroup:
    async with service.db.read() as session:
        sg = await session.scalar(
            select(SecurityGroup).where(SecurityGroup.id == sg_id, groups_visible(service, ctx))
        )
    if sg is None:
        raise SecurityGroupNotFound(f"Security group {sg_id} does not exist")
    return sg


async def ensure_default_group(service: NetworkService, project_id: str | None) -> None:
    if not project_id:
        return
    async with service.db.read() as session:
        if await service_default_exists(session, project_id):
            return
    await write_retrying(
        service.db, lambda session: service.default_security_group(session, project_id)
    )


async def service_default_exists(session, project_id: str) -> bool:
    return (
        await session.scalar(
            select(SecurityGroup.id).where(
                SecurityGroup.project_id == project_id, SecurityGroup.is_default
            )
        )
        is not None
    )


async def list_groups(request: Request) -> Response:
    service, ctx = service_of(request), await caller(request)
    await ensure_default_group(service, ctx.project_id)
    async with service.db.read() as session:
        groups = list(
            await session.scalars(select(SecurityGroup).where(groups_visible(service, ctx)))
        )
    return list_response(request, "security_groups", await render_groups(service, ctx, groups))


@describes(
    body=wrapped("security_group", ("name", "description", "stateful")), resource="security_group"
)
async def create_group(request: Request) -> Response:
    service, ctx = service_of(request), await caller(request)
    a = await resource_body(request, "security_group", ("name", "description", "stateful"))
    project_id = owner_of(service, ctx, a)
    service.enforce(ctx, "network:owner", project_id)
    _name_not_default(a)
    sg = SecurityGroup(id=new_id(), project_id=project_id, is_default=False)
    apply_standard(sg, a)
    sg.stateful = to_bool("stateful", a.get("stateful", True))

    async def work(session):
        await service.check_quota(session, project_id, "security_group")
        await service.default_security_group(session, project_id)
        session.add(sg)
        await session.flush()
        for ethertype in ("IPv4", "IPv6"):
            session.add(
                SecurityGroupRule(
                    id=new_id(),
                    project_id=project_id,
                    security_group_id=sg.id,
                    direction="egress",
                    ethertype=ethertype,
                )
            )
        return sg

    sg = await write_retrying(service.db, work)
    await service.changed()
    return show(request, "security_group", (await render_groups(service, ctx, [sg]))[0], 201)


async def show_group(request: Request) -> Response:
    service, ctx = service_of(request), await caller(request)
    sg = await visible_group(service, ctx, request.path_params["sg_id"])
    return show(request, "security_group", (await render_groups(service, ctx, [sg]))[0])


@describes(
    body=wrapped("security_group", ("name", "description", "stateful")), resource="security_group"
)
async def update_group(request: Request) -> Response:
    service, ctx = service_of(request), await caller(request)
    sg_id = request.path_params["sg_id"]
    a = await resource_body(request, "security_group", ("name", "description", "stateful"))
    a.pop("project_id", None)
    sg = await visible_group(service, ctx, sg_id)
    service.enforce(ctx, "network:owner", sg.project_id)
    _name_not_default(a)
    if sg.is_default and "name" in a:
        raise SecurityGroupCannotUpdateDefault("Updating default security group not allowed.")

    async def work(session):
        row = await session.get(SecurityGroup, sg_id)
        apply_standard(row, a)
        if "stateful" in a:
            row.stateful = to_bool("stateful", a["stateful"])
        touch(row)
        return row

    sg = await write_retrying(service.db, work)
    await service.changed()
    return show(request, "security_group", (await render_groups(service, ctx, [sg]))[0])


async def delete_group(request: Request) -> Response:
    service, ctx = service_of(request), await caller(request)
    sg_id = request.path_params["sg_id"]
    sg = await visible_group(service, ctx, sg_id)
    service.enforce(ctx, "network:owner", sg.project_id)
    if sg.is_default and not service.is_admin(ctx):
        raise SecurityGroupCannotRemoveDefault(
            "Insufficient rights for removing default security group."
        )

    async def work(session):
        if await session.scalar(
            select(PortSecurityGroup.port_id).where(PortSecurityGroup.security_group_id == sg_id)
        ):
            raise SecurityGroupInUse(f"Security Group {sg_id} in use.")
        await session.execute(delete(Tag).where(Tag.resource_id == sg_id))
        await session.execute(
            delete(SecurityGroupRule).where(
                (SecurityGroupRule.security_group_id == sg_id)
                | (SecurityGroupRule.remote_group_id == sg_id)
            )
        )
        await session.execute(delete(SecurityGroup).where(SecurityGroup.id == sg_id))
        await rbac.drop_policies(session, "security_group", sg_id)

    await write_retrying(service.db, work)
    await service.changed()
    return no_content()


# -- rules ------------------------------------------------------------------------------


def _protocol(value: Any, ethertype: str) -> str | None:
    if value is None or value == "any":
        return None
    proto = str(value).lower()
    if proto.isdecimal():
        if not 0 <= int(proto) <= 255:
            raise SecurityGroupRuleInvalidProtocol(
                f"Security group rule protocol {value} not supported. Only protocol values "
                f"{sorted(PROTOCOLS)} and integer representations [0 to 255] are supported."
            )
        return proto
    if proto not in PROTOCOLS:
        raise SecurityGroupRuleInvalidProtocol(
            f"Security group rule protocol {value} not supported. Only protocol values "
            f"{sorted(PROTOCOLS)} and integer representations [0 to 255] are supported."
        )
    if proto == "icmp" and ethertype == "IPv6":
        return "ipv6-icmp"
    return proto


def _port_value(value: Any) -> int | None:
    """Neutron's port attribute converter: an integer 0..65535 (or none)."""
    if value is None:
        return None
    try:
        port = None if isinstance(value, bool) else int(value)
    except (TypeError, ValueError):
        port = None
    if port is None or not 0 <= port <= 65535:
        raise SecurityGroupInvalidPortValue(f"Invalid value for port {value}")
    return port


def _port_range(proto: str | None, a: dict[str, Any]) -> tuple[int | None, int | None]:
    """The checks of Neutron's _validate_port_range, with its messages."""
    lo = _port_value(a.get("port_range_min"))
    hi = _port_value(a.get("port_range_max"))
    if lo is None and hi is None:
        return None, None
    if proto is None:
        raise SecurityGroupProtocolRequiredWithPorts(
            "Must also specify protocol if port range is given."
        )
    if proto in ICMP_PROTOCOLS:
        for attr, field, v in (("port_range_min", "type", lo), ("port_range_max", "code", hi)):
            if v is not None and not 0 <= v <= 255:
                raise SecurityGroupInvalidIcmpValue(
                    f"Invalid value for ICMP {field} ({attr}) {v}. It must be 0 to 255."
                )
        if lo is None and hi is not None:
            raise SecurityGroupMissingIcmpType(
                f"ICMP code (port-range-max) {hi} is provided but ICMP type (port-range-min) "
                "is missing."
            )
        return lo, hi
    if proto not in PORT_PROTOCOLS:
        raise SecurityGroupInvalidProtocolForPortRange(
            f"Invalid protocol {proto} for port range, only supported for TCP, UDP, UDPLITE, "
            "SCTP and DCCP."
        )
    if lo == 0 or hi == 0:
        raise SecurityGroupInvalidPortValue("Invalid value for port 0")
    if lo is None or hi is None or lo > hi:
        raise SecurityGroupInvalidPortRange(
            "For TCP/UDP protocols, port_range_min must be <= port_range_max"
        )
    return lo, hi


async def list_rules(request: Request) -> Response:
    service, ctx = service_of(request), await caller(request)
    async with service.db.read() as session:
        query = select(SecurityGroupRule).join(
            SecurityGroup, SecurityGroup.id == SecurityGroupRule.security_group_id
        )
        rules = list(await session.scalars(query.where(groups_visible(service, ctx))))
        defaults = set(
            await session.scalars(select(SecurityGroup.id).where(SecurityGroup.is_default))
        )
    items = [render_rule(r, defaults) for r in rules]
    return list_response(request, "security_group_rules", items)


@describes(body=wrapped("security_group_rule", RULE_ATTRS), resource="security_group_rule")
async def create_rule(request: Request) -> Response:
    service, ctx = service_of(request), await caller(request)
    a = await resource_body(request, "security_group_rule", RULE_ATTRS)
    if "security_group_id" not in a:
        raise BadRequest(
            "Failed to parse request. Required attribute 'security_group_id' not specified"
        )
    sg = await visible_group(service, ctx, str(a["security_group_id"]))
    project_id = owner_of(service, ctx, a) if "project_id" in a else sg.project_id
    service.enforce(ctx, "network:owner", sg.project_id)
    direction = a.get("direction")
    if direction not in ("ingress", "egress"):
        raise InvalidInput(
            f"Invalid input for direction. Reason: '{direction}' is not in ['ingress', 'egress']."
        )
    ethertype = a.get("ethertype", "IPv4")
    if ethertype not in ("IPv4", "IPv6"):
        raise InvalidInput(
            f"Invalid input for ethertype. Reason: '{ethertype}' is not in [IPv4, IPv6]."
        )
    proto = _protocol(a.get("protocol"), ethertype)
    lo, hi = _port_range(proto, a)
    prefix = a.get("remote_ip_prefix")
    remote_group = a.get("remote_group_id")
    if prefix is not None and remote_group is not None:
        raise SecurityGroupRemoteGroupAndRemoteIpPrefix(
            "Only remote_ip_prefix or remote_group_id may be provided."
        )
    if prefix is not None:
        try:
            net = ipaddress.ip_network(str(prefix), strict=False)
        except ValueError:
            raise InvalidInput(
                f"Invalid input for remote_ip_prefix. Reason: '{prefix}' is not a valid IP subnet."
            ) from None
        if f"IPv{net.version}" != ethertype:
            raise SecurityGroupRuleParameterConflict(
                f"Conflicting value ethertype {ethertype} for CIDR {prefix}"
            )
        # Canonical text (host bits kept; normalized_cidr shows the network); Neutron
        # stores the "any" prefix as no prefix.
        prefix = str(ipaddress.ip_interface(str(prefix))) if net.prefixlen else None
    if remote_group is not None:
        await visible_group(service, ctx, str(remote_group))
    rule = SecurityGroupRule(
        id=new_id(),
        project_id=project_id,
        security_group_id=sg.id,
        remote_group_id=remote_group,
        direction=direction,
        ethertype=ethertype,
        protocol=proto,
        port_range_min=lo,
        port_range_max=hi,
        remote_ip_prefix=prefix,
        description=to_str("description", a.get("description", "")),
    )

    async def work(session):
        await service.check_quota(session, project_id, "security_group_rule")
        for other in await session.scalars(
            select(SecurityGroupRule).where(SecurityGroupRule.security_group_id == sg.id)
        ):
            same = all(
                getattr(other, f) == getattr(rule, f)
                for f in (
                    "direction",
                    "ethertype",
                    "protocol",
                    "port_range_min",
                    "port_range_max",
                    "remote_ip_prefix",
                    "remote_group_id",
                )  # fmt: skip
            )
            if same:
                raise SecurityGroupRuleExists(
                    f"Security group rule already exists. Rule id is {other.id}."
                )
        session.add(rule)
        row = await session.get(SecurityGroup, sg.id)
        touch(row)

    await write_retrying(service.db, work)
    await service.changed()
    body = render_rule(rule, {sg.id} if sg.is_default else set())
    return show(request, "security_group_rule", body, 201)


async def _visible_rule(service, ctx, rule_id: str) -> tuple[SecurityGroupRule, SecurityGroup]:
    async with service.db.read() as session:
        rule = await session.get(SecurityGroupRule, rule_id)
        sg = await session.scalar(
            select(SecurityGroup).where(
                SecurityGroup.id == (rule.security_group_id if rule else None),
                groups_visible(service, ctx),
            )
        )
    if rule is None or sg is None:
        raise SecurityGroupRuleNotFound(f"Security group rule {rule_id} does not exist")
    return rule, sg


async def show_rule(request: Request) -> Response:
    service, ctx = service_of(request), await caller(request)
    rule, sg = await _visible_rule(service, ctx, request.path_params["rule_id"])
    return show(
        request, "security_group_rule", render_rule(rule, {sg.id} if sg.is_default else set())
    )


async def delete_rule(request: Request) -> Response:
    service, ctx = service_of(request), await caller(request)
    rule, sg = await _visible_rule(service, ctx, request.path_params["rule_id"])
    service.enforce(ctx, "network:owner", sg.project_id)

    async def work(session):
        await session.execute(delete(SecurityGroupRule).where(SecurityGroupRule.id == rule.id))
        row = await session.get(SecurityGroup, sg.id)
        if row is not None:
            touch(row)

    await write_retrying(service.db, work)
    await service.changed()
    return no_content()


routes = [
    Route("/v2.0/security-groups", list_groups, methods=["GET"]),
    Route("/v2.0/security-groups", create_group, methods=["POST"]),
    Route("/v2.0/security-groups/{sg_id}", show_group, methods=["GET"]),
    Route("/v2.0/security-groups/{sg_id}", update_group, methods=["PUT"]),
    Route("/v2.0/security-groups/{sg_id}", delete_group, methods=["DELETE"]),
    Route("/v2.0/security-group-rules", list_rules, methods=["GET"]),
    Route("/v2.0/security-group-rules", create_rule, methods=["POST"]),
    Route("/v2.0/security-group-rules/{rule_id}", show_rule, methods=["GET"]),
    Route("/v2.0/security-group-rules/{rule_id}", delete_rule, methods=["DELETE"]),
]
