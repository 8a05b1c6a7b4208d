"""Objects: GET, HEAD, PUT, POST, DELETE, COPY. Object Storage API v1."""

from __future__ import annotations

import mimetypes
import time
from collections.abc import AsyncIterator
from email.utils import parsedate_to_datetime
from urllib.parse import unquote

from starlette.requests import Request
from starlette.responses import Response

from cumulo.object_store.api.common import (
    Caller,
    acl_allows,
    caller_for,
    deny,
    empty,
    store_of,
    trans_headers,
)
from cumulo.object_store.api.responses import FileBody, Unsatisfiable, parse_range
from cumulo.object_store.constraints import (
    MAX_CONTAINER_NAME_LENGTH,
    MAX_OBJECT_NAME_LENGTH,
    check_metadata,
    check_name,
    delete_at,
    title,
)
from cumulo.object_store.errors import SwiftError
from cumulo.object_store.policies import StoragePolicy
from cumulo.object_store.storage import timestamps
from cumulo.object_store.storage.diskfile import POST_HEADERS, StoredObject

# Stored metadata that is not shown as a response header.
HIDDEN = {"name", "X-Timestamp", "Content-Length"}


async def obj(request: Request) -> Response:
    account = request.path_params["account"]
    container = request.path_params["container"]
    name = request.path_params["object"]
    caller = await caller_for(request, account)
    check_name("Container", container, MAX_CONTAINER_NAME_LENGTH)
    check_name("Object", name, MAX_OBJECT_NAME_LENGTH)
    method = request.method
    if method in ("GET", "HEAD"):
        return await _get(request, caller, account, container, name)
    policy = await _writable_container(request, caller, account, container)
    if method == "PUT":
        if "x-copy-from" in request.headers:
            source = _split_path(request.headers["x-copy-from"], "X-Copy-From")
            src_account = request.headers.get("x-copy-from-account", account)
            return await _copy(request, (src_account, *source), (account, container, name))
        return await _put(request, policy, account, container, name)
    if method == "COPY":
        if "destination" not in request.headers:
            raise SwiftError(412, "You must provide a Destination header")
        dest = _split_path(request.headers["destination"], "Destination")
        dest_account = request.headers.get("destination-account", account)
        if dest_account != account:
            await _writable_container(
                request, await caller_for(request, dest_account), dest_account, dest[0]
            )
        return await _copy(request, (account, container, name), (dest_account, *dest))
    if method == "POST":
        return await _post(request, policy, account, container, name)
    if method == "DELETE":
        if not await store_of(request).proxy.object_delete(policy, account, container, name):
            raise SwiftError(404)
        return empty(request, 204)
    raise SwiftError(405)


def _split_path(value: str, header: str) -> tuple[str, str]:
    path = unquote(value).lstrip("/")
    container, _, name = path.partition("/")
    if not container or not name:
        raise SwiftError(412, f"{header} header must be of the form <container name>/<object name>")
    return container, name


async def _container_policy(
    request: Request, caller: Caller, account: str, container: str, acl_header: str
) -> StoragePolicy:
    info = await store_of(request).proxy.container_info(account, container)
    if not caller.owner:
        acl = (info.metadata or {}).get(acl_header)
        write = acl_header == "X-Container-Write"
        if info.status != 200 or not acl_allows(caller, acl, request, write=write):
            raise deny(caller)
    if info.status != 200 or info.policy is None:
        raise SwiftError(404)
    return info.policy


async def _writable_container(
    request: Request, caller: Caller, account: str, container: str
) -> StoragePolicy:
    return await _container_policy(request, caller, account, container, "X-Container-Write")


def object_headers(request: Request, stored: StoredObject) -> dict[str, str]:
    meta = stored.metadata
    headers = {k: v for k, v in meta.items() if k not in HIDDEN and v != ""}
    headers.update(
        {
            "ETag": meta["ETag"],
            "Last-Modified": timestamps.http_date(meta["X-Timestamp"]),
            "X-Timestamp": meta["X-Timestamp"],
            "Accept-Ranges": "bytes",
        }
    )
    return {**headers, **trans_headers(request)}


def _expired(stored: StoredObject) -> bool:
    at = stored.metadata.get("X-Delete-At")
    return bool(at) and int(at) <= time.time()


async def _open(request: Request, policy: StoragePolicy, account, container, name):
    stored = await store_of(request).proxy.object_open(policy, account, container, name)
    if stored is None or _expired(stored):
        return None
    return stored


def _etag_matches(header: str, etag: str) -> bool:
    tags = [t.strip().strip('"') for t in header.split(",")]
    return "*" in tags or etag in tags


def _date(value: str) -> float | None:
    try:
        return parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError):
        return None


def check_conditions(request: Request, stored: StoredObject, headers: dict[str, str]) -> None:
    """RFC 7232 in its order: If-Match, If-Unmodified-Since (412), If-None-Match,
    If-Modified-Since (304 for GET/HEAD)."""
    etag = stored.metadata["ETag"]
    last_modified = _date(headers["Last-Modified"]) or 0
    h = request.headers
    keep = {k: v for k, v in headers.items() if k in ("ETag", "Last-Modified", "X-Timestamp")}
    if "if-match" in h and not _etag_matches(h["if-match"], etag):
        raise SwiftError(412, headers=keep)
    if "if-match" not in h and "if-unmodified-since" in h:
        since = _date(h["if-unmodified-since"])
        if since is not None and last_modified > since:
            raise SwiftError(412, headers=keep)
    if "if-none-match" in h:
        if _etag_matches(h["if-none-match"], etag):
            raise SwiftError(304, "", headers=keep)
    elif "if-modified-since" in h:
        since = _date(h["if-modified-since"])
        if since is not None and last_modified <= since:
            raise SwiftError(304, "", headers=keep)


async def _get(request: Request, caller: Caller, account: str, container: str, name: str):
    policy = await _container_policy(request, caller, account, container, "X-Container-Read")
    stored = await _open(request, policy, account, container, name)
    if stored is None:
        if "if-match" in request.headers:
            raise SwiftError(412)
        raise SwiftError(404)
    headers = object_headers(request, stored)
    check_conditions(request, stored, headers)
    size = int(stored.metadata["Content-Length"])
    try:
        ranges = parse_range(request.headers.get("range"), size)
    except Unsatisfiable:
        raise SwiftError(416, headers={"Content-Range": f"bytes */{size}"}) from None
    if_range = request.headers.get("if-range")
    validators = (stored.metadata["ETag"], headers["Last-Modified"])
    if ranges and if_range and if_range.strip('"') not in validators:
        ranges = None
    return FileBody(
        stored.path,
        206 if ranges else 200,
        headers,
        ranges,
        size,
        stored.metadata.get("Content-Type", "application/octet-stream"),
        head=request.method == "HEAD",
    )


def _content_length(request: Request, max_size: int) -> int | None:
    raw = request.headers.get("content-length")
    chunked = "chunked" in request.headers.get("transfer-encoding", "").lower()
    if raw is None:
        if not chunked:
            raise SwiftError(411, "Missing Content-Length header.")
        return None
    try:
        length = int(raw)
    except ValueError:
        raise SwiftError(400, "Invalid Content-Length") from None
    if length < 0:
        raise SwiftError(400, "Invalid Content-Length")
    if length > max_size:
        raise SwiftError(413, "Your request is too large.")
    return length


def user_metadata(request: Request) -> dict[str, str]:
    """X-Object-Meta-* and the other headers an object keeps (Content-Disposition, ...)."""
    meta = {}
    for key, value in request.headers.items():
        lower = key.lower()
        if lower in ("content-type", "x-delete-at", "x-static-large-object"):
            continue
        if lower.startswith("x-object-meta-") or lower in POST_HEADERS:
            meta[title(lower)] = value
    at = delete_at(request.headers)
    if at is not None:
        meta["X-Delete-At"] = at
    return meta


def content_type(request: Request, name: str) -> str:
    given = request.headers.get("content-type")
    detect = request.headers.get("x-detect-content-type", "").lower() in ("true", "1", "yes")
    if given and not detect:
        return given
    return mimetypes.guess_type(name)[0] or "application/octet-stream"


async def _put(
    request: Request, policy: StoragePolicy, account: str, container: str, name: str
) -> Response:
    store = store_of(request)
    max_size = store.config.max_file_size
    length = _content_length(request, max_size)
    check_metadata(request.headers, "object")
    metadata = {"Content-Type": content_type(request, name), **user_metadata(request)}
    await _check_if_none_match(request, policy, account, container, name)
    stored = await store.proxy.object_put(
        policy,
        account,
        container,
        name,
        metadata,
        request.stream(),
        max_size=max_size,
        expected_etag=request.headers.get("etag"),
        content_length=length,
    )
    return _created(request, stored)


async def _check_if_none_match(request, policy, account, container, name) -> None:
    value = request.headers.get("if-none-match")
    if value is None:
        return
    if value.strip() != "*":
        raise SwiftError(400, "If-None-Match only supports *")
    if await _open(request, policy, account, container, name) is not None:
        raise SwiftError(412)


def _created(request: Request, stored: dict, extra: dict | None = None) -> Response:
    return empty(
        request,
        201,
        {
            "ETag": stored["ETag"],
            "Last-Modified": timestamps.http_date(stored["X-Timestamp"]),
            **(extra or {}),
        },
    )


async def _copy(request: Request, source: tuple[str, str, str], dest: tuple[str, str, str]):
    """COPY and PUT with X-Copy-From: the source's bytes and metadata (with the
    request's metadata over them, or only the request's with X-Fresh-Metadata)."""
    store = store_of(request)
    src_account, src_container, src_name = source
    src_caller = await caller_for(request, src_account)
    src_policy = await _container_policy(
        request, src_caller, src_account, src_container, "X-Container-Read"
    )
    stored = await _open(request, src_policy, src_account, src_container, src_name)
    if stored is None:
        raise SwiftError(404)
    length = request.headers.get("content-length")
    if request.method == "PUT" and length not in (None, "0"):
        raise SwiftError(400, "Copy requests require a zero byte body")
    check_metadata(request.headers, "object")
    dest_account, dest_container, dest_name = dest
    check_name("Object", dest_name, MAX_OBJECT_NAME_LENGTH)
    dest_policy = await _container_policy(
        request,
        await caller_for(request, dest_account),
        dest_account,
        dest_container,
        "X-Container-Write",
    )
    fresh = request.headers.get("x-fresh-metadata", "").lower() in ("true", "1", "yes")
    metadata = (
        {}
        if fresh
        else {
            k: v
            for k, v in stored.metadata.items()
            if k.lower().startswith("x-object-meta-") or k.lower() in POST_HEADERS
        }
    )
    metadata.pop("X-Delete-At", None)
    metadata.update(user_metadata(request))
    metadata["Content-Type"] = (
        request.headers.get("content-type")
        if request.method == "COPY" and "content-type" in request.headers
        else stored.metadata.get("Content-Type", "application/octet-stream")
    )
    stored_path = stored.path

    async def body() -> AsyncIterator[bytes]:
        with stored_path.open("rb") as f:
            while chunk := f.read(1 << 20):
                yield chunk

    result = await store.proxy.object_put(
        dest_policy,
        dest_account,
        dest_container,
        dest_name,
        metadata,
        body(),
        max_size=store.config.max_file_size,
        expected_etag=None,
        content_length=None,
    )
    extra = {
        "X-Copied-From": f"{src_container}/{src_name}",
        "X-Copied-From-Last-Modified": timestamps.http_date(stored.metadata["X-Timestamp"]),
    }
    if src_account != dest_account:
        extra["X-Copied-From-Account"] = src_account
    return _created(request, result, extra)


async def _post(
    request: Request, policy: StoragePolicy, account: str, container: str, name: str
) -> Response:
    store = store_of(request)
    check_metadata(request.headers, "object")
    stored = await _open(request, policy, account, container, name)
    if stored is None:
        raise SwiftError(404)
    metadata = user_metadata(request)
    metadata["Content-Type"] = request.headers.get(
        "content-type", stored.metadata.get("Content-Type", "application/octet-stream")
    )
    for kept in ("X-Static-Large-Object", "X-Object-Manifest"):
        if kept in stored.metadata and title(kept.lower()) not in metadata:
            metadata[kept] = stored.metadata[kept]
    await store.proxy.object_post(policy, account, container, name, metadata)
    return Response(
        b"<html><h1>Accepted</h1><p>The request is accepted for processing.</p></html>",
        status_code=202,
        headers={"Content-Type": "text/html; charset=UTF-8", **trans_headers(request)},
    )
