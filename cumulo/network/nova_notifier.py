"""Neutron's Nova notifier (`POST /os-server-external-events`, service token): when a
server's port changes in a way Compute shows (a floating IP associated or released),
Compute is told with a `network-changed` event and refreshes its network info cache,
so the server's `addresses` show the floating IP as Nova shows it; when a server's port
goes ACTIVE (its host's agent wired it), with a `network-vif-plugged` event, which the
build waiting for that port on the server's host takes at once."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable

from sqlalchemy import select

from cumulo.common.db import Database
from cumulo.common.service_client import ServiceClient
from cumulo.network.models import Port

LOG = logging.getLogger(__name__)

COMPUTE_OWNER_PREFIX = "compute:"


class NovaNotifier:
    def __init__(self, compute: ServiceClient, service_token: Callable[[], Awaitable[str]]) -> None:
        self.compute = compute
        self.service_token = service_token
        self._sending: set[asyncio.Task] = set()

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
        await self._send(events, wanted)

    def ports_plugged(self, plugged: list[tuple[str, str]]) -> None:
        """network-vif-plugged for each (port, server), sent by a task of its own."""
        events = [
            {"name": "network-vif-plugged", "server_uuid": device_id, "tag": port_id,
             "status": "completed"}
            for port_id, device_id in plugged
        ]  # fmt: skip
        task = asyncio.create_task(self._send(events, [port_id for port_id, _ in plugged]))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send(self, events: list[dict[str, str]], port_ids: list[str]) -> None:
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
        except Exception as exc:  # noqa: BLE001 - the network change itself is committed
            LOG.warning("telling Compute that ports %s changed failed: %s", port_ids, exc)
