"""The Image service's rules: who sees which image, quotas, and the data lifecycle.

Image data moves queued -> saving -> active (upload) or queued -> uploading ->
importing -> active (interoperable import). Every status change is a
compare-and-swap on the expected status, so two uploads cannot both win. Data
that is refused (wrong format, over quota) sends the image back to `queued`;
an upload that breaks off leaves it `killed`. Either way the partial data is
removed: the store holds exactly the data of images that have it.

Where an image's data is, is its list of locations (Glance's `locations`): a store
and what that store reads, in order. Accepted data gets one location per store it was
written to; the http store's locations are URLs added to images (locations.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session
from starlette.types import ASGIApp

from cumulo.common.auth import TokenValidator
from cumulo.common.config import CumuloConfig, ImageQuota
from cumulo.common.context import RequestContext
from cumulo.common.db import Database, utcnow
from cumulo.common.faults import ApiError, BadRequest, Conflict, NotFound, PayloadTooLarge
from cumulo.common.identity_client import IdentityClient
from cumulo.common.image_signatures import SignatureError, Verifier, is_signed, verifier_for
from cumulo.common.notifications import Notifier
from cumulo.common.policy import Policy
from cumulo.common.service_client import ServiceClient
from cumulo.common.tls import verify_option
from cumulo.image import inspect
from cumulo.image.cache import ImageCache
from cumulo.image.http_store import HttpStore
from cumulo.image.models import Image, ImageLocation, ImageMember, ImageProperty
from cumulo.image.object_storage_store import ObjectStorageStore
from cumulo.image.policies import IMAGE_RULES
from cumulo.image.store import CHUNK, FilesystemStore, Store, TooLarge, Written, write_staged

# The image property naming the node whose staging area holds the image's staged data
# (Glance's): an import or delete asked of another node is sent on to it.
STAGE_HOST = "os_glance_stage_host"

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
    if config.image.stores[0].type == "http":
        raise ValueError("[[image.stores]]: the first store is the default, and http is read-only")
    stores: dict[str, Store] = {}
    for c in config.image.stores:
        if c.type == "http":
            stores[c.id] = HttpStore(
                c.id, c.description or f"HTTP store {c.id} (read-only).",
                timeout=config.image.web_download.timeout,
            )  # fmt: skip
        elif c.type == "object_store":
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


@dataclass(frozen=True)
class Location:
    """One of an image's locations: a store, what it reads there, the location's metadata."""

    store: str
    location: str
    metadata: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


def locations_in(session: Session, image_ids: Sequence[str]) -> dict[str, list[Location]]:
    """The locations of several images, in their order (synchronous: run_sync)."""
    found: dict[str, list[Location]] = {i: [] for i in image_ids}
    if image_ids:
        rows = session.scalars(
            select(ImageLocation)
            .where(ImageLocation.image_id.in_(image_ids))
            .order_by(ImageLocation.image_id, ImageLocation.position)
        )
        for row in rows:
            found[row.image_id].append(Location(row.store, row.location, json.loads(row.meta)))
    return found


async def write_locations(
    session: AsyncSession, image_id: str, locations: Iterable[Location]
) -> None:
    """The image's locations become these (in the caller's transaction)."""
    await session.execute(delete(ImageLocation).where(ImageLocation.image_id == image_id))
    session.add_all(
        ImageLocation(
            image_id=image_id,
            position=position,
            store=loc.store,
            location=loc.location,
            meta=json.dumps(loc.metadata),
        )
        for position, loc in enumerate(locations)
    )


def signature_refused(image_id: str, exc: SignatureError) -> BadRequest:
    """Glance's 400 for data whose signature does not hold."""
    LOG.warning("signature verification failed for image %s: %s", image_id, exc.reason)
    return BadRequest(f"Signature verification failed for image {image_id}: {exc}")


def check_signature(image_id: str, verifier: Verifier) -> None:
    try:
        verifier.verify()
    except SignatureError as exc:
        raise signature_refused(image_id, exc) from None
    LOG.info("Successfully verified signature for image %s", image_id)


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
        node_dir: Path | None = None,
    ) -> None:
        """node_dir: where this API node keeps what is its own (staging area, image
        cache) when it is not state_dir (another node of the same stores)."""
        self.config = config
        self.db = db
        self.validator = validator
        self.stores: dict[str, Store] = (
            {store.id: store} if store else build_stores(config, state_dir, validator.client)
        )
        # The default store: uploads go there, and imports that name none.
        self.store: Store = next(iter(self.stores.values()))
        self.weights = {c.id: c.weight for c in config.image.stores}
        # Glance's http store, where images' data may stay on web servers (locations.py).
        self.http_store = next((s for s in self.stores.values() if isinstance(s, HttpStore)), None)
        node_dir = node_dir or state_dir
        self.staging = node_dir / "images-staging"
        self.staging.mkdir(parents=True, exist_ok=True)
        # Where other nodes find this one's staged data (Glance's os_glance_stage_host).
        self.self_url = (
            config.image.worker_self_reference_url or config.public_url(config.ports.image)
        ).rstrip("/")
        self.policy = Policy(IMAGE_RULES, state_dir / config.policy_file)
        self._imports: set[asyncio.Task] = set()
        # Background work on one image (a location's hashing), cancelled when it is deleted.
        self._image_work: dict[str, set[asyncio.Task]] = {}
        cfg = config.image
        self.cache = (
            ImageCache(node_dir / "image-cache", cfg.cache_max_size) if cfg.cache_enabled else None
        )
        # Glance's notifications (cumulo.image.notifications), when given a notifier.
        self.notifier: Notifier | None = None
        # The Key Manager: signed images' certificates, read with the uploader's token.
        self.key_manager: ServiceClient | None = None

    def store_list(self, ids) -> str:
        """Store ids as an image's `stores`: highest weight first, then as configured."""
        order = list(self.stores)
        rank = {i: n for n, i in enumerate(order)}
        ranked = sorted(set(ids), key=lambda i: (-self.weights.get(i, 0), rank.get(i, len(order))))
        return ",".join(ranked)

    def url_of(self, loc: Location) -> str:
        store = self.stores.get(loc.store)
        return store.url(loc.location) if store else loc.location

    def by_preference(self, locations: Sequence[Location]) -> list[Location]:
        """Where to read first: highest store weight, then the locations' own order."""
        return sorted(locations, key=lambda loc: -self.weights.get(loc.store, 0))

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
            elif isinstance(store, HttpStore):
                await store.close()
        if self.key_manager is not None:
            await self.key_manager.close()
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

    async def activate(
        self, image_id: str, expected: tuple[str, ...], locations: list[Location], **values
    ) -> bool:
        """Compare-and-swap to active with these locations (Glance replaces an image's
        locations with its data's); False when the image is not in an expected status."""
        async with self.db.write() as session:
            result = await session.execute(
                update(Image)
                .where(Image.id == image_id, Image.status.in_(expected))
                .values(status="active", updated_at=utcnow(), **values)
            )
            if result.rowcount != 1:
                return False
            await write_locations(session, image_id, locations)
        return True

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

    async def receive(
        self, image: Image, chunks: AsyncIterator[bytes], verifier: Verifier | None = None
    ) -> Written:
        """Stream data into the image's staging file within size limit and quota (and
        through the verifier of its signature, when it is signed)."""
        limit = min(self.config.image.max_image_size, await self.bytes_left(image.owner))
        readers = [verifier.update] if verifier else []
        try:
            return await write_staged(chunks, self.staged_path(image.id), limit, readers=readers)
        except TooLarge:
            raise PayloadTooLarge(
                f"Image exceeds the storage quota or size limit of {limit} bytes."
            ) from None

    # -- signed images (Glance's signature verification, cumulo.common.image_signatures) --

    async def signature_verifier(self, image: Image, token: str) -> Verifier | None:
        """The verifier of the image's data when it carries all four signature properties
        (Glance verifies only then); its certificate is read with the uploader's token."""
        async with self.db.read() as session:
            rows = await session.execute(
                select(ImageProperty.name, ImageProperty.value).where(
                    ImageProperty.image_id == image.id
                )
            )
            properties = {name: value for name, value in rows}
        if not is_signed(properties):
            return None
        try:
            return await verifier_for(self.key_manager, token, properties)
        except SignatureError as exc:
            raise signature_refused(image.id, exc) from None

    async def verify_staged(self, image: Image, token: str) -> None:
        """The staged data of an import checked against the image's signature."""
        verifier = await self.signature_verifier(image, token)
        if verifier is None:
            return

        def feed() -> None:
            with open(self.staged_path(image.id), "rb", buffering=0) as f:
                while chunk := f.read(CHUNK):
                    verifier.update(chunk)

        await asyncio.to_thread(feed)
        check_signature(image.id, verifier)

    async def locations(self, image_id: str) -> list[Location]:
        async with self.db.read() as session:
            found = await session.run_sync(locations_in, [image_id])
        return found[image_id]

    async def read(
        self, locations: Sequence[Location], start: int = 0, end: int | None = None
    ) -> AsyncIterator[bytes]:
        """The bytes [start, end) of an image's data, from the first of its locations (in
        order of preference) that gives them; the last failure when none does."""
        failure: Exception = FileNotFoundError("the image has no data")
        for loc in self.by_preference(locations):
            store = self.stores.get(loc.store)
            if store is None:
                continue
            async with contextlib.aclosing(store.read(loc.location, start, end)) as chunks:
                try:
                    first = await anext(chunks, None)
                except Exception as exc:  # noqa: BLE001 - the next location may have it
                    LOG.warning("reading %s from store %s: %s", loc.location, loc.store, exc)
                    failure = exc
                    continue
                if first is not None:
                    yield first
                    async for chunk in chunks:
                        yield chunk
                return
        raise failure

    async def copy_data(self, image_id: str, chunks: AsyncIterator[bytes], target: Store) -> str:
        """The data, added to target (through a staging file)."""
        tmp = self.staging / f"{image_id}.{target.id}"
        await write_staged(chunks, tmp, self.config.image.max_image_size)
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
                await self.copy_data(image.id, targets[0].read(location), target)
        except BaseException:
            for target in targets:
                await target.delete(location)
            raise
        placed = [
            Location(store, location, {"store": store})
            for store in self.store_list(t.id for t in targets).split(",")
        ]
        activated = await self.activate(
            image.id,
            (from_status,),
            placed,
            size=written.size,
            virtual_size=found.virtual_size,
            checksum=written.checksum,
            os_hash_algo=HASH_ALGO,
            os_hash_value=written.os_hash_value,
            **({"disk_format": converted_to, "container_format": "bare"} if converted_to else {}),
        )
        if not activated:
            # Deleted (or otherwise changed) meanwhile: its data must not stay behind.
            for target in targets:
                await target.delete(location)
            raise Conflict(f"Image {image.id} was deleted or changed during the upload.")

    async def upload(self, image: Image, chunks: AsyncIterator[bytes], token: str = "") -> None:
        """PUT /v2/images/{id}/file: queued -> saving -> active. A signed image's data is
        verified as it streams: a bad signature sends it back to queued, without data."""
        await self.begin(image, "queued", "saving")
        try:
            verifier = await self.signature_verifier(image, token)
            written = await self.receive(image, chunks, verifier)
            if verifier is not None:
                check_signature(image.id, verifier)
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
            await self.set_stage_host(image.id, self.self_url)
        except BaseException:
            await self.discard_staged(image.id)
            await self.set_status(image.id, ("uploading",), "queued")
            raise

    async def set_stage_host(self, image_id: str, url: str | None) -> None:
        """Record (or, None, forget) the node that holds the image's staged data."""
        async with self.db.write() as session:
            if url is None:
                await session.execute(
                    delete(ImageProperty).where(
                        ImageProperty.image_id == image_id, ImageProperty.name == STAGE_HOST
                    )
                )
            else:
                await session.merge(ImageProperty(image_id=image_id, name=STAGE_HOST, value=url))

    async def staged_elsewhere(self, image: Image) -> str | None:
        """The node holding the image's staged data when it is another one (a request
        about that data is then that node's to serve), else None."""
        async with self.db.read() as session:
            host = await session.scalar(
                select(ImageProperty.value).where(
                    ImageProperty.image_id == image.id, ImageProperty.name == STAGE_HOST
                )
            )
        if not host or host.rstrip("/") == self.self_url or self.staged_path(image.id).exists():
            return None
        return host.rstrip("/")

    def track(self, task: asyncio.Task, image_id: str | None = None) -> None:
        """Keep a background import running until it ends (cancelled on close, and, with
        image_id, when that image is deleted)."""
        self._imports.add(task)
        task.add_done_callback(self._imports.discard)
        if image_id is not None:
            work = self._image_work.setdefault(image_id, set())
            work.add(task)

            def done(finished: asyncio.Task) -> None:
                work.discard(finished)
                if not work and self._image_work.get(image_id) is work:
                    del self._image_work[image_id]

            task.add_done_callback(done)

    async def discard_staged(self, image_id: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            await asyncio.to_thread(self.staged_path(image_id).unlink)

    async def delete_data(self, image_id: str, locations: Iterable[Location]) -> None:
        """A deleted image's data goes: its background work, cache entry, stored data."""
        for task in self._image_work.pop(image_id, set()):
            task.cancel()
        if self.cache:
            await self.cache.delete(image_id)
        for loc in locations:
            await self.forget(loc)
        await self.discard_staged(image_id)

    async def forget(self, loc: Location) -> None:
        """The data at a location that is no longer the image's is deleted (the http
        store's stays on its web server)."""
        store = self.stores.get(loc.store)
        if store is not None:
            await store.delete(loc.location)
