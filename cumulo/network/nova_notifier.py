"""Neutron's Nova notifier: when a server's port changes in a way Compute shows (a
floating IP associated or released), Compute is told with a `network-changed` event
(`POST /os-server-external-events`, service token) and refreshes its network info
cache, so the server's `addresses` show the floating IP as Nova shows it."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable

from sqlalchemy import select

from cumulo.common.db import Database
from cumulo.common.service_client import ServiceClient, ServiceError
from cumulo.network.models import Port

LOG = logging.getLogger(__name__)

COMPUTE_OWNER_PREFIX = "compute:"


class NovaNotifier:
    def __init__(self, compute: ServiceClient, service_token: Callable[[], Awaitable[str]]) -> None:
        self.compute = compute
        self.service_token = service_token

    async def ports_changed(self, db: Database, port_ids: Iterable[str | None]) -> None:
        """Tell Compute about the servers behind these ports (errors are logged: the
        network change itself is done)."""
        wanted = sorted({p for p in port_ids if p})
        if not wanted:
            return
        async with db.read() as session:
            rows = (
                await session.execute(
                    select(Port.id, Port.device_id).where(
                        Port.id.in_(wanted), Port.device_owner.startswith(COMPUTE_OWNER_PREFIX)
                    )
                )
            ).all()
        events = [
            {"name": "network-changed", "server_uuid": device_id, "tag": port_id}
            for port_id, device_id in rows
            if device_id
        ]
        if not events:
            return
        try:
            await self.compute.json(
                "POST",
                "/v2.1/os-server-external-events",
                await self.service_token(),
                json={"events": events},
                ok=(200, 207, 404),
            )
        except (ServiceError, OSError) as exc:
            LOG.warning("telling Compute that ports %s changed failed: %s", wanted, exc)
