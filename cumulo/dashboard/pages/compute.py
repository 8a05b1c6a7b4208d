"""Instances: the live table, the launch wizard, the detail page with its boot
timeline, console log and actions; key pairs."""

from __future__ import annotations

import asyncio
import base64
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from cumulo.common.service_client import url_path
from cumulo.dashboard.apis import ApiFailure, UserApis, gather, optional
from cumulo.dashboard.web import (
    apis_of,
    form_of,
    fragment,
    live_stream,
    page,
    redirect,
    remember_view,
    render,
)

PAGE_SIZE = 20
PAGE_SIZES = (20, 50, 100, 500)
FILTERS = ("name", "status", "limit", "sort_key", "sort_dir")
SORT_KEYS = {"display_name": "Name", "vm_state": "Status", "created_at": "Created"}
# The actions a server's state offers, as the API names them.
ACTIONS = {
    "ACTIVE": ["stop", "reboot", "pause", "suspend", "lock", "delete"],
    "SHUTOFF": ["start", "delete"],
    "PAUSED": ["unpause", "delete"],
    "SUSPENDED": ["resume", "delete"],
    "ERROR": ["delete"],
    "BUILD": ["delete"],
    "VERIFY_RESIZE": ["confirm_resize", "revert_resize", "delete"],
}
# The states a server can be resized or rebuilt from (Nova's vm states ACTIVE, STOPPED;
# rebuild also ERROR).
RESIZABLE = ("ACTIVE", "SHUTOFF")
REBUILDABLE = ("ACTIVE", "SHUTOFF", "ERROR")
ACTION_BODIES: dict[str, dict[str, Any]] = {
    "stop": {"os-stop": None},
    "start": {"os-start": None},
    "reboot": {"reboot": {"type": "SOFT"}},
    "pause": {"pause": None},
    "unpause": {"unpause": None},
    "suspend": {"suspend": None},
    "resume": {"resume": None},
    "lock": {"lock": None},
    "unlock": {"unlock": None},
    "confirm_resize": {"confirmResize": None},
    "revert_resize": {"revertResize": None},
}


def _page_size(params: dict[str, str]) -> int:
    size = params.get("limit", "")
    return int(size) if size.isdecimal() and int(size) in PAGE_SIZES else PAGE_SIZE


def _servers_query(params: dict[str, str]) -> str:
    query = {k: params[k] for k in FILTERS if params.get(k)}
    if query.get("sort_key") not in SORT_KEYS:
        query.pop("sort_key", None)
    if query.get("sort_dir") not in ("asc", "desc"):
        query.pop("sort_dir", None)
    query["limit"] = str(_page_size(params))
    if params.get("marker"):
        query["marker"] = params["marker"]
    return urlencode(query)


async def _servers_page(api: UserApis, params: dict[str, str]) -> list[dict[str, Any]]:
    return (await api.compute.get(f"/v2.1/servers/detail?{_servers_query(params)}"))["servers"]


def _sort_links(filters: dict[str, str]) -> dict[str, str]:
    """Each sortable column's link: the same filters, by that column (a second click on
    the column sorted descending turns it ascending)."""
    kept = {k: v for k, v in filters.items() if v}
    links = {}
    for key in SORT_KEYS:
        flip = filters["sort_key"] == key and filters["sort_dir"] != "asc"
        query = {**kept, "sort_key": key, "sort_dir": "asc" if flip else "desc"}
        links[key] = "/instances?" + urlencode(query)
    return links


def _row(server: dict[str, Any]) -> str:
    return fragment("parts.html:row", server=server)


@page
async def instances(request: Request) -> Response:
    params = dict(request.query_params)
    servers = await _servers_page(apis_of(request), params)
    filters = {k: params.get(k, "") for k in FILTERS}
    next_marker = servers[-1]["id"] if len(servers) == _page_size(params) else None
    rows = {f"server-{s['id']}": _row(s) for s in servers}  # rendered once: page and stream
    view = remember_view(request, rows)
    live_url = "/instances/live?" + _servers_query(params) + f"&view={view}"
    return render(
        request,
        "instances.html",
        rows=[Markup(html) for html in rows.values()],
        filters=filters,
        statuses=sorted(ACTIONS),
        page_sizes=PAGE_SIZES,
        sort_links=_sort_links(filters),
        next_url=(
            "/instances?"
            + urlencode({**{k: v for k, v in filters.items() if v}, "marker": next_marker})
            if next_marker
            else None
        ),
        first_url="/instances?" + urlencode({k: v for k, v in filters.items() if v}),
        paged=bool(params.get("marker")),
        live_url=live_url,
    )


@page
async def instances_live(request: Request) -> Response:
    api, params = apis_of(request), dict(request.query_params)

    async def rows() -> dict[str, str]:
        return {f"server-{s['id']}": _row(s) for s in await _servers_page(api, params)}

    return live_stream(request, rows)


def _free_ports(ports: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The ports no server or router uses yet (a server can take them)."""
    return [p for p in ports if not p.get("device_id") and not p.get("device_owner")]


async def _wizard_choices(api: UserApis, project_id: str) -> dict[str, Any]:
    (
        images,
        flavors,
        networks,
        ports,
        keypairs,
        groups,
        zones,
        server_groups,
        snapshots,
        volumes,
    ) = await gather(
        api.image.get("/v2/images?status=active&limit=200"),
        api.compute.get("/v2.1/flavors/detail"),
        api.network.get("/v2.0/networks"),
        optional(api.network.get(f"/v2.0/ports?project_id={project_id}"), {"ports": []}),
        api.compute.get("/v2.1/os-keypairs"),
        api.network.get(f"/v2.0/security-groups?project_id={project_id}"),
        optional(api.compute.get("/v2.1/os-availability-zone"), {"availabilityZoneInfo": []}),
        optional(api.compute.get("/v2.1/os-server-groups"), {"server_groups": []}),
        optional(api.volume.get("/v3/snapshots/detail?status=available"), {"snapshots": []}),
        optional(
            api.volume.get("/v3/volumes/detail?status=available&bootable=true"), {"volumes": []}
        ),
    )
    networks_by_id = {n["id"]: n for n in networks["networks"]}
    return {
        "images": images["images"],
        "flavors": sorted(flavors["flavors"], key=lambda f: (f["ram"], f["vcpus"], f["disk"])),
        "networks": [n for n in networks["networks"] if not n.get("router:external")],
        # Ports no server or router uses yet, with their network's name.
        "free_ports": [
            {**p, "network_name": networks_by_id.get(p["network_id"], {}).get("name", "")}
            for p in _free_ports(ports["ports"])
        ],
        "keypairs": [k["keypair"] for k in keypairs["keypairs"]],
        "groups": groups["security_groups"],
        "zones": [
            z["zoneName"] for z in zones["availabilityZoneInfo"] if z["zoneState"]["available"]
        ],
        "server_groups": server_groups["server_groups"],
        "snapshots": snapshots["snapshots"],
        # Bootable and available: what Compute accepts as a root volume.
        "boot_volumes": [v for v in volumes["volumes"] if str(v.get("bootable")).lower() == "true"],
    }


@page
async def launch_form(request: Request) -> Response:
    api = apis_of(request)
    choices = await _wizard_choices(api, request.state.session.project_id)
    return render(
        request, "launch.html", form={"count": "1", "source": "image"}, errors={}, **choices
    )


def _field_of(message: str) -> str:
    """Which wizard field an API message is about (the message goes next to it)."""
    lowered = message.lower()
    for words, name in (
        (("quota",), "_form"),
        (("flavor", "disk is too small", "memory is too small", "ram"), "flavor"),
        (("image",), "image"),
        (("key pair", "keypair", "key_name", "public key"), "key_name"),
        (("network", "port"), "networks"),
        (("volume", "block device", "snapshot", "bootable"), "source"),
        (("availability zone",), "availability_zone"),
        (("server group",), "server_group"),
        (("security group",), "security_groups"),
        (("count",), "count"),
        (("name",), "name"),
    ):
        if any(w in lowered for w in words):
            return name
    return "_form"


def _listed(value: Any) -> list[str]:
    if not value:
        return []
    return value if isinstance(value, list) else [value]


async def _volume_from_snapshot(api: UserApis, form: dict[str, Any]) -> dict[str, Any]:
    """A new volume made from the chosen volume snapshot, available and bootable (what
    Horizon asks Compute for with a `snapshot` mapping, done here in two steps)."""
    snapshot_id = form.get("snapshot_id", "")
    if not snapshot_id:
        raise ApiFailure("dashboard", 400, "Choose a volume snapshot to boot from.")
    size = str(form.get("volume_size") or "")
    if size and not size.isdecimal():
        raise ApiFailure("dashboard", 400, "The new volume's size is a number of GiB.")
    snapshot = (await api.volume.get(url_path("/v3/snapshots/{}", snapshot_id)))["snapshot"]
    body = {
        "snapshot_id": snapshot_id,
        "size": int(size or snapshot["size"]),
        "name": f"{form.get('name') or 'server'}-boot",
    }
    volume = (await api.volume.post("/v3/volumes", {"volume": body}))["volume"]
    volume = await wait_volume(api, volume["id"])
    if volume["status"] != "available":
        await optional(api.volume.delete(url_path("/v3/volumes/{}", volume["id"])), None)
        raise ApiFailure("volume", 409, f"The volume from the snapshot is {volume['status']}.")
    if str(volume.get("bootable")).lower() != "true":
        # The user boots from it: marked bootable, as Cinder marks a bootable volume's copy.
        await api.volume.post(
            url_path("/v3/volumes/{}/action", volume["id"]),
            {"os-set_bootable": {"bootable": True}},
        )
    return volume


def _root_volume(volume_id: str, delete_on_termination: bool) -> list[dict[str, Any]]:
    return [
        {
            "boot_index": 0,
            "uuid": volume_id,
            "source_type": "volume",
            "destination_type": "volume",
            "delete_on_termination": delete_on_termination,
        }
    ]


@page
async def launch(request: Request) -> Response:
    api, form = apis_of(request), await form_of(request)
    source = form.get("source") or "image"
    nics = [{"uuid": n} for n in _listed(form.get("networks"))]
    nics += [{"port": p} for p in _listed(form.get("ports"))]
    server: dict[str, Any] = {
        "name": form.get("name", ""),
        "flavorRef": form.get("flavor", ""),
        "networks": nics or "none",
    }
    delete_volume = bool(form.get("delete_on_termination"))
    if source == "volume":
        server["block_device_mapping_v2"] = _root_volume(form.get("volume_id", ""), delete_volume)
    elif source == "image" and form.get("image") and form.get("volume_size"):
        # Boot from a new volume made from the image (deleted with the server).
        server["block_device_mapping_v2"] = [
            {
                "boot_index": 0,
                "uuid": form["image"],
                "source_type": "image",
                "destination_type": "volume",
                "volume_size": form["volume_size"],
                "delete_on_termination": True,
            }
        ]
    elif source == "image" and form.get("image"):
        server["imageRef"] = form["image"]
    if form.get("availability_zone"):
        server["availability_zone"] = form["availability_zone"]
    count = form.get("count") or "1"
    if count.isdecimal() and int(count) > 1:
        server["min_count"] = server["max_count"] = int(count)
    if form.get("new_key_name"):
        server["key_name"] = form["new_key_name"]
    elif form.get("key_name"):
        server["key_name"] = form["key_name"]
    groups = _listed(form.get("security_groups"))
    if groups:
        server["security_groups"] = [{"name": g} for g in groups]
    if form.get("user_data"):
        server["user_data"] = base64.b64encode(form["user_data"].encode()).decode()
    if form.get("config_drive"):
        server["config_drive"] = True
    body: dict[str, Any] = {"server": server}
    if form.get("server_group"):
        body["os:scheduler_hints"] = {"group": form["server_group"]}
    new_key = new_volume = None
    try:
        if form.get("new_key_name"):
            # A key pair made (or imported) for this server: kept only if the launch is.
            keypair = {"name": form["new_key_name"]}
            if form.get("new_public_key"):
                keypair["public_key"] = form["new_public_key"]
            new_key = (await api.compute.post("/v2.1/os-keypairs", {"keypair": keypair}))["keypair"]
        if source == "volume" and not form.get("volume_id"):
            raise ApiFailure("dashboard", 400, "Choose a volume to boot from.")
        if source == "snapshot":
            # A volume made for this server: kept only if the launch is.
            new_volume = await _volume_from_snapshot(api, form)
            server["block_device_mapping_v2"] = _root_volume(new_volume["id"], delete_volume)
        created = await api.compute.post("/v2.1/servers", body)
    except ApiFailure as exc:
        if exc.status == 401:
            raise
        if new_key is not None:
            await optional(
                api.compute.delete(url_path("/v2.1/os-keypairs/{}", new_key["name"])), None
            )
        if new_volume is not None:
            await optional(api.volume.delete(url_path("/v3/volumes/{}", new_volume["id"])), None)
        choices = await _wizard_choices(api, request.state.session.project_id)
        return render(
            request,
            "launch.html",
            status=exc.status,
            form=form,
            errors={_field_of(exc.message): exc},
            **choices,
        )
    if new_key is not None and new_key.get("private_key"):
        # Shown once, on the new server's page.
        request.state.session.private_keys[new_key["name"]] = new_key["private_key"]
    return redirect(request, f"/instances/{created['server']['id']}")


# The boot request flow's steps in words (the events Nova's conductor and compute record).
STEP_LABELS = {
    "conductor_build_instances": "scheduling",
    "compute_build_and_run_instance": "build on the host",
    "compute_networking": "networking",
    "compute_block_device_mapping": "block device mapping",
    "compute_spawning": "spawning",
}


def _parse_time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


async def _timeline(api: UserApis, server_id: str) -> list[dict[str, Any]]:
    """The boot request flow: the create action's events, each with its duration."""
    actions = (await api.compute.get(url_path("/v2.1/servers/{}/os-instance-actions", server_id)))[
        "instanceActions"
    ]
    create = next((a for a in actions if a["action"] == "create"), None)
    if create is None:
        return []
    action = (
        await api.compute.get(
            url_path("/v2.1/servers/{}/os-instance-actions/{}", server_id, create["request_id"])
        )
    )["instanceAction"]
    origin = _parse_time(action["start_time"])
    steps = []
    for event in sorted(action["events"], key=lambda e: e["start_time"] or ""):
        start, finish = _parse_time(event["start_time"]), _parse_time(event["finish_time"])
        steps.append(
            {
                "name": event["event"],
                "label": STEP_LABELS.get(event["event"], event["event"].replace("_", " ")),
                "result": event["result"] or "running",
                "offset": (start - origin).total_seconds() if start and origin else 0,
                "duration": (finish - start).total_seconds() if start and finish else None,
            }
        )
    total = max((s["offset"] + (s["duration"] or 0) for s in steps), default=0) or 1
    for step in steps:
        step["left"] = 100 * step["offset"] / total
        step["width"] = max(1.5, 100 * (step["duration"] or 0) / total)
    return steps


async def _console(api: UserApis, server_id: str, status: str) -> str:
    if status == "BUILD":
        return ""
    try:
        body = await api.compute.post(
            url_path("/v2.1/servers/{}/action", server_id), {"os-getConsoleOutput": {"length": 200}}
        )
    except ApiFailure as exc:
        if exc.status == 401:
            raise
        return f"(no console log: {exc.message})"
    return body.get("output", "")


def _parts(
    server: dict[str, Any], timeline: list, console: str, csrf: str, choices: dict[str, Any]
) -> dict[str, str]:
    """The server page's live parts, as the page renders them and its stream sends them
    (`choices`: the flavors and images the resize and rebuild forms offer)."""
    flavor = (server.get("flavor") or {}).get("original_name")
    return {
        "status": fragment("parts.html:status", server=server, actions=ACTIONS, csrf=csrf),
        "timeline": fragment("parts.html:timeline", steps=timeline),
        "console": fragment("parts.html:console", output=console),
        # Resize and rebuild as the server's state allows them (BUILD → ACTIVE shows them).
        "changes": fragment(
            "server_parts.html:changes",
            server=server,
            flavors=[f for f in choices["flavors"] if f["name"] != flavor],
            images=choices["images"],
            keypairs=choices["keypairs"],
            resizable=server["status"] in RESIZABLE,
            rebuildable=server["status"] in REBUILDABLE,
            csrf=csrf,
        ),
    }


async def _change_choices(api: UserApis) -> dict[str, Any]:
    """The flavors a server can be resized to, the images and key pairs it can be rebuilt
    with."""
    flavors, images, keypairs = await gather(
        optional(api.compute.get("/v2.1/flavors/detail"), {"flavors": []}),
        optional(api.image.get("/v2/images?status=active&limit=200"), {"images": []}),
        optional(api.compute.get("/v2.1/os-keypairs"), {"keypairs": []}),
    )
    return {
        "flavors": sorted(flavors["flavors"], key=lambda f: (f["ram"], f["vcpus"], f["disk"])),
        "images": images["images"],
        "keypairs": [k["keypair"] for k in keypairs["keypairs"]],
    }


async def _live_parts(
    api: UserApis, server_id: str, csrf: str, choices: dict[str, Any]
) -> dict[str, str]:
    server = (await api.compute.get(url_path("/v2.1/servers/{}", server_id)))["server"]
    timeline, console = await gather(
        _timeline(api, server_id), _console(api, server_id, server["status"])
    )
    return _parts(server, timeline, console, csrf, choices)


@page
async def instance(request: Request) -> Response:
    api = apis_of(request)
    server_id = request.path_params["server_id"]
    server = (await api.compute.get(url_path("/v2.1/servers/{}", server_id)))["server"]
    project = request.state.session.project_id
    (
        timeline,
        log,
        console,
        volumes,
        attached,
        fips,
        ports,
        choices,
        networks,
        project_ports,
    ) = await gather(
        _timeline(api, server_id),
        api.compute.get(url_path("/v2.1/servers/{}/os-instance-actions", server_id)),
        _console(api, server_id, server["status"]),
        optional(api.volume.get("/v3/volumes/detail?status=available"), {"volumes": []}),
        api.compute.get(url_path("/v2.1/servers/{}/os-volume_attachments", server_id)),
        optional(api.network.get(f"/v2.0/floatingips?project_id={project}"), {"floatingips": []}),
        optional(api.network.get(f"/v2.0/ports?device_id={server_id}"), {"ports": []}),
        _change_choices(api),
        optional(api.network.get("/v2.0/networks"), {"networks": []}),
        optional(api.network.get(f"/v2.0/ports?project_id={project}"), {"ports": []}),
    )
    parts = _parts(server, timeline, console, request.state.session.csrf, choices)
    view = remember_view(request, parts)
    network_names = {n["id"]: n["name"] or n["id"][:8] for n in networks["networks"]}
    return render(
        request,
        "instance.html",
        view=view,
        server=server,
        steps=timeline,
        action_log=log["instanceActions"],
        private_key=request.state.session.private_keys.pop(server.get("key_name") or "", None),
        output=console,
        actions=ACTIONS,
        volumes=volumes["volumes"],
        attached=attached["volumeAttachments"],
        free_fips=[f for f in fips["floatingips"] if not f.get("port_id")],
        server_fips=[
            f for f in fips["floatingips"] if f.get("port_id") in {p["id"] for p in ports["ports"]}
        ],
        ports=ports["ports"],
        network_names=network_names,
        changes=Markup(parts["changes"]),
        networks=[n for n in networks["networks"] if not n.get("router:external")],
        free_ports=_free_ports(project_ports["ports"]),
        error=request.query_params.get("error"),
        error_form=request.query_params.get("form", ""),
    )


@page
async def instance_live(request: Request) -> Response:
    api, server_id = apis_of(request), request.path_params["server_id"]
    csrf = request.state.session.csrf
    choices = await _change_choices(api)  # once per stream: they seldom change
    return live_stream(request, lambda: _live_parts(api, server_id, csrf, choices))


@page
async def instance_action(request: Request) -> Response:
    api, form = apis_of(request), await form_of(request)
    server_id = request.path_params["server_id"]
    action = form.get("action", "")
    if action == "delete":
        await api.compute.delete(url_path("/v2.1/servers/{}", server_id))
        return redirect(request, "/instances")
    if action not in ACTION_BODIES:
        raise ApiFailure("dashboard", 400, f"Unknown action {action!r}.")
    await api.compute.post(url_path("/v2.1/servers/{}/action", server_id), ACTION_BODIES[action])
    return redirect(request, f"/instances/{server_id}")


async def wait_volume(api: UserApis, volume_id: str, timeout: float = 60) -> dict[str, Any]:
    """Until a new volume is available (creating takes a moment on the backend)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        volume = (await api.volume.get(url_path("/v3/volumes/{}", volume_id)))["volume"]
        if volume["status"] != "creating" or asyncio.get_running_loop().time() > deadline:
            return volume
        await asyncio.sleep(0.5)


def _back_with_error(request: Request, server_id: str, exc: ApiFailure, form: str = "") -> Response:
    """The server page again with the API's message (next to `form` when given)."""
    message = f"{exc.explanation} (request {exc.request_id})" if exc.request_id else exc.message
    query = {"error": message, **({"form": form} if form else {})}
    return redirect(request, f"/instances/{server_id}?{urlencode(query)}")


async def _server_change(
    request: Request, form: str, method: str, path: str, body: Any = None
) -> Response:
    """One call changing the server, then its page (with the API's message next to the
    form when refused)."""
    api, server_id = apis_of(request), request.path_params["server_id"]
    try:
        if method == "DELETE":
            await api.compute.delete(path)
        else:
            await api.compute.post(path, body)
    except ApiFailure as exc:
        if exc.status == 401:
            raise
        return _back_with_error(request, server_id, exc, form)
    return redirect(request, f"/instances/{server_id}")


@page
async def resize(request: Request) -> Response:
    """Resize to another flavor (the server then waits in VERIFY_RESIZE for confirm or
    revert, the status actions)."""
    flavor = (await form_of(request)).get("flavor", "")
    path = url_path("/v2.1/servers/{}/action", request.path_params["server_id"])
    return await _server_change(request, "resize", "POST", path, {"resize": {"flavorRef": flavor}})


def rebuild_body(form: dict[str, Any]) -> dict[str, Any]:
    """The rebuild form as Nova's `rebuild` action: the image, a new name (empty: kept),
    the metadata as `key=value` lines (replacing the server's, as Nova's rebuild does) and
    an admin password (empty: Nova makes one). A line without `=` is a 400 here."""
    body: dict[str, Any] = {"imageRef": form.get("image", "")}
    if (form.get("name") or "").strip():
        body["name"] = form["name"].strip()
    metadata = {}
    for line in (form.get("metadata") or "").splitlines():
        if not line.strip():
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise ApiFailure("dashboard", 400, f"A metadata line is key=value: {line.strip()!r}.")
        metadata[key.strip()] = value.strip()
    body["metadata"] = metadata
    if form.get("admin_pass"):
        body["adminPass"] = form["admin_pass"]
    # The key pair (2.54, the pages' microversion is above it): "keep" sends nothing,
    # "none" removes it, "key:<name>" replaces it.
    key = form.get("key", "keep")
    if key == "none":
        body["key_name"] = None
    elif key.startswith("key:"):
        body["key_name"] = key[len("key:") :]
    return {"rebuild": body}


@page
async def rebuild(request: Request) -> Response:
    """A new root disk from the chosen image (same id, ports and volumes), with the
    rebuild's options."""
    server_id = request.path_params["server_id"]
    try:
        body = rebuild_body(await form_of(request))
    except ApiFailure as exc:
        return _back_with_error(request, server_id, exc, "rebuild")
    path = url_path("/v2.1/servers/{}/action", server_id)
    return await _server_change(request, "rebuild", "POST", path, body)


@page
async def attach_interface(request: Request) -> Response:
    """A new port on a network, or an existing port, hot-plugged into the server."""
    form = await form_of(request)
    choice = form.get("interface", "")  # "net:<id>" or "port:<id>"
    kind, _, value = choice.partition(":")
    attachment = {"port_id": value} if kind == "port" else {"net_id": value}
    path = url_path("/v2.1/servers/{}/os-interface", request.path_params["server_id"])
    return await _server_change(
        request, "interface", "POST", path, {"interfaceAttachment": attachment}
    )


@page
async def detach_interface(request: Request) -> Response:
    path = url_path(
        "/v2.1/servers/{}/os-interface/{}",
        request.path_params["server_id"],
        request.path_params["port_id"],
    )
    return await _server_change(request, "interface", "DELETE", path)


@page
async def attach_volume(request: Request) -> Response:
    api, form = apis_of(request), await form_of(request)
    server_id = request.path_params["server_id"]
    try:
        volume_id = form.get("volume_id", "")
        if not volume_id:
            size = int(form.get("size") or 1)
            body = {"volume": {"size": size, "name": form.get("volume_name") or None}}
            volume = (await api.volume.post("/v3/volumes", body))["volume"]
            volume = await wait_volume(api, volume["id"])
            if volume["status"] != "available":
                raise ApiFailure("volume", 409, f"The new volume is {volume['status']}.")
            volume_id = volume["id"]
        await api.compute.post(
            url_path("/v2.1/servers/{}/os-volume_attachments", server_id),
            {"volumeAttachment": {"volumeId": volume_id}},
        )
    except ApiFailure as exc:
        if exc.status == 401:
            raise
        return _back_with_error(request, server_id, exc)
    return redirect(request, f"/instances/{server_id}")


@page
async def associate_floating_ip(request: Request) -> Response:
    api, form = apis_of(request), await form_of(request)
    server_id = request.path_params["server_id"]
    try:
        fip_id = form.get("floatingip_id", "")
        if not fip_id:
            networks = await api.network.get("/v2.0/networks?router:external=true")
            if not networks["networks"]:
                raise ApiFailure("network", 404, "There is no external network to allocate from.")
            body = {"floatingip": {"floating_network_id": networks["networks"][0]["id"]}}
            fip_id = (await api.network.post("/v2.0/floatingips", body))["floatingip"]["id"]
        await api.network.put(
            url_path("/v2.0/floatingips/{}", fip_id),
            {"floatingip": {"port_id": form.get("port_id")}},
        )
    except ApiFailure as exc:
        if exc.status == 401:
            raise
        return _back_with_error(request, server_id, exc)
    return redirect(request, f"/instances/{server_id}")


async def _vnc_console_url(request: Request) -> str:
    """A console URL from Compute (a new token on its noVNC proxy), with the user's token."""
    body = {"remote_console": {"protocol": "vnc", "type": "novnc"}}
    answer = await apis_of(request).compute.post(
        url_path("/v2.1/servers/{}/remote-consoles", request.path_params["server_id"]), body
    )
    return answer["remote_console"]["url"]


@page(framed=True)
async def vnc_console_frame(request: Request) -> Response:
    """The server's screen, a page of its own (noVNC and static/console.js) that the
    server page's Console panel frames; the server asked for with the user's token, so
    another project's server is the API's 404 here as on its page."""
    server_id = request.path_params["server_id"]
    server = await apis_of(request).compute.get(url_path("/v2.1/servers/{}", server_id))
    return render(request, "console.html", server=server["server"])


@page
async def vnc_console(request: Request) -> Response:
    """To the server's screen full size: the console URL, opened on its noVNC proxy."""
    try:
        url = await _vnc_console_url(request)
    except ApiFailure as exc:
        if exc.status == 401:
            raise
        return _back_with_error(request, request.path_params["server_id"], exc)
    return RedirectResponse(url, status_code=303)


def console_websocket(console_url: str) -> str:
    """The websocket a noVNC page at `console_url` would open, as noVNC's vnc_lite.html
    makes it: the page's host and port, `ws` for `http`, and the `path` parameter (Nova's
    `?path=%3Ftoken%3D…`), else `websockify` with the older `token` parameter."""
    parts = urlsplit(console_url)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    query = parse_qs(parts.query)
    if "path" in query:
        path = query["path"][0]
    elif "token" in query:
        path = "websockify?" + urlencode({"token": query["token"][0]})
    else:
        path = "websockify"
    return f"{scheme}://{parts.netloc}/{path.lstrip('/')}"


@page
async def vnc_websocket(request: Request) -> Response:
    """A console for the console page's noVNC (static/console.js): the same console URL
    from Compute as the full-screen form gets, and the websocket its page would open."""
    try:
        url = await _vnc_console_url(request)
    except ApiFailure as exc:
        if exc.status == 401:
            raise
        error = {"error": exc.explanation, "request_id": exc.request_id}
        return JSONResponse(error, status_code=exc.status)
    return JSONResponse({"url": url, "websocket": console_websocket(url)})


@page
async def snapshot(request: Request) -> Response:
    api, form = apis_of(request), await form_of(request)
    server_id = request.path_params["server_id"]
    try:
        await api.compute.post(
            url_path("/v2.1/servers/{}/action", server_id),
            {"createImage": {"name": form.get("name") or f"snapshot of {server_id[:8]}"}},
        )
    except ApiFailure as exc:
        if exc.status == 401:
            raise
        return _back_with_error(request, server_id, exc)
    return redirect(request, "/images")


@page
async def detach_volume(request: Request) -> Response:
    api = apis_of(request)
    server_id, volume_id = request.path_params["server_id"], request.path_params["volume_id"]
    try:
        await api.compute.delete(
            url_path("/v2.1/servers/{}/os-volume_attachments/{}", server_id, volume_id)
        )
    except ApiFailure as exc:
        if exc.status == 401:
            raise
        return _back_with_error(request, server_id, exc)
    return redirect(request, f"/instances/{server_id}")


@page
async def disassociate_floating_ip(request: Request) -> Response:
    api = apis_of(request)
    server_id, fip_id = request.path_params["server_id"], request.path_params["fip_id"]
    try:
        await api.network.put(
            url_path("/v2.0/floatingips/{}", fip_id), {"floatingip": {"port_id": None}}
        )
    except ApiFailure as exc:
        if exc.status == 401:
            raise
        return _back_with_error(request, server_id, exc)
    return redirect(request, f"/instances/{server_id}")


@page
async def keypairs(request: Request) -> Response:
    body = await apis_of(request).compute.get("/v2.1/os-keypairs")
    return render(
        request,
        "keypairs.html",
        keypairs=[k["keypair"] for k in body["keypairs"]],
        form={},
        error=None,
        created=None,
    )


@page
async def create_keypair(request: Request) -> Response:
    api, form = apis_of(request), await form_of(request)
    body: dict[str, Any] = {"name": form.get("name", "")}
    if form.get("public_key"):
        body["public_key"] = form["public_key"]
    created, error = None, None
    try:
        created = (await api.compute.post("/v2.1/os-keypairs", {"keypair": body}))["keypair"]
    except ApiFailure as exc:
        if exc.status == 401:
            raise
        error = exc
    listed = await api.compute.get("/v2.1/os-keypairs")
    return render(
        request,
        "keypairs.html",
        status=error.status if error else 200,
        keypairs=[k["keypair"] for k in listed["keypairs"]],
        form=form if error else {},
        error=error,
        created=created,
    )


@page
async def delete_keypair(request: Request) -> Response:
    await apis_of(request).compute.delete(
        url_path("/v2.1/os-keypairs/{}", request.path_params["name"])
    )
    return redirect(request, "/key-pairs")


routes = [
    Route("/instances", instances, methods=["GET"]),
    Route("/instances/live", instances_live, methods=["GET"]),
    Route("/instances/launch", launch_form, methods=["GET"]),
    Route("/instances/launch", launch, methods=["POST"]),
    Route("/instances/{server_id}", instance, methods=["GET"]),
    Route("/instances/{server_id}/live", instance_live, methods=["GET"]),
    Route("/instances/{server_id}/action", instance_action, methods=["POST"]),
    Route("/instances/{server_id}/attach-volume", attach_volume, methods=["POST"]),
    Route("/instances/{server_id}/floating-ip", associate_floating_ip, methods=["POST"]),
    Route("/instances/{server_id}/snapshot", snapshot, methods=["POST"]),
    Route("/instances/{server_id}/resize", resize, methods=["POST"]),
    Route("/instances/{server_id}/rebuild", rebuild, methods=["POST"]),
    Route("/instances/{server_id}/interfaces", attach_interface, methods=["POST"]),
    Route("/instances/{server_id}/interfaces/{port_id}/detach", detach_interface, methods=["POST"]),
    Route("/instances/{server_id}/console", vnc_console_frame, methods=["GET"]),
    Route("/instances/{server_id}/console", vnc_console, methods=["POST"]),
    Route("/instances/{server_id}/console/websocket", vnc_websocket, methods=["POST"]),
    Route("/instances/{server_id}/volumes/{volume_id}/detach", detach_volume, methods=["POST"]),
    Route(
        "/instances/{server_id}/floating-ips/{fip_id}/disassociate",
        disassociate_floating_ip,
        methods=["POST"],
    ),
    Route("/key-pairs", keypairs, methods=["GET"]),
    Route("/key-pairs", create_keypair, methods=["POST"]),
    Route("/key-pairs/{name}/delete", delete_keypair, methods=["POST"]),
]
