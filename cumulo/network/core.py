"""The Network service's rules shared by every API module: who sees what, quotas,
each project's default security group, and telling the data plane about changes.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from sqlalchemy import Select, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from cumulo.common.auth import TokenValidator
from cumulo.common.config import CumuloConfig
from cumulo.common.context import RequestContext
from cumulo.common.db import Database
from cumulo.common.policy import Policy
from cumulo.network.errors import OverQuota, PolicyNotAuthorized
from cumulo.network.models import (
    DefaultSecurityGroup,
    FloatingIp,
    Network,
    Port,
    Quota,
    RbacPolicy,
    Router,
    SecurityGroup,
    SecurityGroupRule,
    Subnet,
    SubnetPool,
)
from cumulo.network.nova_notifier import COMPUTE_OWNER_PREFIX
from cumulo.network.policies import NETWORK_RULES
from cumulo.network.segments import Segments

LOG = logging.getLogger(__name__)

QUOTA_MODELS = {
    "network": Network,
    "subnet": Subnet,
    "subnetpool": SubnetPool,
    "port": Port,
    "router": Router,
    "floatingip": FloatingIp,
    "security_group": SecurityGroup,
    "security_group_rule": SecurityGroupRule,
    "rbac_policy": RbacPolicy,
}

# Neutron's default group: all egress, and ingress from members of the same group.
DEFAULT_RULES = (
    ("egress", "IPv4", False),
    ("egress", "IPv6", False),
    ("ingress", "IPv4", True),
    ("ingress", "IPv6", True),
)


# RBAC actions (api-ref: RBAC Policies) and the target meaning every project.
ACCESS_SHARED = "access_as_shared"
ACCESS_EXTERNAL = "access_as_external"
EVERY_PROJECT = "*"


def new_id() -> str:
    return str(uuid.uuid4())


def granted(object_type: str, project_id: str | None, actions: tuple[str, ...]) -> Select:
    """SQL: ids of the objects of a type that RBAC grants the project one of `actions` on."""
    return select(RbacPolicy.object_id).where(
        RbacPolicy.object_type == object_type,
        RbacPolicy.action.in_(actions),
        RbacPolicy.target_project.in_((project_id or "", EVERY_PROJECT)),
    )


class NetworkService:
    def __init__(
        self, config: CumuloConfig, state_dir: Path, db: Database, validator: TokenValidator
    ) -> None:
        self.config = config
        self.db = db
        self.validator = validator
        self.policy = Policy(NETWORK_RULES, state_dir / config.policy_file)
        # provider:* as ML2's type drivers check and allocate them (cumulo.network.segments).
        self.segments = Segments(config.network)
        # Set by the data plane: called after every committed change it must apply.
        self.on_change: Callable[[], Awaitable[None]] | None = None
        # Stops the data plane (agent, bus) when the service closes.
        self.on_close: list[Callable[[], Awaitable[None]]] = []
        self.agent: Any = None  # this host's NetworkAgent, when the data plane runs here
        self.live_agents: Any = None  # cumulo.network.app.LiveAgents, when agents are served
        self.port_batcher: Any = None  # cumulo.network.ipam_plan.PortBatcher, made on first use
        # cumulo.network.nova_notifier.NovaNotifier, when a Compute service is there to tell.
        self.nova_notifier: Any = None

    async def add_tenant_network(
        self, session: AsyncSession, project_id: str, name: str
    ) -> Network:
        """A network the cloud makes itself (no quota or policy of a caller's): a tenant
        network of the cloud's type, its segment claimed, flushed."""
        net = Network(
            id=new_id(),
            project_id=project_id,
            name=name,
            mtu=self.config.network.mtu,
            shared=False,
            external=False,
            network_type=self.segments.tenant_type(),
        )
        await self.segments.claim(session, net)
        session.add(net)
        await session.flush()
        return net

    async def close(self) -> None:
        for stop in reversed(self.on_close):
            await stop()
        await self.validator.client.close()
        await self.db.dispose()

    async def mark_ports_active(self, host: str, port_ids: list[str]) -> list[tuple[str, str]]:
        """Ports the host's agent has wired go ACTIVE (only those still bound there,
        administratively up, and whose binding did not fail: a network the host does not
        reach stays DOWN even if the data plane put the tap on a bridge of its own).
        The (port, server) of each guest's port that went ACTIVE."""
        # Imported here: cumulo.network.binding reads the agents registry, which imports
        # this module.
        from cumulo.network.binding import Segment, binds, host_agents

        agent = (await host_agents(self, [host])).get(host)
        # Builds are waiting for it: before the writes that start more work.
        async with self.db.write(first=True) as session:
            rows = await session.execute(
                select(
                    Port.id, Port.device_owner, Port.device_id, Network.network_type,
                    Network.physical_network,
                )
                .join(Network, Network.id == Port.network_id)
                .where(
                    Port.id.in_(port_ids),
                    Port.host == host,
                    Port.admin_state_up.is_(True),
                    Port.status != "ACTIVE",
                )
            )  # fmt: skip
            going = [
                (port_id, owner, device_id)
                for port_id, owner, device_id, network_type, physnet in rows
                if binds(agent, Segment(network_type, physnet))
            ]
            if going:
                await session.execute(
                    update(Port)
                    .where(Port.id.in_([port_id for port_id, _, _ in going]))
                    .values(status="ACTIVE")
                    .execution_options(synchronize_session=False)
                )
        return [
            (port_id, device_id)
            for port_id, owner, device_id in going
            if device_id and (owner or "").startswith(COMPUTE_OWNER_PREFIX)
        ]

    async def changed(self) -> None:
        if self.on_change is not None:
            await self.on_change()

    def ports_plugged(self, plugged: list[tuple[str, str]]) -> None:
        """Tell Compute that these guests' ports (port, server) are wired (Neutron's
        network-vif-plugged), on the side: the agent's report does not wait for it."""
        if self.nova_notifier is not None and plugged:
            self.nova_notifier.ports_plugged(plugged)

    async def ports_changed(self, port_ids: list[str | None]) -> None:
        """Tell Compute that these ports changed (a floating IP came or went)."""
        if self.nova_notifier is not None:
            await self.nova_notifier.ports_changed(self.db, port_ids)

    # -- who may do what -------------------------------------------------------------

    def is_admin(self, ctx: RequestContext) -> bool:
        return self.policy.check("cloud_admin", ctx)

    def is_service(self, ctx: RequestContext) -> bool:
        return self.policy.check("network:service", ctx)

    def enforce(self, ctx: RequestContext, rule: str, project_id: str | None = None) -> None:
        if not self.policy.check(rule, ctx, {"project_id": project_id or ""}):
            raise PolicyNotAuthorized(f"rule:{rule.split(':', 1)[1]} is disallowed by policy")

    def networks_visible(self, ctx: RequestContext):
        """SQL condition: networks the caller can see (own, or shared with it or made
        external for it by an RBAC policy; admin all)."""
        if self.is_admin(ctx):
            return True
        rbac = granted("network", ctx.project_id, (ACCESS_SHARED, ACCESS_EXTERNAL))
        return or_(Network.project_id == ctx.project_id, Network.shared, Network.id.in_(rbac))

    # -- quotas ----------------------------------------------------------------------

    async def quota_limits(self, session: AsyncSession, project_id: str) -> dict[str, int]:
        limits = dict(self.config.network.quota)
        for row in await session.scalars(select(Quota).where(Quota.project_id == project_id)):
            limits[row.resource] = row.limit
        return limits

    async def usage(self, session: AsyncSession, project_id: str, resource: str) -> int:
        model = QUOTA_MODELS[resource]
        query = select(func.count()).select_from(model).where(model.project_id == project_id)
        return int(await session.scalar(query) or 0)

    async def check_quota(
        self, session: AsyncSession, project_id: str, resource: str, adding: int = 1
    ) -> None:
        limit = (await self.quota_limits(session, project_id)).get(resource, -1)
        if limit < 0:
            return
        if await self.usage(session, project_id, resource) + adding > limit:
            raise OverQuota(f"Quota exceeded for resources: ['{resource}'].")

    # -- the default security group ------------------------------------------------------

    async def default_security_group(self, session: AsyncSession, project_id: str) -> str:
        """The project's `default` group, created with its rules on first use."""
        row = await session.get(DefaultSecurityGroup, project_id)
        if row is not None:
            return row.security_group_id
        sg = SecurityGroup(
            id=new_id(),
            project_id=project_id,
            name="default",
            description="Default security group",
            is_default=True,
        )
        session.add(sg)
        await session.flush()
        session.add(DefaultSecurityGroup(project_id=project_id, security_group_id=sg.id))
        for direction, ethertype, from_group in DEFAULT_RULES:
            session.add(
                SecurityGroupRule(
                    id=new_id(),
                    project_id=project_id,
                    security_group_id=sg.id,
                    remote_group_id=sg.id if from_group else None,
                    direction=direction,
                    ethertype=ethertype,
                )
            )
        await session.flush()
        return sg.id
