"""Symlinks (Swift's symlink middleware): an empty object made by a PUT with
`X-Symlink-Target: <container>/<object>` (and `X-Symlink-Target-Account`) that GET and
HEAD follow, at most SYMLOOP_MAX links deep, reading each target with the caller's own
rights. With `X-Symlink-Target-Etag` the link is static: the target must exist and
keep that ETag. `?symlink=get` reads (or copies) the link itself. The target lives in
the link's system metadata and, as Swift keeps it, in the ETag its listing row carries
(`<md5 of nothing>; symlink_target=...`), which JSON listings show as `symlink_path`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import quote, unquote

from starlette.requests import Request
from starlette.responses import Response

from cumulo.object_store.api.common import Caller, caller_for
from cumulo.object_store.api.large_objects import SLO_SIZE
from cumulo.object_store.api.object_common import (
    container_policy,
    open_object,
    put_bytes,
    user_metadata,
)
from cumulo.object_store.errors import SwiftError
from cumulo.object_store.policies import StoragePolicy
from cumulo.object_store.storage.diskfile import StoredObject

SYMLOOP_MAX = 2
EMPTY_ETAG = "d41d8cd98f00b204e9800998ecf8427e"
TARGET = "X-Object-Sysmeta-Symlink-Target"
TARGET_ACCOUNT = "X-Object-Sysmeta-Symlink-Target-Account"
TARGET_ETAG = "X-Object-Sysmeta-Symlink-Target-Etag"
TARGET_BYTES = "X-Object-Sysmeta-Symlink-Target-Bytes"
# What a client sees of the system metadata above (?symlink=get), and its listing key.
SHOWN = {
    TARGET: ("X-Symlink-Target", "symlink_target"),
    TARGET_ACCOUNT: ("X-Symlink-Target-Account", "symlink_target_account"),
    TARGET_ETAG: ("X-Symlink-Target-Etag", "symlink_target_etag"),
    TARGET_BYTES: ("X-Symlink-Target-Bytes", "symlink_target_bytes"),
}
BAD_TARGET = "X-Symlink-Target header must be of the form <container name>/<object name>"


def info() -> dict:
    return {"symloop_max": SYMLOOP_MAX, "static_links": True}


def is_link(metadata: dict) -> bool:
    return bool(metadata.get(TARGET))


def wants_link_itself(request: Request) -> bool:
    return request.query_params.get("symlink") == "get"


def link_headers(metadata: dict) -> dict[str, str]:
    """The X-Symlink-Target* headers a ?symlink=get answer shows."""
    return {SHOWN[k][0]: v for k, v in metadata.items() if k in SHOWN}


def listing_etag(metadata: dict) -> tuple[str, int] | None:
    """The ETag and size a link's container listing row carries (None: not a link)."""
    if not is_link(metadata):
        return None
    params = [f"{SHOWN[k][1]}={metadata[k]}" for k in SHOWN if k in metadata]
    return "; ".join([EMPTY_ETAG, *params]), 0


def listing_fields(etag: str, account: str) -> tuple[str, dict]:
    """A listing row's own ETag, and symlink_path (symlink_etag, symlink_bytes) when
    the row is a link's."""
    value, *params = etag.split("; ")
    found = dict(p.partition("=")[::2] for p in params)
    if "symlink_target" not in found:
        return etag, {}
    target_account = found.get("symlink_target_account", quote(account))
    fields: dict = {"symlink_path": f"/v1/{target_account}/{found['symlink_target']}"}
    if "symlink_target_etag" in found:
        fields["symlink_etag"] = found["symlink_target_etag"]
        fields["symlink_bytes"] = int(found["symlink_target_bytes"])
    return value, fields


def _target(request: Request, account: str, container: str, name: str) -> dict[str, str]:
    """The link's system metadata from the request's X-Symlink-Target* headers."""
    value = unquote(request.headers["x-symlink-target"])
    target_container, _, target_name = value.partition("/")
    if value.startswith("/") or not target_container or not target_name:
        raise plain(412, BAD_TARGET)
    meta = {TARGET: quote(value)}
    target_account = account
    if "x-symlink-target-account" in request.headers:
        target_account = unquote(request.headers["x-symlink-target-account"])
        if not target_account:
            raise plain(412, "Account name is required")
        if "/" in target_account:
            raise plain(412, "Account name cannot contain slashes")
        meta[TARGET_ACCOUNT] = quote(target_account)
    if (target_account, target_container, target_name) == (account, container, name):
        raise plain(400, "Symlink cannot target itself")
    etag = request.headers.get("x-symlink-target-etag", "").strip('"')
    if any(c in etag for c in ';"\\'):
        raise plain(400, "Bad X-Symlink-Target-Etag format")
    if etag:
        meta[TARGET_ETAG] = etag
    return meta


async def _has_body(request: Request) -> bool:
    length = request.headers.get("content-length")
    if length is not None:
        return length.strip() != "0"
    async for chunk in request.stream():
        if chunk:
            return True
    return False


async def put_link(
    request: Request,
    caller: Caller,
    policy: StoragePolicy,
    account: str,
    container: str,
    name: str,
    *,
    synced: bool = False,
) -> Response:
    """PUT with X-Symlink-Target: an empty object naming its target (a static link's
    target must exist with the given ETag: 409 otherwise). synced: container sync's PUT
    of a link, whose static target is taken as the source found it (Swift's
    symlink_override: the target may come later, or not be synced at all)."""
    if await _has_body(request):
        raise plain(400, "Symlink requests require a zero byte body")
    meta = _target(request, account, container, name)
    content_type = request.headers.get("content-type")
    target_bytes = request.headers.get("x-symlink-target-bytes", "")
    if TARGET_ETAG in meta and synced and target_bytes.isdecimal():
        meta[TARGET_BYTES] = target_bytes
    elif TARGET_ETAG in meta:
        target = await _static_target(request, caller, account, meta)
        meta[TARGET_BYTES] = target.metadata.get(SLO_SIZE) or target.metadata["Content-Length"]
        content_type = content_type or target.metadata.get("Content-Type")
    metadata = {
        "Content-Type": content_type or "application/symlink",
        **user_metadata(request),
        **meta,
    }
    where = (account, container, name)
    return await put_bytes(request, caller, policy, where, metadata, b"", listing_etag(metadata))


async def _static_target(request: Request, caller: Caller, account: str, meta: dict):
    """The object a static link names, checked as Swift's HEAD of it does."""
    target_account = unquote(meta.get(TARGET_ACCOUNT, account))
    location = f"/v1/{quote(target_account)}/{meta[TARGET]}"
    opener = target_opener(request, caller, account)
    first = await opener(target_account, *unquote(meta[TARGET]).split("/", 1), location)
    if first is None:
        raise plain(409, "X-Symlink-Target does not exist", **{"Content-Location": location})
    followed = await follow(
        first,
        target_account,
        opener,
        expected_etag=meta[TARGET_ETAG],
        location=location,
        follow_dynamic=False,
    )
    return followed.stored


OpenTarget = Callable[[str, str, str, str], Awaitable[StoredObject | None]]


def target_opener(request: Request, caller: Caller, caller_account: str) -> OpenTarget:
    """Open a link's target with the caller's own read rights on its container (a link
    never grants access); errors carry Content-Location, the target's path."""
    callers = {caller_account: caller}

    async def open_target(account: str, container: str, name: str, location: str):
        try:
            if account not in callers:
                callers[account] = await caller_for(request, account)
            reader = callers[account]
            if reader.container_scope not in (None, container):
                reader = Caller(None, False)
            policy = await container_policy(request, reader, account, container, "X-Container-Read")
        except SwiftError as exc:
            headers = {**exc.headers, "Content-Location": location}
            raise SwiftError(exc.status, exc.text, headers=headers) from None
        return await open_object(request, policy, account, container, name)

    return open_target


@dataclass
class Followed:
    account: str  # the final object's
    stored: StoredObject
    location: str | None  # its path when a link was followed (Content-Location)


async def follow(
    stored: StoredObject,
    account: str,
    open_target: OpenTarget,
    *,
    expected_etag: str | None = None,
    location: str | None = None,
    follow_dynamic: bool = True,
) -> Followed:
    """Follow links from `stored` to an object that is not one: 409 past SYMLOOP_MAX
    links or when a static link's ETag no longer matches, 404 when a target is gone.
    follow_dynamic=False: a first link without an ETag is the object itself."""
    hops = 0
    while is_link(stored.metadata):
        meta = stored.metadata
        if not (follow_dynamic or hops or meta.get(TARGET_ETAG)):
            break
        found = meta.get(TARGET_ETAG) or meta["ETag"]
        if expected_etag and expected_etag != found:
            raise _conflict("X-Symlink-Target-Etag headers do not match", location)
        if hops >= SYMLOOP_MAX:
            raise plain(409, f"Too many levels of symbolic links, maximum allowed is {SYMLOOP_MAX}")
        account = unquote(meta.get(TARGET_ACCOUNT, quote(account)))
        location = f"/v1/{quote(account)}/{meta[TARGET]}"
        container, _, name = unquote(meta[TARGET]).partition("/")
        expected_etag = meta.get(TARGET_ETAG)
        hops += 1
        target = await open_target(account, container, name, location)
        if target is None:
            raise SwiftError(404, headers={"Content-Location": location})
        stored = target
    etag = stored.metadata["ETag"]
    if expected_etag and etag != expected_etag:
        text = f"Object Etag {etag!r} does not match X-Symlink-Target-Etag header {expected_etag!r}"
        raise _conflict(text, location)
    return Followed(account, stored, location)


def _conflict(text: str, location: str | None) -> SwiftError:
    return plain(409, text, **({"Content-Location": location} if location else {}))


def plain(status: int, text: str, **headers: str) -> SwiftError:
    """An error with Swift's text/plain body (the symlink middleware's answers)."""
    return SwiftError(status, text, headers={"Content-Type": "text/plain", **headers})


def copied_link(stored: StoredObject, source_account: str, dest_account: str) -> dict:
    """A link's metadata for its copy (?symlink=get): the copy names the same target,
    from whichever account it lands in."""
    meta = {k: v for k, v in stored.metadata.items() if k in SHOWN}
    if TARGET_ACCOUNT not in meta and source_account != dest_account:
        meta[TARGET_ACCOUNT] = quote(source_account)
    return meta


def post_answer(metadata: dict, account: str) -> Response | None:
    """A POST to a link updates the link and answers 307 to the target (as Swift)."""
    if not is_link(metadata):
        return None
    target_account = metadata.get(TARGET_ACCOUNT, quote(account))
    headers = {
        "Location": f"/v1/{target_account}/{metadata[TARGET]}",
        "Content-Type": "text/html; charset=UTF-8",
    }
    if TARGET_ETAG in metadata:
        headers["X-Symlink-Target-Etag"] = metadata[TARGET_ETAG]
    body = (
        b"The requested POST was applied to a symlink. POST directly to the target to "
        b"apply requested metadata."
    )
    return Response(body, 307, headers=headers)
