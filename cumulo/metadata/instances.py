"""The metadata service's view of the compute database: one guest, and its password.

Every lookup the metadata service makes lives here, so the service reads the compute
database in-process (the all-in-one cloud) through one small surface.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from cumulo.common.db import Database
from cumulo.compute.conductor import instance_to_dict
from cumulo.compute.manager import instance_metadata
from cumulo.compute.models import Instance
from cumulo.metadata.content import InstanceMetadata

# Nova keeps the guest's encrypted password in system_metadata, 4 chunks of 255 characters.
PASSWORD_CHUNKS = 4
PASSWORD_CHUNK = 255
MAX_PASSWORD = PASSWORD_CHUNKS * PASSWORD_CHUNK  # what a guest may POST (Nova's MAX_SIZE)


async def find_instance(db: Database, instance_id: str) -> Instance | None:
    async with db.read() as s:
        return await s.scalar(
            select(Instance).where(Instance.uuid == instance_id, Instance.deleted.is_(False))
        )


def fixed_ips(inst: Instance) -> set[str]:
    """The addresses of the instance's ports, as its network info cache has them."""
    return {
        ip["ip_address"]
        for port in inst.network_info or []
        for ip in port.get("fixed_ips", [])
        if ip.get("ip_address")
    }


def metadata_of(inst: Instance) -> InstanceMetadata:
    """The documents' input for this instance (the same builder as the config drive's)."""
    return instance_metadata(instance_to_dict(inst), list(inst.network_info or []))


def password_of(inst: Instance) -> str:
    meta = inst.system_metadata or {}
    return "".join(meta.get(f"password_{i}") or "" for i in range(PASSWORD_CHUNKS))


async def store_password(db: Database, instance_id: str, password: str) -> bool:
    """Keep the guest's password unless one is already there; False when it was."""
    async with db.write() as s:
        inst = await s.scalar(select(Instance).where(Instance.uuid == instance_id))
        if inst is None or password_of(inst):
            return False
        meta: dict[str, Any] = dict(inst.system_metadata or {})
        for i in range(PASSWORD_CHUNKS):
            meta[f"password_{i}"] = password[i * PASSWORD_CHUNK : (i + 1) * PASSWORD_CHUNK]
        inst.system_metadata = meta
    return True
