"""Networks with their subnets and routers, the live topology, floating IPs, security
groups."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from cumulo.common.service_client import url_path
from cumulo.dashboard.apis import ApiFailure, UserApis, gather
from cumulo.dashboard.topology import (
    ROUTER_INTERFACE_OWNERS,
    Graph,
    build_graph,
    graph_json,
    layout,
)
from cumulo.dashboard.web import (
    apis_of,
    form_of,
    fragment,
    live_stream,
    page,
    redirect,
    remember_view,
    render,
    session_of,
)


async def _network_lists(api: UserApis) -> dict[str, Any]:
    networks, subnets, routers, interfaces = await gather(
        api.network.get("/v2.0/networks"),
        api.network.get("/v2.0/subnets"),
        api.network.get("/v2.0/routers"),
        api.network.get(
            "/v2.0/ports?" + "&".join(f"device_owner={owner}" for owner in ROUTER_INTERFACE_OWNERS)
        ),
    )
    by_router: dict[str, list[str]] = {}
    for port in interfaces["ports"]:
        # A distributed router's interfaces have an owner of their own (Neutron's DVR).
        if port.get("device_owner") in ROUTER_INTERFACE_OWNERS:
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


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def subnet_changes(form: dict[str, Any]) -> dict[str, Any]:
    """The subnet edit form as a Neutron subnet update: pools one `start-end` a line, DNS
    servers one a line, host routes `destination nexthop` a line (empty: none). A line
    that is not of that shape is a 400 here; the addresses themselves are Neutron's to
    check."""
    pools = []
    for line in _lines(form.get("allocation_pools", "")):
        start, sep, end = line.partition("-")
        if not sep or not start.strip() or not end.strip():
            raise ApiFailure("dashboard", 400, f"An allocation pool is start-end: {line!r}.")
        pools.append({"start": start.strip(), "end": end.strip()})
    routes = []
    for line in _lines(form.get("host_routes", "")):
        parts = line.replace(",", " ").split()
        if len(parts) != 2:
            raise ApiFailure("dashboard", 400, f"A host route is destination nexthop: {line!r}.")
        routes.append({"destination": parts[0], "nexthop": parts[1]})
    changes: dict[str, Any] = {
        "name": form.get("name", ""),
        "enable_dhcp": bool(form.get("enable_dhcp")),
        "dns_nameservers": _lines(form.get("dns_nameservers", "")),
        "host_routes": routes,
    }
    # No pools given keeps the subnet's (Neutron refuses an empty list on a subnet with
    # ports; the form always shows the current ones).
    if pools:
        changes["allocation_pools"] = pools
    # The gateway only when changed: Neutron refuses a gateway a router port holds even
    # when it is the same address (409 in use).
    gateway = None if form.get("no_gateway") else (form.get("gateway_ip") or "").strip() or None
    if gateway != (form.get("current_gateway_ip") or None):
        changes["gateway_ip"] = gateway
    return changes


@page
async def update_subnet(request: Request) -> Response:
    """A subnet's name, pools, DNS servers, host routes, gateway and DHCP (one PUT)."""
    subnet_id = request.path_params["id"]
    where = f"edit-{subnet_id}"
    try:
        changes = subnet_changes(await form_of(request))
    except ApiFailure as exc:
        return await _networks_page(request, exc.status, where, await form_of(request), exc)
    path = url_path("/v2.0/subnets/{}", subnet_id)
    call = apis_of(request).network.put(path, {"subnet": changes})
    return await _network_change(request, where, call)


@page
async def create_router(request: Request) -> Response:
    """A router on its own: a name and a gateway on an external network (or none)."""
    form = await form_of(request)
    router: dict[str, Any] = {"name": form.get("name", "")}
    if form.get("external_network_id"):
        router["external_gateway_info"] = {"network_id": form["external_network_id"]}
    call = apis_of(request).network.post("/v2.0/routers", {"router": router})
    return await _network_change(request, "router", call)


@page
async def delete_router(request: Request) -> Response:
    """Neutron refuses (409 RouterInUse) while interfaces remain: its message is shown."""
    path = url_path("/v2.0/routers/{}", request.path_params["id"])
    return await _network_change(request, "routers", apis_of(request).network.delete(path))


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


async def topology_graph(api: UserApis, project_id: str) -> Graph:
    """The project's networks, routers and servers and the ports between them."""
    # An administrator's lists hold every project's: the project's own ports only.
    own = f"?project_id={project_id}" if project_id else ""
    networks, subnets, routers, ports, servers, floating = await gather(
        api.network.get("/v2.0/networks"),
        api.network.get("/v2.0/subnets"),
        api.network.get("/v2.0/routers"),
        api.network.get(f"/v2.0/ports{own}"),
        api.compute.get("/v2.1/servers/detail?limit=1000"),
        api.network.get(f"/v2.0/floatingips{own}"),
    )
    return build_graph(
        project_id,
        networks["networks"],
        subnets["subnets"],
        routers["routers"],
        ports["ports"],
        servers["servers"],
        floating["floatingips"],
    )


def topology_picture(graph: Graph) -> str:
    """The topology as the page shows it: an SVG figure laid out here."""
    return fragment("topology_parts.html:picture", p=layout(graph))


@page
async def topology(request: Request) -> Response:
    graph = await topology_graph(apis_of(request), session_of(request).project_id)
    picture = topology_picture(graph)  # rendered once: page and stream
    view = remember_view(request, {"topology": picture})
    return render(
        request, "topology.html", picture=Markup(picture), live_url=f"/topology/live?view={view}"
    )


@page
async def topology_json(request: Request) -> Response:
    graph = await topology_graph(apis_of(request), session_of(request).project_id)
    return JSONResponse(graph_json(graph))


@page
async def topology_live(request: Request) -> Response:
    """The topology page's stream: the picture again whenever it changes."""
    api, project_id = apis_of(request), session_of(request).project_id
    last: dict[str, Any] = {}

    async def picture() -> dict[str, str]:
        graph = await topology_graph(api, project_id)
        # Laid out and rendered again only when the graph changed (every second
        # otherwise, for nothing, with hundreds of servers).
        if last.get("graph") != graph:
            last.update(graph=graph, html=topology_picture(graph))
        return {"topology": last["html"]}

    return live_stream(request, picture)


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
    # A remote group instead of a CIDR (Neutron takes one or the other).
    if form.get("remote_group_id"):
        rule["remote_group_id"] = form["remote_group_id"]
        rule["remote_ip_prefix"] = None
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
    Route("/subnets/{id}", update_subnet, methods=["POST"]),
    Route("/subnets/{id}/delete", delete_subnet, methods=["POST"]),
    Route("/routers", create_router, methods=["POST"]),
    Route("/routers/{id}/delete", delete_router, methods=["POST"]),
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
