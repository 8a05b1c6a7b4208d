"""The scheduler service: select_destinations over the bus, with atomic claims."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from sqlalchemy import select

from cumulo.common.db import Database, utcnow
from cumulo.common.rpc import Endpoint
from cumulo.compute.models import ComputeNode, ServerGroup, ServerGroupMember
from cumulo.compute.scheduler.claims import claim, hosts_of_instances, load_host_states, release
from cumulo.compute.scheduler.host_state import RequestSpec
from cumulo.compute.scheduler.select import NoValidHost, select_destinations
from cumulo.compute.scheduler.weights import default_weighers

LOG = logging.getLogger(__name__)

# A claim can lose a race with another request; try again with fresh host states.
CLAIM_ATTEMPTS = 5


def request_spec_from_dict(data: dict[str, Any], num_instances: int) -> RequestSpec:
    flavor = data["flavor"]
    boot_from_volume = bool(data.get("boot_from_volume"))
    swap_gb = -(-int(flavor.get("swap") or 0) // 1024)
    disk = (
        (0 if boot_from_volume else int(flavor["root_gb"]))
        + int(flavor.get("ephemeral_gb") or 0)
        + swap_gb
    )
    return RequestSpec(
        vcpus=int(flavor["vcpus"]),
        memory_mb=int(flavor["memory_mb"]),
        disk_gb=disk,
        num_instances=num_instances,
        availability_zone=data.get("availability_zone"),
        image_properties=data.get("image_properties") or {},
        force_hosts=list(data.get("force_hosts") or []),
        ignore_hosts=set(data.get("ignore_hosts") or []),
    )


class SchedulerManager(Endpoint):
    def __init__(
        self, db: Database, *, service_down_time: float = 60.0, spread: bool = True
    ) -> None:
        self.db = db
        self.service_down_time = timedelta(seconds=service_down_time)
        self.weighers = default_weighers(spread)

    async def select_destinations(
        self, ctx: dict, request_spec: dict[str, Any], instance_uuids: list[str]
    ) -> list[dict[str, str]]:
        spec = request_spec_from_dict(request_spec, len(instance_uuids))
        group_uuid = request_spec.get("server_group")
        claimed: list[str] = []
        chosen: list[dict[str, str]] = []
        try:
            for instance_uuid in instance_uuids:
                placed = {c["host"] for c in chosen}
                chosen.append(await self._place_one(spec, instance_uuid, group_uuid, placed))
                claimed.append(instance_uuid)
        except NoValidHost:
            async with self.db.write() as s:
                for done in claimed:
                    await release(s, done)
            raise
        return chosen

    async def _place_one(
        self, spec: RequestSpec, instance_uuid: str, group_uuid: str | None, placed: set[str]
    ) -> dict[str, str]:
        """Place and claim one instance; `placed` are this request's earlier picks."""
        one = RequestSpec(**{**spec.__dict__, "num_instances": 1, "group_hosts": set()})
        for _attempt in range(CLAIM_ATTEMPTS):
            async with self.db.read() as s:
                hosts = await load_host_states(s, utcnow(), self.service_down_time)
                if group_uuid:
                    one.group_policy, members_hosts = await self._group(s, group_uuid)
                    one.group_hosts = members_hosts | placed
            [host] = select_destinations(hosts, one, [instance_uuid], weighers=self.weighers)
            async with self.db.write() as s:
                node_id = await s.scalar(
                    select(ComputeNode.id).where(ComputeNode.hypervisor_hostname == host.node)
                )
                if node_id is not None and await claim(s, node_id, instance_uuid, one):
                    return {"host": host.host, "node": host.node}
            LOG.info("claim on %s lost a race; scheduling %s again", host.host, instance_uuid)
        raise NoValidHost("Resources were claimed by other requests as fast as they were found.")

    async def _group(self, s, group_uuid: str) -> tuple[str | None, set[str]]:
        group = await s.scalar(select(ServerGroup).where(ServerGroup.uuid == group_uuid))
        if group is None:
            return None, set()
        members = list(
            await s.scalars(
                select(ServerGroupMember.instance_uuid).where(
                    ServerGroupMember.group_id == group.id
                )
            )
        )
        return group.policy, await hosts_of_instances(s, members)
