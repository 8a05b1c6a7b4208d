"""Moving servers, as the Compute REST layer asks for it (Nova's compute/api.py):
shelve / offload / unshelve, rescue, cold migrate and resize, live migration and
evacuate, and the migration records they leave (os-migrations, servers/{id}/migrations).

Each action checks its states (check_state) and policy, records an instance action
(and a migration), moves the task state by compare-and-swap, and hands the work to
the conductor or the server's host.
"""

from __future__ import annotations

import secrets
import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from cumulo.common.context import RequestContext
from cumulo.common.faults import BadRequest, Conflict, Forbidden, NotFound
from cumulo.common.service_client import ServiceError
from cumulo.compute import quotas, vtpm
from cumulo.compute.models import ComputeNode, Flavor, Instance, Migration
from cumulo.compute.models import ComputeService as ServiceRecord
from cumulo.compute.scheduler.claims import COMPUTE_BINARY
from cumulo.compute.states import TaskState, VmState, check_state
from cumulo.compute.virt.driver import RESCUE_BFV_TRAIT, stable_rescue_device

# Image properties a server's snapshot (createImage, shelve) keeps from its image: what
# boots it again (Nova carries the image's properties over the same way).
BOOT_PROPERTIES = (
    "kernel_id",
    "ramdisk_id",
    "os_command_line",
    "hw_architecture",
    "hw_qemu_guest_agent",
    "os_require_quiesce",
    "os_admin_user",
    "os_distro",
    "os_version",
    "hw_disk_bus",
    "hw_scsi_model",
    "hw_firmware_type",
    "hw_machine_type",
    "os_secure_boot",
)
# Live migrations that can still be aborted or forced to complete.
IN_PROGRESS_LIVE = ("queued", "preparing", "running")


def _flavor_ids(s: Session, *flavorids: str) -> dict[str, int]:
    rows = s.execute(select(Flavor.flavorid, Flavor.id).where(Flavor.flavorid.in_(flavorids)))
    return dict(rows.all())


class ServerMoves:
    """Mixed into ComputeService (db, policy, images, conductor, compute_rpc, ...)."""

    # -- records ----------------------------------------------------------------------

    async def _new_migration(
        self,
        ctx: RequestContext,
        inst: Instance,
        migration_type: str,
        status: str,
        new_flavor: dict[str, Any] | None = None,
        dest: str | None = None,
    ) -> Migration:
        old_id = inst.flavor["id"]
        new_id = (new_flavor or inst.flavor)["id"]
        ids = await self.db.run_read(_flavor_ids, old_id, new_id)
        migration = Migration(
            uuid=str(uuid.uuid4()),
            instance_uuid=inst.uuid,
            migration_type=migration_type,
            status=status,
            source_compute=inst.host,
            source_node=inst.node,
            dest_compute=dest,
            dest_host=dest,
            old_flavor_id=ids.get(old_id),
            new_flavor_id=ids.get(new_id),
            project_id=inst.project_id,
            user_id=inst.user_id,
        )
        async with self.db.write() as s:
            s.add(migration)
        return migration

    async def _compute_host(self, host: str) -> ServiceRecord | None:
        async with self.db.read() as s:
            return await s.scalar(
                select(ServiceRecord).where(
                    ServiceRecord.host == host, ServiceRecord.binary == COMPUTE_BINARY
                )
            )

    async def _check_target_host(self, inst: Instance, host: str | None) -> None:
        """A host named for a migration: a compute host, not the server's own (400)."""
        if host is None:
            return
        if await self._compute_host(host) is None:
            raise BadRequest(f"Compute host {host} could not be found.")
        if host == inst.host:
            raise BadRequest(f"Unable to migrate instance ({inst.uuid}) to current host ({host}).")

    @staticmethod
    def _reject_vtpm(inst: Instance, operation: str, unless_host_security: bool = False) -> None:
        """Nova's reject_vtpm_instances: 400 for a server with an emulated TPM; with
        `unless_host_security` its live-migration rule: only a TPM whose secret the host
        keeps (hw:tpm_secret_security 'host') moves live."""
        server = {"flavor": inst.flavor, "system_metadata": inst.system_metadata}
        if vtpm.instance_constraint(server) is None:
            return
        extra_specs = (inst.flavor or {}).get("extra_specs")
        if unless_host_security and vtpm.secret_security(extra_specs) == "host":
            return
        raise BadRequest(vtpm.operation_not_supported(operation, inst.uuid))

    @staticmethod
    def _check_vtpm_resize(inst: Instance, flavor: Flavor) -> None:
        """The new flavor's TPM is one the server's image allows (400 as at create), and
        no resize moves a TPM's secret to or from the service user (Nova's
        _validate_vtpm_secret_security: 'deployment' to another policy or back)."""
        server = {"flavor": inst.flavor, "system_metadata": inst.system_metadata}
        new_specs = dict(flavor.extra_specs or {})
        try:
            new = vtpm.instance_constraint(server, {"name": flavor.name, "extra_specs": new_specs})
        except vtpm.VTPMInvalid as exc:
            raise BadRequest(str(exc)) from None
        if new is None or vtpm.instance_constraint(server) is None:
            return
        old_security = vtpm.secret_security((inst.flavor or {}).get("extra_specs"))
        new_security = vtpm.secret_security(new_specs)
        if old_security != new_security and "deployment" in (old_security, new_security):
            raise BadRequest(
                "Resize between 'deployment' TPM secret security and other TPM secret "
                "security modes is not supported."
            )

    # -- shelve ---------------------------------------------------------------------

    @check_state(vm_state=[VmState.ACTIVE, VmState.STOPPED, VmState.PAUSED, VmState.SUSPENDED])
    async def shelve(self, inst: Instance, ctx: RequestContext) -> None:
        """Stop the server and keep its disk as a snapshot image; offloaded at once
        when [compute] shelved_offload_time is 0."""
        self.policy.enforce("compute:servers:shelve", ctx, {"project_id": inst.project_id})
        self._check_lock(ctx, inst)
        self._reject_vtpm(inst, "shelve")
        image_id = None
        if inst.image_ref:  # a volume-backed server keeps its volume instead
            image_id = await self._shelved_image(ctx, inst)
        await self._record_action(ctx, inst, "shelve")
        await self._set_task(inst, TaskState.SHELVING, {None})
        offload = self.config.compute.shelved_offload_time == 0
        await self.compute_rpc.shelve_instance(
            self.rpc_context(ctx), inst.host, inst.uuid, image_id, offload
        )

    async def _shelved_image(self, ctx: RequestContext, inst: Instance) -> str:
        sysmeta = inst.system_metadata or {}
        body: dict[str, Any] = {
            "name": f"{inst.display_name}-shelved",
            "disk_format": sysmeta.get("image_disk_format", "qcow2"),
            "container_format": sysmeta.get("image_container_format", "bare"),
            "visibility": "private",
            "image_type": "snapshot",
            "instance_uuid": inst.uuid,
            "base_image_ref": inst.image_ref,
        }
        try:
            source = await self.images.json("GET", f"/v2/images/{inst.image_ref}", ctx.auth_token)
            body.update({k: source[k] for k in BOOT_PROPERTIES if source.get(k)})
        except ServiceError:
            pass  # the image is gone: the snapshot boots on its own
        try:
            image = await self.images.json("POST", "/v2/images", ctx.auth_token, json=body)
        except ServiceError as exc:
            if exc.status in (400, 409, 413):
                raise Conflict(
                    f"The shelved image could not be created: {exc.body[:200]}"
                ) from None
            raise
        return image["id"]

    @check_state(vm_state=[VmState.SHELVED])
    async def shelve_offload(self, inst: Instance, ctx: RequestContext) -> None:
        self.policy.enforce("compute:servers:shelve_offload", ctx, {"project_id": inst.project_id})
        self._check_lock(ctx, inst)
        await self._record_action(ctx, inst, "shelveOffload")
        await self._set_task(inst, TaskState.SHELVING_OFFLOADING, {None})
        await self.compute_rpc.shelve_offload_instance(self.rpc_context(ctx), inst.host, inst.uuid)

    @check_state(vm_state=[VmState.SHELVED, VmState.SHELVED_OFFLOADED])
    async def unshelve(
        self,
        inst: Instance,
        ctx: RequestContext,
        availability_zone: str | None = None,
        host: str | None = None,
        zone_given: bool = False,
    ) -> None:
        """Start it again: on its host while only shelved; scheduled (into
        `availability_zone` from 2.77, onto `host` from 2.91) once offloaded."""
        self.policy.enforce("compute:servers:unshelve", ctx, {"project_id": inst.project_id})
        self._check_lock(ctx, inst)
        if host is not None:
            self.policy.enforce("compute:servers:unshelve:unshelve_to_host", ctx, {})
        if (zone_given or host) and inst.vm_state != VmState.SHELVED_OFFLOADED:
            raise Conflict(
                "The availability_zone and host parameters can only be given for a server "
                f"in SHELVED_OFFLOADED state; server {inst.uuid} is SHELVED."
            )
        if availability_zone:
            await self._availability_zone(ctx, availability_zone)
        # The zone the server is pinned to afterwards: the one given (null unpins it,
        # 2.91), else the one it was created in.
        zone = availability_zone if zone_given else inst.pinned_availability_zone
        if host:
            record = await self._compute_host(host)
            if record is None:
                raise BadRequest(f"Compute host {host} could not be found.")
            if zone is not None and record.availability_zone != zone:
                raise Conflict(f'Host "{host}" is not in the availability zone "{zone}".')
        await self._record_action(ctx, inst, "unshelve")
        await self._set_task(inst, TaskState.UNSHELVING, {None})
        spec = {
            "availability_zone": zone,
            "host": host,
            "unpin": zone_given and availability_zone is None,
        }
        await self.conductor.unshelve_instance(self.rpc_context(ctx), inst.uuid, spec)

    # -- rescue ---------------------------------------------------------------------

    @check_state(vm_state=[VmState.ACTIVE, VmState.STOPPED, VmState.ERROR])
    async def rescue(
        self,
        inst: Instance,
        ctx: RequestContext,
        rescue_image_ref: str | None,
        admin_pass: str | None,
        allow_bfv_rescue: bool = False,
    ) -> str:
        """Boot a rescue image (the server's own when none is given) with the server's
        disk attached second; the admin password the rescue guest gets. A volume-backed
        server only from 2.87 (`allow_bfv_rescue`), as Nova's stable device rescue."""
        self.policy.enforce("compute:servers:rescue", ctx, {"project_id": inst.project_id})
        self._check_lock(ctx, inst)
        self._reject_vtpm(inst, "rescue")
        if not inst.host:
            raise Conflict(f"Instance {inst.uuid} is not on a host.")
        rescue_image = None
        if rescue_image_ref:
            rescue_image = await self._image(ctx, rescue_image_ref)
            try:
                stable_rescue_device(rescue_image)
            except ValueError as exc:
                raise BadRequest(f"Instance {inst.uuid} cannot be rescued: {exc}") from None
        if not inst.image_ref:
            await self._check_volume_backed_rescue(inst, rescue_image, allow_bfv_rescue)
        admin_pass = admin_pass or secrets.token_urlsafe(9)
        await self._record_action(ctx, inst, "rescue")
        await self._set_task(inst, TaskState.RESCUING, {None})
        await self.compute_rpc.rescue_instance(
            self.rpc_context(ctx), inst.host, inst.uuid, rescue_image, admin_pass
        )
        return admin_pass

    async def _check_volume_backed_rescue(
        self, inst: Instance, rescue_image: dict[str, Any] | None, allowed: bool
    ) -> None:
        """Nova: the rescue image must say how to attach itself (hw_rescue_bus and
        hw_rescue_device) and the server's host must report COMPUTE_RESCUE_BFV. (The
        server's own image is no rescue image here: a volume-backed server has none.)"""
        properties = rescue_image or {}
        if not (allowed and "hw_rescue_bus" in properties and "hw_rescue_device" in properties):
            raise BadRequest(
                f"Instance {inst.uuid} cannot be rescued: Cannot rescue a volume-backed instance"
            )
        async with self.db.read() as s:
            traits = await s.scalar(
                select(ComputeNode.traits).where(
                    ComputeNode.host == inst.host, ComputeNode.hypervisor_hostname == inst.node
                )
            )
        if RESCUE_BFV_TRAIT not in (traits or []):
            raise BadRequest(
                f"Instance {inst.uuid} cannot be rescued: Host unable to rescue a "
                "volume-backed instance"
            )

    @check_state(vm_state=[VmState.RESCUED])
    async def unrescue(self, inst: Instance, ctx: RequestContext) -> None:
        self.policy.enforce("compute:servers:rescue", ctx, {"project_id": inst.project_id})
        self._check_lock(ctx, inst)
        await self._record_action(ctx, inst, "unrescue")
        await self._set_task(inst, TaskState.UNRESCUING, {None})
        await self.compute_rpc.unrescue_instance(self.rpc_context(ctx), inst.host, inst.uuid)

    # -- cold migrate and resize ----------------------------------------------------------

    @check_state(vm_state=[VmState.ACTIVE, VmState.STOPPED])
    async def resize(self, inst: Instance, ctx: RequestContext, flavor_ref: str) -> None:
        from cumulo.compute.service import flavor_snapshot

        self._check_lock(ctx, inst)
        flavor = await self.find_flavor(ctx, flavor_ref)
        if flavor.flavorid == inst.flavor["id"]:
            raise BadRequest("When resizing, instances must change flavor!")
        if flavor.root_gb < inst.flavor["root_gb"]:
            raise BadRequest("Resize error: Unable to resize disk down.")
        self._check_vtpm_resize(inst, flavor)
        async with self.db.write() as s:
            try:
                await s.run_sync(
                    quotas.check,
                    inst.project_id,
                    {
                        "cores": max(0, flavor.vcpus - inst.flavor["vcpus"]),
                        "ram": max(0, flavor.memory_mb - inst.flavor["memory_mb"]),
                    },
                )
            except quotas.QuotaExceeded as exc:
                raise Forbidden(str(exc)) from None
        await self._start_cold_move(ctx, inst, "resize", flavor_snapshot(flavor), None)

    @check_state(vm_state=[VmState.ACTIVE, VmState.STOPPED])
    async def migrate(self, inst: Instance, ctx: RequestContext, host: str | None) -> None:
        """Cold migration: the same flavor on another host (chosen, or `host` from 2.56)."""
        target = {"project_id": inst.project_id}
        self.policy.enforce("compute:servers:migrate", ctx, target)
        if host:
            self.policy.enforce("compute:servers:migrate:host", ctx, target)
        self._check_lock(ctx, inst)
        await self._check_target_host(inst, host)
        await self._start_cold_move(ctx, inst, "migration", dict(inst.flavor), host)

    async def _start_cold_move(
        self,
        ctx: RequestContext,
        inst: Instance,
        migration_type: str,
        new_flavor: dict[str, Any],
        host: str | None,
    ) -> None:
        if not inst.host:
            raise Conflict(f"Instance {inst.uuid} is not on a host.")
        action = "resize" if migration_type == "resize" else "migrate"
        await self._record_action(ctx, inst, action)
        await self._set_task(inst, TaskState.RESIZE_PREP, {None})
        migration = await self._new_migration(
            ctx, inst, migration_type, "pre-migrating", new_flavor
        )
        await self.update_instance(
            inst.uuid,
            {"system_metadata": {**(inst.system_metadata or {}), "old_vm_state": inst.vm_state}},
        )
        await self.conductor.migrate_server(
            self.rpc_context(ctx), inst.uuid, new_flavor, migration.id, host
        )

    async def _finished_migration(self, inst: Instance) -> Migration | None:
        async with self.db.read() as s:
            return await s.scalar(
                select(Migration)
                .where(Migration.instance_uuid == inst.uuid, Migration.status == "finished")
                .order_by(Migration.id.desc())
                .limit(1)
            )

    @check_state(vm_state=[VmState.RESIZED])
    async def confirm_resize(self, inst: Instance, ctx: RequestContext) -> None:
        migration = await self._finished_migration(inst)
        await self._record_action(ctx, inst, "confirmResize")
        rpc_ctx = self.rpc_context(ctx)
        await self.conductor.finish_resize(rpc_ctx, inst.uuid, confirm=True)
        source = migration.source_compute if migration else inst.host
        if source and source != inst.host:
            await self.compute_rpc.confirm_migration(rpc_ctx, source, inst.uuid)
        else:
            await self.compute_rpc.confirm_resize(rpc_ctx, inst.host, inst.uuid)
        sysmeta = dict(inst.system_metadata or {})
        old_flavor = sysmeta.pop("old_flavor", None)
        old_state = sysmeta.pop("old_vm_state", VmState.ACTIVE)
        if await self._drop_vtpm_of_old_flavor(ctx, inst, old_flavor):
            sysmeta.pop(vtpm.SECRET_UUID_KEY, None)
            sysmeta.pop(vtpm.SECRET_OWNER_KEY, None)
        await self.update_instance(inst.uuid, {"vm_state": old_state, "system_metadata": sysmeta})
        if migration is not None:
            await self.conductor.migration_update(rpc_ctx, migration.id, {"status": "confirmed"})

    async def _drop_vtpm_of_old_flavor(
        self, ctx: RequestContext, inst: Instance, old_flavor: dict[str, Any] | None
    ) -> bool:
        """A confirmed resize from a flavor with a TPM to one without: the TPM's secret
        goes, deleted as the old flavor's policy says (Nova's confirm_resize); True
        when it was deleted."""
        if not old_flavor or vtpm.SECRET_UUID_KEY not in (inst.system_metadata or {}):
            return False
        server = {"flavor": inst.flavor, "system_metadata": inst.system_metadata}
        if vtpm.instance_constraint(server) is not None:
            return False
        return await self._delete_vtpm_secret(ctx, inst, old_flavor)

    @check_state(vm_state=[VmState.RESIZED])
    async def revert_resize(self, inst: Instance, ctx: RequestContext) -> None:
        from cumulo.compute.conductor_moves import migration_dict

        old_flavor = (inst.system_metadata or {}).get("old_flavor")
        if not old_flavor:
            raise Conflict(f"Instance {inst.uuid} has no flavor to revert to.")
        migration = await self._finished_migration(inst)
        await self._record_action(ctx, inst, "revertResize")
        await self._set_task(inst, TaskState.RESIZE_REVERTING, {None})
        rpc_ctx = self.rpc_context(ctx)
        if migration is not None and migration.source_compute != inst.host:
            await self.conductor.migration_update(rpc_ctx, migration.id, {"status": "reverting"})
            await self.compute_rpc.revert_migration(
                rpc_ctx, inst.host, inst.uuid, migration_dict(migration)
            )
            return
        await self.compute_rpc.resize_instance(
            rpc_ctx,
            inst.host,
            inst.uuid,
            old_flavor,
            True,
            migration_id=migration.id if migration else None,
        )

    # -- live migration -------------------------------------------------------------

    @check_state(vm_state=[VmState.ACTIVE, VmState.PAUSED])
    async def live_migrate(
        self,
        inst: Instance,
        ctx: RequestContext,
        host: str | None,
        block_migration: bool | None,
    ) -> None:
        """os-migrateLive: `block_migration` None is "auto" (local disks are copied)."""
        target = {"project_id": inst.project_id}
        self.policy.enforce("compute:servers:migrate_live", ctx, target)
        if host:
            self.policy.enforce("compute:servers:migrate_live:host", ctx, target)
        self._check_lock(ctx, inst)
        if not inst.host:
            raise Conflict(f"Instance {inst.uuid} is not on a host.")
        self._reject_vtpm(inst, "live-migration", unless_host_security=True)
        await self._check_target_host(inst, host)
        await self._record_action(ctx, inst, "live-migration")
        await self._set_task(inst, TaskState.MIGRATING, {None})
        migration = await self._new_migration(ctx, inst, "live-migration", "accepted")
        await self.conductor.live_migrate_instance(
            self.rpc_context(ctx), inst.uuid, migration.id, host, block_migration
        )

    async def server_migration(self, inst: Instance, migration_id: str) -> Migration:
        try:
            number = int(migration_id)
        except ValueError:
            raise NotFound(f"Migration {migration_id} could not be found.") from None
        async with self.db.read() as s:
            migration = await s.get(Migration, number)
        if migration is None or migration.instance_uuid != inst.uuid:
            raise NotFound(f"Migration {migration_id} for instance {inst.uuid} could not be found.")
        return migration

    async def live_migration_in_progress(self, inst: Instance, migration_id: str) -> Migration:
        migration = await self.server_migration(inst, migration_id)
        if migration.migration_type != "live-migration":
            raise BadRequest(f"Migration {migration_id} is not a live migration.")
        if migration.status not in IN_PROGRESS_LIVE:
            raise BadRequest(
                f"Migration {migration_id} state of instance {inst.uuid} is "
                f"{migration.status}. Cannot change it while it is in this state."
            )
        return migration

    async def force_complete(self, inst: Instance, ctx: RequestContext, migration_id: str) -> None:
        self.policy.enforce(
            "compute:servers:migrations:force_complete", ctx, {"project_id": inst.project_id}
        )
        if inst.task_state != TaskState.MIGRATING:
            raise Conflict(
                f"Cannot 'force_complete' instance {inst.uuid} while it is in task_state "
                f"{inst.task_state}"
            )
        migration = await self.live_migration_in_progress(inst, migration_id)
        if migration.status != "running":
            raise BadRequest(
                f"Migration {migration_id} state of instance {inst.uuid} is "
                f"{migration.status}. Cannot force_complete while the migration is in "
                "this state."
            )
        await self._record_action(ctx, inst, "live_migration_force_complete")
        await self.compute_rpc.live_migration_force_complete(
            self.rpc_context(ctx), inst.host, inst.uuid
        )

    async def abort_live_migration(
        self, inst: Instance, ctx: RequestContext, migration_id: str
    ) -> None:
        self.policy.enforce(
            "compute:servers:migrations:delete", ctx, {"project_id": inst.project_id}
        )
        if inst.task_state != TaskState.MIGRATING:
            raise Conflict(
                f"Cannot 'abort' instance {inst.uuid} while it is in task_state {inst.task_state}"
            )
        migration = await self.live_migration_in_progress(inst, migration_id)
        await self._record_action(ctx, inst, "live_migration_cancel")
        await self.compute_rpc.live_migration_abort(
            self.rpc_context(ctx), inst.host, inst.uuid, migration.id
        )

    # -- evacuate -------------------------------------------------------------------

    @check_state(vm_state=[VmState.ACTIVE, VmState.STOPPED, VmState.ERROR])
    async def evacuate(
        self,
        inst: Instance,
        ctx: RequestContext,
        host: str | None,
        admin_pass: str | None,
        stopped: bool = False,
    ) -> str:
        """Rebuild elsewhere a server whose host's compute service is down; `stopped`
        (2.95): it ends stopped there whatever its state was."""
        self.policy.enforce("compute:servers:evacuate", ctx, {"project_id": inst.project_id})
        if not inst.host:
            raise Conflict(f"Instance {inst.uuid} is not on a host.")
        self._reject_vtpm(inst, "evacuate")
        if host is not None:
            if await self._compute_host(host) is None:
                raise NotFound(f"Compute host {host} not found.")
            if host == inst.host:
                raise BadRequest("The target host can't be the same one.")
        if await self._host_up(inst.host):
            raise BadRequest(f"Compute service of {inst.host} is still in use.")
        admin_pass = admin_pass or secrets.token_urlsafe(9)
        await self._record_action(ctx, inst, "evacuate")
        await self._set_task(inst, TaskState.REBUILDING, {None})
        migration = await self._new_migration(ctx, inst, "evacuation", "accepted")
        await self.conductor.evacuate_instance(
            self.rpc_context(ctx),
            inst.uuid,
            migration.id,
            host,
            VmState.STOPPED if stopped else None,
        )
        return admin_pass

    # -- migration records ---------------------------------------------------------------

    async def migrations(
        self,
        *,
        instance_uuid: str | None = None,
        project_id: str | None = None,
        user_id: str | None = None,
        filters: dict[str, str] | None = None,
        migration_type: str | None = None,
        statuses: tuple[str, ...] | None = None,
    ) -> list[Migration]:
        query = select(Migration)
        if instance_uuid:
            query = query.where(Migration.instance_uuid == instance_uuid)
        if project_id:
            query = query.where(Migration.project_id == project_id)
        if user_id:
            query = query.where(Migration.user_id == user_id)
        if migration_type:
            query = query.where(Migration.migration_type == migration_type)
        if statuses:
            query = query.where(Migration.status.in_(statuses))
        for name, value in (filters or {}).items():
            if name == "host":
                query = query.where(
                    (Migration.source_compute == value) | (Migration.dest_compute == value)
                )
            elif name in ("status", "source_compute", "migration_type"):
                query = query.where(getattr(Migration, name) == value)
        async with self.db.read() as s:
            return list(
                await s.scalars(query.order_by(Migration.created_at.desc(), Migration.id.desc()))
            )
