"""/v2.1/servers: create, list, list detail, show, update, delete (api-ref: Servers)."""

from __future__ import annotations

import base64
import binascii
import functools
from collections.abc import Callable
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr
from sqlalchemy import select
from sqlalchemy.orm import Session, load_only
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cumulo.common.app import json_body, validate
from cumulo.common.faults import BadRequest, Conflict, Forbidden, NotFound
from cumulo.common.openapi import describes, wrapped
from cumulo.compute.api import server_security, wire
from cumulo.compute.api.common import (
    authorize,
    base_url,
    compute_of,
    json,
    limit_and_marker,
    next_link,
    no_content,
    version,
)
from cumulo.compute.api.views import disk_config_changes, server_brief, server_view
from cumulo.compute.models import BlockDeviceMapping, Instance, InstanceFault
from cumulo.compute.service import CreateRequest
from cumulo.compute.states import VmState, states_for_statuses

MAX_USER_DATA = 65535


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", populate_by_name=True)


class NetworkRequest(_Strict):
    uuid: StrictStr | None = None
    port: StrictStr | None = None
    fixed_ip: StrictStr | None = None
    tag: Any = None  # checked with the microversion (_check_device_tag)


class SecurityGroupRef(_Strict):
    name: StrictStr = Field(min_length=1, max_length=255)


class ServerCreateBody(_Strict):
    name: StrictStr = Field(min_length=1, max_length=255, pattern=r"^\S(.*\S)?$")
    image_ref: StrictStr | None = Field(None, alias="imageRef")
    flavor_ref: StrictStr | StrictInt = Field(alias="flavorRef")
    networks: Literal["auto", "none"] | list[NetworkRequest] | None = None
    key_name: StrictStr | None = Field(None, max_length=255)
    user_data: StrictStr | None = None
    metadata: dict[StrictStr, StrictStr] = Field(default_factory=dict)
    security_groups: list[SecurityGroupRef] | None = None
    availability_zone: StrictStr | None = Field(None, max_length=255)
    config_drive: StrictBool | StrictStr | None = None
    admin_pass: StrictStr | None = Field(None, alias="adminPass")
    description: StrictStr | None = Field(None, max_length=255)
    tags: list[StrictStr] = Field(default_factory=list, max_length=50)
    min_count: StrictInt | StrictStr = 1
    max_count: StrictInt | StrictStr | None = None
    return_reservation_id: StrictBool | StrictStr = False
    access_ip_v4: StrictStr | None = Field(None, alias="accessIPv4")
    access_ip_v6: StrictStr | None = Field(None, alias="accessIPv6")
    disk_config: Literal["AUTO", "MANUAL"] | None = Field(None, alias="OS-DCF:diskConfig")
    block_device_mapping_v2: list[dict[str, Any]] = Field(default_factory=list)
    hostname: Any = None
    personality: Any = None
    trusted_image_certificates: Any = None  # checked with the microversion (2.63)


def _count(value: int | str, field: str) -> int:
    try:
        count = int(value)
    except (TypeError, ValueError):
        raise BadRequest(f"Invalid input for field/attribute {field}. Value: {value}.") from None
    if count < 1:
        raise BadRequest(
            f"Invalid input for field/attribute {field}. Value: {count}. "
            f"{count} is less than the minimum of 1"
        )
    return count


def _server_list_hint(hints: dict[str, Any], name: str) -> list[str]:
    """A same_host / different_host hint: one server UUID or a list of them."""
    value = hints.get(name)
    if value is None:
        return []
    servers = [value] if isinstance(value, str) else value
    if not isinstance(servers, list) or not all(
        isinstance(v, str) and wire.is_uuid(v) for v in servers
    ):
        raise BadRequest(f"Invalid input for field/attribute {name}. Value: {value}.")
    return servers


def _kept_hints(hints: dict[str, Any]) -> dict[str, list[str]]:
    """The hints as the server keeps and shows them (2.100): each one a list of strings,
    a single value made a list of one (Nova's request spec)."""
    return {
        name: [str(v) for v in value] if isinstance(value, list) else [str(value)]
        for name, value in hints.items()
    }


# Device role tags at boot (Nova's create schemas): networks from 2.32 to 2.36 (2.37
# dropped them by mistake), block devices at 2.32 only (2.33 did); both again from 2.42.
_NETWORK_TAGS = (((2, 32), (2, 36)), ((2, 42), None))
_BDM_TAGS = (((2, 32), (2, 32)), ((2, 42), None))


def _check_device_tag(
    v: tuple[int, int], field: str, tag: Any, versions: tuple[tuple[Any, Any], ...]
) -> None:
    """A device role tag in `field`: refused where the microversion has none, checked
    where it has."""
    if not any(low <= v and (high is None or v <= high) for low, high in versions):
        raise BadRequest(
            f"Invalid input for field/attribute {field}. "
            "Additional properties are not allowed ('tag' was unexpected)"
        )
    wire.tag("tag", tag)


def _truthy(value: bool | str | None) -> bool:
    return value is True or (isinstance(value, str) and value.lower() in ("true", "1", "yes"))


def _parse_create(request: Request, data: Any) -> tuple[CreateRequest, bool]:
    if not isinstance(data, dict) or not isinstance(data.get("server"), dict):
        raise BadRequest("Invalid input for field/attribute server: a 'server' object is required.")
    hints = data.get("os:scheduler_hints") or data.get("OS-SCH-HNT:scheduler_hints") or {}
    if not isinstance(hints, dict):
        raise BadRequest("Invalid input for field/attribute os:scheduler_hints.")
    body = validate(ServerCreateBody, data["server"])
    v = version(request)
    if "hostname" in body.model_fields_set and v < (2, 90):
        raise BadRequest("Additional properties are not allowed ('hostname' was unexpected)")
    trusted_certs = None
    if "trusted_image_certificates" in body.model_fields_set:
        if v < (2, 63):
            raise BadRequest(
                "Additional properties are not allowed ('trusted_image_certificates' was "
                "unexpected)"
            )
        trusted_certs = wire.trusted_certs(body.trusted_image_certificates)
    requested_hostname = None
    if "hostname" in body.model_fields_set:
        requested_hostname = wire.hostname(body.hostname, fqdn=v >= (2, 94))
    if body.networks is None:
        if v >= (2, 37):
            raise BadRequest(
                "Invalid input for field/attribute networks: 'networks' is a "
                "required property from microversion 2.37."
            )
        # Nova: none named (before 2.37) is not "auto": the one network the project
        # can use, or no network, never an auto-allocated one.
        networks: Any = []
    elif isinstance(body.networks, list):
        networks = []
        for net in body.networks:
            if not net.uuid and not net.port:
                raise BadRequest(
                    "Invalid input for field/attribute networks: each network "
                    "needs a uuid or a port."
                )
            if "tag" in net.model_fields_set:
                _check_device_tag(v, "networks", net.tag, _NETWORK_TAGS)
            networks.append(net.model_dump(exclude_none=True))
    else:
        networks = body.networks
    if body.user_data is not None:
        try:
            decoded = base64.b64decode(body.user_data, validate=True)
        except (binascii.Error, ValueError):
            raise BadRequest("User data needs to be valid base 64.") from None
        if len(decoded) > MAX_USER_DATA:
            raise BadRequest(f"User data is too long: at most {MAX_USER_DATA} bytes.")
    for key, value in body.metadata.items():
        if not 1 <= len(key) <= 255 or len(value) > 255:
            raise BadRequest(
                "Invalid input for field/attribute metadata: keys are 1-255 "
                "characters and values at most 255."
            )
    if len(body.metadata) > 128:
        raise Forbidden("Quota exceeded for metadata_items: at most 128 metadata items.")
    for tag in body.tags:
        if not 1 <= len(tag) <= 60 or "/" in tag or "," in tag:
            raise BadRequest(f"Invalid input for field/attribute tags. Value: {tag}.")
    for mapping in body.block_device_mapping_v2:
        if isinstance(mapping, dict) and "tag" in mapping:
            _check_device_tag(v, "block_device_mapping_v2", mapping["tag"], _BDM_TAGS)
    min_count = _count(body.min_count, "min_count")
    max_count = _count(body.max_count if body.max_count is not None else min_count, "max_count")
    if max_count < min_count:
        raise BadRequest("min_count must be <= max_count")
    if requested_hostname and max_count > 1:
        raise BadRequest("Unable to allocate a single hostname to multiple instances")
    groups = [g.name for g in body.security_groups] if body.security_groups else ["default"]
    request_ = CreateRequest(
        name=body.name,
        flavor_ref=str(body.flavor_ref),
        image_ref=body.image_ref or None,
        networks=networks,
        key_name=body.key_name,
        user_data=body.user_data,
        metadata=body.metadata,
        security_groups=list(dict.fromkeys(groups)),
        availability_zone=body.availability_zone,
        config_drive=_truthy(body.config_drive),
        admin_pass=body.admin_pass,
        description=body.description,
        tags=list(dict.fromkeys(body.tags)),
        min_count=min_count,
        max_count=max_count,
        access_ip_v4=wire.access_ip("accessIPv4", body.access_ip_v4),
        access_ip_v6=wire.access_ip("accessIPv6", body.access_ip_v6),
        server_group=hints.get("group"),
        block_device_mapping=body.block_device_mapping_v2,
        auto_disk_config=body.disk_config == "AUTO",
        hostname=requested_hostname,
        trusted_certs=trusted_certs,
        injected_files=(
            wire.personality(body.personality, v) if "personality" in body.model_fields_set else []
        ),
        same_host=_server_list_hint(hints, "same_host"),
        different_host=_server_list_hint(hints, "different_host"),
        scheduler_hints=_kept_hints(hints),
    )
    return request_, _truthy(body.return_reservation_id)


@describes(
    body=wrapped(
        "server",
        (
            "name",
            "imageRef",
            "flavorRef",
            "networks",
            "security_groups",
            "key_name",
            "metadata",
            "user_data",
            "availability_zone",
            "block_device_mapping_v2",
            "config_drive",
            "min_count",
            "max_count",
            "adminPass",
            "description",
            "tags",
            "accessIPv4",
            "accessIPv6",
            "personality",
            "hostname",
            "trusted_image_certificates",
        ),
        required=("name", "flavorRef"),
    ),
    resource="server",
)
async def create_server(request: Request) -> Response:
    """POST /servers: 202 with the new server's id, links and adminPass."""
    ctx = await authorize(request, "compute:servers:create")
    create, return_reservation = _parse_create(request, await json_body(request))
    if create.tags and version(request) < (2, 52):
        raise BadRequest("Additional properties are not allowed ('tags' was unexpected)")
    service = compute_of(request)
    if create.networks != "none":
        await server_security.check_groups_exist(service, ctx, create.security_groups)
    instances, reservation_id, admin_pass = await service.create_servers(ctx, create)
    if return_reservation:
        return json({"reservation_id": reservation_id}, status=202)
    first = instances[0]
    body = {
        "server": {
            "id": first.uuid,
            "links": [
                {"rel": "self", "href": f"{base_url(request)}/v2.1/servers/{first.uuid}"},
                {"rel": "bookmark", "href": f"{base_url(request)}/servers/{first.uuid}"},
            ],
            "OS-DCF:diskConfig": "AUTO" if create.auto_disk_config else "MANUAL",
            "security_groups": [{"name": n} for n in create.security_groups],
            "adminPass": admin_pass,
        }
    }
    return json(
        body, status=202, headers={"Location": f"{base_url(request)}/v2.1/servers/{first.uuid}"}
    )


# -- list ---------------------------------------------------------------------------

_SORT_KEYS = {
    "created_at": Instance.created_at,
    "updated_at": Instance.updated_at,
    "display_name": Instance.display_name,
    "uuid": Instance.uuid,
    "vm_state": Instance.vm_state,
    "task_state": Instance.task_state,
    "launched_at": Instance.launched_at,
    "host": Instance.host,
    "node": Instance.node,
    "availability_zone": Instance.availability_zone,
    "project_id": Instance.project_id,
    "user_id": Instance.user_id,
    "image_ref": Instance.image_ref,
    "key_name": Instance.key_name,
    "hostname": Instance.hostname,
    "power_state": Instance.power_state,
}


def _parse_time(raw: str, name: str) -> datetime:
    try:
        return datetime.fromisoformat(raw.replace("Z", "+00:00")).replace(tzinfo=None)
    except ValueError:
        raise BadRequest(f"Invalid filter field: {name}. Value: {raw}.") from None


async def _list(request: Request, brief: bool = False) -> tuple[list[Instance], bool, Any, bool]:
    ctx = await authorize(request, "compute:servers:index")
    service = compute_of(request)
    q = request.query_params
    is_admin = service.policy.check("compute:servers:index:get_all_tenants", ctx)
    query = select(Instance)
    all_tenants = "all_tenants" in q and q.get("all_tenants", "").lower() not in ("0", "false")
    if all_tenants and not is_admin:
        raise Forbidden(
            "Policy doesn't allow compute:servers:index:get_all_tenants to be performed."
        )
    # Nova: a project filter only counts with all_tenants (lp:#1185290).
    project = q.get("project_id") or q.get("tenant_id")
    if all_tenants:
        if project:
            query = query.where(Instance.project_id == project)
    else:
        query = query.where(Instance.project_id == ctx.project_id)
    deleted = is_admin and q.get("deleted", "").lower() in ("true", "1")
    if statuses := q.getlist("status"):
        vm_states, tasks = states_for_statuses(statuses)
        if not vm_states:
            # Nova: an unknown status lists nothing before 2.38, and is refused from it.
            if version(request) >= (2, 38):
                raise BadRequest("Invalid status value")
            return [], False, ctx, is_admin
        if vm_states == [VmState.DELETED]:
            if not is_admin:
                raise Forbidden("Only administrators may list deleted instances")
            deleted = True
        query = query.where(Instance.vm_state.in_(vm_states))
        if "default" not in tasks:
            query = query.where(Instance.task_state.in_(tasks))
    query = query.where(Instance.deleted.is_(deleted))
    if image := q.get("image"):
        query = query.where(Instance.image_ref == image.rstrip("/").rsplit("/", 1)[-1])
    if reservation := q.get("reservation_id"):
        query = query.where(Instance.reservation_id == reservation)
    if since := q.get("changes-since"):
        query = query.where(Instance.updated_at >= _parse_time(since, "changes-since"))
    if before := q.get("changes-before"):
        query = query.where(Instance.updated_at <= _parse_time(before, "changes-before"))
    if "locked" in q:
        query = query.where(Instance.locked.is_(q["locked"].lower() in ("true", "1")))
    if is_admin:
        if host := q.get("host"):
            query = query.where(Instance.host == host)
        if node := q.get("node"):
            query = query.where(Instance.node == node)
    if is_admin or version(request) >= (2, 83):
        if user := q.get("user_id"):
            query = query.where(Instance.user_id == user)
        # Nova: `status` wins over vm_state / task_state given beside it.
        if not statuses and (vm_states := q.getlist("vm_state")):
            query = query.where(Instance.vm_state.in_(vm_states))
        if not statuses and (task_states := q.getlist("task_state")):
            query = query.where(Instance.task_state.in_(task_states))
    sort_keys = q.getlist("sort_key") or ["created_at"]
    sort_dirs = q.getlist("sort_dir") or ["desc"]
    for i, key in enumerate(sort_keys):
        column = _SORT_KEYS.get(key)
        if column is None:
            raise BadRequest(f"Invalid sort_key: {key}")
        direction = sort_dirs[i] if i < len(sort_dirs) else sort_dirs[-1]
        if direction not in ("asc", "desc"):
            raise BadRequest(f"Invalid sort_dir: {direction}")
        query = query.order_by(column.asc() if direction == "asc" else column.desc())
    query = query.order_by(Instance.id.desc())
    if brief:
        query = query.options(load_only(*_brief_columns(request)))
    rows = await service.db.run_read(_all, query)
    regex_filters = _regex_filters(request, is_admin)
    rows = [r for r in rows if _python_filters(request, r, regex_filters)]
    limit, marker = limit_and_marker(request)
    if marker:
        ids = [r.uuid for r in rows]
        if marker not in ids:
            raise BadRequest(f"marker [{marker}] not found")
        rows = rows[ids.index(marker) + 1 :]
    more = len(rows) > limit
    return rows[:limit], more, ctx, is_admin


def _all(s: Session, query) -> list[Instance]:
    return list(s.scalars(query))


_TAG_FILTERS = ("tags", "tags-any", "not-tags", "not-tags-any")


def _nova_text(value: Any) -> str:
    """A column as Nova's database compares it with a regular expression."""
    return "" if value is None else str(value)


# Filters Nova matches as regular expressions on an instance column: the version from
# which members may use them (admins always may), the column, and its text as Nova's
# database shows it.
_REGEX_FILTERS: dict[str, tuple[tuple[int, int], Any, Callable[[Instance], Any]]] = {
    "availability_zone": (
        (2, 83),
        Instance.availability_zone,
        lambda i: i.availability_zone or "nova",
    ),
    "config_drive": ((2, 83), Instance.config_drive, lambda i: "True" if i.config_drive else ""),
    "key_name": ((2, 83), Instance.key_name, lambda i: i.key_name),
    "created_at": ((2, 83), Instance.created_at, lambda i: i.created_at),
    "launched_at": ((2, 83), Instance.launched_at, lambda i: i.launched_at),
    "terminated_at": ((2, 83), Instance.terminated_at, lambda i: i.terminated_at),
    "power_state": ((2, 83), Instance.power_state, lambda i: i.power_state),
    "progress": ((2, 83), Instance.progress, lambda i: i.progress),
    "hostname": ((2, 90), Instance.hostname, lambda i: i.hostname),
}


def _regex_filters(request: Request, is_admin: bool) -> dict[str, str]:
    """The regular-expression filters this caller may use (Nova drops the others)."""
    q, v = request.query_params, version(request)
    return {
        name: q[name]
        for name, (since, _, _) in _REGEX_FILTERS.items()
        if name in q and (is_admin or v >= since)
    }


def _brief_columns(request: Request) -> list:
    """What a brief list reads of each server: its id and name, and what the filters
    applied in Python look at (not the JSON columns it does not show)."""
    q = request.query_params
    columns = [Instance.uuid, Instance.display_name]
    columns += [column for name, (_, column, _) in _REGEX_FILTERS.items() if name in q]
    if "flavor" in q:
        columns.append(Instance.flavor)
    if "ip" in q:
        columns.append(Instance.network_info)
    if any(key in q for key in _TAG_FILTERS):
        columns.append(Instance.tags)
    return columns


def _python_filters(request: Request, inst: Instance, regex_filters: dict[str, str]) -> bool:
    """Filters Nova applies as regular expressions or on JSON fields."""
    q = request.query_params
    if (name := q.get("name")) and not wire.name_matches(name, inst.display_name):
        return False
    for key, pattern in regex_filters.items():
        if not wire.name_matches(pattern, _nova_text(_REGEX_FILTERS[key][2](inst))):
            return False
    if flavor := q.get("flavor"):
        if str(inst.flavor.get("id")) != flavor.rstrip("/").rsplit("/", 1)[-1]:
            return False
    if ip := q.get("ip"):
        addrs = [i["ip_address"] for e in inst.network_info or [] for i in e["fixed_ips"]]
        if not any(wire.name_matches(ip, a) for a in addrs):
            return False
    if not any(key in q for key in _TAG_FILTERS):
        return True
    tags = set(inst.tags or [])
    for key, test in (
        ("tags", lambda want: want <= tags),
        ("tags-any", lambda want: want & tags),
        ("not-tags", lambda want: not want <= tags),
        ("not-tags-any", lambda want: not want & tags),
    ):
        if raw := q.get(key):
            if not test(set(raw.split(","))):
                return False
    return True


async def list_servers(request: Request) -> Response:
    rows, more, _ctx, _admin = await _list(request, brief=True)
    body: dict[str, Any] = {"servers": [server_brief(request, r) for r in rows]}
    if more and rows:
        body["servers_links"] = next_link(request, "servers", rows[-1].uuid)
    return json(body)


async def _details(request: Request, rows: list[Instance]):
    uuids = [r.uuid for r in rows]
    service = compute_of(request)
    async with service.db.read() as s:
        faults = {}
        for fault in await s.scalars(
            select(InstanceFault)
            .where(InstanceFault.instance_uuid.in_(uuids))
            .order_by(InstanceFault.id)
        ):
            faults[fault.instance_uuid] = fault
        volumes: dict[str, list[dict[str, Any]]] = {}
        for bdm in await s.scalars(
            select(BlockDeviceMapping).where(
                BlockDeviceMapping.instance_uuid.in_(uuids),
                BlockDeviceMapping.volume_id.is_not(None),
            )
        ):
            attached: dict[str, Any] = {"id": bdm.volume_id}
            if version(request) >= (2, 3):  # Nova shows delete_on_termination from 2.3
                attached["delete_on_termination"] = bdm.delete_on_termination
            volumes.setdefault(bdm.instance_uuid, []).append(attached)
    return faults, volumes


async def list_servers_detail(request: Request) -> Response:
    rows, more, ctx, is_admin = await _list(request)
    faults, volumes = await _details(request, rows)
    body: dict[str, Any] = {
        "servers": [
            server_view(
                request,
                ctx,
                r,
                is_admin=is_admin,
                fault=faults.get(r.uuid),
                volumes=volumes.get(r.uuid),
                action="detail",
            )
            for r in rows
        ]
    }
    if more and rows:
        body["servers_links"] = next_link(request, "servers/detail", rows[-1].uuid)
    return json(body)


async def render_server(
    request: Request, ctx, inst: Instance, is_admin: bool, action: str
) -> dict[str, Any]:
    """One server's body as show, update or rebuild answers it, with its fault and volumes."""
    faults, volumes = await _details(request, [inst])
    return server_view(
        request,
        ctx,
        inst,
        is_admin=is_admin,
        fault=faults.get(inst.uuid),
        volumes=volumes.get(inst.uuid),
        action=action,
    )


async def show_server(request: Request) -> Response:
    ctx = await authorize(request, "compute:servers:index")
    service = compute_of(request)
    inst = await service.get_instance(ctx, request.path_params["server_id"], "compute:servers:show")
    is_admin = service.policy.check("compute:servers:show:extended_attributes", ctx)
    return json({"server": await render_server(request, ctx, inst, is_admin, "show")})


class ServerUpdateBody(_Strict):
    name: StrictStr | None = Field(None, min_length=1, max_length=255, pattern=r"^\S(.*\S)?$")
    description: StrictStr | None = Field(None, max_length=255)
    access_ip_v4: StrictStr | None = Field(None, alias="accessIPv4")
    access_ip_v6: StrictStr | None = Field(None, alias="accessIPv6")
    disk_config: Literal["AUTO", "MANUAL"] | None = Field(None, alias="OS-DCF:diskConfig")
    hostname: Any = None
    pinned_availability_zone: StrictStr | None = Field(
        None, min_length=1, max_length=255, pattern=r"^\S(.*\S)?$"
    )


def _pin_change(inst: Instance, requested: str | None) -> str | None:
    """2.104: the zone a server is pinned to after PUT's `pinned_availability_zone`
    (Nova: null unpins; a zone re-pins only to where the server is; no direct change)."""
    if requested is None or requested == inst.pinned_availability_zone:
        return requested
    if inst.pinned_availability_zone is not None:
        raise Conflict(
            "Cannot change pinned availability zone directly. Unpin first by setting "
            "pinned_availability_zone to null."
        )
    current = inst.availability_zone or ""
    if requested != current:
        raise Conflict(
            f"Server can only be pinned to its current availability zone '{current}', "
            f"but '{requested}' was requested."
        )
    return requested


async def update_server(request: Request) -> Response:
    """PUT /servers/{id}: name, description (2.19), access IPs, hostname (2.90), the
    pinned availability zone (2.104)."""
    ctx = await authorize(request, "compute:servers:index")
    service = compute_of(request)
    data = await json_body(request)
    if not isinstance(data, dict) or not isinstance(data.get("server"), dict):
        raise BadRequest("Invalid input for field/attribute server.")
    body = validate(ServerUpdateBody, data["server"])
    if "description" in body.model_fields_set and version(request) < (2, 19):
        raise BadRequest("Additional properties are not allowed ('description' was unexpected)")
    if "hostname" in body.model_fields_set and version(request) < (2, 90):
        raise BadRequest("Additional properties are not allowed ('hostname' was unexpected)")
    if "pinned_availability_zone" in body.model_fields_set and version(request) < (2, 104):
        raise BadRequest(
            "Additional properties are not allowed ('pinned_availability_zone' was unexpected)"
        )
    inst = await service.get_instance(
        ctx, request.path_params["server_id"], "compute:servers:update"
    )
    changes: dict[str, Any] = {}
    fields = body.model_fields_set
    if "name" in fields and body.name is not None:
        changes["display_name"] = body.name
    if "description" in fields:
        changes["display_description"] = body.description
    if "access_ip_v4" in fields:
        changes["access_ip_v4"] = wire.access_ip("accessIPv4", body.access_ip_v4)
    if "access_ip_v6" in fields:
        changes["access_ip_v6"] = wire.access_ip("accessIPv6", body.access_ip_v6)
    if body.disk_config is not None:
        changes.update(disk_config_changes(inst, body.disk_config))
    if "hostname" in fields:
        changes["hostname"] = wire.hostname(body.hostname, fqdn=version(request) >= (2, 94))
    if "pinned_availability_zone" in fields:
        pinned = _pin_change(inst, body.pinned_availability_zone)
        if pinned != inst.pinned_availability_zone:
            changes["pinned_availability_zone"] = pinned
    if changes:
        inst = await service.update_instance(inst.uuid, changes)
    is_admin = service.policy.check("compute:servers:show:extended_attributes", ctx)
    return json({"server": await render_server(request, ctx, inst, is_admin, "update")})


async def delete_server(request: Request) -> Response:
    ctx = await authorize(request, "compute:servers:index")
    service = compute_of(request)
    inst = await service.get_instance(
        ctx, request.path_params["server_id"], "compute:servers:delete"
    )
    await service.delete(ctx, inst)
    return no_content()


def _volumes_boot(handler: Callable[[Request], Any]) -> Callable[[Request], Any]:
    """Nova's /os-volumes_boot: an old alias of /servers, gone (404) from 2.103."""

    @functools.wraps(handler)  # its OpenAPI description too
    async def alias(request: Request) -> Response:
        if version(request) >= (2, 103):
            raise NotFound("The resource could not be found.")
        return await handler(request)

    return alias


routes = [
    Route("/v2.1/servers", create_server, methods=["POST"]),
    Route("/v2.1/servers", list_servers, methods=["GET"]),
    Route("/v2.1/servers/detail", list_servers_detail, methods=["GET"]),
    Route("/v2.1/servers/{server_id}", show_server, methods=["GET"]),
    Route("/v2.1/servers/{server_id}", update_server, methods=["PUT"]),
    Route("/v2.1/servers/{server_id}", delete_server, methods=["DELETE"]),
    Route("/v2.1/os-volumes_boot", _volumes_boot(create_server), methods=["POST"]),
    Route("/v2.1/os-volumes_boot", _volumes_boot(list_servers), methods=["GET"]),
    Route("/v2.1/os-volumes_boot/detail", _volumes_boot(list_servers_detail), methods=["GET"]),
    Route("/v2.1/os-volumes_boot/{server_id}", _volumes_boot(show_server), methods=["GET"]),
    Route("/v2.1/os-volumes_boot/{server_id}", _volumes_boot(update_server), methods=["PUT"]),
    Route("/v2.1/os-volumes_boot/{server_id}", _volumes_boot(delete_server), methods=["DELETE"]),
]
