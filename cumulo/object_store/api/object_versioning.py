"""Object versioning with version ids, as Swift's `object_versioning` middleware offers it
(`X-Versions-Enabled` on a container; `X-Object-Version-Id` on objects; `?version-id=`
on GET, HEAD and DELETE; `?versions` container listings with `version_id` and
`is_latest`; delete markers). Not with the legacy flags of versioning.py (400).

Every version has an id: the object's timestamp when versioning was enabled as it was
written, `null` when it was not. The current version is the object in its container
(its id in sysmeta); older versions and delete markers are objects of a hidden container
of the same account and policy, `\\x00versions\\x00<container>` (no client can name it:
names with NUL are refused), each `<name>\\x00<inverted id>` so an object's versions list
newest first; an object has at most one `null` version, kept there (once no longer
current) as `<name>\\x00<inverted timestamp>-null`. Swift keeps every version in the
hidden container and a symlink as the current object; here the current version's bytes
stay where they are and are copied off when the object is overwritten or deleted. What
clients see is the same.

Three rules are S3's, for the S3 front's requests only (s3/versions.py): a DELETE of the
latest version or delete marker by id makes the newest version left current again, a
DELETE while versioning is suspended leaves a `null` delete marker, and a POST may name a
version (S3's object ACL and tagging calls on `?versionId=`; Swift's API refuses it).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from cumulo.object_store.api.common import empty, store_of
from cumulo.object_store.api.listing import (
    CONTENT_TYPES,
    listing_format,
    listing_query,
    object_entry,
    render,
)
from cumulo.object_store.api.object_common import PUT_METADATA, VERSION_ID, open_object
from cumulo.object_store.api.versioning import HISTORY, STACK, copy_object
from cumulo.object_store.core import ObjectStore
from cumulo.object_store.errors import SwiftError
from cumulo.object_store.policies import StoragePolicy
from cumulo.object_store.storage import reading, timestamps
from cumulo.object_store.storage.diskfile import StoredObject

FLAG = "X-Versions-Enabled"  # container metadata: "True" or "False" once ever set
DELETE_MARKER = "application/x-deleted;swift_versions_deleted=1"
NULL = "null"
NULL_SUFFIX = "-null"  # the hidden name of a null version no longer current
# Set by the S3 front when a bucket leaves Swift's history mode (s3/versions.py): its
# objects written until then without a version id had their timestamp as S3 version id,
# and keep it once archived.
TIMESTAMP_IDS = "X-Container-Sysmeta-Versions-Timestamp-Ids-Until"
_MAX = 10**15 - 1  # inverted ids: the newest version sorts first


def info() -> dict:
    return {}


def hidden_container(container: str) -> str:
    return f"\x00versions\x00{container}"


def _inverted(version_id: str) -> str:
    seconds, _, fraction = version_id.partition(".")
    return f"{_MAX - (int(seconds) * 100000 + int(fraction.ljust(5, '0')[:5])):015d}"


def _uninverted(inverted: str) -> str:
    value = _MAX - int(inverted)
    return f"{value // 100000:010d}.{value % 100000:05d}"


def version_name(name: str, version_id: str) -> str:
    return f"{name}\x00{_inverted(version_id)}"


def null_version_name(name: str, timestamp: str) -> str:
    return f"{name}\x00{_inverted(timestamp)}{NULL_SUFFIX}"


def _hidden_id(inverted: str) -> str:
    """The version id a hidden object's name (after the NUL) stands for."""
    return NULL if inverted.endswith(NULL_SUFFIX) else _uninverted(inverted)


def _valid_id(version_id: str) -> bool:
    seconds, dot, fraction = version_id.partition(".")
    return bool(dot) and seconds.isdecimal() and fraction.isdecimal() and len(fraction) <= 5


def parse_flag(value: str) -> bool:
    return value.strip().lower() in ("true", "1", "yes", "on", "t", "y")


def id_of(stored: StoredObject) -> str:
    return stored.metadata.get(VERSION_ID, NULL)


async def state(request: Request, account: str, container: str) -> bool | None:
    """True enabled, False suspended, None never versioned this way."""
    info = await store_of(request).proxy.container_info(account, container)
    value = (info.metadata or {}).get(FLAG)
    return None if value is None else parse_flag(value)


# -- containers ---------------------------------------------------------------------


async def configure(
    request: Request, account: str, container: str, policy: StoragePolicy
) -> dict[str, str]:
    """A container PUT or POST: the flag to store (normalized) and, when versioning is
    enabled, the hidden container made; 400 beside the legacy flags."""
    raw = request.headers.get("x-versions-enabled")
    legacy = any(request.headers.get(h) for h in ("x-versions-location", "x-history-location"))
    info = await store_of(request).proxy.container_info(account, container)
    meta = info.metadata or {}
    if raw is None:
        if legacy and meta.get(FLAG) is not None:
            raise SwiftError(400, "Cannot set legacy versioning on a container with "
                                  "X-Versions-Enabled")  # fmt: skip
        return {}
    if legacy or meta.get(STACK) or meta.get(HISTORY):
        raise SwiftError(
            400, "Cannot enable object versioning on a container that has X-Versions-Location "
                 "or X-History-Location"
        )  # fmt: skip
    enabled = parse_flag(raw)
    if enabled:
        await store_of(request).proxy.container_put(account, hidden_container(container),
                                                    policy, {})  # fmt: skip
    return {FLAG: "True" if enabled else "False"}


async def before_container_delete(request: Request, account: str, container: str) -> str | None:
    """409 while old versions remain; the hidden container to delete after it (if any)."""
    if await state(request, account, container) is None:
        return None
    hidden = hidden_container(container)
    found = await store_of(request).proxy.container_listing(account, hidden, {"limit": 1})
    if found is not None and found[1]:
        raise SwiftError(409, "There was a conflict when trying to complete your request.")
    return hidden


async def listing(request: Request, account: str, container: str, headers: dict) -> Response:
    """GET ?versions: every version (current ones `is_latest`, delete markers too),
    by name, newest first; `marker` + `version_marker`, `prefix`, `limit`."""
    store = store_of(request)
    query, _ = listing_query(request, store.config.container_listing_limit)
    query.pop("delimiter", None)
    limit = query.get("limit", store.config.container_listing_limit)
    marker, version_marker = query.pop("marker", ""), request.query_params.get("version_marker")
    wide = {**query, "limit": store.config.container_listing_limit}
    current = await store.proxy.container_listing(account, container, wide)
    if current is None:
        raise SwiftError(404)
    hidden = await store.proxy.container_listing(account, hidden_container(container), wide)
    policy = (await store.proxy.container_info(account, container)).policy
    assert policy is not None
    # (name, order among the name's versions: the current one first, then newest first,
    # version id, listing entry)
    entries: list[tuple[str, str, str, dict[str, Any]]] = []
    names_current = set()
    for row in current[1]:
        if "subdir" in row:
            continue
        names_current.add(row["name"])
        entry = object_entry(row, account)
        stored = await open_object(request, policy, account, container, row["name"])
        version = id_of(stored) if stored is not None else NULL
        entries.append((row["name"], "", version, {**entry, "version_id": version,
                                                     "is_latest": True}))  # fmt: skip
    newest_seen: set[str] = set()
    for row in hidden[1] if hidden else []:
        name, _, inverted = row["name"].rpartition("\x00")
        version = _hidden_id(inverted)
        entry = object_entry({**row, "name": name}, account)
        latest = name not in names_current and name not in newest_seen
        newest_seen.add(name)
        entries.append((name, inverted, version, {**entry, "version_id": version,
                                                  "is_latest": latest}))  # fmt: skip
    entries.sort(key=lambda e: (e[0], e[1]))
    if marker:
        after = _order_after(entries, marker, version_marker)
        entries = [e for e in entries if e[0] > marker or (e[0] == marker and after is not None
                                                            and e[1] > after)]  # fmt: skip
    page = [e[3] for e in entries[:limit]]
    fmt = listing_format(request)
    headers = {**headers, "Content-Type": CONTENT_TYPES[fmt]}
    if not page and fmt == "plain":
        return Response(b"", status_code=204, headers=headers)
    return Response(render(fmt, "container", container, "object", page), 200, headers=headers)


def _order_after(
    entries: list[tuple[str, str, str, dict[str, Any]]], marker: str, version_marker: str | None
) -> str | None:
    """Where the marker's version stands among its name's versions (listing resumes after
    it); None: after the name altogether."""
    if version_marker is None:
        return None
    for name, order, version, _ in entries:
        if name == marker and version == version_marker:
            return order
    return _inverted(version_marker) if _valid_id(version_marker) else ""


# -- objects ------------------------------------------------------------------------


def refuse_version_id(request: Request) -> None:
    if "version-id" in request.query_params:
        raise SwiftError(400, f"{request.method} to a version of an object is not allowed")


async def _archive(
    request: Request, stored: StoredObject, policy: StoragePolicy, account: str, container: str,
    name: str,
) -> None:  # fmt: skip
    """The current version, copied off into the hidden container under its id (the null
    version, in place of any null version kept there)."""
    version = id_of(stored)
    stamp = stored.metadata["X-Timestamp"]
    if VERSION_ID not in stored.metadata:
        info = await store_of(request).proxy.container_info(account, container)
        if stamp <= (info.metadata or {}).get(TIMESTAMP_IDS, ""):
            version = stamp
    if version == NULL:
        await _drop_null(request, policy, account, container, name)
        hidden = null_version_name(name, stamp)
    else:
        hidden = version_name(name, version)
    await copy_object(
        request, stored, policy, account, hidden_container(container), hidden,
        extra={VERSION_ID: version, "X-Timestamp": stamp},
    )  # fmt: skip


async def _hidden_null(store: ObjectStore, account: str, container: str, name: str) -> str | None:
    """The hidden name of the object's null version (or null delete marker), if kept."""
    hidden = hidden_container(container)
    found = await store.proxy.container_listing(
        account, hidden, {"prefix": f"{name}\x00", "limit": store.config.container_listing_limit}
    )
    for row in found[1] if found else []:
        if row["name"].endswith(NULL_SUFFIX) and row["name"].rpartition("\x00")[0] == name:
            return row["name"]
    return None


async def _drop_null(
    request: Request, policy: StoragePolicy, account: str, container: str, name: str
) -> bool:
    """The null version kept in the hidden container deleted (a new one replaces it)."""
    store = store_of(request)
    hidden = await _hidden_null(store, account, container, name)
    if hidden is None:
        return False
    return await store.proxy.object_delete(policy, account, hidden_container(container), hidden)


async def before_put(
    request: Request, policy: StoragePolicy, account: str, container: str, name: str
) -> None:
    """A PUT to a container that versions: the current version archived (unless it is an
    unversioned one and versioning is suspended), the new one's id given to the PUT."""
    refuse_version_id(request)
    enabled = await state(request, account, container)
    if enabled is None:
        return
    current = await open_object(request, policy, account, container, name)
    if current is not None and (enabled or id_of(current) != NULL):
        await _archive(request, current, policy, account, container, name)
    if not enabled:  # the new null version replaces the one kept (or a null delete marker)
        await _drop_null(request, policy, account, container, name)
    stamp = timestamps.now()
    request.scope[PUT_METADATA] = (
        {VERSION_ID: stamp, "X-Timestamp": stamp} if enabled else {VERSION_ID: NULL}
    )


async def delete(
    request: Request, policy: StoragePolicy, account: str, container: str, name: str
) -> Response | None:
    """DELETE in a container that versions (None: it does not, delete as usual)."""
    enabled = await state(request, account, container)
    wanted = request.query_params.get("version-id")
    if enabled is None:
        if wanted is not None and wanted != NULL:
            raise SwiftError(404)
        return None
    store = store_of(request)
    current = await open_object(request, policy, account, container, name)
    if wanted is not None:
        if current is not None and id_of(current) == wanted:
            await store.proxy.object_delete(policy, account, container, name)
        elif wanted == NULL:
            if not await _drop_null(request, policy, account, container, name):
                raise SwiftError(404)
        elif not _valid_id(wanted):
            raise SwiftError(404)
        elif not await store.proxy.object_delete(policy, account, hidden_container(container),
                                                 version_name(name, wanted)):  # fmt: skip
            raise SwiftError(404)
        if request.scope.get("cumulo.s3"):
            await _restore_newest(request, policy, account, container, name)
        return empty(request, 204, {"X-Object-Version-Id": wanted})
    if current is not None and (enabled or id_of(current) != NULL):
        await _archive(request, current, policy, account, container, name)
    headers: dict[str, str] = {}
    null_marker = not enabled and bool(request.scope.get("cumulo.s3"))
    if null_marker:  # S3: the null version goes, a null delete marker takes its place
        await _drop_null(request, policy, account, container, name)
        hidden = hidden_container(container)
        if (await store.proxy.container_info(account, hidden)).status != 200:
            await store.proxy.container_put(account, hidden, policy, {})  # never enabled
    if enabled or null_marker:
        stamp = timestamps.now()
        marker = stamp if enabled else NULL
        hidden = version_name(name, stamp) if enabled else null_version_name(name, stamp)
        await store.proxy.object_put(
            policy, account, hidden_container(container), hidden,
            {"Content-Type": DELETE_MARKER, VERSION_ID: marker, "X-Timestamp": stamp},
            _nothing(), max_size=0, expected_etag=None, content_length=0,
        )  # fmt: skip
        headers["X-Object-Version-Id"] = marker
    if current is None or not await store.proxy.object_delete(policy, account, container, name):
        raise SwiftError(404, headers=headers)
    return empty(request, 204, headers)


async def _restore_newest(
    request: Request, policy: StoragePolicy, account: str, container: str, name: str
) -> None:
    """S3's rule, for the S3 front only: once an object's latest version (or delete
    marker) is deleted, the newest version left becomes current (Swift leaves it gone)."""
    store = store_of(request)
    if await open_object(request, policy, account, container, name) is not None:
        return
    hidden = hidden_container(container)
    found = await store.proxy.container_listing(account, hidden,
                                                {"prefix": f"{name}\x00", "limit": 1})  # fmt: skip
    if not found or not found[1]:
        return
    archived = found[1][0]["name"]
    stored = await open_object(request, policy, account, hidden, archived)
    if stored is None or stored.metadata.get("Content-Type") == DELETE_MARKER:
        return
    # Deleted from the hidden container first, read from a replica held open: the object
    # written after is newer than both tombstones (the object's own, and the one an
    # archiving under the same id would otherwise fall behind). It keeps its id.
    async with reading.held(stored) as kept:
        await store.proxy.object_delete(policy, account, hidden, archived)
        try:
            await copy_object(request, kept, policy, account, container, name,
                              extra={VERSION_ID: id_of(stored)})  # fmt: skip
        except Exception:
            await copy_object(request, kept, policy, account, hidden, archived)  # put back
            raise


async def _nothing():
    return
    yield b""


async def open_version(
    request: Request, policy: StoragePolicy, account: str, container: str, name: str
) -> StoredObject:
    """GET or HEAD ?version-id=: that version (404 for a delete marker or none)."""
    return (await _find_version(request, policy, account, container, name))[2]


async def version_location(
    request: Request, policy: StoragePolicy, account: str, container: str, name: str
) -> tuple[str, str]:
    """The container and name that hold the version ?version-id= names: the object
    itself (its current version) or its copy in the hidden container (404 for a delete
    marker or none). The S3 front POSTs there: S3's ACL and tagging calls change one
    version's metadata, which Swift's own API refuses."""
    found = await _find_version(request, policy, account, container, name)
    return found[0], found[1]


async def _find_version(
    request: Request, policy: StoragePolicy, account: str, container: str, name: str
) -> tuple[str, str, StoredObject]:
    wanted = request.query_params["version-id"]
    current = await open_object(request, policy, account, container, name)
    if current is not None and id_of(current) == wanted:
        return container, name, current
    valid = _valid_id(wanted) or wanted == NULL
    if not valid or await state(request, account, container) is None:
        raise SwiftError(404)
    hidden = (
        await _hidden_null(store_of(request), account, container, name)
        if wanted == NULL
        else version_name(name, wanted)
    )
    if hidden is None:
        raise SwiftError(404)
    stored = await open_object(request, policy, account, hidden_container(container), hidden)
    if stored is None or stored.metadata.get("Content-Type") == DELETE_MARKER:
        raise SwiftError(404, headers={"X-Object-Version-Id": wanted})
    return hidden_container(container), hidden, stored


def response_headers(metadata: dict[str, Any]) -> dict[str, str]:
    return {"X-Object-Version-Id": metadata[VERSION_ID]} if VERSION_ID in metadata else {}
