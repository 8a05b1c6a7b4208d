"""Image locations: Glance's `locations` and `direct_url`, changed with JSON patch, and
the 2.17 location API (POST and GET /v2/images/{id}/locations).

An image's data is at its locations (core.Location): one per store its data was
written to, and the http store's URLs. With `[image] show_multiple_locations`, image
bodies show them and JSON patch changes them as Glance does:

- add (`/locations/-` or `/locations/<n>`): an http(s) URL the location filters
  (`[image.web_download]`) let through and whose HEAD gives a size; a queued image
  becomes active with it (no hashing: its `validation_data`, if any, is taken as given);
- replace (`/locations`): the same URLs with new metadata, or any list while there is
  none;
- remove (`/locations/<n>`, admins): not the last one; the data of a store's location
  is deleted with it.

POST /v2/images/{id}/locations adds one URL to a queued image and returns at once; a
`location_import` task then records it, and (`[image] do_secure_hash`) reads the data
to take its checksum and hash, checked against `validation_data` when given. A hash
that does not match sends the image back to `queued` (the location stays, as Glance's
http store does); an image deleted meanwhile stops the hashing.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import update

from cumulo.common.context import RequestContext
from cumulo.common.db import utcnow
from cumulo.common.faults import ApiError, BadRequest, Conflict, Forbidden
from cumulo.image import imports
from cumulo.image.core import HASH_ALGO, ImageService, Location, locations_in, write_locations
from cumulo.image.http_store import SCHEMES, HttpStore, LocationUnreadable
from cumulo.image.models import Image

LOG = logging.getLogger(__name__)

URL_MAX = 255  # the image schema's maxLength of a location's url
VALIDATION_KEYS = {"checksum": 32, "os_hash_algo": 64, "os_hash_value": 128}
# What POST .../locations accepts as `validation_data.os_hash_algo` (Glance's schema).
ADD_HASH_ALGOS = ("sha1", "sha256", "sha512", "md5")


def _schema_error(detail: str) -> BadRequest:
    return BadRequest(f"Provided object does not match schema 'image': {detail}")


# -- request values --------------------------------------------------------------------


def check_location(value: Any) -> dict[str, Any]:
    """A location of a JSON-patch value, against the image schema (400 otherwise)."""
    if not isinstance(value, dict):
        raise _schema_error(f"{value!r} is not of type 'object'")
    for key in ("url", "metadata"):
        if key not in value:
            raise _schema_error(f"'{key}' is a required property")
    url = value["url"]
    if not isinstance(url, str):
        raise _schema_error(f"{url!r} is not of type 'string'")
    if len(url) > URL_MAX:
        raise _schema_error(f"'{url}' is too long")
    if not isinstance(value["metadata"], dict):
        raise _schema_error(f"{value['metadata']!r} is not of type 'object'")
    if "validation_data" in value:
        data = value["validation_data"]
        if not isinstance(data, dict):
            raise _schema_error(f"{data!r} is not of type 'object'")
        extra = sorted(set(data) - set(VALIDATION_KEYS))
        if extra:
            raise _schema_error(f"Additional properties are not allowed ({extra} unexpected)")
        for key in ("os_hash_algo", "os_hash_value"):
            if key not in data:
                raise _schema_error(f"'{key}' is a required property")
        for key, longest in VALIDATION_KEYS.items():
            if key in data and not isinstance(data[key], str):
                raise _schema_error(f"{data[key]!r} is not of type 'string'")
            if key in data and len(data[key]) > longest:
                raise _schema_error(f"'{data[key]}' is too long")
        if "checksum" in data and len(data["checksum"]) < 32:
            raise _schema_error(f"'{data['checksum']}' is too short")
    return value


def check_locations(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        raise _schema_error(f"{value!r} is not of type 'array'")
    return [check_location(v) for v in value]


def _hex_bytes(value: str) -> bytes | None:
    try:
        return bytes.fromhex(value)
    except ValueError:
        return None


def validation_values(image: Image, locations: list[dict[str, Any]]) -> dict[str, str]:
    """The image attributes the locations' `validation_data` set (Glance's rules): values
    already set must match, new ones only on a queued image, and well formed (409)."""
    given: dict[str, str] = {}
    for loc in locations:
        for key, value in (loc.get("validation_data") or {}).items():
            if given.get(key, value) != value:
                raise Conflict(f"Conflicting values for {key}")
            given[key] = value
    new: dict[str, str] = {}
    for key, value in given.items():
        current = getattr(image, key)
        if value == current:
            continue
        if current:
            raise Conflict(f"{key} is already set with a different value")
        new[key] = value
    if not new:
        return {}
    if image.status != "queued":
        raise Conflict(
            f"New value(s) for {', '.join(new)} may only be provided when image status is 'queued'"
        )
    if "checksum" in new:
        digest = _hex_bytes(new["checksum"])
        if digest is None:
            raise Conflict(f"checksum ({new['checksum']}) is not a valid hexadecimal value")
        if len(digest) != 16:
            raise Conflict(
                f"checksum ({new['checksum']}) is not the correct size for md5 (should be 16 bytes)"
            )
    algo = new.get("os_hash_algo")
    if algo != HASH_ALGO:
        raise Conflict(f"os_hash_algo must be {HASH_ALGO}, not {algo}")
    digest = _hex_bytes(new["os_hash_value"])
    if digest is None:
        raise Conflict(f"os_hash_value ({new['os_hash_value']}) is not a valid hexadecimal value")
    want = hashlib.new(algo).digest_size
    if len(digest) != want:
        raise Conflict(
            f"os_hash_value ({new['os_hash_value']}) is not the correct size for {algo} "
            f"(should be {want} bytes)"
        )
    return new


def _position(token: str | None, count: int, *, append: bool) -> int | None:
    """A location pointer's index (Glance's: `-` is the end; None when out of range)."""
    if token is None:
        return None
    pos = count if append else count - 1
    if token.isdigit():
        pos = int(token)
    elif token != "-":
        return None
    if not append and not 0 <= pos < count:
        return None
    return min(pos, count) if append else pos


# -- probing a new location ---------------------------------------------------------------


def readable(service: ImageService, url: str) -> bool:
    """Whether the http store may read the URL (an http(s) URL, and such a store)."""
    try:
        scheme = urlsplit(url).scheme
    except ValueError:  # e.g. a broken IPv6 address
        return False
    return service.http_store is not None and scheme in SCHEMES


async def probe(service: ImageService, url: str) -> int:
    """The size of the data at a new location, once the http store may read it and the
    location filters let it through (400 otherwise, as Glance's `Invalid location`)."""
    store = service.http_store
    if store is None or not readable(service, url):
        raise BadRequest("Invalid location")
    await check_filters(service, url)
    try:
        return await store.size(url)
    except LocationUnreadable as exc:
        LOG.info("location %s refused: %s", url, exc)
        raise BadRequest("Invalid location") from None


async def check_filters(service: ImageService, url: str) -> None:
    """The web-download filters, for a URL the service would read (400 when refused)."""
    imports.check_url(service, url, what="location")
    host = urlsplit(url).hostname or ""
    cfg = service.config.image.web_download
    if not await asyncio.to_thread(imports.address_allowed, host, cfg):
        raise BadRequest(f"URI for location does not pass filtering: {url}")


async def probe_all(service: ImageService, urls: set[str]) -> dict[str, int | ApiError]:
    """Each new URL's size, or the error that refuses it (raised when it is reached)."""

    async def one(url: str) -> int | ApiError:
        try:
            return await probe(service, url)
        except ApiError as exc:
            return exc

    found = await asyncio.gather(*(one(u) for u in sorted(urls)))
    return dict(zip(sorted(urls), found, strict=True))


def _http_location(service: ImageService, url: str, metadata: dict[str, Any]) -> Location:
    assert service.http_store is not None
    store = service.http_store.id
    return Location(store, url, {**metadata, "store": store})


def _probed(probed: dict[str, int | ApiError], url: str) -> int:
    found = probed.get(url)
    if found is None:  # the locations changed since the request was checked
        raise Conflict("The image's locations changed during the request.")
    if isinstance(found, ApiError):
        raise found
    return found


# -- JSON patch ----------------------------------------------------------------------------


def _visible_or_403(service: ImageService, what: str) -> None:
    if not service.config.image.show_multiple_locations:
        raise Forbidden(f"It's not allowed to {what} locations if locations are invisible.")


def new_urls(
    service: ImageService, current: list[Location], changes: list[tuple[str, str | None, Any]]
) -> set[str]:
    """The URLs a patch's location changes have checked: every added one (as Glance), and
    those a replace names that are not locations yet."""
    known = {service.url_of(loc) for loc in current}
    urls: set[str] = set()
    for op, _, value in changes:
        if op == "add":
            urls.add(value["url"])
        elif op == "replace":
            urls.update(v["url"] for v in value if v["url"] not in known)
    return urls


def apply_change(
    service: ImageService,
    image: Image,
    locations: list[Location],
    op: str,
    token: str | None,
    value: Any,
    probed: dict[str, int | ApiError],
) -> list[Location]:
    """One JSON-patch change of `/locations` applied to the image row (in the caller's
    transaction) and its locations; the locations after it."""
    if op == "add":
        _visible_or_403(service, "add")
        if image.status not in ("active", "queued"):
            raise Conflict(f"It's not allowed to add locations if image status is {image.status}.")
        values = validation_values(image, [value])
        index = _position(token, len(locations), append=True)
        if index is None:
            raise BadRequest("Invalid position for adding a location.")
        size = _probed(probed, value["url"])
        new = _http_location(service, value["url"], value["metadata"])
        if any(service.url_of(loc) == new.location and loc.metadata == new.metadata
               for loc in locations):  # fmt: skip
            raise BadRequest(f"The location {new.location} already exists")
        locations = [*locations[:index], new, *locations[index:]]
        _activate(image, values, size)
        return locations
    if op == "replace":
        if not value:
            raise Forbidden("Cannot set locations to empty list.")
        _visible_or_403(service, "update")
        if image.status not in ("active", "queued"):
            raise Conflict(
                f"It's not allowed to replace locations if image status is {image.status}."
            )
        values = validation_values(image, value)
        wanted = sorted(v["url"] for v in value)
        if locations and wanted != sorted(service.url_of(loc) for loc in locations):
            shown = [{"url": service.url_of(loc), "metadata": loc.metadata} for loc in locations]
            raise BadRequest(f"Original locations is not empty: {shown}")
        if locations:  # the same URLs: new metadata (each keeps its store)
            unused = list(locations)
            replaced = []
            for v in value:
                loc = next(x for x in unused if service.url_of(x) == v["url"])
                unused.remove(loc)
                metadata = {**v["metadata"], "store": loc.store}
                replaced.append(Location(loc.store, loc.location, metadata))
            _activate(image, values, None)
            return replaced
        sizes = [_probed(probed, v["url"]) for v in value]
        replaced = [_http_location(service, v["url"], v["metadata"]) for v in value]
        if len({(r.location, str(sorted(r.metadata.items()))) for r in replaced}) < len(replaced):
            raise BadRequest("The locations list holds a location twice.")
        _activate(image, values, sizes[0])
        return replaced
    # remove
    _visible_or_403(service, "remove")
    if image.status != "active":
        raise Conflict(f"It's not allowed to remove locations if image status is {image.status}.")
    if len(locations) == 1:
        raise Forbidden("Cannot remove last location in the image.")
    index = _position(token, len(locations), append=False)
    if index is None:
        raise BadRequest("Invalid position for removing a location.")
    return [*locations[:index], *locations[index + 1 :]]


def _activate(image: Image, values: dict[str, str], size: int | None) -> None:
    """A location makes a queued image active, with the validation values given."""
    if size and not image.size:
        image.size = size
    if image.status == "queued":
        for key, value in values.items():
            setattr(image, key, value)
        image.status = "active"


# -- the 2.17 location API -------------------------------------------------------------------


def check_add_body(body: Any) -> tuple[str, dict[str, str]]:
    """POST /v2/images/{id}/locations: its url and validation_data (400 when malformed)."""

    def refused(detail: str) -> BadRequest:
        return BadRequest(f"Provided object does not match schema 'location': {detail}")

    if not isinstance(body, dict):
        raise refused(f"{body!r} is not of type 'object'")
    url = body.get("url")
    if "url" not in body:
        raise refused("'url' is a required property")
    if not isinstance(url, str) or not url:
        raise refused(f"{url!r} is not of type 'string'")
    data = body.get("validation_data", {})
    if not isinstance(data, dict):
        raise refused(f"{data!r} is not of type 'object'")
    extra = sorted(set(data) - {"os_hash_algo", "os_hash_value"})
    if extra:
        raise refused(f"Additional properties are not allowed ({extra} unexpected)")
    for key in ("os_hash_algo", "os_hash_value"):
        if key in data and not isinstance(data[key], str):
            raise refused(f"{data[key]!r} is not of type 'string'")
    if ("os_hash_algo" in data) != ("os_hash_value" in data):
        missing = "os_hash_algo" if "os_hash_value" in data else "os_hash_value"
        raise refused(f"'{missing}' is a dependency of the other validation_data key")
    if data:
        algo, value = data["os_hash_algo"], data["os_hash_value"]
        if algo not in ADD_HASH_ALGOS:
            raise refused(f"'{algo}' is not one of {list(ADD_HASH_ALGOS)}")
        if len(value) > 128:
            raise refused(f"'{value}' is too long")
        digest = _hex_bytes(value)
        if digest is None:
            raise BadRequest(f"os_hash_value ({value}) is not a valid hexadecimal value")
        want = hashlib.new(algo).digest_size
        if len(digest) != want:
            raise BadRequest(
                f"os_hash_value: ({value}) is not the correct size for ({algo}) (should be "
                f"({want}) bytes)"
            )
    return url, data


async def start_add(
    service: ImageService,
    ctx: RequestContext,
    image: Image,
    url: str,
    validation: dict[str, str],
) -> None:
    """Check an add-location request against the image and the caller, then record the
    location in the background (a `location_import` task); the image is `importing`
    until it is done."""
    if image.status != "queued":
        raise Conflict(f"It's not allowed to add locations if image status is {image.status}.")
    service.policy.enforce("image:add_image_location", ctx, {"owner": image.owner or ""})
    http = readable(service, url)
    if not http and "service" not in ctx.roles:
        raise Forbidden("http store must be enabled to use location API by normal user.")
    if not http:  # the http store is the only one that takes locations from outside
        raise BadRequest("Invalid location")
    await check_filters(service, url)
    await service.begin(image, "queued", "importing")
    task = await imports.create_task(
        service,
        ctx,
        "location_import",
        {"image_id": image.id, "loc_url": url, "validation_data": validation},
        image.id,
    )
    work = _add_location(service, image.id, url, validation)
    service.track(
        asyncio.create_task(imports.run_as_task(service, task.id, image.id, work)), image.id
    )


async def _add_location(
    service: ImageService, image_id: str, url: str, validation: dict[str, str]
) -> list[str]:
    """The location_import task: the location recorded, the image made active, its data
    hashed as `[image] do_secure_hash` says. Returns no failed stores (run_as_task)."""
    store = service.http_store
    assert store is not None
    try:
        size = await store.size(url)
    except LocationUnreadable as exc:
        await service.set_status(image_id, ("importing",), "queued")
        raise RuntimeError(f"Invalid location {url}: {exc}") from None
    async with service.db.write() as session:
        row = await session.get(Image, image_id)
        if row is None or row.status != "importing":
            raise RuntimeError(f"Image {image_id} was deleted or changed meanwhile")
        held = (await session.run_sync(locations_in, [image_id]))[image_id]
        await write_locations(session, image_id, [*held, _http_location(service, url, {})])
        if not row.size:
            row.size = size
        row.updated_at = utcnow()
    algo = validation.get("os_hash_algo", HASH_ALGO)
    if not service.config.image.do_secure_hash:
        await _activated(service, image_id, **validation)
    elif validation:
        await service.set_status(image_id, ("importing",), "importing", os_hash_algo=algo)
        try:
            checksum, value = await _hash(store, url, algo)
        except BaseException:
            await service.set_status(image_id, ("importing",), "queued", os_hash_algo=None)
            raise
        if value != validation["os_hash_value"]:
            await service.set_status(
                image_id, ("importing",), "queued",
                os_hash_algo=None, os_hash_value=None, checksum=None,
            )  # fmt: skip
            raise RuntimeError(
                f"os_hash_value: ({validation['os_hash_value']}) not matched with actual "
                f"os_hash_value: ({value})"
            )
        await _activated(service, image_id, checksum=checksum, os_hash_value=value)
    else:  # active at once; the hashes follow (the data may be large)
        await _activated(service, image_id, os_hash_algo=algo)
        try:
            checksum, value = await _hash(store, url, algo)
        except (OSError, LocationUnreadable) as exc:  # Glance: a warning, the image stays
            LOG.warning("hashing the data of image %s at %s failed: %s", image_id, url, exc)
            return []
        async with service.db.write() as session:
            await session.execute(
                update(Image)
                .where(Image.id == image_id)
                .values(checksum=checksum, os_hash_value=value, updated_at=utcnow())
            )
    return []


async def _activated(service: ImageService, image_id: str, **values: str | None) -> None:
    if not await service.set_status(image_id, ("importing",), "active", **values):
        raise RuntimeError(f"Image {image_id} was deleted or changed meanwhile")


async def _hash(store: HttpStore, url: str, algo: str) -> tuple[str, str]:
    """The md5 checksum and the `algo` hash of the data at url."""
    md5 = hashlib.md5(usedforsecurity=False)
    digest = hashlib.new(algo)

    def update(chunk: bytes) -> None:
        md5.update(chunk)
        digest.update(chunk)

    async for chunk in store.read(url):
        await asyncio.to_thread(update, chunk)
    return md5.hexdigest(), digest.hexdigest()
