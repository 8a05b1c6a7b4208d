"""Server actions on security groups and admin state (api-ref: Servers - run an action:
addSecurityGroup, removeSecurityGroup, os-resetState; and
`GET /servers/{id}/os-security-groups`).

A server's security groups live on its ports in the Network service, as in Nova with
Neutron: adding a group adds it to every port of the server (with the caller's
token), removing takes it off every port. The instance keeps the names too, for the
server view and for ports made later (rebuild, interface attach).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cumulo.common.context import RequestContext
from cumulo.common.faults import BadRequest, Conflict, NotFound
from cumulo.common.service_client import ServiceError, url_path
from cumulo.compute.api.common import authorize, compute_of, json
from cumulo.compute.api.security_groups import group_view
from cumulo.compute.models import Instance
from cumulo.compute.service import ComputeService
from cumulo.compute.states import VmState

RESET_STATES = {"active": VmState.ACTIVE, "error": VmState.ERROR}


def group_name(args: Any) -> str:
    name = args.get("name") if isinstance(args, dict) else None
    if not isinstance(name, str) or not name.strip():
        raise BadRequest("Security group name cannot be empty")
    return name.strip()


async def _network(service: ComputeService):
    if service.networks is None:
        raise Conflict("This cloud has no Network service to hold security groups.")
    return service.networks


async def _project_groups(
    service: ComputeService, ctx: RequestContext, inst: Instance
) -> list[dict]:
    """The security groups of the server's project (with their rules)."""
    net = await _network(service)
    found = await net.json(
        "GET", f"/v2.0/security-groups?project_id={inst.project_id}", ctx.auth_token
    )
    return found["security_groups"]


async def _find_group(service: ComputeService, ctx: RequestContext, inst: Instance, name: str):
    """The group named `name` (or with that id) in the server's project, as Nova looks it up."""
    groups = await _project_groups(service, ctx, inst)
    by_id = [g for g in groups if g["id"] == name]
    by_name = [g for g in groups if g["name"] == name]
    matches = by_id or by_name
    if not matches:
        raise NotFound(f"Security group {name} not found for project {inst.project_id}.")
    if len(matches) > 1:
        raise Conflict(
            f"Multiple security group matches found for name '{name}', "
            "use an ID to be more specific."
        )
    return matches[0]


async def check_groups_exist(service: ComputeService, ctx: RequestContext, names: list[str]):
    """A new server's groups (names or ids) must exist for its project (Nova answers 400
    at create, not a server in ERROR later)."""
    if service.networks is None:
        return
    found = await service.networks.json(
        "GET", f"/v2.0/security-groups?project_id={ctx.project_id}", ctx.auth_token
    )
    known = {g["name"] for g in found["security_groups"]} | {
        g["id"] for g in found["security_groups"]
    }
    for name in names:
        if name != "default" and name not in known:
            raise BadRequest(f"Security group {name} not found for project {ctx.project_id}.")


async def _ports(service: ComputeService, ctx: RequestContext, inst: Instance) -> list[dict]:
    net = await _network(service)
    found = await net.json("GET", f"/v2.0/ports?device_id={inst.uuid}", ctx.auth_token)
    return found["ports"]


async def _set_port_groups(
    service: ComputeService, ctx: RequestContext, port: dict, group_ids: list[str]
) -> None:
    net = await _network(service)
    await net.json(
        "PUT",
        url_path("/v2.0/ports/{}", port["id"]),
        ctx.auth_token,
        json={"port": {"security_groups": group_ids}},
    )


async def add_security_group(
    service: ComputeService, ctx: RequestContext, inst: Instance, name: str
) -> None:
    group = await _find_group(service, ctx, inst, name)
    ports = await _ports(service, ctx, inst)
    if not ports:
        raise NotFound(f"Instance {inst.uuid} has no ports to apply security groups to.")
    if any(group["id"] in p["security_groups"] for p in ports):
        raise BadRequest(
            f"Security group {name} is already associated with the instance {inst.uuid}"
        )
    if any(not p.get("port_security_enabled", True) or not p["fixed_ips"] for p in ports):
        raise BadRequest(
            "Network requires port_security_enabled and subnet associated in order to "
            "apply security groups."
        )
    done: list[dict] = []
    try:
        for port in ports:
            await _set_port_groups(service, ctx, port, [*port["security_groups"], group["id"]])
            done.append(port)
    except ServiceError:
        # Nothing half-written: the ports already changed get their groups back.
        for port in done:
            await _set_port_groups(service, ctx, port, port["security_groups"])
        raise
    names = list(inst.security_groups or [])
    if group["name"] not in names:
        await service.update_instance(inst.uuid, {"security_groups": [*names, group["name"]]})


async def remove_security_group(
    service: ComputeService, ctx: RequestContext, inst: Instance, name: str
) -> None:
    group = await _find_group(service, ctx, inst, name)
    ports = [p for p in await _ports(service, ctx, inst) if group["id"] in p["security_groups"]]
    if not ports:
        raise BadRequest(f"Security group {name} not associated with the instance {inst.uuid}")
    for port in ports:
        await _set_port_groups(
            service, ctx, port, [g for g in port["security_groups"] if g != group["id"]]
        )
    names = [n for n in inst.security_groups or [] if n != group["name"]]
    await service.update_instance(inst.uuid, {"security_groups": names})


async def reset_state(
    service: ComputeService, ctx: RequestContext, inst: Instance, args: Any
) -> None:
    """os-resetState (admin): vm_state active or error, no task; the host is not asked."""
    state = args.get("state") if isinstance(args, dict) else None
    if state not in RESET_STATES:
        raise BadRequest("Invalid input for field/attribute state. Value: active or error.")
    await service._record_action(ctx, inst, "resetState")
    await service.update_instance(inst.uuid, {"vm_state": RESET_STATES[state], "task_state": None})


async def list_server_security_groups(request: Request) -> Response:
    """GET /servers/{id}/os-security-groups: the groups on the server's ports."""
    ctx = await authorize(request, "compute:servers:index")
    service = compute_of(request)
    inst = await service.get_instance(ctx, request.path_params["server_id"], "compute:servers:show")
    if service.networks is None:
        return json({"security_groups": []})
    ports = await _ports(service, ctx, inst)
    wanted = {g for p in ports for g in p["security_groups"]}
    project_groups = await _project_groups(service, ctx, inst)
    groups = [g for g in project_groups if g["id"] in wanted]
    by_id = {g["id"]: g for g in project_groups}
    return json(
        {"security_groups": [group_view(g, by_id) for g in sorted(groups, key=lambda g: g["name"])]}
    )


routes = [
    Route(
        "/v2.1/servers/{server_id}/os-security-groups",
        list_server_security_groups,
        methods=["GET"],
    ),
]
