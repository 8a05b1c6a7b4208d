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
        self, ctx: Context, instance_uuid: str, host: str, reason: str, request_spec: dict[str, Any]
    ) -> None:
        """A host could not build: release its claim and reschedule or fail the instance."""
        await self.bus.cast(
            CONDUCTOR,
            "build_failed",
            ctx,
            instance_uuid=instance_uuid,
            host=host,
            reason=reason,
            request_spec=request_spec,
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

    async def resize_instance(
        self, ctx: Context, instance_uuid: str, new_flavor: dict[str, Any]
    ) -> None:
        """Claim the new flavor on the instance's host, then ask the host to resize."""
        await self.bus.cast(
            CONDUCTOR, "resize_instance", ctx, instance_uuid=instance_uuid, new_flavor=new_flavor
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

    async def rebuild_instance(self, ctx: Context, host: str, instance_uuid: str) -> None:
        await self.bus.cast(
            compute_topic(host), "rebuild_instance", ctx, instance_uuid=instance_uuid
        )

    async def resize_instance(
        self, ctx: Context, host: str, instance_uuid: str, flavor: dict[str, Any], revert: bool
    ) -> None:
        await self.bus.cast(
            compute_topic(host),
            "resize_instance",
            ctx,
            instance_uuid=instance_uuid,
            flavor=flavor,
            revert=revert,
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

    async def get_vnc_console(self, ctx: Context, host: str, instance_uuid: str) -> dict[str, Any]:
        return await self.bus.call(
            compute_topic(host), "get_vnc_console", ctx, instance_uuid=instance_uuid, timeout=30
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
