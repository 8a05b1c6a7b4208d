"""Networks with their subnets and routers, the live topology, floating IPs, security
groups."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from cumulo.common.service_client import url_path
from cumulo.dashboard.apis import ApiFailure, UserApis, gather
from cumulo.dashboard.web import (
    apis_of,
    form_of,
    live_stream,
    page,
    redirect,
    render,
    session_of,
)


async def _network_lists(api: UserApis) -> dict[str, Any]:
    networks, subnets, routers, interfaces = await gather(
        api.network.get("/v2.0/networks"),
        api.network.get("/v2.0/subnets"),
        api.network.get("/v2.0/routers"),
        api.network.get("/v2.0/ports?device_owner=network:router_interface"),
    )
    by_router: dict[str, list[str]] = {}
    for port in interfaces["ports"]:
        if port.get("device_owner") == "network:router_interface":
            for ip in port["fixed_ips"]:
                by_router.setdefault(port["device_id"], []).append(ip["subnet_id"])
    return {
        "networks": networks["networks"],
        "subnets": {s["id"]: s for s in subnets["subnets"]},
        "routers": routers["routers"],
        # Each router's interfaces, as the subnets they are on.
        "router_subnets": by_router,
    }


async def _networks_page(
    request: Request,
    status: int = 200,
    where: str = "network",
    form: dict[str, Any] | None = None,
    error: ApiFailure | None = None,
) -> Response:
    lists = await _network_lists(apis_of(request))
    return render(
        request,
        "networks.html",
        status=status,
        where=where,
        form=form or {},
        error=error,
        project_id=session_of(request).project_id,
        **lists,
    )


async def _network_change(request: Request, where: str, call: Awaitable[Any]) -> Response:
    """A change from the networks page, then the page again (with the API's message next
    to the form when refused)."""
    try:
        await call
    except ApiFailure as exc:
        if exc.status == 401:
            raise
        return await _networks_page(request, exc.status, where, await form_of(request), exc)
    return redirect(request, "/networks")


@page
async def networks(request: Request) -> Response:
    return await _networks_page(request)


@page
async def create_network(request: Request) -> Response:
    """A network, its subnet and (when asked) a router to the external network: all of
    them or, when one step fails, none (what was made is deleted again)."""
    api, form = apis_of(request), await form_of(request)
    made: list[str] = []  # paths to DELETE on failure, newest first
    try:
        net = (
            await api.network.post("/v2.0/networks", {"network": {"name": form.get("name", "")}})
        )["network"]
        made.insert(0, url_path("/v2.0/networks/{}", net["id"]))
        if form.get("cidr"):
            subnet_body = {
                "network_id": net["id"],
                "name": form.get("subnet_name") or f"{net['name']}-subnet",
                "cidr": form["cidr"],
                "ip_version": 6 if ":" in form["cidr"] else 4,
            }
            subnet = (await api.network.post("/v2.0/subnets", {"subnet": subnet_body}))["subnet"]
            made.insert(0, url_path("/v2.0/subnets/{}", subnet["id"]))
            if form.get("router_name"):
                router_body: dict[str, Any] = {"name": form["router_name"]}
                external = await api.network.get("/v2.0/networks?router:external=true")
                if external["networks"]:
                    router_body["external_gateway_info"] = {
                        "network_id": external["networks"][0]["id"]
                    }
                router = (await api.network.post("/v2.0/routers", {"router": router_body}))[
                    "router"
                ]
                made.insert(0, url_path("/v2.0/routers/{}", router["id"]))
                await api.network.put(
                    url_path("/v2.0/routers/{}/add_router_interface", router["id"]),
                    {"subnet_id": subnet["id"]},
                )
    except ApiFailure as exc:
        if exc.status == 401:
            raise
        for path in made:
            try:
                await api.network.delete(path)
            except ApiFailure:
                pass
        return await _networks_page(request, exc.status, "network", form, exc)
    return redirect(request, "/networks")


@page
async def create_subnet(request: Request) -> Response:
    """A subnet on an existing network."""
    form = await form_of(request)
    cidr = form.get("cidr", "")
    subnet: dict[str, Any] = {
        "network_id": form.get("network_id", ""),
        "name": form.get("name", ""),
        "cidr": cidr,
        "ip_version": 6 if ":" in cidr else 4,
        "enable_dhcp": bool(form.get("enable_dhcp")),
    }
    if form.get("no_gateway"):
        subnet["gateway_ip"] = None
    elif form.get("gateway_ip"):
        subnet["gateway_ip"] = form["gateway_ip"]
    call = apis_of(request).network.post("/v2.0/subnets", {"subnet": subnet})
    return await _network_change(request, "subnet", call)


@page
async def delete_subnet(request: Request) -> Response:
    path = url_path("/v2.0/subnets/{}", request.path_params["id"])
    return await _network_change(request, "subnets", apis_of(request).network.delete(path))


@page
async def add_router_interface(request: Request) -> Response:
    form = await form_of(request)
    path = url_path("/v2.0/routers/{}/add_router_interface", form.get("router_id", ""))
    call = apis_of(request).network.put(path, {"subnet_id": form.get("subnet_id", "")})
    return await _network_change(request, "interface", call)


@page
async def remove_router_interface(request: Request) -> Response:
    path = url_path("/v2.0/routers/{}/remove_router_interface", request.path_params["id"])
    call = apis_of(request).network.put(path, {"subnet_id": request.path_params["subnet_id"]})
    return await _network_change(request, "routers", call)


async def topology_data(api: UserApis) -> dict[str, Any]:
    """Networks, routers and servers as graph nodes; ports as the edges between them."""
    networks, routers, ports, servers = await gather(
        api.network.get("/v2.0/networks"),
        api.network.get("/v2.0/routers"),
        api.network.get("/v2.0/ports"),
        api.compute.get("/v2.1/servers?limit=1000"),
    )
    nodes: list[dict[str, Any]] = []
    edges: list[dict[str, Any]] = []
    for n in networks["networks"]:
        kind = "external" if n.get("router:external") else "network"
        nodes.append(
            {
                "data": {
                    "id": n["id"],
                    "label": n["name"] or n["id"][:8],
                    "kind": kind,
                    "href": "/networks",
                }
            }
        )
    for r in routers["routers"]:
        nodes.append(
            {
                "data": {
                    "id": r["id"],
                    "label": r["name"] or r["id"][:8],
                    "kind": "router",
                    "href": "/networks",
                }
            }
        )
        gateway = r.get("external_gateway_info") or {}
        if gateway.get("network_id"):
            edges.append(
                {
                    "data": {
                        "id": f"gw-{r['id']}",
                        "source": r["id"],
                        "target": gateway["network_id"],
                    }
                }
            )
    for s in servers["servers"]:
        nodes.append(
            {
                "data": {
                    "id": s["id"],
                    "label": s["name"],
                    "kind": "server",
                    "href": f"/instances/{s['id']}",
                }
            }
        )
    known = {node["data"]["id"] for node in nodes}
    for p in ports["ports"]:
        owner = p.get("device_id")
        if (
            owner in known
            and p["network_id"] in known
            and p.get("device_owner") not in ("network:router_gateway",)
        ):
            edges.append({"data": {"id": p["id"], "source": owner, "target": p["network_id"]}})
    return {"nodes": nodes, "edges": edges}


@page
async def topology(request: Request) -> Response:
    return render(request, "topology.html")


@page
async def topology_json(request: Request) -> Response:
    return JSONResponse(await topology_data(apis_of(request)))


@page
async def topology_live(request: Request) -> Response:
    """The topology page's stream: the graph again whenever it changes."""
    api = apis_of(request)

    async def graph() -> dict[str, str]:
        return {"graph": orjson.dumps(await topology_data(api)).decode()}

    return live_stream(request, graph)


@page
async def floating_ips(request: Request) -> Response:
    api = apis_of(request)
    project = session_of(request).project_id
    fips, external = await gather(
        api.network.get(f"/v2.0/floatingips?project_id={project}"),
        api.network.get("/v2.0/networks?router:external=true"),
    )
    return render(
        request,
        "floating_ips.html",
        fips=fips["floatingips"],
        external=external["networks"],
        error=None,
    )


@page
async def allocate_floating_ip(request: Request) -> Response:
    api, form = apis_of(request), await form_of(request)
    body = {"floatingip": {"floating_network_id": form.get("network_id", "")}}
    await api.network.post("/v2.0/floatingips", body)
    return redirect(request, "/floating-ips")


@page
async def release_floating_ip(request: Request) -> Response:
    await apis_of(request).network.delete(
        url_path("/v2.0/floatingips/{}", request.path_params["id"])
    )
    return redirect(request, "/floating-ips")


async def _groups_page(
    request: Request, status: int = 200, form: dict | None = None, error: ApiFailure | None = None
) -> Response:
    project = session_of(request).project_id
    body = await apis_of(request).network.get(f"/v2.0/security-groups?project_id={project}")
    return render(
        request,
        "security_groups.html",
        status=status,
        groups=body["security_groups"],
        form=form or {},
        error=error,
    )


async def _group_change(request: Request, change) -> Response:
    """A change to the groups, then their page again (with the API's message if refused)."""
    try:
        await change
    except ApiFailure as exc:
        if exc.status == 401:
            raise
        return await _groups_page(request, exc.status, await form_of(request), exc)
    return redirect(request, "/security-groups")


@page
async def security_groups(request: Request) -> Response:
    return await _groups_page(request)


@page
async def create_security_group(request: Request) -> Response:
    form = await form_of(request)
    group = {"name": form.get("name", ""), "description": form.get("description", "")}
    return await _group_change(
        request,
        apis_of(request).network.post("/v2.0/security-groups", {"security_group": group}),
    )


@page
async def add_rule(request: Request) -> Response:
    form = await form_of(request)
    rule: dict[str, Any] = {
        "security_group_id": request.path_params["id"],
        "direction": "egress" if form.get("direction") == "egress" else "ingress",
        "ethertype": "IPv6" if form.get("ethertype") == "IPv6" else "IPv4",
        "protocol": form.get("protocol") or None,
        "remote_ip_prefix": form.get("remote_ip_prefix") or None,
    }
    if form.get("port"):
        rule["port_range_min"] = rule["port_range_max"] = int(form["port"])
    return await _group_change(
        request,
        apis_of(request).network.post("/v2.0/security-group-rules", {"security_group_rule": rule}),
    )


@page
async def delete_rule(request: Request) -> Response:
    path = url_path("/v2.0/security-group-rules/{}", request.path_params["rule_id"])
    return await _group_change(request, apis_of(request).network.delete(path))


routes = [
    Route("/networks", networks, methods=["GET"]),
    Route("/networks", create_network, methods=["POST"]),
    Route("/subnets", create_subnet, methods=["POST"]),
    Route("/subnets/{id}/delete", delete_subnet, methods=["POST"]),
    Route("/router-interfaces", add_router_interface, methods=["POST"]),
    Route("/routers/{id}/interfaces/{subnet_id}/remove", remove_router_interface, methods=["POST"]),
    Route("/topology", topology, methods=["GET"]),
    Route("/topology.json", topology_json, methods=["GET"]),
    Route("/topology/live", topology_live, methods=["GET"]),
    Route("/floating-ips", floating_ips, methods=["GET"]),
    Route("/floating-ips", allocate_floating_ip, methods=["POST"]),
    Route("/floating-ips/{id}/release", release_floating_ip, methods=["POST"]),
    Route("/security-groups", security_groups, methods=["GET"]),
    Route("/security-groups", create_security_group, methods=["POST"]),
    Route("/security-groups/{id}/rules", add_rule, methods=["POST"]),
    Route("/security-group-rules/{rule_id}/delete", delete_rule, methods=["POST"]),
]
