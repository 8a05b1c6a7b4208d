"""The instance network info cache's floating IPs, refreshed from the Network service
when it reports a port change (Nova refreshes its info cache on `network-changed`)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from cumulo.common.db import utcnow
from cumulo.common.service_client import ServiceClient
from cumulo.compute.models import Instance


async def refresh_floating_ips(db, networks: ServiceClient, token: str, instance_uuid: str) -> bool:
    """Set each cached port's `floating_ips` to what the Network service associates with
    it now; False when the server does not exist (or is deleted)."""
    async with db.read() as s:
        ports = await s.scalar(
            select(Instance.network_info).where(
                Instance.uuid == instance_uuid, Instance.deleted.is_(False)
            )
        )
    if ports is None:
        return False
    port_ids = [entry["port_id"] for entry in ports]
    by_port: dict[str, list[str]] = {}
    if port_ids:
        found = await networks.json("GET", "/v2.0/floatingips", token, params={"port_id": port_ids})
        for fip in sorted(found["floatingips"], key=lambda f: f["floating_ip_address"]):
            by_port.setdefault(fip["port_id"], []).append(fip["floating_ip_address"])
    async with db.write() as s:
        inst = await s.scalar(
            select(Instance).where(Instance.uuid == instance_uuid, Instance.deleted.is_(False))
        )
        if inst is None:
            return False
        refreshed: list[dict[str, Any]] = [
            {**entry, "floating_ips": by_port.get(entry["port_id"], [])}
            for entry in inst.network_info or []
        ]
        if refreshed != inst.network_info:
            inst.network_info = refreshed
            inst.updated_at = utcnow()
    return True
