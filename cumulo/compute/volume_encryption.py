"""Opening encrypted volumes on a compute host (Nova's volume encryptors, front end).

A volume whose connection info says `encrypted` is opened with its key: Block Storage
says how it is encrypted (os-volume-encryption-metadata, `GET /v3/volumes/{id}/encryption`:
provider, cipher, key size and the Key Manager's id of its key), the Key Manager gives
the key (Barbican's `GET /v1/secrets/{id}/payload`), both asked with the user's token,
and the driver gets the passphrase Nova's encryptors make of it: the key's hex. A key
that cannot be had fails the attach: an encrypted volume is never attached as plain.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from cumulo.common.key_manager_client import secret_payload
from cumulo.common.service_client import ServiceClient, ServiceError, url_path
from cumulo.compute.virt.driver import (
    BlockDevice,
    DriverError,
    VolumeEncryption,
    encryption_provider,
    is_encrypted,
)

# The Block Storage microversion the volume calls are written for (as the attachments').
VOLUME_API = {"OpenStack-API-Version": "volume 3.44"}


async def volume_encryption(
    volumes: ServiceClient | None,
    key_manager: ServiceClient | None,
    token: str,
    volume_id: str,
) -> VolumeEncryption:
    """How to open encrypted volume `volume_id`; DriverError saying why it cannot be."""
    if volumes is None:
        raise DriverError(f"volume {volume_id} is encrypted and this host has no Block Storage")
    try:
        meta = await volumes.json(
            "GET", url_path("/v3/volumes/{}/encryption", volume_id), token, headers=VOLUME_API
        )
    except ServiceError as exc:
        raise DriverError(
            f"the encryption of volume {volume_id} could not be read from Block Storage "
            f"({exc.status}): {_reason(exc)}"
        ) from None
    meta = (meta or {}).get("encryption", meta) or {}
    key_id = meta.get("encryption_key_id")
    if not key_id:
        raise DriverError(f"volume {volume_id} is encrypted but Block Storage names no key for it")
    if meta.get("control_location") not in (None, "front-end"):
        raise DriverError(
            f"volume {volume_id} is encrypted at the {meta['control_location']}: "
            "this compute host only opens front-end encrypted volumes"
        )
    try:
        provider = encryption_provider(meta.get("provider"))
    except ValueError as exc:
        raise DriverError(f"volume {volume_id}: {exc}") from None
    if key_manager is None:
        raise DriverError(
            f"volume {volume_id} is encrypted and this compute host has no Key Manager "
            "to read its key from"
        )
    try:
        key = await secret_payload(key_manager, token, key_id)
    except ServiceError as exc:
        raise DriverError(
            f"the key {key_id} of encrypted volume {volume_id} could not be read from the "
            f"Key Manager ({exc.status}): {_reason(exc)}"
        ) from None
    if not key:
        raise DriverError(f"the key {key_id} of encrypted volume {volume_id} is empty")
    key_size = meta.get("key_size")
    return VolumeEncryption(
        provider=provider,
        passphrase=key.hex(),
        cipher=meta.get("cipher"),
        key_size=int(key_size) if key_size else None,
    )


async def with_encryption(
    volumes: ServiceClient | None,
    key_manager: ServiceClient | None,
    token: str,
    device: BlockDevice,
) -> BlockDevice:
    """`device` as the driver opens it: with its encryption when it is encrypted."""
    if not is_encrypted(device.connection_info):
        return device
    encryption = await volume_encryption(volumes, key_manager, token, device.volume_id)
    return dataclasses.replace(device, encryption=encryption)


def _reason(exc: ServiceError) -> str:
    """The message of another service's error body (any OpenStack dialect), else its text."""
    try:
        body: Any = json.loads(exc.body)
    except ValueError:
        return exc.body[:200]
    while isinstance(body, dict) and len(body) == 1 and isinstance(next(iter(body.values())), dict):
        body = next(iter(body.values()))
    if isinstance(body, dict):
        for key in ("message", "description", "title"):
            if body.get(key):
                return str(body[key])
    return exc.body[:200]
