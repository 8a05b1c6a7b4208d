"""The instance network info cache refreshed from the Network service: each cached port's
fixed IPs and floating IPs as they are now (Nova refreshes its info cache on
`network-changed`, and after it changes a server's fixed IPs itself)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from cumulo.common.db import utcnow
from cumulo.common.service_client import ServiceClient
from cumulo.compute.models import Instance
from cumulo.compute.network import ip_info


async def refresh_network_info(db, networks: ServiceClient, token: str, instance_uuid: str) -> bool:
    """Set each cached port's `fixed_ips` and `floating_ips` to what the Network service
    has now (a port gone keeps its entry: detaching it is another path); False when the
    server does not exist (or is deleted)."""
    async with db.read() as s:
        cached = await s.scalar(
            select(Instance.network_info).where(
                Instance.uuid == instance_uuid, Instance.deleted.is_(False)
            )
        )
    if cached is None:
        return False
    port_ids = [entry["port_id"] for entry in cached]
    floating: dict[str, list[str]] = {}
    fixed: dict[str, list[dict[str, Any]]] = {}
    if port_ids:
        found = await networks.json("GET", "/v2.0/floatingips", token, params={"port_id": port_ids})
        for fip in sorted(found["floatingips"], key=lambda f: f["floating_ip_address"]):
            floating.setdefault(fip["port_id"], []).append(fip["floating_ip_address"])
        ports = (await networks.json("GET", "/v2.0/ports", token, params={"id": port_ids}))["ports"]
        subnet_ids = sorted({ip["subnet_id"] for p in ports for ip in p["fixed_ips"]})
        subnets: dict[str, dict[str, Any]] = {}
        if subnet_ids:
            listed = await networks.json("GET", "/v2.0/subnets", token, params={"id": subnet_ids})
            subnets = {s["id"]: s for s in listed["subnets"]}
        for port in ports:
            fixed[port["id"]] = [
                ip_info(ip, subnets.get(ip.get("subnet_id") or "")) for ip in port["fixed_ips"]
            ]
    async with db.write() as s:
        inst = await s.scalar(
            select(Instance).where(Instance.uuid == instance_uuid, Instance.deleted.is_(False))
        )
        if inst is None:
            return False
        refreshed: list[dict[str, Any]] = [
            {
                **entry,
                "fixed_ips": fixed.get(entry["port_id"], entry.get("fixed_ips", [])),
                "floating_ips": floating.get(entry["port_id"], []),
            }
            for entry in inst.network_info or []
        ]
        if refreshed != inst.network_info:
            inst.network_info = refreshed
            inst.updated_at = utcnow()
    return True
