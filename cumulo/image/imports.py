"""Interoperable image import (Glance's import methods) and the tasks that record it.

Each `POST /v2/images/{id}/import` is a task (type `api_image_import`) that runs in the
background and ends `success` or `failure`:

- glance-direct: the staged data (uploading -> importing -> active);
- web-download: the data fetched from a URL the `[image.web_download]` filters allow
  (queued -> importing -> active; back to queued on failure);
- copy-image: an active image's data copied to more stores (it stays active);
- glance-download: another Image service's image (found in the caller's catalog by region
  and interface, read with the caller's token): its data, formats and the properties
  `[image] glance_download_properties` match (queued -> importing -> active).

With `[image] import_plugins = ["image_conversion"]`, the data of all but copy-image is
converted before it is stored (conversion.py). As in Glance,
`os_glance_importing_to_stores` lists the stores still to do and `os_glance_failed_import`
those that failed; `all_stores_must_succeed` (default true) makes one failed store fail
the import.
"""

from __future__ import annotations

import asyncio
import datetime
import fnmatch
import ipaddress
import json
import logging
import re
import socket
import uuid
from typing import Any
from urllib.parse import urlsplit

import httpx
from sqlalchemy import delete, select

from cumulo.common.context import RequestContext
from cumulo.common.db import utcnow
from cumulo.common.faults import BadRequest, Conflict, PayloadTooLarge
from cumulo.image import conversion
from cumulo.image.core import ImageService, Location, locations_in, write_locations
from cumulo.image.models import Image, ImageProperty, ImageTask
from cumulo.image.store import hash_file

LOG = logging.getLogger(__name__)
IMPORTING = "os_glance_importing_to_stores"
FAILED = "os_glance_failed_import"
TASK_TTL = datetime.timedelta(hours=48)


# -- tasks -----------------------------------------------------------------------------


async def create_task(
    service: ImageService,
    ctx: RequestContext,
    type_: str,
    input_: dict[str, Any],
    image_id: str | None,
) -> ImageTask:
    task = ImageTask(
        id=str(uuid.uuid4()),
        type=type_,
        status="processing",
        owner=ctx.project_id,
        image_id=image_id,
        request_id=ctx.request_id,
        user_id=ctx.user_id,
        input=json.dumps(input_),
        message="",
    )
    async with service.db.write() as session:
        session.add(task)
    return task


async def finish_task(
    service: ImageService, task_id: str, ok: bool, message: str = "", result: Any = None
) -> None:
    async with service.db.write() as session:
        task = await session.get(ImageTask, task_id)
        if task is None:
            return
        task.status = "success" if ok else "failure"
        task.message = message
        task.result = json.dumps(result) if result is not None else None
        task.updated_at = utcnow()
        task.expires_at = task.updated_at + TASK_TTL


# -- web-download filters ----------------------------------------------------------------


def check_url(service: ImageService, url: Any, what: str = "web-download") -> str:
    """The URL if `[image.web_download]` lets it be fetched, else 400 (as Glance). The
    same filters guard the http store's locations (what: "location")."""
    cfg = service.config.image.web_download
    if not isinstance(url, str) or not url:
        raise BadRequest("Import request requires a 'uri' field.")
    try:
        parts = urlsplit(url)
        port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    except ValueError:  # a broken address or port: refused below
        parts, port = urlsplit(""), None
    host = parts.hostname or ""
    refused = (
        parts.scheme not in cfg.allowed_schemes
        or not host
        or port is None
        or (cfg.allowed_ports and port not in cfg.allowed_ports)
        or (cfg.allowed_hosts and host not in cfg.allowed_hosts)
        or host in cfg.disallowed_hosts
    )
    if refused:
        raise BadRequest(f"URI for {what} does not pass filtering: {url}")
    return url


def address_allowed(host: str, cfg) -> bool:
    """A host given by name is checked again by the addresses it resolves to."""
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return True  # the fetch fails by itself
    addresses = {str(ipaddress.ip_address(i[4][0])) for i in infos}
    return not (addresses & set(cfg.disallowed_hosts))


async def fetch_to_staging(service: ImageService, image: Image, url: str) -> None:
    """GET url into the image's staging file, within the size limit and quota."""
    cfg = service.config.image.web_download
    host = urlsplit(url).hostname or ""
    if not await asyncio.to_thread(address_allowed, host, cfg):
        raise BadRequest(f"URI for web-download does not pass filtering: {url}")
    timeout = httpx.Timeout(cfg.timeout)
    async with httpx.AsyncClient(timeout=timeout, follow_redirects=False) as client:
        async with client.stream("GET", url) as resp:
            if resp.status_code != 200:
                raise RuntimeError(f"GET {url} answered {resp.status_code}")
            await service.receive(image, resp.aiter_bytes())


# -- glance-download -----------------------------------------------------------------------

UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")


def check_remote(method: dict[str, Any]) -> str:
    """`region/interface/image id` of a glance-download request (400 when malformed)."""
    image_id = method.get("glance_image_id")
    if not isinstance(image_id, str) or not UUID_RE.match(image_id):
        raise BadRequest("Remote image id does not look like a UUID")
    region = method.get("glance_region")
    if not isinstance(region, str) or not region:
        raise BadRequest("Import request requires a 'glance_region' field.")
    interface = method.get("glance_service_interface", "public")
    if not isinstance(interface, str):
        raise BadRequest("'glance_service_interface' must be a string.")
    return f"{region}/{interface}/{image_id}"


def _copied(name: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


async def fetch_remote_image(service: ImageService, image: Image, token: str, remote: str):
    """Stage the remote image's data; take its formats and chosen properties. The image
    row as updated."""
    region, interface, remote_id = remote.split("/")
    catalog = await service.validator.client.catalog(token)
    urls = [
        ep["url"]
        for entry in catalog
        if entry["type"] == "image"
        for ep in entry["endpoints"]
        if ep.get("region_id", ep.get("region")) == region and ep["interface"] == interface
    ]
    if not urls:
        raise RuntimeError(f"No image service in region {region!r} ({interface})")
    base = urls[0].rstrip("/")
    headers = {"X-Auth-Token": token}
    timeout = httpx.Timeout(service.config.image.web_download.timeout)
    async with httpx.AsyncClient(timeout=timeout, headers=headers) as client:
        shown = await client.get(f"{base}/v2/images/{remote_id}")
        if shown.status_code != 200:
            raise RuntimeError(f"Remote image {remote_id}: {shown.status_code}")
        source = shown.json()
        async with client.stream("GET", f"{base}/v2/images/{remote_id}/file") as resp:
            if resp.status_code != 200:
                raise RuntimeError(f"Remote image {remote_id} data: {resp.status_code}")
            await service.receive(image, resp.aiter_bytes())
    patterns = service.config.image.glance_download_properties
    async with service.db.write() as session:
        row = await session.get(Image, image.id)
        if row is None:
            raise RuntimeError(f"Image {image.id} was deleted during the import")
        row.disk_format = source.get("disk_format")
        row.container_format = source.get("container_format")
        for name, value in source.items():
            if _copied(name, patterns) and isinstance(value, str):
                await session.merge(ImageProperty(image_id=image.id, name=name, value=value))
    return row


# -- the import request ------------------------------------------------------------------


def target_stores(service: ImageService, body: dict[str, Any]) -> list[str]:
    """The stores an import writes to: `all_stores` (the writable ones, as Glance leaves
    out the read-only http store), `stores`, or the default one."""
    if body.get("all_stores"):
        if body.get("stores"):
            raise BadRequest("All stores and specific stores cannot be given together.")
        return [i for i, store in service.stores.items() if store.writable]
    stores = body.get("stores") or [service.store.id]
    unknown = [s for s in stores if s not in service.stores]
    if unknown:
        raise BadRequest(f"Unknown stores: {unknown}. Available: {', '.join(service.stores)}.")
    read_only = [s for s in stores if not service.stores[s].writable]
    if read_only:
        raise BadRequest(f"Stores {read_only} are read-only: image data cannot be added there.")
    return list(dict.fromkeys(stores))


async def _set_import_props(service: ImageService, image_id: str, **values: str) -> None:
    async with service.db.write() as session:
        for name, value in values.items():
            await session.merge(ImageProperty(image_id=image_id, name=name, value=value))


async def start(
    service: ImageService, ctx: RequestContext, image: Image, body: dict[str, Any]
) -> None:
    """Check the request against the image's state, then run the import in the background."""
    method = body["method"]
    name = method["name"]
    stores = target_stores(service, body)
    url = None
    if name == "glance-direct":
        if image.status != "uploading":
            raise Conflict("Image needs to be staged before 'glance-direct' method can be used")
        await service.begin(image, "uploading", "importing")
    elif name == "glance-download":
        url = check_remote(method)
        if image.status != "queued":
            raise Conflict(f"Image with status {image.status} cannot be target for import")
        await service.begin(image, "queued", "importing")
    elif name == "web-download":
        url = check_url(service, method.get("uri"))
        if image.status != "queued":
            raise Conflict(f"Image with status {image.status} cannot be target for import")
        await service.begin(image, "queued", "importing")
    else:  # copy-image
        if image.status != "active":
            raise Conflict("Only images with status active can be targeted for copying")
        present = {loc.store for loc in await service.locations(image.id)}
        if body.get("all_stores"):
            stores = [s for s in stores if s not in present]
        elif present & set(stores):
            raise Conflict(f"Image is already present at store {sorted(present & set(stores))}")
        if not stores:
            raise Conflict("Image is already present at every store.")
    await _set_import_props(service, image.id, **{IMPORTING: ",".join(stores), FAILED: ""})
    task = await create_task(
        service,
        ctx,
        "api_image_import",
        {"image_id": image.id, "import_req": body, "backend": stores},
        image.id,
    )
    must_succeed = body.get("all_stores_must_succeed", True)
    run = _run(service, image, name, stores, url, must_succeed, ctx.auth_token)
    service.track(asyncio.create_task(run_as_task(service, task.id, image.id, run)))


async def start_legacy_import(
    service: ImageService, ctx: RequestContext, image: Image, input_: dict[str, Any]
) -> ImageTask:
    """Glance's `import` task (POST /v2/tasks): the new image filled from `import_from`
    as web-download does; `result.image_id` names it."""
    url = check_url(service, input_.get("import_from"))
    await service.begin(image, "queued", "importing")
    task = await create_task(service, ctx, "import", input_, image.id)
    # Glance's legacy import flow has no import plugins (its `convert` task is separate).
    run = _run(
        service, image, "web-download", [service.store.id], url, True, ctx.auth_token, plugins=False
    )
    service.track(asyncio.create_task(run_as_task(service, task.id, image.id, run)))
    return task


async def run_as_task(service: ImageService, task_id: str, image_id: str, work) -> None:
    """Run background work as its task: `success`, or `failure` with the reason; work
    returns the stores that failed, when some may."""
    try:
        failed = await work
    except BaseException as exc:
        LOG.warning("import of image %s failed: %s", image_id, exc)
        await finish_task(service, task_id, False, str(exc) or type(exc).__name__)
        if not isinstance(exc, Exception):
            raise
        return
    message = f"Failed to import to stores: {','.join(failed)}" if failed else ""
    await finish_task(service, task_id, True, message, {"image_id": image_id})


async def _run(
    service: ImageService,
    image: Image,
    method: str,
    stores: list[str],
    url: str | None,
    must_succeed: bool,
    token: str = "",
    plugins: bool = True,
) -> list[str]:
    """Do the import; returns the stores that failed (when some may). plugins: run the
    `[image] import_plugins` on the data (not for copy-image or the legacy import task)."""
    if method == "copy-image":
        return await _copy(service, image, stores, must_succeed)
    try:
        if method == "web-download":
            assert url is not None
            await fetch_to_staging(service, image, url)
        elif method == "glance-download":
            assert url is not None
            image = await fetch_remote_image(service, image, token, url)
        # A signed image: the data as it came (before any conversion) is what was signed.
        await service.verify_staged(image, token)
        converted_to = None
        if plugins and conversion.enabled(service.config.image):
            room = min(service.config.image.max_image_size, await service.bytes_left(image.owner))
            converted_to = await conversion.convert_staged(
                service.staged_path(image.id), image.disk_format or "", service.config.image, room
            )
        written = await hash_file(service.staged_path(image.id))
        if written.size > await service.bytes_left(image.owner):
            raise PayloadTooLarge("Image exceeds the storage quota.")
        await service.accept(image, written, "importing", stores, converted_to)
    except BaseException:
        await service.discard_staged(image.id)
        await service.set_status(image.id, ("importing",), "queued")
        await _set_import_props(service, image.id, **{IMPORTING: "", FAILED: ",".join(stores)})
        await service.set_stage_host(image.id, None)
        raise
    await _set_import_props(service, image.id, **{IMPORTING: ""})
    await service.set_stage_host(image.id, None)  # nothing staged any more (Glance's)
    return []


async def _copy(
    service: ImageService, image: Image, stores: list[str], must_succeed: bool
) -> list[str]:
    """copy-image: the data, read from the image's preferred location, added to stores
    (each a new location of the image)."""
    sources = await service.locations(image.id)
    done: list[Location] = []
    failed: list[str] = []
    for store in stores:
        try:
            key = await service.copy_data(image.id, service.read(sources), service.stores[store])
            done.append(Location(store, key, {"store": store}))
        except Exception as exc:  # noqa: BLE001 - recorded per store, as Glance does
            LOG.warning("copy of image %s to store %s failed: %s", image.id, store, exc)
            failed.append(store)
            if must_succeed:
                break
    if failed and must_succeed:  # all or nothing
        for loc in done:
            await service.forget(loc)
        done, failed = [], list(stores)
    async with service.db.write() as session:
        row = await session.get(Image, image.id)
        if row is None:  # deleted meanwhile: its copies must not stay behind
            for loc in done:
                await service.forget(loc)
            return failed
        held = (await session.run_sync(locations_in, [image.id]))[image.id]
        await write_locations(session, image.id, held + done)
        row.updated_at = utcnow()
    await _set_import_props(service, image.id, **{IMPORTING: "", FAILED: ",".join(failed)})
    if failed and must_succeed:
        raise RuntimeError(f"copy to stores {','.join(failed)} failed")
    return failed


async def delete_from_store(service: ImageService, image: Image, store: str) -> None:
    """DELETE /v2/stores/{store}/{image}: the data leaves one store; never the last one."""
    async with service.db.write() as session:
        row = await session.get(Image, image.id)
        held = (await session.run_sync(locations_in, [image.id]))[image.id] if row else []
        gone = [loc for loc in held if loc.store == store]
        if not gone:
            raise Conflict(f"Image {image.id} is not in store {store}.")
        if len(gone) == len(held):
            raise Conflict("Cannot delete image data from its only store.")
        await write_locations(session, image.id, [loc for loc in held if loc.store != store])
        row.updated_at = utcnow()
    for loc in gone:
        await service.forget(loc)


async def forget_tasks(service: ImageService) -> None:
    """Expired tasks are removed (Glance keeps finished tasks for 48 hours)."""
    async with service.db.write() as session:
        await session.execute(delete(ImageTask).where(ImageTask.expires_at < utcnow()))


async def image_tasks(service: ImageService, image_id: str) -> list[ImageTask]:
    async with service.db.read() as session:
        return list(
            await session.scalars(
                select(ImageTask)
                .where(ImageTask.image_id == image_id)
                .order_by(ImageTask.created_at)
            )
        )
