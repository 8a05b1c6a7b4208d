"""Heartbeats of the compute control services (conductor, scheduler): their rows in
os-services, as Nova lists nova-conductor and nova-scheduler (zone `internal`).

The compute agents' heartbeat is their resource report (conductor.compute_node_report)."""

from __future__ import annotations

import asyncio
import logging
import uuid

from sqlalchemy import select

from cumulo.common.db import Database, utcnow
from cumulo.compute.models import ComputeService

LOG = logging.getLogger(__name__)

CONDUCTOR_BINARY = "nova-conductor"
SCHEDULER_BINARY = "nova-scheduler"
INTERNAL_ZONE = "internal"


async def record(db: Database, host: str, binary: str, topic: str) -> None:
    """One heartbeat: the service's row made or refreshed."""
    async with db.write() as s:
        row = await s.scalar(
            select(ComputeService).where(
                ComputeService.host == host, ComputeService.binary == binary
            )
        )
        if row is None:
            row = ComputeService(
                uuid=str(uuid.uuid4()),
                host=host,
                binary=binary,
                topic=topic,
                report_count=0,
                availability_zone=INTERNAL_ZONE,
            )
            s.add(row)
        row.last_seen_up = utcnow()
        row.report_count = (row.report_count or 0) + 1


async def report_forever(db: Database, host: str, binary: str, topic: str, interval: float) -> None:
    """Heartbeats until cancelled; a failed one (database away) is logged and retried."""
    while True:
        try:
            await record(db, host, binary, topic)
        except Exception:  # noqa: BLE001 - the next round tries again
            LOG.warning("%s heartbeat of %s failed", binary, host, exc_info=True)
        await asyncio.sleep(interval)
