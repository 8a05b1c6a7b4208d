"""What a compute host does when a server moves (Nova's compute manager, same names):
shelve and offload, unshelve, rescue, cold migration and resize to another host
(the source exports its disks, the destination copies them in), live migration (the
source drives the hypervisor's migration to the destination prepared for it) and
evacuate (rebuild here what a dead host ran).

Every move ends in one conductor call (complete_move): the instance's new host and
state, the migration's status and the claims together. A failure undoes what this
host did and ends the move in a sane state with the reason recorded; no server is
left in a task state.

The server's ports are bound to the destination before the guest leaves its host (cold
migration and resize: before it is stopped; live migration: while the destination
prepares; evacuate: before the server is moved there). A destination whose network
agent cannot bind them (Nova's PortBindingFailed) fails the move there and then: the
ports are bound back, the server stays where it was in its state, with the fault, and
the migration is in `error` (`failed` for an evacuation, as Nova's).

When the Network service has multiple port bindings (`binding-extended`), a live
migration does as Nova's: the conductor gives each port an inactive binding on the
destination before the source is asked to migrate (cumulo.compute.conductor_moves), the
destination plugs the guest as those bindings say, the source activates them once the
guest runs there and deletes its own; a failed migration deletes the destination's.
Until the activation the source's agent keeps wiring and filtering the ports.

A live migration moves the server's volume attachments as Nova's: the destination makes
a new attachment of each volume for itself while it prepares (the source's stays while
the guest runs there), the source deletes its old ones once the destination has taken
over; a failed migration deletes the new ones and puts the old ones back.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from cumulo.common.db import utcnow
from cumulo.common.rpc import RemoteError
from cumulo.compute import rpcapi
from cumulo.compute.network import with_bindings
from cumulo.compute.states import PowerState, TaskState, VmState
from cumulo.compute.virt.driver import BlockDevice, GuestNotFound

LOG = logging.getLogger(__name__)

VOLUME_API = {"OpenStack-API-Version": "volume 3.44"}
_SHELVED_KEYS = ("shelved_at", "shelved_image_id", "shelved_host")


class HostMoves:
    """Mixed into ComputeManager (host, driver, bus, conductor, network, volumes,
    image_cache, options, _set_task, _guest_spec, _device_metadata, _machine_type_record,
    _upload_snapshot, _reserve_attachment, _complete_attachment, _drop_attachment,
    _opened, _connector)."""

    _aborted_migrations: set[str]
    _connector: Callable[[str | None], dict[str, Any]]

    @property
    def _compute_rpc(self) -> rpcapi.ComputeAPI:
        return rpcapi.ComputeAPI(self.bus)

    async def _event(
        self, ctx: dict, uuid: str, event: str, *, finish: bool = False, error: str | None = None
    ) -> None:
        await self.conductor.action_event(
            ctx, uuid, event, host=self.host, finish=finish, error=error
        )

    async def _power(self, uuid: str) -> int:
        try:
            return int((await self.driver.get_info(uuid)).state)
        except GuestNotFound:
            return int(PowerState.NOSTATE)

    async def _read(self, ctx: dict, uuid: str) -> dict[str, Any]:
        return await self.conductor.instance_update(ctx, uuid, {})

    async def _bind_ports(self, inst: dict[str, Any], host: str | None) -> list[dict[str, Any]]:
        info = inst.get("network_info") or []
        if self.network is None or not info:
            return info
        return await self.network.bind_to_host(info, host)

    async def _bind_here(self, ctx: dict, uuid: str) -> None:
        await self._bind_ports(await self._read(ctx, uuid), self.host)

    async def _activate_port_bindings(self, ctx: dict, uuid: str, host: str) -> None:
        """The server's ports' bindings on `host` become their active ones (Nova's
        migrate_instance_start): that host's agent wires and filters them from now on."""
        info = (await self._read(ctx, uuid)).get("network_info") or []
        if self.network is not None and info:
            await self.network.activate_port_bindings(info, host)

    async def _delete_port_bindings(self, ctx: dict, uuid: str, host: str) -> None:
        """The server's ports' bindings on `host` deleted (Nova's
        cleanup_instance_network_on_host)."""
        info = (await self._read(ctx, uuid)).get("network_info") or []
        if self.network is not None and info:
            await self.network.delete_port_bindings(info, host)

    async def _connect_volumes(
        self, ctx: dict, uuid: str
    ) -> tuple[tuple[BlockDevice, ...], dict[str, str]]:
        """The server's attached volumes, connected to this host (Block Storage is told
        the new connector, and answers how this host reaches each volume); their tags."""
        bdms = [b for b in await self.conductor.block_devices(ctx, uuid) if b["attachment_id"]]
        if not bdms:
            return (), {}
        if self.volumes is None:
            raise RuntimeError("this compute host has no Block Storage service")
        token = ctx.get("auth_token") or ""
        devices = []
        for bdm in bdms:
            attachment = (
                await self.volumes.json(
                    "PUT",
                    f"/v3/attachments/{bdm['attachment_id']}",
                    token,
                    headers=VOLUME_API,
                    json={"attachment": {"connector": self._connector(bdm["device_name"])}},
                )
            )["attachment"]
            info = attachment.get("connection_info") or bdm["connection_info"]
            await self.conductor.block_device_update(ctx, bdm["id"], {"connection_info": info})
            devices.append(
                BlockDevice(
                    bdm["volume_id"],
                    bdm["device_name"],
                    info,
                    bdm["boot_index"],
                    disk_bus=bdm.get("disk_bus"),
                    device_type=bdm.get("device_type"),
                )
            )
        return tuple(devices), {b["volume_id"]: b["tag"] for b in bdms if b["tag"]}

    async def _spec_here(
        self,
        ctx: dict,
        inst: dict[str, Any],
        network_info: list[dict[str, Any]],
        *,
        admin_password: str | None = None,
        image_meta: dict[str, Any] | None = None,
        vtpm_passphrase: str | None = None,
    ):
        """The guest as this host runs it: its ports and volumes as bound here (the
        encrypted ones with their keys: a key that cannot be had fails the move), its
        TPM opened with `vtpm_passphrase` (handed over by the host it comes from) or
        the Key Manager's."""
        devices, tags = await self._connect_volumes(ctx, inst["uuid"])
        token = ctx.get("auth_token") or ""
        devices = tuple([await self._opened(token, device) for device in devices])
        return await self._guest_spec(
            token,
            inst,
            network_info,
            admin_password,
            image_meta,
            block_devices=devices,
            volume_tags=tags,
            tpm=await self._vtpm_for(ctx, inst, passphrase=vtpm_passphrase),
        )

    # -- shelve ---------------------------------------------------------------------

    async def shelve_instance(
        self, ctx: dict, instance_uuid: str, image_id: str | None, offload: bool
    ) -> None:
        """Stop the guest and keep its disk as image `image_id`; offload at once when
        [compute] shelved_offload_time is 0 (Nova's default)."""
        event = "compute_shelve_instance"
        await self._event(ctx, instance_uuid, event)
        was_running = False
        try:
            inst = await self._read(ctx, instance_uuid)
            was_running = await self._power(instance_uuid) == PowerState.RUNNING
            await self.driver.power_off(instance_uuid)
            if image_id:
                await self._set_task(
                    ctx,
                    instance_uuid,
                    TaskState.SHELVING_IMAGE_UPLOADING,
                    TaskState.SHELVING,
                    reply=False,
                )
                await self._upload_snapshot(ctx, instance_uuid, image_id)
            sysmeta = {
                **(inst.get("system_metadata") or {}),
                "shelved_at": utcnow().isoformat(),
                "shelved_image_id": image_id or "",
                "shelved_host": self.host,
            }
            await self.conductor.complete_move(
                ctx,
                instance_uuid,
                {
                    "vm_state": VmState.SHELVED,
                    "task_state": TaskState.SHELVING_OFFLOADING if offload else None,
                    "power_state": await self._power(instance_uuid),
                    "system_metadata": sysmeta,
                },
            )
        except Exception as exc:  # noqa: BLE001 - the server stays as it was
            if was_running:
                await self._quietly(self.driver.power_on, instance_uuid)
            await self._failed(ctx, instance_uuid, event, "Shelve", exc)
            return
        await self._event(ctx, instance_uuid, event, finish=True)
        if offload:
            await self.shelve_offload_instance(ctx, instance_uuid)

    async def shelve_offload_instance(self, ctx: dict, instance_uuid: str) -> None:
        """Remove the shelved guest from this host and give back its resources."""
        event = "compute_shelve_offload_instance"
        await self._event(ctx, instance_uuid, event)
        try:
            inst = await self._read(ctx, instance_uuid)
            await self.driver.destroy(instance_uuid)
            network_info = await self._bind_ports(inst, None)
        except Exception as exc:  # noqa: BLE001 - stays shelved on this host
            await self._failed(ctx, instance_uuid, event, "Offload", exc)
            return
        await self.conductor.complete_move(
            ctx,
            instance_uuid,
            {
                "vm_state": VmState.SHELVED_OFFLOADED,
                "task_state": None,
                "power_state": int(PowerState.NOSTATE),
                "host": None,
                "node": None,
                "network_info": network_info,
            },
            allocation="release",
        )
        await self._event(ctx, instance_uuid, event, finish=True)

    async def offload_shelved_instances(self) -> None:
        """Periodic: offload what has been shelved here longer than shelved_offload_time."""
        keep = self.options.shelved_offload_time
        if keep <= 0:
            return
        ctx = self.service_context
        now = utcnow()
        for inst in await self.conductor.instances_on_host(ctx, self.host):
            shelved_at = (inst["system_metadata"] or {}).get("shelved_at")
            if inst["vm_state"] != VmState.SHELVED or inst["task_state"] or not shelved_at:
                continue
            if (now - datetime.fromisoformat(shelved_at)).total_seconds() < keep:
                continue
            try:
                await self._set_task(
                    ctx, inst["uuid"], TaskState.SHELVING_OFFLOADING, None, reply=False
                )
            except Exception:  # noqa: BLE001 - an action got there first
                continue
            await self.shelve_offload_instance(ctx, inst["uuid"])

    async def unshelve_instance(
        self, ctx: dict, instance_uuid: str, request_spec: dict[str, Any]
    ) -> None:
        """Start a shelved guest again, or spawn an offloaded one here from its image."""
        event = "compute_unshelve_instance"
        await self._event(ctx, instance_uuid, event)
        inst = await self._read(ctx, instance_uuid)
        offloaded = inst["vm_state"] == VmState.SHELVED_OFFLOADED
        sysmeta = dict(inst.get("system_metadata") or {})
        image_id = sysmeta.get("shelved_image_id") or None
        network_info = inst.get("network_info") or []
        try:
            await self._set_task(
                ctx, instance_uuid, TaskState.SPAWNING, TaskState.UNSHELVING, reply=False
            )
            if offloaded:
                network_info = await self._bind_ports(inst, self.host)
                source = {**inst, "image_ref": image_id or inst["image_ref"]}
                guest = await self._spec_here(ctx, source, network_info)
                await self.driver.spawn(guest)
            else:
                await self.driver.power_on(instance_uuid)
        except Exception as exc:  # noqa: BLE001 - back to where it was, resources given back
            updates: dict[str, Any] = {}
            allocation = None
            if offloaded:
                await self._quietly(self.driver.destroy, instance_uuid)
                await self._quietly(self._bind_ports, {**inst, "network_info": network_info}, None)
                updates.update(host=None, node=None)
                allocation = "release"
            await self._failed(
                ctx, instance_uuid, event, "Unshelve", exc, updates, allocation=allocation
            )
            return
        for key in _SHELVED_KEYS:
            sysmeta.pop(key, None)
        if offloaded:  # a new guest: its machine type is recorded if it was not yet
            sysmeta = (await self._machine_type_record(instance_uuid, sysmeta)).get(
                "system_metadata", sysmeta
            )
        await self.conductor.complete_move(
            ctx,
            instance_uuid,
            {
                "vm_state": VmState.ACTIVE,
                "task_state": None,
                "power_state": await self._power(instance_uuid),
                "system_metadata": sysmeta,
                "network_info": network_info,
                "device_metadata": await self._device_metadata(ctx, instance_uuid, network_info),
                "launched_at": utcnow().isoformat(),
            },
        )
        if image_id:  # the snapshot was only kept while the server was shelved (as Nova)
            await self._quietly(
                self.image_cache.images.request,
                "DELETE",
                f"/v2/images/{image_id}",
                ctx.get("auth_token") or "",
                ok=(204, 404),
            )
        await self._event(ctx, instance_uuid, event, finish=True)

    # -- rescue ---------------------------------------------------------------------

    async def rescue_instance(
        self,
        ctx: dict,
        instance_uuid: str,
        rescue_image: dict[str, Any] | None,
        admin_password: str,
    ) -> None:
        """Boot the rescue image with the server's own disk attached second."""
        event = "compute_rescue_instance"
        await self._event(ctx, instance_uuid, event)
        try:
            inst = await self._read(ctx, instance_uuid)
            image_id = rescue_image["id"] if rescue_image else inst["image_ref"]
            guest = await self._spec_here(
                ctx,
                {**inst, "image_ref": image_id},
                inst.get("network_info") or [],
                admin_password=admin_password,
                image_meta=rescue_image,
            )
            await self.driver.rescue(instance_uuid, guest)
        except Exception as exc:  # noqa: BLE001 - the server stays as it was
            await self._failed(ctx, instance_uuid, event, "Rescue", exc)
            return
        await self.conductor.complete_move(
            ctx,
            instance_uuid,
            {
                "vm_state": VmState.RESCUED,
                "task_state": None,
                "power_state": await self._power(instance_uuid),
            },
        )
        await self._event(ctx, instance_uuid, event, finish=True)

    async def unrescue_instance(self, ctx: dict, instance_uuid: str) -> None:
        event = "compute_unrescue_instance"
        await self._event(ctx, instance_uuid, event)
        try:
            await self.driver.unrescue(instance_uuid)
        except Exception as exc:  # noqa: BLE001 - stays in rescue, says why
            await self._failed(ctx, instance_uuid, event, "Unrescue", exc)
            return
        await self.conductor.complete_move(
            ctx,
            instance_uuid,
            {
                "vm_state": VmState.ACTIVE,
                "task_state": None,
                "power_state": await self._power(instance_uuid),
            },
        )
        await self._event(ctx, instance_uuid, event, finish=True)

    # -- cold migration and resize to another host ------------------------------------

    async def migrate_instance(
        self,
        ctx: dict,
        instance_uuid: str,
        flavor: dict[str, Any],
        migration: dict[str, Any],
    ) -> None:
        """On the source: stop the guest, export its disks, have the destination copy
        them and start the guest there; the export ends when it has."""
        event = "compute_resize_instance"
        await self._event(ctx, instance_uuid, event)
        was_running = False
        try:
            await self._set_task(
                ctx, instance_uuid, TaskState.RESIZE_MIGRATING, TaskState.RESIZE_PREP, reply=False
            )
            # The destination must bind the ports before the guest stops here.
            await self._bind_ports(await self._read(ctx, instance_uuid), migration["dest_compute"])
            was_running = await self._power(instance_uuid) == PowerState.RUNNING
            handover = await self._vtpm_handover(await self._read(ctx, instance_uuid))
            disk_info = await self.driver.migrate_disk_and_power_off(instance_uuid)
            try:
                await self._set_task(
                    ctx,
                    instance_uuid,
                    TaskState.RESIZE_MIGRATED,
                    TaskState.RESIZE_MIGRATING,
                    reply=False,
                )
                await self.conductor.migration_update(
                    ctx, migration["id"], {"status": "post-migrating"}
                )
                await self._compute_rpc.finish_migration(
                    ctx,
                    migration["dest_compute"],
                    instance_uuid,
                    flavor,
                    migration,
                    disk_info,
                    was_running,
                    vtpm_passphrase=handover,
                )
            finally:
                await self.driver.end_disk_export(instance_uuid)
        except Exception as exc:  # noqa: BLE001 - the guest stays here, as it was
            if was_running:
                await self._quietly(self.driver.power_on, instance_uuid)
            inst = await self._read(ctx, instance_uuid)
            await self._quietly(self._bind_ports, inst, self.host)
            await self._failed(
                ctx,
                instance_uuid,
                event,
                "Migration",
                exc,
                migration_id=migration["id"],
                migration_status="error",
                allocation="drop_new",
            )
            return
        await self._event(ctx, instance_uuid, event, finish=True)

    async def finish_migration(
        self,
        ctx: dict,
        instance_uuid: str,
        flavor: dict[str, Any],
        migration: dict[str, Any],
        disk_info: dict[str, Any],
        power_on: bool,
        vtpm_passphrase: str | None = None,
    ) -> None:
        """On the destination: the disks copied in, the guest started with the new
        flavor; the server is then here, in VERIFY_RESIZE."""
        event = "compute_finish_resize"
        await self._event(ctx, instance_uuid, event)
        try:
            inst = await self._read(ctx, instance_uuid)
            network_info = await self._bind_ports(inst, self.host)
            resized = {**inst, "flavor": flavor}
            guest = await self._spec_here(
                ctx, resized, network_info, vtpm_passphrase=vtpm_passphrase
            )
            # A TPM the new flavor is the first to give has its secret recorded in it.
            inst["system_metadata"] = resized.get("system_metadata")
            await self.driver.finish_migration(guest, disk_info, power_on)
        except Exception as exc:
            await self._quietly(self.driver.destroy, instance_uuid)
            await self._event(ctx, instance_uuid, event, finish=True, error=str(exc))
            raise
        sysmeta = {**(inst.get("system_metadata") or {}), "old_flavor": inst["flavor"]}
        await self.conductor.complete_move(
            ctx,
            instance_uuid,
            {
                "host": self.host,
                "node": migration["dest_node"],
                "vm_state": VmState.RESIZED,
                "task_state": None,
                "power_state": await self._power(instance_uuid),
                "flavor": flavor,
                "vcpus": flavor["vcpus"],
                "memory_mb": flavor["memory_mb"],
                "system_metadata": sysmeta,
                "network_info": network_info,
                "device_metadata": await self._device_metadata(ctx, instance_uuid, network_info),
            },
            migration_id=migration["id"],
            migration_status="finished",
        )
        await self._event(ctx, instance_uuid, event, finish=True)

    async def confirm_migration(self, ctx: dict, instance_uuid: str) -> None:
        """On the source of a confirmed move: the guest left behind goes."""
        event = "compute_confirm_resize"
        await self._event(ctx, instance_uuid, event)
        error = None
        try:
            await self.driver.destroy(instance_uuid)
        except Exception as exc:  # noqa: BLE001 - recorded on the action
            error = str(exc)
        await self._event(ctx, instance_uuid, event, finish=True, error=error)

    async def revert_migration(
        self, ctx: dict, instance_uuid: str, migration: dict[str, Any]
    ) -> None:
        """On the destination of a reverted move: drop the guest, give it back."""
        event = "compute_revert_resize"
        await self._event(ctx, instance_uuid, event)
        try:
            await self.driver.destroy(instance_uuid)
            await self._compute_rpc.finish_revert_migration(
                ctx, migration["source_compute"], instance_uuid, migration
            )
        except Exception as exc:  # noqa: BLE001 - the server cannot be in two places
            await self._failed(
                ctx,
                instance_uuid,
                event,
                "Revert",
                exc,
                {"vm_state": VmState.ERROR},
                migration_id=migration["id"],
                migration_status="error",
            )
            return
        await self._event(ctx, instance_uuid, event, finish=True)

    async def finish_revert_migration(
        self, ctx: dict, instance_uuid: str, migration: dict[str, Any]
    ) -> None:
        """On the source of a reverted move: its guest (kept stopped) is the server again."""
        event = "compute_finish_revert_resize"
        await self._event(ctx, instance_uuid, event)
        inst = await self._read(ctx, instance_uuid)
        sysmeta = dict(inst.get("system_metadata") or {})
        old_flavor = sysmeta.pop("old_flavor", inst["flavor"])
        old_state = sysmeta.pop("old_vm_state", VmState.ACTIVE)
        await self._drop_vtpm_of_reverted_flavor(ctx, inst, old_flavor, sysmeta)
        network_info = await self._bind_ports(inst, self.host)
        await self._connect_volumes(ctx, instance_uuid)
        if old_state == VmState.ACTIVE:
            await self.driver.power_on(instance_uuid)
        await self.conductor.complete_move(
            ctx,
            instance_uuid,
            {
                "host": self.host,
                "node": migration["source_node"],
                "vm_state": old_state,
                "task_state": None,
                "power_state": await self._power(instance_uuid),
                "flavor": old_flavor,
                "vcpus": old_flavor["vcpus"],
                "memory_mb": old_flavor["memory_mb"],
                "system_metadata": sysmeta,
                "network_info": network_info,
                "device_metadata": await self._device_metadata(ctx, instance_uuid, network_info),
            },
            migration_id=migration["id"],
            migration_status="reverted",
            allocation="drop_new",
        )
        await self._event(ctx, instance_uuid, event, finish=True)

    # -- live migration -------------------------------------------------------------

    async def live_migration(
        self, ctx: dict, instance_uuid: str, migration: dict[str, Any]
    ) -> None:
        """On the source: the destination prepares, the hypervisor moves the running
        guest (memory, and the local disks when block_migration), the destination
        takes over; any failure leaves the guest running here."""
        event = "compute_live_migration"
        await self._event(ctx, instance_uuid, event)
        dest = migration["dest_compute"]
        rpc = self._compute_rpc
        self._aborted_migrations.discard(instance_uuid)
        # The conductor bound the ports to the destination, inactive (binding-extended):
        # this host's agent keeps wiring and filtering them until the guest is there.
        extended = migration.get("port_bindings") is not None
        moved_attachments: list[dict[str, Any]] = []
        if migration.get("block_migration") is None:
            # "auto": no host shares its instance storage, so the local disks go along
            # (Nova's libvirt driver: block migration unless the storage is shared).
            migration = {**migration, "block_migration": True}
        try:
            handover = await self._vtpm_handover(await self._read(ctx, instance_uuid))
            source = await self.driver.live_migration_source(instance_uuid)
            migrate_data = await rpc.pre_live_migration(
                ctx, dest, instance_uuid, {**migration, "source": source}, vtpm_passphrase=handover
            )
            moved_attachments = migrate_data.pop("volume_attachments", [])
            await self.conductor.migration_update(ctx, migration["id"], {"status": "running"})

            async def progress(stats: dict[str, int]) -> None:
                await self.conductor.migration_update(ctx, migration["id"], stats)

            result = await self.driver.live_migrate(
                instance_uuid, migrate_data, bool(migration.get("block_migration")), progress
            )
        except Exception as exc:  # noqa: BLE001 - rolled back: the guest stays here
            aborted = instance_uuid in self._aborted_migrations
            self._aborted_migrations.discard(instance_uuid)
            await self._quietly(
                rpc.rollback_live_migration_at_destination, ctx, dest, instance_uuid
            )
            # Its ports' bindings to the destination go (or, bound there already, they
            # are bound back here); so do its volumes (the destination's attachments go,
            # the source's are used again).
            if extended:
                await self._quietly(self._delete_port_bindings, ctx, instance_uuid, dest)
            else:
                await self._quietly(self._bind_here, ctx, instance_uuid)
            await self._quietly(self._restore_attachments, ctx, moved_attachments)
            await self._failed(
                ctx,
                instance_uuid,
                event,
                "Live migration",
                exc,
                migration_id=migration["id"],
                migration_status="cancelled" if aborted else "error",
                allocation="drop_new",
            )
            return
        try:
            if extended:
                await self._activate_port_bindings(ctx, instance_uuid, dest)
            await rpc.post_live_migration_at_destination(
                ctx, dest, instance_uuid, migration, result
            )
        except Exception as exc:  # noqa: BLE001 - the guest runs there but is not set up
            await self._failed(
                ctx,
                instance_uuid,
                event,
                "Setting up the moved guest",
                exc,
                {"vm_state": VmState.ERROR, "host": dest, "node": migration["dest_node"]},
                migration_id=migration["id"],
                migration_status="error",
                allocation="keep_new",
            )
            return
        await self._quietly(self.driver.post_live_migration_at_source, instance_uuid)
        if extended:  # this host's bindings, inactive since the destination's activation
            await self._quietly(self._delete_port_bindings, ctx, instance_uuid, self.host)
        for moved in moved_attachments:  # the source's attachments, now unused
            await self._drop_attachment(ctx.get("auth_token") or "", moved["old_attachment_id"])
        await self._event(ctx, instance_uuid, event, finish=True)

    async def pre_live_migration(
        self,
        ctx: dict,
        instance_uuid: str,
        migration: dict[str, Any],
        vtpm_passphrase: str | None = None,
    ) -> dict[str, Any]:
        event = "compute_pre_live_migration"
        await self._event(ctx, instance_uuid, event)
        moved: list[dict[str, Any]] = []
        try:
            inst = await self._read(ctx, instance_uuid)
            bindings = migration.get("port_bindings")
            if bindings is not None:
                # Bound here inactive by the conductor: plugged as those bindings say.
                network_info = with_bindings(inst.get("network_info") or [], bindings)
            else:
                # Bound here before the guest comes (a failure leaves it where it runs).
                network_info = await self._bind_ports(inst, self.host)
            moved = await self._attach_volumes_here(ctx, instance_uuid)
            guest = await self._spec_here(ctx, inst, network_info, vtpm_passphrase=vtpm_passphrase)
            data = await self.driver.pre_live_migration(
                guest, bool(migration.get("block_migration")), migration.get("source")
            )
        except Exception as exc:
            await self._quietly(self.driver.destroy, instance_uuid)
            await self._quietly(self._restore_attachments, ctx, moved)
            await self._event(ctx, instance_uuid, event, finish=True, error=str(exc))
            raise
        await self._event(ctx, instance_uuid, event, finish=True)
        return {**data, "volume_attachments": moved}

    async def _attach_volumes_here(self, ctx: dict, instance_uuid: str) -> list[dict[str, Any]]:
        """A new attachment of each of the server's volumes for this host (Nova's
        pre_live_migration attachment_create), recorded in its block device mapping (the
        source's attachment stays until the move is over); what the mappings had."""
        bdms = [
            b for b in await self.conductor.block_devices(ctx, instance_uuid) if b["attachment_id"]
        ]
        if not bdms:
            return []
        if self.volumes is None:
            raise RuntimeError("this compute host has no Block Storage service")
        token = ctx.get("auth_token") or ""
        moved = []
        try:
            for bdm in bdms:
                attachment = await self._reserve_attachment(token, bdm["volume_id"], instance_uuid)
                moved.append(
                    {
                        "bdm_id": bdm["id"],
                        "old_attachment_id": bdm["attachment_id"],
                        "old_connection_info": bdm["connection_info"],
                        "new_attachment_id": attachment["id"],
                    }
                )
                await self.conductor.block_device_update(
                    ctx, bdm["id"], {"attachment_id": attachment["id"]}
                )
        except Exception:
            await self._quietly(self._restore_attachments, ctx, moved)
            raise
        return moved

    async def _restore_attachments(self, ctx: dict, moved: list[dict[str, Any]]) -> None:
        """Undo _attach_volumes_here: the mappings back on the source's attachments, the
        destination's attachments deleted (Nova's rollback attachment_delete)."""
        for entry in moved:
            await self.conductor.block_device_update(
                ctx,
                entry["bdm_id"],
                {
                    "attachment_id": entry["old_attachment_id"],
                    "connection_info": entry["old_connection_info"],
                },
            )
            await self._drop_attachment(ctx.get("auth_token") or "", entry["new_attachment_id"])

    async def post_live_migration_at_destination(
        self,
        ctx: dict,
        instance_uuid: str,
        migration: dict[str, Any],
        result: dict[str, Any],
    ) -> None:
        event = "compute_post_live_migration_at_destination"
        await self._event(ctx, instance_uuid, event)
        await self.driver.post_live_migration_at_destination(instance_uuid, result)
        for bdm in await self.conductor.block_devices(ctx, instance_uuid):
            if bdm["attachment_id"]:  # this host's attachments: in use here now
                await self._complete_attachment(ctx.get("auth_token") or "", bdm["attachment_id"])
        inst = await self._read(ctx, instance_uuid)
        network_info = await self._bind_ports(inst, self.host)
        await self.conductor.complete_move(
            ctx,
            instance_uuid,
            {
                "host": self.host,
                "node": migration["dest_node"],
                "task_state": None,
                "power_state": await self._power(instance_uuid),
                "network_info": network_info,
                "device_metadata": await self._device_metadata(ctx, instance_uuid, network_info),
            },
            migration_id=migration["id"],
            migration_status="completed",
            allocation="keep_new",
        )
        await self._event(ctx, instance_uuid, event, finish=True)

    async def rollback_live_migration_at_destination(self, ctx: dict, instance_uuid: str) -> None:
        await self.driver.destroy(instance_uuid)

    async def live_migration_force_complete(self, ctx: dict, instance_uuid: str) -> None:
        await self._quietly(self.driver.live_migration_force_complete, instance_uuid)

    async def live_migration_abort(self, ctx: dict, instance_uuid: str, migration_id: int) -> None:
        self._aborted_migrations.add(instance_uuid)
        await self._quietly(self.driver.live_migration_abort, instance_uuid)

    # -- evacuate -------------------------------------------------------------------

    async def evacuate_instance(
        self,
        ctx: dict,
        instance_uuid: str,
        migration: dict[str, Any],
        target_state: str | None = None,
    ) -> None:
        """Rebuild here, from its image, a server whose host is down (its ports and
        volumes move here; the dead host removes its copy when it comes back). It runs
        again if it ran, unless `target_state` is "stopped" (2.95)."""
        event = "compute_rebuild_instance"
        await self._event(ctx, instance_uuid, event)
        here = {"host": self.host, "node": migration["dest_node"]}
        inst = await self._read(ctx, instance_uuid)
        try:
            network_info = await self._bind_ports(inst, self.host)
        except Exception as exc:  # noqa: BLE001 - the server stays on its host, as it was
            await self._quietly(self._bind_ports, inst, migration["source_compute"])
            await self._failed(
                ctx,
                instance_uuid,
                event,
                "Evacuation",
                exc,
                {"power_state": inst["power_state"]},  # not this host's: no guest here
                migration_id=migration["id"],
                migration_status="failed",
                allocation="drop_new",
            )
            return
        # Its ports are here: so is the server, with the claim made for it here.
        await self.conductor.complete_move(ctx, instance_uuid, here, allocation="keep_new")
        try:
            inst = await self._set_task(
                ctx, instance_uuid, TaskState.REBUILD_SPAWNING, TaskState.REBUILDING
            )
            guest = await self._spec_here(ctx, inst, network_info)
            await self.driver.destroy(instance_uuid)
            await self.driver.spawn(guest)
            vm_state = VmState.ACTIVE
            if inst["vm_state"] == VmState.STOPPED or target_state == VmState.STOPPED:
                await self.driver.power_off(instance_uuid, timeout=0)
                vm_state = VmState.STOPPED
        except Exception as exc:  # noqa: BLE001 - the server is in ERROR, says why
            await self._quietly(self.driver.destroy, instance_uuid)
            await self._failed(
                ctx,
                instance_uuid,
                event,
                "Evacuation",
                exc,
                {"vm_state": VmState.ERROR},
                migration_id=migration["id"],
                migration_status="failed",
            )
            return
        await self.conductor.complete_move(
            ctx,
            instance_uuid,
            {
                "vm_state": vm_state,
                "task_state": None,
                "power_state": await self._power(instance_uuid),
                "network_info": network_info,
                "device_metadata": await self._device_metadata(ctx, instance_uuid, network_info),
                "launched_at": utcnow().isoformat(),
                **await self._machine_type_record(instance_uuid, inst.get("system_metadata")),
            },
            migration_id=migration["id"],
            migration_status="done",
        )
        await self._event(ctx, instance_uuid, event, finish=True)

    async def destroy_evacuated_instances(self) -> None:
        """At start: guests of servers evacuated while this host was down are removed."""
        ctx = self.service_context
        mine = {i["uuid"] for i in await self.conductor.instances_on_host(ctx, self.host)}
        guests = set(await self.driver.list_guests())
        for migration in await self.conductor.evacuated_from(ctx, self.host):
            uuid = migration["uuid"]
            instance_uuid = migration.get("instance_uuid")
            if instance_uuid in mine:
                continue  # the evacuation did not take it away (yet)
            if instance_uuid in guests:
                LOG.info("removing %s: it was evacuated from this host", instance_uuid)
                await self._quietly(self.driver.destroy, instance_uuid)
            if migration["status"] == "done":
                await self.conductor.migration_update(ctx, migration["id"], {"status": "completed"})
            LOG.debug("evacuation %s cleaned up", uuid)

    async def _failed(
        self,
        ctx: dict,
        instance_uuid: str,
        event: str,
        what: str,
        exc: BaseException,
        updates: dict[str, Any] | None = None,
        **move: Any,
    ) -> None:
        """End a failed move: no task state, the reason as a fault and on the action."""
        message = exc.message if isinstance(exc, RemoteError) else str(exc)
        LOG.warning("%s of %s failed: %s", what, instance_uuid, message)
        await self.conductor.complete_move(
            ctx,
            instance_uuid,
            {
                "task_state": None,
                "power_state": await self._power(instance_uuid),
                **(updates or {}),
            },
            fault=f"{what} failed: {message}",
            host=self.host,
            **move,
        )
        await self._event(ctx, instance_uuid, event, finish=True, error=message)

    async def _quietly(self, fn, *args: Any, **kwargs: Any) -> None:
        """Best-effort undo: a failure is logged, not raised over the one being handled."""
        try:
            await fn(*args, **kwargs)
        except Exception:  # noqa: BLE001 - logged
            LOG.warning("%s during a rollback failed", getattr(fn, "__name__", fn), exc_info=True)
