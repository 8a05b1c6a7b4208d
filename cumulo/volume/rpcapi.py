"""The Block Storage RPC surface: the only module that knows its message names.

Topics: `volume.<host>@<backend>`, one per backend of a storage host: the volume
manager holding its volumes. (New volumes are placed by cumulo.volume.scheduler
inside the API's create transaction, then cast to the chosen backend.)
Every message carries the caller's context as a dict (RequestContext.to_dict()).
"""

from __future__ import annotations

from typing import Any

from cumulo.common.rpc import Transport

Context = dict[str, Any]


def backend_of(host: str) -> str:
    """host@backend of a volume's host@backend#pool."""
    return host.partition("#")[0]


def volume_topic(host: str) -> str:
    return f"volume.{backend_of(host)}"


class VolumeAPI:
    """What the API and the scheduler ask of the backend holding a volume (`host` is the
    volume's host@backend#pool)."""

    def __init__(self, bus: Transport, call_timeout: float = 120.0) -> None:
        self.bus = bus
        self.call_timeout = call_timeout

    async def create_volume(self, ctx: Context, host: str, volume_id: str, **create: Any) -> None:
        await self.bus.cast(volume_topic(host), "create_volume", ctx, volume_id=volume_id, **create)

    async def delete_volume(
        self, ctx: Context, host: str, volume_id: str, snapshot_ids: list[str]
    ) -> None:
        await self.bus.cast(
            volume_topic(host),
            "delete_volume",
            ctx,
            volume_id=volume_id,
            snapshot_ids=snapshot_ids,
        )

    async def extend_volume(
        self, ctx: Context, host: str, volume_id: str, new_size: int, back_to: str
    ) -> None:
        await self.bus.cast(
            volume_topic(host),
            "extend_volume",
            ctx,
            volume_id=volume_id,
            new_size=new_size,
            back_to=back_to,
        )

    async def upload_to_image(
        self,
        ctx: Context,
        host: str,
        volume_id: str,
        image_id: str,
        disk_format: str,
        back_to: str,
    ) -> None:
        await self.bus.cast(
            volume_topic(host),
            "upload_to_image",
            ctx,
            volume_id=volume_id,
            image_id=image_id,
            disk_format=disk_format,
            back_to=back_to,
        )

    async def reimage_volume(
        self,
        ctx: Context,
        host: str,
        volume_id: str,
        image: dict[str, Any],
        back_to: str,
        image_metadata: dict[str, str],
    ) -> None:
        await self.bus.cast(
            volume_topic(host),
            "reimage_volume",
            ctx,
            volume_id=volume_id,
            image=image,
            back_to=back_to,
            image_metadata=image_metadata,
        )

    async def create_snapshot(
        self, ctx: Context, host: str, snapshot_id: str, volume_id: str
    ) -> None:
        await self.bus.cast(
            volume_topic(host),
            "create_snapshot",
            ctx,
            snapshot_id=snapshot_id,
            volume_id=volume_id,
        )

    async def delete_snapshot(self, ctx: Context, host: str, snapshot_id: str) -> None:
        await self.bus.cast(volume_topic(host), "delete_snapshot", ctx, snapshot_id=snapshot_id)

    async def create_backup(self, ctx: Context, host: str, backup_id: str, **work: Any) -> None:
        await self.bus.cast(volume_topic(host), "create_backup", ctx, backup_id=backup_id, **work)

    async def restore_backup(self, ctx: Context, host: str, backup_id: str, **work: Any) -> None:
        await self.bus.cast(volume_topic(host), "restore_backup", ctx, backup_id=backup_id, **work)

    async def delete_backup(self, ctx: Context, host: str, backup_id: str) -> None:
        await self.bus.cast(volume_topic(host), "delete_backup", ctx, backup_id=backup_id)

    async def initialize_connection(
        self,
        ctx: Context,
        host: str,
        volume_id: str,
        export_id: str,
        connector: dict[str, Any],
        mode: str,
    ) -> dict[str, Any]:
        """Connection info for the connector's host (an NBD export made on the storage
        host when the connector is elsewhere)."""
        return await self.bus.call(
            volume_topic(host),
            "initialize_connection",
            ctx,
            timeout=self.call_timeout,
            volume_id=volume_id,
            export_id=export_id,
            connector=connector,
            mode=mode,
        )

    async def terminate_connection(
        self, ctx: Context, host: str, volume_id: str, export_id: str
    ) -> None:
        await self.bus.call(
            volume_topic(host),
            "terminate_connection",
            ctx,
            timeout=self.call_timeout,
            volume_id=volume_id,
            export_id=export_id,
        )

    async def get_capabilities(self, ctx: Context, host: str) -> dict[str, Any]:
        return await self.bus.call(volume_topic(host), "get_capabilities", ctx, timeout=10.0)
