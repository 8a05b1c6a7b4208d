"""How a server looks on the wire, microversion by microversion (api-ref: Servers)."""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

from starlette.requests import Request

from cumulo.common.context import RequestContext
from cumulo.common.faults import BadRequest
from cumulo.compute import image_properties
from cumulo.compute.api.common import base_url, links, version
from cumulo.compute.image_signature import trusted_certs_of
from cumulo.compute.models import Instance, InstanceFault
from cumulo.compute.service import AUTO_DISK_CONFIG
from cumulo.compute.states import api_status


def isotime(value: datetime | None) -> str | None:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ") if value else None


def usage_time(value: datetime | None) -> str | None:
    return value.strftime("%Y-%m-%dT%H:%M:%S.%f") if value else None


def host_id(inst: Instance) -> str:
    """An opaque id of the host, unique per project (Nova's hostId)."""
    if not inst.host:
        return ""
    return hashlib.sha224((inst.project_id + inst.host).encode()).hexdigest()


def addresses(inst: Instance, extended: bool = True) -> dict[str, list[dict[str, Any]]]:
    """The server's addresses by network name from its network info cache: fixed, then
    the floating addresses associated with them. `extended` adds the OS-EXT-IPS type
    and MAC (server show and detail; not /ips, nor update and rebuild before 2.75)."""
    result: dict[str, list[dict[str, Any]]] = {}
    for entry in inst.network_info or []:
        label = entry.get("network_name") or entry["network_id"]
        found = [(ip["ip_address"], "fixed") for ip in entry.get("fixed_ips", [])]
        found += [(fip, "floating") for fip in entry.get("floating_ips", [])]
        for addr, kind in found:
            item: dict[str, Any] = {"version": 6 if ":" in addr else 4, "addr": addr}
            if extended:
                item["OS-EXT-IPS:type"] = kind
                item["OS-EXT-IPS-MAC:mac_addr"] = entry["mac"]
            result.setdefault(label, []).append(item)
    return result


def disk_config(inst: Instance) -> str:
    return "AUTO" if (inst.system_metadata or {}).get(AUTO_DISK_CONFIG) else "MANUAL"


def disk_config_changes(inst: Instance, value: Any) -> dict[str, Any]:
    """The instance change that records OS-DCF:diskConfig (AUTO or MANUAL)."""
    if value not in ("AUTO", "MANUAL"):
        raise BadRequest(
            f"Invalid input for field/attribute OS-DCF:diskConfig. Value: {value}. "
            f"{value!r} is not one of ['AUTO', 'MANUAL']"
        )
    sysmeta = {k: v for k, v in (inst.system_metadata or {}).items() if k != AUTO_DISK_CONFIG}
    if value == "AUTO":
        sysmeta[AUTO_DISK_CONFIG] = "True"
    return {"system_metadata": sysmeta}


def flavor_view(request: Request, inst: Instance, show_extra_specs: bool) -> dict[str, Any]:
    flavor = inst.flavor
    if version(request) < (2, 47):
        return {
            "id": flavor["id"],
            "links": [{"rel": "bookmark", "href": f"{base_url(request)}/flavors/{flavor['id']}"}],
        }
    body = {
        "vcpus": flavor["vcpus"],
        "ram": flavor["memory_mb"],
        "disk": flavor["root_gb"],
        "ephemeral": flavor.get("ephemeral_gb", 0),
        "swap": flavor.get("swap", 0),
        "original_name": flavor["name"],
    }
    if show_extra_specs:
        body["extra_specs"] = dict(flavor.get("extra_specs") or {})
    return body


def image_view(request: Request, inst: Instance) -> Any:
    if not inst.image_ref:
        return ""  # booted from a volume
    body: dict[str, Any] = {
        "id": inst.image_ref,
        "links": [{"rel": "bookmark", "href": f"{base_url(request)}/images/{inst.image_ref}"}],
    }
    if version(request) >= (2, 98):
        # The image's known properties, as the server keeps them.
        body["properties"] = image_properties.shown(inst.system_metadata)
    return body


def fault_view(fault: InstanceFault | None, is_admin: bool) -> dict[str, Any] | None:
    if fault is None:
        return None
    body: dict[str, Any] = {
        "code": fault.code,
        "created": isotime(fault.created_at),
        "message": fault.message,
    }
    if is_admin or fault.code != 500:
        body["details"] = fault.details or ""
    return body


# The responses a server body is part of: show and list detail are the full body; update
# (PUT) and rebuild gave only part of it before 2.75.
_SHOW, _DETAIL, _UPDATE, _REBUILD = "show", "detail", "update", "rebuild"
_PROGRESS_STATUSES = {"ACTIVE", "BUILD", "REBUILD", "RESIZE", "VERIFY_RESIZE", "MIGRATING"}


def server_view(
    request: Request,
    ctx: RequestContext,
    inst: Instance,
    *,
    is_admin: bool,
    fault: InstanceFault | None = None,
    volumes: list[dict[str, Any]] | None = None,
    action: str = _SHOW,
) -> dict[str, Any]:
    """The server at the negotiated microversion as `action` (show, detail, update,
    rebuild) answers it (api-ref: Servers)."""
    v = version(request)
    full = action in (_SHOW, _DETAIL) or v >= (2, 75)
    status = api_status(inst.vm_state, inst.task_state)
    body: dict[str, Any] = {
        "id": inst.uuid,
        "name": inst.display_name,
        "status": status,
        "tenant_id": inst.project_id,
        "user_id": inst.user_id,
        "metadata": dict(inst.metadata_items or {}),
        "hostId": host_id(inst),
        "image": image_view(request, inst),
        "flavor": flavor_view(request, inst, show_extra_specs=True),
        "created": isotime(inst.created_at),
        "updated": isotime(inst.updated_at or inst.created_at),
        "addresses": addresses(inst, extended=full),
        "accessIPv4": inst.access_ip_v4 or "",
        "accessIPv6": inst.access_ip_v6 or "",
        "links": links(request, "servers", inst.uuid),
        "OS-DCF:diskConfig": disk_config(inst),
    }
    if status in _PROGRESS_STATUSES:
        body["progress"] = inst.progress or 0
    fault_body = fault_view(fault, is_admin) if status in ("ERROR", "DELETED") else None
    if fault_body:
        body["fault"] = fault_body
    if full:
        body.update(
            {
                "OS-EXT-AZ:availability_zone": inst.availability_zone or "",
                "config_drive": "True" if inst.config_drive else "",
                "key_name": inst.key_name,
                "OS-SRV-USG:launched_at": usage_time(inst.launched_at),
                "OS-SRV-USG:terminated_at": usage_time(inst.terminated_at),
                "OS-EXT-STS:task_state": inst.task_state,
                "OS-EXT-STS:vm_state": inst.vm_state,
                "OS-EXT-STS:power_state": inst.power_state,
                "os-extended-volumes:volumes_attached": volumes or [],
            }
        )
        if inst.security_groups:
            # Nova leaves the key out for a server without groups.
            body["security_groups"] = [{"name": name} for name in inst.security_groups]
    elif action == _REBUILD and v >= (2, 54):
        body["key_name"] = inst.key_name
    if full and is_admin:
        body["OS-EXT-SRV-ATTR:host"] = inst.host
        body["OS-EXT-SRV-ATTR:hypervisor_hostname"] = inst.node
        body["OS-EXT-SRV-ATTR:instance_name"] = f"instance-{inst.id:08x}"
        if v >= (2, 3):
            body["OS-EXT-SRV-ATTR:hostname"] = inst.hostname
            body["OS-EXT-SRV-ATTR:reservation_id"] = inst.reservation_id
            body["OS-EXT-SRV-ATTR:launch_index"] = inst.launch_index
            body["OS-EXT-SRV-ATTR:kernel_id"] = ""
            body["OS-EXT-SRV-ATTR:ramdisk_id"] = ""
            body["OS-EXT-SRV-ATTR:root_device_name"] = "/dev/vda"
            if action != _REBUILD:
                body["OS-EXT-SRV-ATTR:user_data"] = inst.user_data
    if action == _REBUILD and v >= (2, 57):
        body["user_data"] = inst.user_data
    if v >= (2, 9):
        body["locked"] = bool(inst.locked)
    if v >= (2, 16) and full and is_admin:
        body["host_status"] = "UP" if inst.host else ""
    if v >= (2, 19):
        body["description"] = inst.display_description
    if v >= (2, 26):
        body["tags"] = list(inst.tags or [])
    if v >= (2, 63):
        body["trusted_image_certificates"] = trusted_certs_of(inst.system_metadata)
    if v >= (2, 71) and action != _DETAIL:
        body["server_groups"] = [inst.server_group_id] if inst.server_group_id else []
    if v >= (2, 73):
        body["locked_reason"] = inst.locked_reason
    if v >= (2, 90):
        # Shown to every user from 2.90 (admins have it among the extended attributes).
        body.setdefault("OS-EXT-SRV-ATTR:hostname", inst.hostname)
    if v >= (2, 96):
        # The zone the server was asked for (at create, or unshelve from 2.77; changed
        # with 2.104): moves stay in it; null when it may go anywhere.
        body["pinned_availability_zone"] = inst.pinned_availability_zone
    if v >= (2, 100):
        # The hints given at create ({} if none; each a list of strings, as Nova).
        body["scheduler_hints"] = dict(inst.scheduler_hints or {})
    return body


def server_brief(request: Request, inst: Instance) -> dict[str, Any]:
    return {
        "id": inst.uuid,
        "name": inst.display_name,
        "links": links(request, "servers", inst.uuid),
    }
