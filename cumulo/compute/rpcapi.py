"""The compute RPC surface: the only module that knows message names and their arguments.

Topics: `conductor`, `scheduler`, and `compute.<host>` (one per compute agent).
Every message carries the caller's context as a dict (RequestContext.to_dict()).
"""

from __future__ import annotations

from typing import Any

from cumulo.common.rpc import Transport

CONDUCTOR = "conductor"
SCHEDULER = "scheduler"


def compute_topic(host: str) -> str:
    return f"compute.{host}"


Context = dict[str, Any]


class ConductorAPI:
    """What the compute API and the compute hosts ask of the conductor."""

    def __init__(self, bus: Transport) -> None:
        self.bus = bus

    async def build_instances(
        self, ctx: Context, instance_uuids: list[str], request_spec: dict[str, Any]
    ) -> None:
        await self.bus.cast(
            CONDUCTOR,
            "build_instances",
            ctx,
            instance_uuids=instance_uuids,
            request_spec=request_spec,
        )

    async def instance_update(
        self,
        ctx: Context,
        instance_uuid: str,
        updates: dict[str, Any],
        expected_task_state: list[str | None] | None = None,
        *,
        events: list[dict[str, Any]] | None = None,
        host: str | None = None,
        reply: bool = True,
    ) -> dict[str, Any] | None:
        """Change the instance; `events` ({"event", "finish", "error"}) of this request's
        instance action are recorded in the same write (by `host`), when it is made.
        Returns the instance as changed, or None with `reply=False`."""
        args: dict[str, Any] = {}
        if events:
            args = {"events": events, "host": host}
        if not reply:
            args["reply"] = False
        return await self.bus.call(
            CONDUCTOR,
            "instance_update",
            ctx,
            instance_uuid=instance_uuid,
            updates=updates,
            expected_task_state=expected_task_state,
            **args,
        )

    async def action_event(
        self,
        ctx: Context,
        instance_uuid: str,
        event: str,
        *,
        host: str | None = None,
        finish: bool = False,
        error: str | None = None,
    ) -> None:
        await self.bus.call(
            CONDUCTOR,
            "action_event",
            ctx,
            instance_uuid=instance_uuid,
            event=event,
            host=host,
            finish=finish,
            error=error,
        )

    async def build_failed(
        self,
        ctx: Context,
        instance_uuid: str,
        host: str,
        reason: str,
        request_spec: dict[str, Any],
        reschedule: bool = True,
    ) -> None:
        """A host could not build: release its claim and reschedule or fail the instance
        (reschedule=False: no other host would do better, Nova's BuildAbortException)."""
        await self.bus.cast(
            CONDUCTOR,
            "build_failed",
            ctx,
            instance_uuid=instance_uuid,
            host=host,
            reason=reason,
            request_spec=request_spec,
            reschedule=reschedule,
        )

    async def build_interrupted(
        self, ctx: Context, instance_uuid: str, host: str | None, reason: str
    ) -> None:
        """A build stopped in the middle by a restart: release its claim, fail it."""
        await self.bus.call(
            CONDUCTOR,
            "build_interrupted",
            ctx,
            instance_uuid=instance_uuid,
            host=host,
            reason=reason,
        )

    async def instance_deleted(self, ctx: Context, instance_uuid: str, host: str | None) -> None:
        await self.bus.call(
            CONDUCTOR, "instance_deleted", ctx, instance_uuid=instance_uuid, host=host
        )

    async def compute_node_report(
        self, ctx: Context, host: str, resources: dict[str, Any], availability_zone: str
    ) -> None:
        """Heartbeat of a compute agent with its host's capacity."""
        await self.bus.call(
            CONDUCTOR,
            "compute_node_report",
            ctx,
            host=host,
            resources=resources,
            availability_zone=availability_zone,
        )

    async def finish_resize(self, ctx: Context, instance_uuid: str, confirm: bool) -> None:
        """Keep the new flavor's claim (confirm) or the old one's (revert)."""
        await self.bus.call(
            CONDUCTOR, "finish_resize", ctx, instance_uuid=instance_uuid, confirm=confirm
        )

    async def volume_attached(
        self, ctx: Context, instance_uuid: str, volume_id: str, connection_info: dict[str, Any]
    ) -> None:
        await self.bus.call(
            CONDUCTOR,
            "volume_attached",
            ctx,
            instance_uuid=instance_uuid,
            volume_id=volume_id,
            connection_info=connection_info,
        )

    async def block_devices(self, ctx: Context, instance_uuid: str) -> list[dict[str, Any]]:
        return await self.bus.call(CONDUCTOR, "block_devices", ctx, instance_uuid=instance_uuid)

    async def block_device_update(self, ctx: Context, bdm_id: int, values: dict[str, Any]) -> None:
        await self.bus.call(CONDUCTOR, "block_device_update", ctx, bdm_id=bdm_id, values=values)

    async def volume_detached(self, ctx: Context, instance_uuid: str, volume_id: str) -> None:
        await self.bus.call(
            CONDUCTOR, "volume_detached", ctx, instance_uuid=instance_uuid, volume_id=volume_id
        )

    async def instances_on_host(self, ctx: Context, host: str) -> list[dict[str, Any]]:
        return await self.bus.call(CONDUCTOR, "instances_on_host", ctx, host=host)

    async def cache_images(self, ctx: Context, hosts: list[str], image_ids: list[str]) -> None:
        """Have these hosts fetch these images into their image caches (2.81)."""
        await self.bus.cast(CONDUCTOR, "cache_images", ctx, hosts=hosts, image_ids=image_ids)

    # -- moves (cold migrate, resize, shelve, live migration, evacuate) ------------------

    async def migrate_server(
        self,
        ctx: Context,
        instance_uuid: str,
        new_flavor: dict[str, Any],
        migration_id: int,
        host: str | None = None,
    ) -> None:
        """Pick (and claim) a destination for a cold migration or resize, then start it."""
        await self.bus.cast(
            CONDUCTOR,
            "migrate_server",
            ctx,
            instance_uuid=instance_uuid,
            new_flavor=new_flavor,
            migration_id=migration_id,
            host=host,
        )

    async def live_migrate_instance(
        self,
        ctx: Context,
        instance_uuid: str,
        migration_id: int,
        host: str | None,
        block_migration: bool | None,
    ) -> None:
        await self.bus.cast(
            CONDUCTOR,
            "live_migrate_instance",
            ctx,
            instance_uuid=instance_uuid,
            migration_id=migration_id,
            host=host,
            block_migration=block_migration,
        )

    async def evacuate_instance(
        self,
        ctx: Context,
        instance_uuid: str,
        migration_id: int,
        host: str | None,
        target_state: str | None = None,
    ) -> None:
        """`target_state` "stopped": the server ends stopped on the new host (2.95)."""
        await self.bus.cast(
            CONDUCTOR,
            "evacuate_instance",
            ctx,
            instance_uuid=instance_uuid,
            migration_id=migration_id,
            host=host,
            target_state=target_state,
        )

    async def unshelve_instance(
        self, ctx: Context, instance_uuid: str, request_spec: dict[str, Any]
    ) -> None:
        await self.bus.cast(
            CONDUCTOR,
            "unshelve_instance",
            ctx,
            instance_uuid=instance_uuid,
            request_spec=request_spec,
        )

    async def complete_move(
        self,
        ctx: Context,
        instance_uuid: str,
        updates: dict[str, Any],
        *,
        migration_id: int | None = None,
        migration_status: str | None = None,
        allocation: str | None = None,
        fault: str | None = None,
        host: str | None = None,
    ) -> None:
        """One transaction for the end of a move: the instance's new fields, the
        migration's status, the claims ("keep_new": the destination's claim becomes
        the instance's; "drop_new": it is released; "release": the instance holds
        nothing), and a fault when it failed."""
        await self.bus.call(
            CONDUCTOR,
            "complete_move",
            ctx,
            instance_uuid=instance_uuid,
            updates=updates,
            migration_id=migration_id,
            migration_status=migration_status,
            allocation=allocation,
            fault=fault,
            host=host,
        )

    async def migration_update(
        self, ctx: Context, migration_id: int, values: dict[str, Any]
    ) -> None:
        await self.bus.call(
            CONDUCTOR, "migration_update", ctx, migration_id=migration_id, values=values
        )

    async def evacuated_from(self, ctx: Context, host: str) -> list[dict[str, Any]]:
        """Evacuations away from `host` whose guests it has not cleaned up yet."""
        return await self.bus.call(CONDUCTOR, "evacuated_from", ctx, host=host)


class SchedulerAPI:
    def __init__(self, bus: Transport) -> None:
        self.bus = bus

    async def select_destinations(
        self, ctx: Context, request_spec: dict[str, Any], instance_uuids: list[str]
    ) -> list[dict[str, str]]:
        """Hosts chosen and claimed for each instance: [{"host", "node"}, ...]."""
        return await self.bus.call(
            SCHEDULER,
            "select_destinations",
            ctx,
            request_spec=request_spec,
            instance_uuids=instance_uuids,
        )


class ComputeAPI:
    """Messages to one compute host."""

    def __init__(self, bus: Transport) -> None:
        self.bus = bus

    async def build_and_run_instance(
        self, ctx: Context, host: str, instance_uuid: str, request_spec: dict[str, Any]
    ) -> None:
        await self.bus.cast(
            compute_topic(host),
            "build_and_run_instance",
            ctx,
            instance_uuid=instance_uuid,
            request_spec=request_spec,
        )

    async def terminate_instance(self, ctx: Context, host: str, instance_uuid: str) -> None:
        await self.bus.cast(
            compute_topic(host), "terminate_instance", ctx, instance_uuid=instance_uuid
        )

    async def power_action(
        self, ctx: Context, host: str, instance_uuid: str, action: str, **args: Any
    ) -> None:
        """stop, start, reboot (hard=bool), pause, unpause, suspend, resume."""
        await self.bus.cast(
            compute_topic(host),
            "power_action",
            ctx,
            instance_uuid=instance_uuid,
            action=action,
            args=args,
        )

    async def snapshot_instance(
        self, ctx: Context, host: str, instance_uuid: str, image_id: str
    ) -> None:
        await self.bus.cast(
            compute_topic(host),
            "snapshot_instance",
            ctx,
            instance_uuid=instance_uuid,
            image_id=image_id,
        )

    async def rebuild_instance(
        self,
        ctx: Context,
        host: str,
        instance_uuid: str,
        reimage_image: str | None = None,
        admin_password: str | None = None,
    ) -> None:
        """`reimage_image`: a volume-backed server's root volume is reimaged from this
        image first (2.93); `admin_password`: the guest's new one."""
        await self.bus.cast(
            compute_topic(host),
            "rebuild_instance",
            ctx,
            instance_uuid=instance_uuid,
            reimage_image=reimage_image,
            admin_password=admin_password,
        )

    async def resize_instance(
        self,
        ctx: Context,
        host: str,
        instance_uuid: str,
        flavor: dict[str, Any],
        revert: bool,
        migration_id: int | None = None,
    ) -> None:
        """Resize in place (the destination is the server's own host)."""
        await self.bus.cast(
            compute_topic(host),
            "resize_instance",
            ctx,
            instance_uuid=instance_uuid,
            flavor=flavor,
            revert=revert,
            migration_id=migration_id,
        )

    async def confirm_resize(self, ctx: Context, host: str, instance_uuid: str) -> None:
        await self.bus.cast(compute_topic(host), "confirm_resize", ctx, instance_uuid=instance_uuid)

    async def attach_volume(
        self,
        ctx: Context,
        host: str,
        instance_uuid: str,
        volume_id: str,
        attachment_id: str,
        device: str,
    ) -> None:
        await self.bus.cast(
            compute_topic(host),
            "attach_volume",
            ctx,
            instance_uuid=instance_uuid,
            volume_id=volume_id,
            attachment_id=attachment_id,
            device=device,
        )

    async def swap_volume(
        self,
        ctx: Context,
        host: str,
        instance_uuid: str,
        old_volume_id: str,
        new_volume_id: str,
        new_attachment_id: str,
    ) -> None:
        await self._cast(
            host,
            "swap_volume",
            ctx,
            instance_uuid=instance_uuid,
            old_volume_id=old_volume_id,
            new_volume_id=new_volume_id,
            new_attachment_id=new_attachment_id,
        )

    async def extend_volume(
        self, ctx: Context, host: str, instance_uuid: str, volume_id: str
    ) -> None:
        await self.bus.cast(
            compute_topic(host),
            "extend_volume",
            ctx,
            instance_uuid=instance_uuid,
            volume_id=volume_id,
        )

    async def external_instance_event(
        self, ctx: Context, host: str, events: list[dict[str, Any]]
    ) -> None:
        """Events about the host's instances that its builds may be waiting for
        (network-vif-plugged: a port is wired)."""
        await self.bus.cast(compute_topic(host), "external_instance_event", ctx, events=events)

    async def volume_snapshot_create(
        self, ctx: Context, host: str, instance_uuid: str, volume_id: str, create_info: dict
    ) -> None:
        await self.bus.cast(
            compute_topic(host),
            "volume_snapshot_create",
            ctx,
            instance_uuid=instance_uuid,
            volume_id=volume_id,
            create_info=create_info,
        )

    async def volume_snapshot_delete(
        self,
        ctx: Context,
        host: str,
        instance_uuid: str,
        volume_id: str,
        snapshot_id: str,
        delete_info: dict,
    ) -> None:
        await self.bus.cast(
            compute_topic(host),
            "volume_snapshot_delete",
            ctx,
            instance_uuid=instance_uuid,
            volume_id=volume_id,
            snapshot_id=snapshot_id,
            delete_info=delete_info,
        )

    async def detach_volume(
        self, ctx: Context, host: str, instance_uuid: str, volume_id: str, attachment_id: str
    ) -> None:
        await self.bus.cast(
            compute_topic(host),
            "detach_volume",
            ctx,
            instance_uuid=instance_uuid,
            volume_id=volume_id,
            attachment_id=attachment_id,
        )

    async def get_console(
        self, ctx: Context, host: str, instance_uuid: str, kind: str, relay_ttl: int | None
    ) -> dict[str, Any]:
        """Where the guest's `kind` (vnc, spice, serial) console is; relay_ttl: for a
        proxy on another host, a TCP port relayed to it for that many seconds."""
        return await self.bus.call(
            compute_topic(host),
            f"get_{kind}_console",
            ctx,
            instance_uuid=instance_uuid,
            relay_ttl=relay_ttl,
            timeout=30,
        )

    async def get_diagnostics(self, ctx: Context, host: str, instance_uuid: str) -> dict[str, Any]:
        return await self.bus.call(
            compute_topic(host), "get_diagnostics", ctx, instance_uuid=instance_uuid, timeout=30
        )

    async def set_admin_password(
        self, ctx: Context, host: str, instance_uuid: str, password: str
    ) -> None:
        await self.bus.call(
            compute_topic(host),
            "set_admin_password",
            ctx,
            instance_uuid=instance_uuid,
            password=password,
            timeout=60,
        )

    async def attach_interface(
        self, ctx: Context, host: str, instance_uuid: str, request: dict[str, Any]
    ) -> dict[str, Any]:
        return await self.bus.call(
            compute_topic(host),
            "attach_interface",
            ctx,
            instance_uuid=instance_uuid,
            request=request,
            timeout=120,
        )

    async def detach_interface(
        self, ctx: Context, host: str, instance_uuid: str, port_id: str
    ) -> None:
        await self.bus.cast(
            compute_topic(host),
            "detach_interface",
            ctx,
            instance_uuid=instance_uuid,
            port_id=port_id,
        )

    async def cache_images(
        self, ctx: Context, host: str, image_ids: list[str], timeout: float
    ) -> dict[str, str]:
        """Each image's outcome on the host: cached, existing or error."""
        return await self.bus.call(
            compute_topic(host), "cache_images", ctx, image_ids=image_ids, timeout=timeout
        )

    async def get_host_uptime(self, ctx: Context, host: str) -> str:
        return await self.bus.call(compute_topic(host), "get_host_uptime", ctx, timeout=30)

    async def get_console_output(
        self, ctx: Context, host: str, instance_uuid: str, length: int | None
    ) -> str:
        return await self.bus.call(
            compute_topic(host),
            "get_console_output",
            ctx,
            instance_uuid=instance_uuid,
            length=length,
            timeout=30,
        )

    # -- moves --------------------------------------------------------------------

    async def _cast(self, host: str, method: str, ctx: Context, **args: Any) -> None:
        await self.bus.cast(compute_topic(host), method, ctx, **args)

    async def _call(
        self, host: str, method: str, ctx: Context, timeout: float = 60.0, **args: Any
    ) -> Any:
        return await self.bus.call(compute_topic(host), method, ctx, timeout=timeout, **args)

    async def shelve_instance(
        self, ctx: Context, host: str, instance_uuid: str, image_id: str | None, offload: bool
    ) -> None:
        await self._cast(
            host,
            "shelve_instance",
            ctx,
            instance_uuid=instance_uuid,
            image_id=image_id,
            offload=offload,
        )

    async def shelve_offload_instance(self, ctx: Context, host: str, instance_uuid: str) -> None:
        await self._cast(host, "shelve_offload_instance", ctx, instance_uuid=instance_uuid)

    async def unshelve_instance(
        self, ctx: Context, host: str, instance_uuid: str, request_spec: dict[str, Any]
    ) -> None:
        await self._cast(
            host, "unshelve_instance", ctx, instance_uuid=instance_uuid, request_spec=request_spec
        )

    async def rescue_instance(
        self,
        ctx: Context,
        host: str,
        instance_uuid: str,
        rescue_image: dict[str, Any] | None,
        admin_password: str,
    ) -> None:
        await self._cast(
            host,
            "rescue_instance",
            ctx,
            instance_uuid=instance_uuid,
            rescue_image=rescue_image,
            admin_password=admin_password,
        )

    async def unrescue_instance(self, ctx: Context, host: str, instance_uuid: str) -> None:
        await self._cast(host, "unrescue_instance", ctx, instance_uuid=instance_uuid)

    async def migrate_instance(
        self,
        ctx: Context,
        host: str,
        instance_uuid: str,
        flavor: dict[str, Any],
        migration: dict[str, Any],
    ) -> None:
        """To the source host: power off, export the disks, have the destination finish."""
        await self._cast(
            host,
            "migrate_instance",
            ctx,
            instance_uuid=instance_uuid,
            flavor=flavor,
            migration=migration,
        )

    async def finish_migration(
        self,
        ctx: Context,
        host: str,
        instance_uuid: str,
        flavor: dict[str, Any],
        migration: dict[str, Any],
        disk_info: dict[str, Any],
        power_on: bool,
        vtpm_passphrase: str | None = None,
    ) -> None:
        """To the destination: copy the disks in and start the guest there (a call: the
        source keeps its export open until it returns); `vtpm_passphrase`: what opens
        the state of a TPM whose secret the source host keeps."""
        extra = {"vtpm_passphrase": vtpm_passphrase} if vtpm_passphrase else {}
        await self._call(
            host,
            "finish_migration",
            ctx,
            timeout=1800,
            instance_uuid=instance_uuid,
            flavor=flavor,
            migration=migration,
            disk_info=disk_info,
            power_on=power_on,
            **extra,
        )

    async def revert_migration(
        self, ctx: Context, host: str, instance_uuid: str, migration: dict[str, Any]
    ) -> None:
        """To the destination: drop the guest, then give it back to the source."""
        await self._cast(
            host, "revert_migration", ctx, instance_uuid=instance_uuid, migration=migration
        )

    async def finish_revert_migration(
        self, ctx: Context, host: str, instance_uuid: str, migration: dict[str, Any]
    ) -> None:
        await self._call(
            host,
            "finish_revert_migration",
            ctx,
            timeout=600,
            instance_uuid=instance_uuid,
            migration=migration,
        )

    async def confirm_migration(self, ctx: Context, host: str, instance_uuid: str) -> None:
        """To the source: forget the guest that moved away."""
        await self._cast(host, "confirm_migration", ctx, instance_uuid=instance_uuid)

    async def live_migration(
        self, ctx: Context, host: str, instance_uuid: str, migration: dict[str, Any]
    ) -> None:
        await self._cast(
            host, "live_migration", ctx, instance_uuid=instance_uuid, migration=migration
        )

    async def pre_live_migration(
        self,
        ctx: Context,
        host: str,
        instance_uuid: str,
        migration: dict[str, Any],
        vtpm_passphrase: str | None = None,
    ) -> dict[str, Any]:
        """To the destination; `vtpm_passphrase`: the source host's passphrase of the
        guest's TPM (a `host` policy one; Nova's vtpm_secret_value)."""
        extra = {"vtpm_passphrase": vtpm_passphrase} if vtpm_passphrase else {}
        return await self._call(
            host,
            "pre_live_migration",
            ctx,
            timeout=600,
            instance_uuid=instance_uuid,
            migration=migration,
            **extra,
        )

    async def post_live_migration_at_destination(
        self,
        ctx: Context,
        host: str,
        instance_uuid: str,
        migration: dict[str, Any],
        result: dict[str, Any],
    ) -> None:
        await self._call(
            host,
            "post_live_migration_at_destination",
            ctx,
            timeout=600,
            instance_uuid=instance_uuid,
            migration=migration,
            result=result,
        )

    async def rollback_live_migration_at_destination(
        self, ctx: Context, host: str, instance_uuid: str
    ) -> None:
        await self._call(
            host, "rollback_live_migration_at_destination", ctx, instance_uuid=instance_uuid
        )

    async def live_migration_force_complete(
        self, ctx: Context, host: str, instance_uuid: str
    ) -> None:
        await self._cast(host, "live_migration_force_complete", ctx, instance_uuid=instance_uuid)

    async def live_migration_abort(
        self, ctx: Context, host: str, instance_uuid: str, migration_id: int
    ) -> None:
        await self._cast(
            host,
            "live_migration_abort",
            ctx,
            instance_uuid=instance_uuid,
            migration_id=migration_id,
        )

    async def evacuate_instance(
        self,
        ctx: Context,
        host: str,
        instance_uuid: str,
        migration: dict[str, Any],
        target_state: str | None = None,
    ) -> None:
        """To the destination: rebuild there the server whose host is down."""
        await self._cast(
            host,
            "evacuate_instance",
            ctx,
            instance_uuid=instance_uuid,
            migration=migration,
            target_state=target_state,
        )
