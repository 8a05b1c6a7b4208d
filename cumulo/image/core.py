"""The Image service's rules: who sees which image, quotas, and the data lifecycle.

Image data moves queued -> saving -> active (upload) or queued -> uploading ->
importing -> active (interoperable import). Every status change is a
compare-and-swap on the expected status, so two uploads cannot both win. Data
that is refused (wrong format, over quota) sends the image back to `queued`;
an upload that breaks off leaves it `killed`. Either way the partial data is
removed: the store holds exactly the data of images that have it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session
from starlette.types import ASGIApp

from cumulo.common.auth import TokenValidator
from cumulo.common.config import CumuloConfig, ImageQuota
from cumulo.common.context import RequestContext
from cumulo.common.db import Database, utcnow
from cumulo.common.faults import ApiError, BadRequest, Conflict, NotFound, PayloadTooLarge
from cumulo.common.identity_client import IdentityClient
from cumulo.common.notifications import Notifier
from cumulo.common.policy import Policy
from cumulo.common.service_client import ServiceClient
from cumulo.common.tls import verify_option
from cumulo.image import inspect
from cumulo.image.cache import ImageCache
from cumulo.image.models import Image, ImageMember
from cumulo.image.object_storage_store import ObjectStorageStore
from cumulo.image.policies import IMAGE_RULES
from cumulo.image.store import FilesystemStore, Store, TooLarge, Written, write_staged

LOG = logging.getLogger(__name__)

DISK_FORMATS = ("ami", "ari", "aki", "vhd", "vhdx", "vmdk", "raw", "qcow2", "vdi", "iso", "ploop")
CONTAINER_FORMATS = ("ami", "ari", "aki", "bare", "ovf", "ova", "docker", "compressed")
VISIBILITIES = ("public", "private", "shared", "community")
HASH_ALGO = "sha512"
IMPORT_METHODS = ("glance-direct", "web-download", "copy-image", "glance-download")


def build_stores(
    config: CumuloConfig, state_dir: Path, identity: IdentityClient | None = None
) -> dict[str, Store]:
    """The configured stores by id, the default first ([[image.stores]], else `file`);
    identity: signs the `object_store` stores in as the service user."""
    root = state_dir / "images"
    if not config.image.stores:
        return {"file": FilesystemStore(root)}
    stores: dict[str, Store] = {}
    for c in config.image.stores:
        if c.type == "object_store":
            if identity is None:
                raise ValueError(f"image store {c.id}: the object_store type needs Identity")
            objects = ServiceClient(
                "object-store", url=config.public_url(config.ports.object_store),
                verify=verify_option(config), timeout=300.0,
            )  # fmt: skip
            stores[c.id] = ObjectStorageStore(
                c.id, c.description or f"Object Storage store {c.id}.", objects, identity,
                container=c.container, segment_size=c.segment_size_mb * 1024 * 1024,
            )  # fmt: skip
        else:
            stores[c.id] = FilesystemStore(
                Path(c.directory) if c.directory else root / c.id,
                id=c.id,
                description=c.description or f"Filesystem store {c.id}.",
            )
    return stores


def stores_of(image: Image) -> list[str]:
    return [s for s in image.store.split(",") if s]


def visible_image(
    session: Session, image_id: str, project_id: str | None, is_admin: bool
) -> Image | None:
    """The image if the project may see it (synchronous: run_read, run_sync)."""
    image = session.get(Image, image_id)
    if image is None or is_admin or image.owner == project_id:
        return image
    if image.visibility == "shared":
        member = session.get(ImageMember, {"image_id": image_id, "member": project_id})
        return image if member is not None else None
    return None if image.visibility == "private" else image


class ImageService:
    def __init__(
        self,
        config: CumuloConfig,
        state_dir: Path,
        db: Database,
        validator: TokenValidator,
        store: Store | None = None,
    ) -> None:
        self.config = config
        self.db = db
        self.validator = validator
        self.stores: dict[str, Store] = (
            {store.id: store} if store else build_stores(config, state_dir, validator.client)
        )
        # The default store: uploads go there, and imports that name none.
        self.store: Store = next(iter(self.stores.values()))
        self.weights = {c.id: c.weight for c in config.image.stores}
        self.staging = state_dir / "images-staging"
        self.staging.mkdir(parents=True, exist_ok=True)
        self.policy = Policy(IMAGE_RULES, state_dir / config.policy_file)
        self._imports: set[asyncio.Task] = set()
        cfg = config.image
        self.cache = (
            ImageCache(state_dir / "image-cache", cfg.cache_max_size) if cfg.cache_enabled else None
        )
        # Glance's notifications (cumulo.image.notifications), when given a notifier.
        self.notifier: Notifier | None = None

    def store_list(self, ids) -> str:
        """Store ids as an image's `stores`: highest weight first, then as configured."""
        order = list(self.stores)
        ranked = sorted(set(ids), key=lambda i: (-self.weights.get(i, 0), order.index(i)))
        return ",".join(ranked)

    async def object_store_in_process(self, app: ASGIApp) -> None:
        """The all-in-one cloud: `object_store` stores call the Object Storage app
        in-process (also before the ports are served: the first start's demo image)."""
        for store in self.stores.values():
            if isinstance(store, ObjectStorageStore):
                await store.objects.close()
                store.objects = store.reader = ServiceClient("object-store", app=app, timeout=300.0)

    async def close(self) -> None:
        for task in list(self._imports):
            task.cancel()
        await asyncio.gather(*self._imports, return_exceptions=True)
        if self.notifier is not None:
            await self.notifier.close()
        for store in self.stores.values():
            if isinstance(store, ObjectStorageStore):
                await store.objects.close()
                if store.reader is not store.objects:
                    await store.reader.close()
        await self.validator.client.close()
        await self.db.dispose()

    # -- who sees what -----------------------------------------------------------

    def is_admin(self, ctx: RequestContext) -> bool:
        return self.policy.check("cloud_admin", ctx)

    def visible_clause(self, ctx: RequestContext, member_status: str | None = None):
        """SQL condition: images the caller can see (shared: by membership status)."""
        members = select(ImageMember.image_id).where(ImageMember.member == ctx.project_id)
        if member_status and member_status != "all":
            members = members.where(ImageMember.status == member_status)
        return or_(
            Image.visibility.in_(("public", "community")),
            Image.owner == ctx.project_id,
            (Image.visibility == "shared") & Image.id.in_(members),
        )

    async def get_visible(self, ctx: RequestContext, image_id: str) -> Image:
        """The image, or 404 when it does not exist or the caller may not see it."""
        image = await self.db.run_read(visible_image, image_id, ctx.project_id, self.is_admin(ctx))
        if image is None:
            raise NotFound(f"No image found with ID {image_id}")
        return image

    # -- quotas ------------------------------------------------------------------

    def quota(self, project_id: str | None) -> ImageQuota:
        return self.config.image.project_quotas.get(project_id or "", self.config.image.quota)

    async def check_image_count(self, project_id: str | None) -> None:
        limit = self.quota(project_id).image_count
        async with self.db.read() as session:
            count = await session.scalar(
                select(func.count()).select_from(Image).where(Image.owner == project_id)
            )
        if (count or 0) >= limit:
            raise PayloadTooLarge(
                f"Quota exceeded: project {project_id} may own at most {limit} images."
            )

    async def bytes_left(self, project_id: str | None) -> int:
        """Bytes the project may still store (its quota less what its images hold)."""
        async with self.db.read() as session:
            used = await session.scalar(
                select(func.coalesce(func.sum(Image.size), 0)).where(Image.owner == project_id)
            )
        return max(self.quota(project_id).image_size_total - int(used or 0), 0)

    # -- status changes ------------------------------------------------------------

    async def set_status(
        self, image_id: str, expected: tuple[str, ...], new: str, **values
    ) -> bool:
        """Compare-and-swap the status; False when the image is not in an expected status."""
        async with self.db.write() as session:
            result = await session.execute(
                update(Image)
                .where(Image.id == image_id, Image.status.in_(expected))
                .values(status=new, updated_at=utcnow(), **values)
            )
        return result.rowcount == 1

    async def begin(self, image: Image, expected: str, new: str) -> None:
        if not image.disk_format or not image.container_format:
            raise BadRequest(
                "Properties disk_format, container_format must be set prior to saving data."
            )
        if not await self.set_status(image.id, (expected,), new):
            async with self.db.read() as session:
                current = await session.get(Image, image.id)
            status = current.status if current else "deleted"
            raise Conflict(f"Image status transition from {status} to {new} is not allowed")

    # -- data ----------------------------------------------------------------------

    def staged_path(self, image_id: str) -> Path:
        return self.staging / image_id

    async def receive(self, image: Image, chunks: AsyncIterator[bytes]) -> Written:
        """Stream data into the image's staging file within size limit and quota."""
        limit = min(self.config.image.max_image_size, await self.bytes_left(image.owner))
        try:
            return await write_staged(chunks, self.staged_path(image.id), limit)
        except TooLarge:
            raise PayloadTooLarge(
                f"Image exceeds the storage quota or size limit of {limit} bytes."
            ) from None

    def store_of(self, image: Image) -> Store:
        """The store the image's data is read from (the first that holds it)."""
        return self.stores[stores_of(image)[0]]

    async def copy_data(self, image_id: str, location: str, source: Store, target: Store) -> str:
        """The data at location in source, added to target (through a staging file)."""
        tmp = self.staging / f"{image_id}.{target.id}"
        await write_staged(source.read(location), tmp, self.config.image.max_image_size)
        try:
            return await target.add(image_id, tmp)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()

    async def accept(
        self,
        image: Image,
        written: Written,
        from_status: str,
        stores: list[str] | None = None,
        converted_to: str | None = None,
    ) -> None:
        """Inspect staged data and move it into the stores (default: the default store);
        the image becomes active. converted_to: the disk_format the image conversion
        import plugin gave the data (set with the status, so a failure leaves none)."""
        staged = self.staged_path(image.id)
        cfg = self.config.image
        disk_format = converted_to or image.disk_format or ""
        found = await inspect.inspect(staged, disk_format, cfg.inspect_timeout, cfg.inspect_memory)
        targets = [self.stores[s] for s in (stores or [self.store.id])]
        location = await targets[0].add(image.id, staged)
        try:
            for target in targets[1:]:
                await self.copy_data(image.id, location, targets[0], target)
        except BaseException:
            for target in targets:
                await target.delete(location)
            raise
        activated = await self.set_status(
            image.id,
            (from_status,),
            "active",
            size=written.size,
            virtual_size=found.virtual_size,
            checksum=written.checksum,
            os_hash_algo=HASH_ALGO,
            os_hash_value=written.os_hash_value,
            store=self.store_list(t.id for t in targets),
            location=location,
            **({"disk_format": converted_to, "container_format": "bare"} if converted_to else {}),
        )
        if not activated:
            # Deleted (or otherwise changed) meanwhile: its data must not stay behind.
            for target in targets:
                await target.delete(location)
            raise Conflict(f"Image {image.id} was deleted or changed during the upload.")

    async def upload(self, image: Image, chunks: AsyncIterator[bytes]) -> None:
        """PUT /v2/images/{id}/file: queued -> saving -> active."""
        await self.begin(image, "queued", "saving")
        try:
            written = await self.receive(image, chunks)
            await self.accept(image, written, "saving")
        except BaseException as exc:
            await self.discard_staged(image.id)
            refused = isinstance(exc, ApiError) and exc.status < 500
            await self.set_status(image.id, ("saving",), "queued" if refused else "killed")
            raise

    async def stage(self, image: Image, chunks: AsyncIterator[bytes]) -> None:
        """PUT /v2/images/{id}/stage: queued -> uploading, data kept in staging."""
        await self.begin(image, "queued", "uploading")
        try:
            await self.receive(image, chunks)
        except BaseException:
            await self.discard_staged(image.id)
            await self.set_status(image.id, ("uploading",), "queued")
            raise

    def track(self, task: asyncio.Task) -> None:
        """Keep a background import running until it ends (cancelled on close)."""
        self._imports.add(task)
        task.add_done_callback(self._imports.discard)

    async def discard_staged(self, image_id: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            await asyncio.to_thread(self.staged_path(image_id).unlink)

    async def delete_data(self, image: Image) -> None:
        if self.cache:
            await self.cache.delete(image.id)
        if image.location:
            for store in stores_of(image):
                if store in self.stores:
                    await self.stores[store].delete(image.location)
        await self.discard_staged(image.id)
