"""The hot path of `POST /v2.0/ports`: ports written in batches.

A plain port (no fixed IPs or MAC asked for) needs its network, the project's port
quota and its default security group, or the groups it asks for (a server's port names
them): reads, outside any write (`plan_port`). Its write then joins a batch: one write
transaction for every port that arrived while the previous batch was committing. SQLite
serializes writers, so what counts is the statements per transaction, not per port: the
batch reads each network's subnets once, checks every port's candidate addresses in one
query, counts ports where a quota is limited, and inserts all ports, then all their
addresses and group bindings, in multi-row INSERTs, in one call on the database's writer
(run_write: no await between its statements, so it holds SQLite's one writer for its
SQL only).

Addresses are chosen inside the transaction, as cumulo.network.ports.resolve_fixed_ips
does (the first subnet of each IP version with a free address, random candidates
first), and the unique key on (subnet, address) stays the final word on servers that
do not serialize writers. Whatever the batch cannot settle (no free candidate, a quota
reached, a unique key failing, the project's first port whose default group must be
made) falls back: that port is then written on its own, the long way, which gives the
API's own answer and error.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from cumulo.common.context import RequestContext
from cumulo.network import ipam
from cumulo.network.core import NetworkService
from cumulo.network.errors import NetworkNotFound
from cumulo.network.models import (
    DefaultSecurityGroup,
    IpAllocation,
    Network,
    Port,
    PortSecurityGroup,
    Quota,
    Subnet,
)
from cumulo.network.nova_notifier import COMPUTE_OWNER_PREFIX
from cumulo.network.ports import is_auto_address

LOG = logging.getLogger(__name__)

MAX_BATCH = 32  # ports per transaction (keeps the candidate query's parameters bounded)
CANDIDATES = 16  # random addresses tried per port and subnet


class Fallback(Exception):
    """This port could not be written in a batch: write it the long way."""


@dataclass(frozen=True)
class PortPlan:
    network: Network
    port_limit: int  # -1: unlimited
    default_group: str | None  # None: not made yet (the long way makes it)


async def plan_port(
    service: NetworkService, ctx: RequestContext, network_id: str, project_id: str
) -> PortPlan:
    """The network (404 unless the caller sees it), the port quota and the default group,
    in one query."""
    limit = (
        select(Quota.limit)
        .where(Quota.project_id == project_id, Quota.resource == "port")
        .scalar_subquery()
    )
    group = (
        select(DefaultSecurityGroup.security_group_id)
        .where(DefaultSecurityGroup.project_id == project_id)
        .scalar_subquery()
    )
    async with service.db.read() as session:
        row = (
            await session.execute(
                select(Network, limit, group).where(
                    Network.id == network_id, service.networks_visible(ctx)
                )
            )
        ).first()
    if row is None:
        raise NetworkNotFound(f"Network {network_id} could not be found.")
    network, port_limit, default_group = row
    if port_limit is None:
        port_limit = service.config.network.quota.get("port", -1)
    return PortPlan(network, port_limit, default_group)


@dataclass
class _Item:
    plan: PortPlan
    port: Port
    groups: list[str]
    future: asyncio.Future
    fixed_ips: list[dict[str, str]] | None = None


class PortBatcher:
    """Collects planned ports and writes them a batch at a time (see the module doc)."""

    def __init__(self, service: NetworkService) -> None:
        self.service = service
        self.pending: list[_Item] = []
        self.task: asyncio.Task | None = None

    async def write(self, plan: PortPlan, port: Port, groups: list[str]) -> list[dict]:
        """Insert the port with addresses chosen for it (returned), or raise Fallback."""
        future = asyncio.get_running_loop().create_future()
        item = _Item(plan, port, groups, future)
        self.pending.append(item)
        if self.task is None:
            self.task = asyncio.create_task(self._drain())
        await future
        assert item.fixed_ips is not None
        return item.fixed_ips

    async def _drain(self) -> None:
        batch: list[_Item] = []
        try:
            while self.pending:
                batch, self.pending = self.pending[:MAX_BATCH], self.pending[MAX_BATCH:]
                try:
                    await self._write(batch)
                except Exception:  # noqa: BLE001 - each port is then written on its own
                    LOG.debug("a batch of %d ports fell back", len(batch), exc_info=True)
                _settle(batch)
        finally:
            self.task = None
            # Only when cancelled (shutdown): never leave a caller hanging.
            _settle(batch)
            _settle(self.pending)
            self.pending = []

    async def _write(self, batch: list[_Item]) -> None:
        # A server's port is a step of its build: before the writes that start more work.
        first = any((i.port.device_owner or "").startswith(COMPUTE_OWNER_PREFIX) for i in batch)
        # One hop to the writer: the transaction holds the database's one writer (SQLite)
        # for its SQL only, not across the event loop's lag between statements.
        written = await self.service.db.run_write(_write_batch, batch, first=first)
        for item in written:
            item.future.set_result(None)


def _write_batch(session: Session, batch: list[_Item]) -> list[_Item]:
    """The batch's ports with their addresses and groups; the items written."""
    usage: dict[str, int] = {}
    accepted: list[_Item] = []
    for item in batch:
        limit = item.plan.port_limit
        project = item.port.project_id
        if limit >= 0:
            if project not in usage:
                count = select(func.count()).select_from(Port).where(Port.project_id == project)
                usage[project] = int(session.scalar(count) or 0)
            if usage[project] + 1 > limit:
                continue  # the long way says "quota exceeded"
            usage[project] += 1
        item.fixed_ips = []
        accepted.append(item)
    by_network: dict[str, list[_Item]] = {}
    for item in accepted:
        by_network.setdefault(item.port.network_id, []).append(item)
    for network_id, items in by_network.items():
        _allocate(session, network_id, items)
    written = [i for i in accepted if i.fixed_ips is not None]
    if not written:
        return []
    session.add_all(i.port for i in written)
    session.flush()  # the rows below reference the ports
    for item in written:
        session.add_all(
            IpAllocation(
                port_id=item.port.id,
                ip_address=f["ip_address"],
                subnet_id=f["subnet_id"],
                network_id=item.port.network_id,
            )
            for f in item.fixed_ips or []
        )
        session.add_all(
            PortSecurityGroup(port_id=item.port.id, security_group_id=sg) for sg in item.groups
        )
    return written


def _allocate(session: Session, network_id: str, items: list[_Item]) -> None:
    """One address per IP version for each item (fixed_ips None: no address left)."""
    subnets = list(
        session.scalars(
            select(Subnet).where(Subnet.network_id == network_id).order_by(Subnet.created_at)
        )
    )
    if any(is_auto_address(s) for s in subnets):
        for item in items:
            item.fixed_ips = None  # SLAAC addresses: the long way derives them from MACs
        return
    for version in (4, 6):
        of_version = [s for s in subnets if s.ip_version == version]
        if not of_version:
            continue
        # The first subnet, when it has a free candidate, is what the long way picks
        # too; otherwise the long way scans it and looks at the next ones.
        subnet = of_version[0]
        if not subnet.allocation_pools:
            for item in items:
                item.fixed_ips = None
            return
        picks = {
            id(item): ipam.random_candidates(subnet.allocation_pools, CANDIDATES) for item in items
        }
        wanted = {ip for ips in picks.values() for ip in ips}
        taken = set(
            session.scalars(
                select(IpAllocation.ip_address).where(
                    IpAllocation.subnet_id == subnet.id, IpAllocation.ip_address.in_(wanted)
                )
            )
        )
        taken.add(subnet.gateway_ip)
        for item in items:
            if item.fixed_ips is None:
                continue
            free = next((ip for ip in picks[id(item)] if ip not in taken), None)
            if free is None:
                item.fixed_ips = None  # the long way scans the whole pool
                continue
            taken.add(free)
            item.fixed_ips.append({"subnet_id": subnet.id, "ip_address": free})


def _settle(items: list[_Item]) -> None:
    for item in items:
        if not item.future.done():
            item.future.set_exception(Fallback())


def batcher_of(service: NetworkService) -> PortBatcher:
    if service.port_batcher is None:
        service.port_batcher = PortBatcher(service)
    return service.port_batcher
