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

    # -- migration: the source backend moves the volume (cumulo.volume.manager_moves) --

    async def migrate_volume(
        self, ctx: Context, host: str, volume_id: str, new_volume_id: str, new_type_id: str | None
    ) -> None:
        """To the backend holding the volume: fill `new_volume_id` (placed on the
        destination, being created there) with its data, then take its place."""
        await self.bus.cast(
            volume_topic(host),
            "migrate_volume",
            ctx,
            volume_id=volume_id,
            new_volume_id=new_volume_id,
            new_type_id=new_type_id,
        )

    async def migrate_volume_completion(
        self, ctx: Context, host: str, volume_id: str, new_volume_id: str, error: bool
    ) -> str:
        return await self.bus.call(
            volume_topic(host),
            "migrate_volume_completion",
            ctx,
            timeout=self.call_timeout,
            volume_id=volume_id,
            new_volume_id=new_volume_id,
            error=error,
        )

    async def update_migrated_volume(
        self,
        ctx: Context,
        host: str,
        new_volume_id: str,
        original_id: str,
        connections: dict[str, dict[str, Any]] | None = None,
    ) -> dict[str, dict[str, Any]]:
        """To the destination: the data written into new_volume_id takes original_id's
        name; `connections` (by attachment) to the new volume as they are after that."""
        return await self.bus.call(
            volume_topic(host),
            "update_migrated_volume",
            ctx,
            timeout=self.call_timeout,
            new_volume_id=new_volume_id,
            original_id=original_id,
            connections=connections or {},
        )

    # -- manage / unmanage --------------------------------------------------------------

    async def get_manageable(self, ctx: Context, host: str, kind: str) -> list[dict[str, Any]]:
        return await self.bus.call(
            volume_topic(host), "get_manageable", ctx, timeout=self.call_timeout, kind=kind
        )

    async def manage_existing_get_size(
        self, ctx: Context, host: str, ref: dict[str, Any], kind: str
    ) -> int:
        return await self.bus.call(
            volume_topic(host),
            "manage_existing_get_size",
            ctx,
            timeout=self.call_timeout,
            ref=ref,
            kind=kind,
        )

    async def manage_existing(
        self, ctx: Context, host: str, volume_id: str, ref: dict[str, Any]
    ) -> int:
        return await self.bus.call(
            volume_topic(host),
            "manage_existing",
            ctx,
            timeout=self.call_timeout,
            volume_id=volume_id,
            ref=ref,
        )

    async def manage_existing_snapshot(
        self, ctx: Context, host: str, snapshot_id: str, ref: dict[str, Any]
    ) -> int:
        return await self.bus.call(
            volume_topic(host),
            "manage_existing_snapshot",
            ctx,
            timeout=self.call_timeout,
            snapshot_id=snapshot_id,
            ref=ref,
        )

    async def unmanage_volume(self, ctx: Context, host: str, volume_id: str) -> None:
        await self.bus.cast(volume_topic(host), "unmanage_volume", ctx, volume_id=volume_id)

    async def unmanage_snapshot(self, ctx: Context, host: str, snapshot_id: str) -> None:
        await self.bus.cast(volume_topic(host), "unmanage_snapshot", ctx, snapshot_id=snapshot_id)
