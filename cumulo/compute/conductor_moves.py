"""The conductor's part of moving servers between hosts (Nova's conductor tasks):
cold migrate and resize, live migration, evacuate and unshelve pick their destination
through the scheduler, which claims its resources atomically; the end of every move
(the instance's new host, the migration's status, the claims) is one transaction.

A destination's claim is held under resize_allocation(uuid) next to the instance's own
until the move ends: "keep_new" makes it the instance's, "drop_new" gives it back.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from cumulo.common.db import utcnow
from cumulo.common.rpc import RemoteError
from cumulo.common.service_client import ServiceError
from cumulo.compute import vtpm
from cumulo.compute.models import Allocation, ComputeService, Instance, InstanceFault, Migration
from cumulo.compute.network import PortBindingFailed
from cumulo.compute.scheduler.claims import COMPUTE_BINARY, release, resize_allocation
from cumulo.compute.states import TaskState, VmState

LOG = logging.getLogger(__name__)

# Task states of moves a host carries out: a host that dies meanwhile must not leave them.
MOVE_TASKS = (
    TaskState.RESIZE_PREP,
    TaskState.RESIZE_MIGRATING,
    TaskState.RESIZE_MIGRATED,
    TaskState.RESIZE_REVERTING,
    TaskState.MIGRATING,
    TaskState.SHELVING,
    TaskState.SHELVING_IMAGE_PENDING_UPLOAD,
    TaskState.SHELVING_IMAGE_UPLOADING,
    TaskState.SHELVING_OFFLOADING,
    TaskState.UNSHELVING,
    TaskState.RESCUING,
    TaskState.UNRESCUING,
)
# Migrations not ended yet.
OPEN_MIGRATIONS = (
    "pre-migrating", "migrating", "post-migrating", "reverting",
    "accepted", "queued", "preparing", "running",
)  # fmt: skip


def migration_dict(m: Migration) -> dict[str, Any]:
    """What the hosts taking part in a move know of its migration record."""
    return {
        "id": m.id,
        "uuid": m.uuid,
        "instance_uuid": m.instance_uuid,
        "migration_type": m.migration_type,
        "status": m.status,
        "source_compute": m.source_compute,
        "source_node": m.source_node,
        "dest_compute": m.dest_compute,
        "dest_node": m.dest_node,
    }


def zone_of_host(host: Any, current: Any) -> Any:
    """SQL: the zone of the compute host an instance is given (its service's, which
    follows the host's aggregates), `current` when the host has none (or is None)."""
    svc = ComputeService
    zone = select(svc.availability_zone).where(svc.host == host, svc.binary == COMPUTE_BINARY)
    return func.coalesce(zone.scalar_subquery(), current)


def _complete_move(
    s: Session,
    instance_uuid: str,
    values: dict[str, Any],
    migration_id: int | None,
    migration_status: str | None,
    allocation: str | None,
    fault: str | None,
    host: str | None,
) -> None:
    if allocation == "keep_new":
        if s.get(Allocation, resize_allocation(instance_uuid)) is not None:
            release(s, instance_uuid)
            s.execute(
                update(Allocation)
                .where(Allocation.instance_uuid == resize_allocation(instance_uuid))
                .values(instance_uuid=instance_uuid)
                .execution_options(synchronize_session=False)
            )
    elif allocation == "drop_new":
        release(s, resize_allocation(instance_uuid))
    elif allocation == "release":
        release(s, instance_uuid)
        release(s, resize_allocation(instance_uuid))
    if values:
        if "host" in values and "availability_zone" not in values:
            zone = zone_of_host(values["host"], Instance.availability_zone)
            values = {**values, "availability_zone": zone}
        s.execute(
            update(Instance)
            .where(Instance.uuid == instance_uuid, Instance.deleted.is_(False))
            .values(**values, updated_at=utcnow())
            .execution_options(synchronize_session=False)
        )
    if migration_id is not None and migration_status:
        s.execute(
            update(Migration)
            .where(Migration.id == migration_id)
            .values(status=migration_status, updated_at=utcnow())
            .execution_options(synchronize_session=False)
        )
    if fault:
        s.add(
            InstanceFault(
                instance_uuid=instance_uuid,
                code=500,
                message=fault[:255],
                details=fault,
                host=host,
            )
        )


class MoveTasks:
    """Mixed into ConductorManager (which gives db, scheduler, compute, network, options,
    action_event and _to_db_values)."""

    async def _instance_and_migration(
        self, instance_uuid: str, migration_id: int | None
    ) -> tuple[Instance, Migration | None]:
        async with self.db.read() as s:
            inst = await s.scalar(select(Instance).where(Instance.uuid == instance_uuid))
            migration = await s.get(Migration, migration_id) if migration_id else None
        return inst, migration

    async def complete_move(
        self,
        ctx: dict,
        instance_uuid: str,
        updates: dict[str, Any],
        migration_id: int | None = None,
        migration_status: str | None = None,
        allocation: str | None = None,
        fault: str | None = None,
        host: str | None = None,
    ) -> None:
        values = self._to_db_values(updates)
        await self.db.run_write(
            _complete_move,
            instance_uuid,
            values,
            migration_id,
            migration_status,
            allocation,
            fault,
            host,
        )

    async def migration_update(self, ctx: dict, migration_id: int, values: dict[str, Any]) -> None:
        allowed = {
            "status",
            "dest_compute",
            "dest_node",
            "dest_host",
            *(f"{k}_{p}" for k in ("memory", "disk") for p in ("total", "processed", "remaining")),
        }
        if set(values) - allowed:
            raise ValueError(f"not updatable: {sorted(set(values) - allowed)}")
        async with self.db.write() as s:
            await s.execute(
                update(Migration)
                .where(Migration.id == migration_id)
                .values(**values, updated_at=utcnow())
            )

    async def _select_destination(
        self,
        ctx: dict,
        inst: Instance,
        flavor: dict[str, Any],
        *,
        claim_key: str,
        host: str | None = None,
        ignore_source: bool = True,
        availability_zone: str | None = None,
        pinned: bool = True,
        ignore_hosts: tuple[str, ...] = (),
    ) -> dict[str, str]:
        """A host for the instance (not its own unless allowed, nor `ignore_hosts`),
        claimed under claim_key; in the zone it is pinned to unless `pinned` is False
        (2.91's unpinning)."""
        ignored = [inst.host] if ignore_source and inst.host else []
        spec = {
            "flavor": flavor,
            "availability_zone": availability_zone
            or (inst.pinned_availability_zone if pinned else None),
            "force_hosts": [host] if host else [],
            "ignore_hosts": [*ignored, *ignore_hosts],
            "boot_from_volume": not inst.image_ref,
            # The TPM of the flavor it moves with (a resize may add or change it).
            "required_traits": sorted(
                vtpm.required_traits(
                    vtpm.instance_constraint({"system_metadata": inst.system_metadata}, flavor),
                    flavor.get("extra_specs"),
                )
            ),
        }
        [dest] = await self.scheduler.select_destinations(ctx, spec, [claim_key])
        return dest

    async def _move_failed(
        self,
        ctx: dict,
        instance_uuid: str,
        migration_id: int | None,
        event: str,
        message: str,
        updates: dict[str, Any] | None = None,
        allocation: str | None = "drop_new",
    ) -> None:
        LOG.warning("move of %s failed: %s", instance_uuid, message)
        await self.complete_move(
            ctx,
            instance_uuid,
            {"task_state": None, **(updates or {})},
            migration_id=migration_id,
            migration_status="error",
            allocation=allocation,
            fault=message,
        )
        await self.action_event(ctx, instance_uuid, event, finish=True, error=message)

    async def _dest_chosen(self, migration_id: int, dest: dict[str, str], status: str) -> Migration:
        async with self.db.write() as s:
            migration = await s.get(Migration, migration_id)
            migration.dest_compute = dest["host"]
            migration.dest_node = dest["node"]
            migration.dest_host = dest["host"]
            migration.status = status
        return migration

    async def _place_move(
        self,
        ctx: dict,
        instance_uuid: str,
        migration_id: int,
        event: str,
        host: str | None,
        status: str,
    ) -> tuple[Instance, Migration] | None:
        """A destination for the server with its flavor, claimed and recorded on the
        migration (then in `status`); None when there is none (the move has failed)."""
        await self.action_event(ctx, instance_uuid, event)
        inst, _ = await self._instance_and_migration(instance_uuid, migration_id)
        try:
            dest = await self._select_destination(
                ctx, inst, inst.flavor, claim_key=resize_allocation(instance_uuid), host=host
            )
        except RemoteError as exc:
            await self._move_failed(ctx, instance_uuid, migration_id, event, exc.message)
            return None
        return inst, await self._dest_chosen(migration_id, dest, status)

    # -- cold migrate and resize ---------------------------------------------------------

    async def migrate_server(
        self,
        ctx: dict,
        instance_uuid: str,
        new_flavor: dict[str, Any],
        migration_id: int,
        host: str | None = None,
    ) -> None:
        event = "conductor_migrate_server"
        await self.action_event(ctx, instance_uuid, event)
        inst, migration = await self._instance_and_migration(instance_uuid, migration_id)
        same_host_ok = (
            migration.migration_type == "resize" and self.options.allow_resize_to_same_host
        )
        try:
            dest = await self._select_destination(
                ctx,
                inst,
                new_flavor,
                claim_key=resize_allocation(instance_uuid),
                host=host,
                ignore_source=not same_host_ok,
            )
        except RemoteError as exc:
            await self._move_failed(ctx, instance_uuid, migration_id, event, exc.message)
            return
        migration = await self._dest_chosen(migration_id, dest, "migrating")
        if dest["host"] == inst.host:
            await self.compute.resize_instance(
                ctx, inst.host, instance_uuid, new_flavor, False, migration_id=migration_id
            )
        else:
            await self.compute.migrate_instance(
                ctx, inst.host, instance_uuid, new_flavor, migration_dict(migration)
            )
        await self.action_event(ctx, instance_uuid, event, finish=True)

    # -- live migration ---------------------------------------------------------------

    async def live_migrate_instance(
        self,
        ctx: dict,
        instance_uuid: str,
        migration_id: int,
        host: str | None,
        block_migration: bool | None,
    ) -> None:
        """Nova's LiveMigrationTask: a destination from the scheduler, where the server's
        ports get an inactive binding (Neutron's binding-extended) before the source is
        asked to migrate. A destination that cannot bind them is given up (its claim
        released) and, unless the user named it, the scheduler's next host is tried
        ([compute] migrate_max_retries; -1: until none is left)."""
        event = "conductor_live_migrate_instance"
        await self.action_event(ctx, instance_uuid, event)
        inst, _ = await self._instance_and_migration(instance_uuid, migration_id)
        extended = bool(inst.network_info) and await self._port_binding_extension()
        failures: dict[str, str] = {}  # destinations given up, and why
        while True:
            retries = self.options.migrate_max_retries
            if retries != -1 and len(failures) > retries:
                message = (
                    f"Exceeded max scheduling retries {len(failures)} for instance "
                    f"{instance_uuid} during live migration"
                )
                await self._move_failed(ctx, instance_uuid, migration_id, event, message)
                return
            try:
                dest = await self._select_destination(
                    ctx,
                    inst,
                    inst.flavor,
                    claim_key=resize_allocation(instance_uuid),
                    host=host,
                    ignore_hosts=tuple(failures),
                )
            except RemoteError as exc:
                message = exc.message
                if failures:
                    last = list(failures)[-1]
                    message += f" Last failure on {last}: {failures[last]}"
                await self._move_failed(ctx, instance_uuid, migration_id, event, message)
                return
            if not extended or self.network is None:
                bindings = None
                break
            try:
                bindings = await self.network.bind_ports_to_host(inst.network_info, dest["host"])
                break
            except PortBindingFailed as exc:
                LOG.info("live migration of %s: skipping %s: %s", instance_uuid, dest["host"], exc)
                if host:  # the user's choice: nowhere else to go
                    await self._move_failed(ctx, instance_uuid, migration_id, event, str(exc))
                    return
                await self.complete_move(ctx, instance_uuid, {}, allocation="drop_new")
                failures[dest["host"]] = str(exc)
            except Exception as exc:  # noqa: BLE001 - the Network API is unreachable
                message = f"Binding the ports to {dest['host']} failed: {exc}"
                await self._move_failed(ctx, instance_uuid, migration_id, event, message)
                return
        migration = await self._dest_chosen(migration_id, dest, "preparing")
        data = {
            **migration_dict(migration),
            "block_migration": block_migration,
            # The destination's inactive port bindings (by port), to activate once the
            # guest runs there; None: the destination binds the ports as it prepares.
            "port_bindings": bindings,
        }
        await self.compute.live_migration(ctx, inst.host, instance_uuid, data)
        await self.action_event(ctx, instance_uuid, event, finish=True)

    async def _port_binding_extension(self) -> bool:
        if self.network is None:
            return False
        try:
            return await self.network.has_port_binding_extension()
        except (ServiceError, httpx.HTTPError) as exc:
            LOG.warning("could not list the network extensions: %s", exc)
            return False

    # -- evacuate ---------------------------------------------------------------------

    async def evacuate_instance(
        self,
        ctx: dict,
        instance_uuid: str,
        migration_id: int,
        host: str | None,
        target_state: str | None = None,
    ) -> None:
        """Rebuild on another host a server whose host is down: the destination takes it
        (and the claim made there) once it has bound its ports."""
        event = "conductor_rebuild_server"
        moving = await self._place_move(
            ctx, instance_uuid, migration_id, event, host, "pre-migrating"
        )
        if moving is None:
            return
        _, migration = moving
        await self.compute.evacuate_instance(
            ctx, migration.dest_compute, instance_uuid, migration_dict(migration), target_state
        )
        await self.action_event(ctx, instance_uuid, event, finish=True)

    async def evacuated_from(self, ctx: dict, host: str) -> list[dict[str, Any]]:
        async with self.db.read() as s:
            rows = await s.scalars(
                select(Migration).where(
                    Migration.source_compute == host,
                    Migration.migration_type == "evacuation",
                    Migration.status.in_(("done", "accepted", "pre-migrating")),
                )
            )
            return [migration_dict(m) for m in rows]

    # -- unshelve ---------------------------------------------------------------------

    async def unshelve_instance(
        self, ctx: dict, instance_uuid: str, request_spec: dict[str, Any]
    ) -> None:
        """A shelved server starts again on its host; an offloaded one is scheduled."""
        event = "conductor_unshelve_instance"
        await self.action_event(ctx, instance_uuid, event)
        inst, _ = await self._instance_and_migration(instance_uuid, None)
        if inst.vm_state == VmState.SHELVED and inst.host:
            await self.compute.unshelve_instance(ctx, inst.host, instance_uuid, request_spec)
            await self.action_event(ctx, instance_uuid, event, finish=True)
            return
        zone = request_spec.get("availability_zone")
        unpin = bool(request_spec.get("unpin"))
        try:
            dest = await self._select_destination(
                ctx,
                inst,
                inst.flavor,
                claim_key=instance_uuid,
                host=request_spec.get("host"),
                ignore_source=False,
                availability_zone=zone,
                pinned=not unpin,
            )
        except RemoteError as exc:
            await self._move_failed(ctx, instance_uuid, None, event, exc.message, allocation=None)
            return
        updates: dict[str, Any] = {"host": dest["host"], "node": dest["node"]}
        if zone or unpin:
            updates["pinned_availability_zone"] = zone
        await self.complete_move(ctx, instance_uuid, updates)
        await self.compute.unshelve_instance(ctx, dest["host"], instance_uuid, request_spec)
        await self.action_event(ctx, instance_uuid, event, finish=True)

    async def expire_stuck_moves(self) -> list[str]:
        """End moves with no progress (instance or migration) for build_timeout seconds:
        their host died. The server keeps its vm_state without a task, the migration
        is `error`, the destination's claim is given back."""
        cutoff = utcnow() - timedelta(seconds=self.options.build_timeout)
        async with self.db.read() as s:
            rows = (
                await s.execute(
                    select(Instance.uuid, Instance.task_state, Instance.host).where(
                        Instance.deleted.is_(False),
                        Instance.task_state.in_(MOVE_TASKS),
                        func.coalesce(Instance.updated_at, Instance.created_at) < cutoff,
                    )
                )
            ).all()
            stuck = []
            for uuid, task, host in rows:
                recent = await s.scalar(
                    select(Migration.id).where(
                        Migration.instance_uuid == uuid,
                        Migration.status.in_(OPEN_MIGRATIONS),
                        func.coalesce(Migration.updated_at, Migration.created_at) >= cutoff,
                    )
                )
                if recent is None:
                    migration = await s.scalar(
                        select(Migration.id).where(
                            Migration.instance_uuid == uuid, Migration.status.in_(OPEN_MIGRATIONS)
                        )
                    )
                    stuck.append((uuid, task, host, migration))
        ended = []
        for uuid, task, host, migration_id in stuck:
            message = (
                f"The {task} of instance {uuid} made no progress for "
                f"{self.options.build_timeout:g} seconds: its host is gone."
            )
            try:
                await self.instance_update(
                    {}, uuid, {"task_state": None}, expected_task_state=[task], reply=False
                )
            except Exception:  # noqa: BLE001 - it moved on meanwhile
                continue
            await self.complete_move(
                {},
                uuid,
                {},
                migration_id=migration_id,
                migration_status="error" if migration_id else None,
                allocation="drop_new",
                fault=message,
                host=host,
            )
            LOG.warning("%s", message)
            ended.append(uuid)
        return ended
