"""/os-security-groups and /os-security-group-rules: Nova's proxy to the Network
service's security groups, in the nova-network shape, below microversion 2.36
(api-ref: Security groups (os-security-groups), Rules for default security group)."""

from __future__ import annotations

import ipaddress
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cumulo.common.app import json_body
from cumulo.common.context import RequestContext
from cumulo.common.faults import BadRequest
from cumulo.common.service_client import ServiceError, url_path
from cumulo.compute.api.common import compute_of, json, no_content
from cumulo.compute.api.proxy import as_compute_error, call, check_uuid, client, proxy_context
from cumulo.compute.api.wire import object_body

_PROTOCOLS = ("tcp", "udp", "icmp")
# Neutron's refusals that Nova answers 400 (a default group, one in use, a bad rule).
_AS_BAD_REQUEST = {409: 400}


def rule_view(rule: dict[str, Any], groups: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """A Neutron ingress rule as Nova shows it (`groups`: the groups a rule may name)."""
    protocol = rule.get("protocol")
    low, high = rule.get("port_range_min"), rule.get("port_range_max")
    if protocol and low is None and high is None:
        low, high = (1, 65535) if protocol.upper() in ("TCP", "UDP") else (-1, -1)
    body: dict[str, Any] = {
        "id": rule["id"],
        "parent_group_id": rule["security_group_id"],
        "ip_protocol": protocol,
        "from_port": low,
        "to_port": high,
        "group": {},
        "ip_range": {},
    }
    remote = rule.get("remote_group_id")
    if remote:
        source = groups.get(remote, {})
        body["group"] = {"name": source.get("name", remote), "tenant_id": source.get("project_id")}
    else:
        body["ip_range"] = {"cidr": rule.get("remote_ip_prefix") or "0.0.0.0/0"}
    return body


def group_view(group: dict[str, Any], groups: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {
        "id": group["id"],
        "name": group["name"],
        "description": group.get("description") or "",
        "tenant_id": group.get("project_id") or group.get("tenant_id") or "",
        "rules": [
            rule_view(r, groups)
            for r in group.get("security_group_rules", [])
            if r["direction"] == "ingress"
        ],
    }


async def _groups(request: Request, ctx: RequestContext, params: dict[str, str]) -> list[dict]:
    found = await call(request, ctx, "networks", "GET", "/v2.0/security-groups", params=params)
    return found["security_groups"]


async def _group(request: Request, ctx: RequestContext, group_id: str) -> dict[str, Any]:
    check_uuid(group_id, "Security group")
    found = await call(
        request, ctx, "networks", "GET", url_path("/v2.0/security-groups/{}", group_id)
    )
    return found["security_group"]


async def _named_groups(request: Request, ctx: RequestContext, groups: list[dict]) -> dict:
    """The groups the rules of `groups` name as their remote, by id."""
    by_id = {g["id"]: g for g in groups}
    wanted = {
        r["remote_group_id"]
        for g in groups
        for r in g.get("security_group_rules", [])
        if r.get("remote_group_id") and r["remote_group_id"] not in by_id
    }
    for group_id in wanted:
        by_id[group_id] = await _group(request, ctx, group_id)
    return by_id


async def _show(request: Request, ctx: RequestContext, group: dict[str, Any]) -> Response:
    return json({"security_group": group_view(group, await _named_groups(request, ctx, [group]))})


def _text(body: dict[str, Any], field: str, required: bool) -> str | None:
    """Nova's name and description rule: a string, stripped 1-255 characters (a
    description may be empty)."""
    value = body.get(field)
    if value is None and not required:
        return None
    if not isinstance(value, str):
        raise BadRequest(f"Security group {field} is not a string or unicode")
    stripped = value.strip()
    if len(stripped) > 255 or (field == "name" and not stripped):
        raise BadRequest(f"{field} has a minimum character requirement of 1 and a maximum of 255.")
    return value


async def list_groups(request: Request) -> Response:
    ctx = await proxy_context(request)
    q = request.query_params
    params: dict[str, str] = {}
    all_tenants = q.get("all_tenants", "").lower() not in ("", "0", "false")
    if not (all_tenants and compute_of(request).policy.check("cloud_admin", ctx)):
        params["project_id"] = ctx.project_id or ""
    groups = await _groups(request, ctx, params)
    named = await _named_groups(request, ctx, groups)
    bodies = [group_view(g, named) for g in sorted(groups, key=lambda g: g["name"])]
    return json({"security_groups": bodies})


async def create_group(request: Request) -> Response:
    ctx = await proxy_context(request)
    body = object_body(await json_body(request), "security_group")
    name = _text(body, "name", required=True)
    description = _text(body, "description", required=True)
    created = await call(
        request,
        ctx,
        "networks",
        "POST",
        "/v2.0/security-groups",
        _AS_BAD_REQUEST,
        json={"security_group": {"name": name, "description": description}},
    )
    return await _show(request, ctx, created["security_group"])


async def show_group(request: Request) -> Response:
    ctx = await proxy_context(request)
    return await _show(request, ctx, await _group(request, ctx, request.path_params["group_id"]))


async def update_group(request: Request) -> Response:
    ctx = await proxy_context(request)
    group_id = check_uuid(request.path_params["group_id"], "Security group")
    body = object_body(await json_body(request), "security_group")
    changes = {
        field: value
        for field in ("name", "description")
        if (value := _text(body, field, required=False)) is not None
    }
    updated = await call(
        request,
        ctx,
        "networks",
        "PUT",
        url_path("/v2.0/security-groups/{}", group_id),
        _AS_BAD_REQUEST,
        json={"security_group": changes},
    )
    return await _show(request, ctx, updated["security_group"])


async def delete_group(request: Request) -> Response:
    ctx = await proxy_context(request)
    group_id = check_uuid(request.path_params["group_id"], "Security group")
    await call(
        request,
        ctx,
        "networks",
        "DELETE",
        url_path("/v2.0/security-groups/{}", group_id),
        _AS_BAD_REQUEST,
    )
    return no_content(202)


# -- rules ---------------------------------------------------------------------------


def _port(value: Any, protocol: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        if protocol == "icmp":
            raise BadRequest("Type and Code must be integers for ICMP protocol type") from None
        raise BadRequest("To and From ports must be integers") from None


def _neutron_rule(rule: dict[str, Any], parent_id: str) -> dict[str, Any]:
    """Nova's ingress rule arguments (ip_protocol, from_port, to_port, cidr or group_id)
    checked as Nova checks them, as a Neutron rule."""
    protocol = rule.get("ip_protocol")
    low, high = rule.get("from_port"), rule.get("to_port")
    group_id = rule.get("group_id")
    cidr = None if group_id is not None else (rule.get("cidr") or "0.0.0.0/0")
    if cidr is not None:
        try:
            network = ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            raise BadRequest(f"Invalid cidr {cidr}.") from None
        if network.prefixlen == 0 and not network.network_address.is_unspecified:
            raise BadRequest(f"Bad prefix for network in cidr {cidr}")
    body: dict[str, Any] = {
        "security_group_id": parent_id,
        "direction": "ingress",
        "ethertype": "IPv6" if cidr and ":" in cidr else "IPv4",
    }
    if group_id is not None:
        body["remote_group_id"] = group_id
    else:
        body["remote_ip_prefix"] = cidr
    if not (protocol and low is not None and high is not None):
        if group_id is None:
            raise BadRequest("Not enough parameters to build a valid rule.")
        return body
    protocol = str(protocol).lower()
    low, high = _port(low, protocol), _port(high, protocol)
    if protocol not in _PROTOCOLS:
        raise BadRequest(f"Invalid IP protocol {rule.get('ip_protocol')}.")
    if protocol in ("tcp", "udp"):
        if low > high:
            raise BadRequest(
                f"Invalid port range {low}:{high}. Former value cannot be greater than the later"
            )
        if low < 1 or high > 65535:
            raise BadRequest(
                f"Invalid port range {low}:{high}. Valid {protocol.upper()} ports should be "
                "between 1-65535"
            )
    elif not (-1 <= low <= 255 and -1 <= high <= 255):
        raise BadRequest(f"Invalid port range {low}:{high}. For ICMP, the type:code must be valid")
    body["protocol"] = protocol
    if not (protocol == "icmp" and low == -1):
        body["port_range_min"] = low
        if not (protocol == "icmp" and high == -1):
            body["port_range_max"] = high
    return body


async def create_rule(request: Request) -> Response:
    ctx = await proxy_context(request)
    body = object_body(await json_body(request), "security_group_rule")
    parent = await _group(request, ctx, str(body.get("parent_group_id") or ""))
    groups = {parent["id"]: parent}
    if body.get("group_id") is not None:
        source = await _group(request, ctx, str(body["group_id"]))
        groups[source["id"]] = source
    rule = _neutron_rule(body, parent["id"])
    try:
        created = await client(request, "networks").json(
            "POST", "/v2.0/security-group-rules", ctx.auth_token, json={"security_group_rule": rule}
        )
    except ServiceError as exc:
        # Nova: a duplicate is a bad request, the rule quota 403.
        duplicate = exc.status == 409 and "SecurityGroupRuleExists" in exc.body
        raise as_compute_error(exc, {409: 400 if duplicate else 403}) from None
    return json({"security_group_rule": rule_view(created["security_group_rule"], groups)})


async def delete_rule(request: Request) -> Response:
    ctx = await proxy_context(request)
    rule_id = check_uuid(request.path_params["rule_id"], "Security group rule")
    await call(
        request, ctx, "networks", "DELETE", url_path("/v2.0/security-group-rules/{}", rule_id)
    )
    return no_content(202)


routes = [
    Route("/v2.1/os-security-groups", list_groups, methods=["GET"]),
    Route("/v2.1/os-security-groups", create_group, methods=["POST"]),
    Route("/v2.1/os-security-groups/{group_id}", show_group, methods=["GET"]),
    Route("/v2.1/os-security-groups/{group_id}", update_group, methods=["PUT"]),
    Route("/v2.1/os-security-groups/{group_id}", delete_group, methods=["DELETE"]),
    Route("/v2.1/os-security-group-rules", create_rule, methods=["POST"]),
    Route("/v2.1/os-security-group-rules/{rule_id}", delete_rule, methods=["DELETE"]),
]
