"""How volumes, snapshots, attachments and types look on the wire (Block Storage v3
api-ref), per microversion and caller."""

from __future__ import annotations

import json as jsonlib
from typing import Any

from starlette.requests import Request

from cumulo.volume import states
from cumulo.volume.api.common import at_least, isotime, links
from cumulo.volume.models import Attachment, Snapshot, Volume, VolumeType


def volume_summary(request: Request, v: Volume) -> dict[str, Any]:
    return {"id": v.id, "name": v.name, "links": links(request, "volumes", v.id)}


def volume_detail(
    request: Request,
    v: Volume,
    *,
    vtype: VolumeType,
    metadata: dict[str, str],
    image_metadata: dict[str, str],
    attachments: list[Attachment],
    admin: bool,
    sees_hosts: bool,
    extended: bool = True,
    legacy: bool = False,
) -> dict[str, Any]:
    """extended: show and list detail, which Cinder's extensions add the owner, host,
    migration and image metadata attributes to (create and update answer without).
    legacy: Cinder's legacy_detail (what manage answers), without the fields later
    microversions add."""
    body: dict[str, Any] = {
        "id": v.id,
        "name": v.name,
        "description": v.description,
        # managing shows as creating, error_managing as error (Cinder's v3 view).
        "status": states.SHOWN_AS.get(v.status, v.status),
        "size": v.size,
        "availability_zone": v.availability_zone,
        "created_at": isotime(v.created_at),
        "updated_at": isotime(v.updated_at),
        "attachments": [
            attachment_in_volume(a, sees_hosts) for a in attachments if a.status == states.ATTACHED
        ],
        "bootable": "true" if v.bootable else "false",
        "encrypted": bool(v.encryption_key_id),
        "links": links(request, "volumes", v.id),
        "metadata": metadata,
        "multiattach": v.multiattach,
        "replication_status": None,
        "consistencygroup_id": None,
        "snapshot_id": v.snapshot_id,
        "source_volid": v.source_volid,
        "user_id": v.user_id,
        "volume_type": vtype.name,
    }
    if admin:
        body["migration_status"] = v.migration_status
    if extended:
        body["os-vol-tenant-attr:tenant_id"] = v.project_id
        if image_metadata:
            body["volume_image_metadata"] = image_metadata
        if admin:
            body["os-vol-host-attr:host"] = v.host or None  # "" until scheduled
            body["os-vol-mig-status-attr:migstat"] = v.migration_status
            # A migrated volume's data takes its name again (update_migrated_volume).
            body["os-vol-mig-status-attr:name_id"] = None
    if legacy:
        return body
    if at_least(request, 3, 13):
        body["group_id"] = v.group_id
    if at_least(request, 3, 21) and admin:
        body["provider_id"] = None
    if at_least(request, 3, 48):
        body["service_uuid"] = None
        body["shared_targets"] = False
    if at_least(request, 3, 61) and admin:
        body["cluster_name"] = None
    if at_least(request, 3, 63):
        body["volume_type_id"] = vtype.id
    if at_least(request, 3, 64) and v.encryption_key_id:
        body["encryption_key_id"] = v.encryption_key_id
    if at_least(request, 3, 65):
        body["consumes_quota"] = True
    return body


def attachment_in_volume(a: Attachment, sees_hosts: bool) -> dict[str, Any]:
    """An attachment as it appears in the volume's `attachments` list (the host only
    to admins and services, as Cinder)."""
    return {
        "server_id": a.instance_uuid,
        "attachment_id": a.id,
        "attached_at": isotime(a.attached_at),
        "host_name": a.attached_host if sees_hosts else None,
        "volume_id": a.volume_id,
        "device": a.mountpoint,
        "id": a.volume_id,
    }


def attachment(a: Attachment, *, detail: bool = True) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": a.id,
        "status": a.status,
        "instance": a.instance_uuid,
        "volume_id": a.volume_id,
    }
    if detail:
        body.update(
            attached_at=isotime(a.attached_at),
            detached_at=None,
            attach_mode=a.attach_mode,
            connection_info=jsonlib.loads(a.connection_info) if a.connection_info else {},
        )
    return body


def snapshot(
    request: Request,
    s: Snapshot,
    metadata: dict[str, str],
    *,
    extended: bool = True,
    legacy: bool = False,
) -> dict[str, Any]:
    """extended: show and list detail, with Cinder's extended snapshot attributes;
    legacy: the base view manage answers (no fields of later microversions)."""
    body: dict[str, Any] = {
        "id": s.id,
        "name": s.name,
        "description": s.description,
        "status": states.SHOWN_AS.get(s.status, s.status),
        "size": s.size,
        "volume_id": s.volume_id,
        "created_at": isotime(s.created_at),
        "updated_at": isotime(s.updated_at),
        "metadata": metadata,
    }
    if extended:
        progress = s.progress or ("100%" if s.status == states.AVAILABLE else "0%")
        body["os-extended-snapshot-attributes:progress"] = progress
        body["os-extended-snapshot-attributes:project_id"] = s.project_id
    if legacy:
        return body
    if at_least(request, 3, 14):
        body["group_snapshot_id"] = None
    if at_least(request, 3, 41):
        body["user_id"] = s.user_id
    if at_least(request, 3, 65):
        body["consumes_quota"] = True
    return body


# Extra specs every reader of a type sees; the rest only admins (Cinder's policy).
USER_VISIBLE_EXTRA_SPECS = ("multiattach", "RESKEY:availability_zones", "replication_enabled")


def volume_type(
    t: VolumeType,
    extra_specs: dict[str, str],
    *,
    admin: bool,
    form: str = "show",
) -> dict[str, Any]:
    """A type as show and list give it (form "show"), or as create ("create": with the
    access flag, without the QoS id) and update ("update": neither) answer."""
    if not admin:
        extra_specs = {k: v for k, v in extra_specs.items() if k in USER_VISIBLE_EXTRA_SPECS}
    body: dict[str, Any] = {
        "id": t.id,
        "name": t.name,
        "description": t.description,
        "is_public": t.is_public,
        "extra_specs": extra_specs,
    }
    if form in ("show", "create"):
        body["os-volume-type-access:is_public"] = t.is_public
    if form == "show" and admin:
        body["qos_specs_id"] = t.qos_specs_id
    return body
