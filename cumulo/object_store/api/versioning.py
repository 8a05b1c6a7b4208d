"""Object versioning, Swift's versioned_writes (legacy) flags on a container:
`X-Versions-Location: <container>` (stack: a PUT over an object first moves the old
version to <container>; a DELETE brings the newest old version back) or
`X-History-Location: <container>` (history: every PUT and DELETE first moves the
current version there; nothing comes back). Old versions are named
`<3 hex digits: length of the name><name>/<timestamp>`."""

from __future__ import annotations

from starlette.requests import Request

from cumulo.object_store.api import symlinks
from cumulo.object_store.api.common import Caller, store_of
from cumulo.object_store.api.large_objects import SLO_ETAG, SLO_SIZE
from cumulo.object_store.api.object_common import container_policy, open_object
from cumulo.object_store.errors import SwiftError
from cumulo.object_store.policies import StoragePolicy
from cumulo.object_store.storage import reading
from cumulo.object_store.storage.diskfile import StoredObject

STACK, HISTORY = "X-Versions-Location", "X-History-Location"
KEPT = {"name", "X-Timestamp", "Content-Length", "ETag"}


def info() -> dict:
    return {"allowed_flags": ["x-versions-location", "x-history-location"]}


def check_flags(request: Request) -> None:
    given = [h for h in ("x-versions-location", "x-history-location") if request.headers.get(h)]
    if len(given) > 1:
        raise SwiftError(
            400, "Only one of X-Versions-Location or X-History-Location may be specified"
        )


def version_prefix(name: str) -> str:
    return f"{len(name.encode()):03x}{name}/"


async def _mode(request: Request, account: str, container: str) -> tuple[str, str] | None:
    info = await store_of(request).proxy.container_info(account, container)
    meta = info.metadata or {}
    for flag in (STACK, HISTORY):
        if meta.get(flag):
            return flag, meta[flag]
    return None


async def copy_object(
    request: Request,
    stored: StoredObject,
    policy: StoragePolicy,
    account: str,
    container: str,
    name: str,
    extra: dict[str, str] | None = None,
) -> None:
    """Store a replica's bytes and metadata (an SLO's manifest as it is) under a new name
    (with `extra` metadata over them)."""
    metadata = {k: v for k, v in stored.metadata.items() if k not in KEPT} | (extra or {})
    slo = (metadata[SLO_ETAG], int(metadata[SLO_SIZE])) if SLO_ETAG in metadata else None
    listing = slo or symlinks.listing_etag(metadata)
    await store_of(request).proxy.object_put(
        policy,
        account,
        container,
        name,
        metadata,
        reading.chunks_of(stored),
        max_size=store_of(request).config.max_file_size,
        expected_etag=None,
        content_length=None,
        listing=listing,
    )


async def archive_current(
    request: Request, caller: Caller, policy: StoragePolicy, account: str, container: str, name: str
) -> None:
    """Before a PUT (both modes) or a DELETE (history): the current version moves to the
    versions container."""
    mode = await _mode(request, account, container)
    if mode is None or (request.method == "DELETE" and mode[0] == STACK):
        return
    stored = await open_object(request, policy, account, container, name)
    if stored is None:
        return
    versions = mode[1]
    versions_policy = await _versions_policy(request, caller, account, versions)
    archived = f"{version_prefix(name)}{stored.metadata['X-Timestamp']}"
    await copy_object(request, stored, versions_policy, account, versions, archived)


async def _versions_policy(request, caller, account: str, versions: str) -> StoragePolicy:
    try:
        return await container_policy(request, caller, account, versions, "X-Container-Write")
    except SwiftError as exc:
        if exc.status == 404:
            raise SwiftError(412, f"Versions container {versions} does not exist") from None
        raise


async def delete_restoring(
    request: Request, caller: Caller, policy: StoragePolicy, account: str, container: str, name: str
) -> bool | None:
    """A DELETE in stack mode: the newest old version replaces the object (True), or
    None when the container keeps no versions of it (a plain delete follows)."""
    mode = await _mode(request, account, container)
    if mode is None or mode[0] != STACK:
        return None
    store = store_of(request)
    versions = mode[1]
    versions_policy = await _versions_policy(request, caller, account, versions)
    found = await store.proxy.container_listing(
        account, versions, {"prefix": version_prefix(name), "limit": 1, "reverse": True}
    )
    rows = found[1] if found else []
    if not rows:
        return None
    newest = rows[0]["name"]
    stored = await open_object(request, versions_policy, account, versions, newest)
    if stored is None:
        return None
    await copy_object(request, stored, policy, account, container, name)
    await store.proxy.object_delete(versions_policy, account, versions, newest)
    return True
