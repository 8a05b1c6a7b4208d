"""Block device mappings kept in image properties (Nova's nova/block_device.py): what a
volume-backed server's snapshot image records, and how a boot from such an image takes
them back into its request.

The image of a volume-backed snapshot holds no data: its `block_device_mapping`
property (a JSON list of BDM v2 dicts, `bdm_v2` "True") names a Block Storage snapshot
per volume, and a server booted from the image gets a new volume from each.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

# Nova's bdm_new_fields minus connection_info: the keys of get_image_mapping().
_IMAGE_MAPPING_FIELDS = (
    "source_type", "destination_type", "guest_format", "device_type", "disk_bus",
    "boot_index", "device_name", "delete_on_termination", "snapshot_id", "volume_id",
    "volume_size", "image_id", "no_device", "tag", "volume_type", "encrypted",
    "encryption_secret_uuid", "encryption_format", "encryption_options",
)  # fmt: skip
# block_device.snapshot_from_bdm: what a snapshot mapping keeps of the volume's mapping.
_FROM_TEMPLATE = (
    "disk_bus", "device_type", "boot_index", "delete_on_termination", "volume_size",
    "device_name",
)  # fmt: skip
# The volume's image metadata that is the image itself, not its properties
# (VIM_IMAGE_ATTRIBUTES: get_image_metadata_from_volume drops them).
_IMAGE_ATTRIBUTES = (
    "image_id", "image_name", "size", "checksum", "container_format", "disk_format",
    "min_ram", "min_disk",
)  # fmt: skip
# Never inherited by a snapshot (NON_INHERITABLE_IMAGE_PROPERTIES, SM_SKIP_KEYS) and the
# ones snapshot_volume_backed sets afresh.
_NOT_INHERITED = {
    "cinder_encryption_key_id", "cinder_encryption_key_deletion_policy", "img_signature",
    "img_signature_hash_method", "img_signature_key_type", "img_signature_certificate_uuid",
    "mappings", "block_device_mapping", "img_mappings", "img_block_device_mapping",
    "bdm_v2", "root_device_name",
}  # fmt: skip


def snapshot_mapping(template: dict[str, Any], snapshot_id: str) -> dict[str, Any]:
    """The image's mapping of a volume snapshotted as `snapshot_id`: a new volume from it,
    laid out as `template` (the server's mapping); nothing names the old volume."""
    mapping: dict[str, Any] = dict.fromkeys(_IMAGE_MAPPING_FIELDS)
    mapping.update({k: template.get(k) for k in _FROM_TEMPLATE})
    mapping.update(source_type="snapshot", destination_type="volume", snapshot_id=snapshot_id)
    return mapping


def snapshot_image_body(
    name: str,
    volume_image_metadata: dict[str, Any],
    extra_properties: dict[str, str],
    mappings: list[dict[str, Any]],
    root_device_name: str | None,
) -> dict[str, Any]:
    """The Glance v2 create body of a volume-backed server's snapshot (Nova's
    snapshot_volume_backed then glance `_create_v2` with force_activate: raw/bare, the
    data an empty upload). Properties: the root volume's image metadata as Nova copies
    it, then `image_type` snapshot, then the user's metadata over them."""
    properties = {
        key: str(value)
        for key, value in volume_image_metadata.items()
        if key not in _IMAGE_ATTRIBUTES
        and key not in _NOT_INHERITED
        and not key.startswith("os_glance")
        and value is not None
    }
    properties["image_type"] = "snapshot"
    properties.update(extra_properties)
    if root_device_name:
        properties["root_device_name"] = root_device_name
    if mappings:
        properties["block_device_mapping"] = json.dumps(mappings)
        properties["bdm_v2"] = "True"
    return {
        **properties,
        "name": name,
        "visibility": "private",
        "disk_format": "raw",
        "container_format": "bare",
        "min_ram": _int(volume_image_metadata.get("min_ram")),
        "min_disk": _int(volume_image_metadata.get("min_disk")),
    }


def image_defined_mappings(image: dict[str, Any]) -> list[dict[str, Any]]:
    """An image's BDM v2 mappings (its `block_device_mapping` when `bdm_v2`), in the
    request's shape (`uuid` for the source's id); no_device ones left out."""
    if str(image.get("bdm_v2")).lower() != "true":
        return []
    raw = image.get("block_device_mapping")
    try:
        mappings = json.loads(raw) if isinstance(raw, str) else raw
    except ValueError:
        return []
    if not isinstance(mappings, list):
        return []
    found = []
    for bdm in mappings:
        if not isinstance(bdm, dict) or bdm.get("no_device"):
            continue
        source = bdm.get("source_type")
        request = {k: v for k, v in bdm.items() if v is not None and k in _IMAGE_MAPPING_FIELDS}
        request.pop(f"{source}_id", None)
        request["uuid"] = bdm.get(f"{source}_id")
        found.append(request)
    return found


def merge_image_mappings(requested: list[Any], image_mappings: list[dict[str, Any]]) -> list[Any]:
    """Nova's _check_and_transform_bdm: when the image's mappings have the root, the
    request's image root (boot_index 0, source image) gives way; then the request's
    mappings override the image's of the same device name (_merge_bdms_lists)."""
    if any(_boot_index(b) == 0 for b in image_mappings):
        requested = [
            b
            for b in requested
            if not (isinstance(b, dict) and _boot_index(b) == 0 and b.get("source_type") == "image")
        ]
    names = {b.get("device_name") for b in requested if isinstance(b, dict)} - {None, ""}
    return [*requested, *(b for b in image_mappings if b.get("device_name") not in names)]


def _boot_index(bdm: dict[str, Any]) -> int | None:
    try:
        return int(bdm.get("boot_index"))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def _int(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


class StatusWaitFailed(Exception):
    """A Block Storage volume or snapshot went to an error status, or not in time."""


async def wait_for_status(
    client: Any, token: str, path: str, kind: str, want: str, timeout: float, **kwargs: Any
) -> None:
    """Poll Block Storage's `path` (a volume or snapshot, `kind` its body's key) until
    its status is `want`; an error status or the timeout raises StatusWaitFailed."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        status = (await client.json("GET", path, token, **kwargs))[kind]["status"]
        if status == want:
            return
        if status.startswith("error"):
            raise StatusWaitFailed(f"{kind} {path.rsplit('/', 1)[-1]} is {status}")
        if loop.time() > deadline:
            raise StatusWaitFailed(f"{kind} {path.rsplit('/', 1)[-1]} is still {status}")
        await asyncio.sleep(0.25)
