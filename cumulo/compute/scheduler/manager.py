"""The scheduler service: select_destinations over the bus, with atomic claims."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import timedelta
from typing import Any

from sqlalchemy import select

from cumulo.common.db import Database, utcnow
from cumulo.common.rpc import Endpoint
from cumulo.compute.models import ComputeNode, ServerGroup, ServerGroupMember
from cumulo.compute.scheduler.claims import claim, hosts_of_instances, load_host_states, release
from cumulo.compute.scheduler.host_state import HostState, RequestSpec
from cumulo.compute.scheduler.select import NoValidHost, select_destinations
from cumulo.compute.scheduler.weights import default_weighers

LOG = logging.getLogger(__name__)

# A claim can lose a race with another request; try again with fresh host states.
CLAIM_ATTEMPTS = 5
# How long (seconds) the scheduler trusts the host states it loaded (see _host_states).
HOST_STATE_TTL = 1.0


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
        required_traits=frozenset(data.get("required_traits") or ()),
        force_hosts=list(data.get("force_hosts") or []),
        ignore_hosts=set(data.get("ignore_hosts") or []),
    )


def _release_all(session, instance_uuids: list[str]) -> None:
    for instance_uuid in instance_uuids:
        release(session, instance_uuid)


class SchedulerManager(Endpoint):
    def __init__(
        self,
        db: Database,
        *,
        service_down_time: float = 60.0,
        spread: bool = True,
        host_state_ttl: float = HOST_STATE_TTL,
    ) -> None:
        self.db = db
        self.service_down_time = timedelta(seconds=service_down_time)
        self.weighers = default_weighers(spread)
        self.host_state_ttl = host_state_ttl
        # Host states as last loaded, with this scheduler's own claims consumed since.
        self._hosts: list[HostState] | None = None
        self._node_ids: dict[str, int] = {}
        self._loaded_at = 0.0
        self._loading: asyncio.Future | None = None

    def invalidate(self) -> None:
        """Forget the cached host states: the next placement reads them again."""
        self._hosts = None

    async def _host_states(self, fresh: bool = False) -> list[HostState]:
        """The cached host states, reloaded when older than host_state_ttl (or `fresh`).

        Concurrent placements share one reload. Releases made elsewhere (a failed build,
        a delete) and capacity reports show up at the next reload; a claim made by
        another scheduler makes ours lose its race, which reloads at once.
        """
        now = time.monotonic()
        if not fresh and self._hosts is not None and now - self._loaded_at < self.host_state_ttl:
            return self._hosts
        if self._loading is None:
            self._loading = asyncio.ensure_future(self._load())
        loading = self._loading
        try:
            return await asyncio.shield(loading)
        finally:
            if self._loading is loading and loading.done():
                self._loading = None

    async def _load(self) -> list[HostState]:
        started = time.monotonic()
        async with self.db.read() as s:
            hosts = await load_host_states(s, utcnow(), self.service_down_time)
            node_ids = dict(
                (await s.execute(select(ComputeNode.hypervisor_hostname, ComputeNode.id))).all()
            )
        self._hosts, self._node_ids, self._loaded_at = hosts, node_ids, started
        return hosts

    async def select_destinations(
        self, ctx: dict, request_spec: dict[str, Any], instance_uuids: list[str]
    ) -> list[dict[str, str]]:
        spec = request_spec_from_dict(request_spec, len(instance_uuids))
        same, different = request_spec.get("same_host"), request_spec.get("different_host")
        if same or different:
            async with self.db.read() as s:
                if same:
                    spec.same_hosts = await hosts_of_instances(s, list(same))
                spec.different_hosts = await hosts_of_instances(s, list(different or []))
        group_uuid = request_spec.get("server_group")
        claimed: list[str] = []
        chosen: list[dict[str, str]] = []
        try:
            for instance_uuid in instance_uuids:
                placed = {c["host"] for c in chosen}
                chosen.append(await self._place_one(spec, instance_uuid, group_uuid, placed))
                claimed.append(instance_uuid)
        except NoValidHost:
            if claimed:
                await self.db.run_write(_release_all, claimed)
            raise
        return chosen

    async def _place_one(
        self, spec: RequestSpec, instance_uuid: str, group_uuid: str | None, placed: set[str]
    ) -> dict[str, str]:
        """Place and claim one instance; `placed` are this request's earlier picks."""
        one = RequestSpec(**{**spec.__dict__, "num_instances": 1, "group_hosts": set()})
        fresh = self.host_state_ttl <= 0
        for _attempt in range(CLAIM_ATTEMPTS):
            if group_uuid:
                async with self.db.read() as s:
                    one.group_policy, members_hosts = await self._group(s, group_uuid)
                one.group_hosts = members_hosts | placed
            hosts = await self._host_states(fresh)
            try:
                # Picks and consumes on the cached states at once (no await in between),
                # so concurrent placements see each other's picks.
                [host] = select_destinations(hosts, one, [instance_uuid], weighers=self.weighers)
            except NoValidHost:
                if fresh:
                    raise
                fresh = True  # the cache may miss resources released meanwhile: look again
                continue
            node_id = self._node_ids.get(host.node)
            if node_id is not None and await self.db.run_write(
                claim, node_id, instance_uuid, one, first=True
            ):
                LOG.debug("selected host %s for %s", host.host, instance_uuid)
                return {"host": host.host, "node": host.node}
            LOG.info("claim on %s lost a race; scheduling %s again", host.host, instance_uuid)
            fresh = True
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
