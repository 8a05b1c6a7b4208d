"""Objects: GET, HEAD, PUT, POST, DELETE, COPY. Object Storage API v1."""

from __future__ import annotations

import hmac
from email.utils import parsedate_to_datetime
from urllib.parse import quote, unquote

from starlette.requests import Request
from starlette.responses import Response

from cumulo.object_store import container_sync
from cumulo.object_store.api import (
    formpost,
    object_versioning,
    quotas,
    staticweb,
    symlinks,
    tempurl,
    versioning,
)
from cumulo.object_store.api import large_object_requests as large
from cumulo.object_store.api.bulk import extract_archive
from cumulo.object_store.api.common import (
    Caller,
    caller_for,
    empty,
    store_of,
)
from cumulo.object_store.api.object_common import (
    PUT_METADATA,
    S3_SYSMETA,
    container_policy,
    content_type,
    created,
    open_object,
    put_metadata,
    user_metadata,
)
from cumulo.object_store.api.responses import ObjectBody, Unsatisfiable, parse_range
from cumulo.object_store.constraints import (
    MAX_CONTAINER_NAME_LENGTH,
    MAX_OBJECT_NAME_LENGTH,
    check_metadata,
    check_name,
    title,
)
from cumulo.object_store.errors import SwiftError
from cumulo.object_store.policies import StoragePolicy
from cumulo.object_store.storage import reading, timestamps
from cumulo.object_store.storage.diskfile import POST_HEADERS, StoredObject

# Stored metadata that is not shown as a response header.
HIDDEN = {"name", "X-Timestamp", "Content-Length"}
SYSMETA = "X-Object-Sysmeta-"


async def obj(request: Request) -> Response:
    account = request.path_params["account"]
    container = request.path_params["container"]
    name = request.path_params["object"]
    check_name("Container", container, MAX_CONTAINER_NAME_LENGTH)
    check_name("Object", name, MAX_OBJECT_NAME_LENGTH)
    if formpost.is_form_post(request):
        return await formpost.form_post(request, account, container, name)
    # A signed URL decides alone, token or not (the tempurl middleware comes first).
    if tempurl.is_tempurl(request):
        return await _with_tempurl(request, account, container, name)
    # Another cluster's sync daemon, signed for this container (no token needed).
    if "x-container-sync-auth" in request.headers:
        return await _with_sync_auth(request, account, container, name)
    if await _old_style_sync(request, account, container):
        signed = Caller(None, True, container_scope=container)
        return await _object_request(request, signed, account, container, name)
    caller = await caller_for(request, account)
    if staticweb.applies(request, caller):
        read = object_reader(caller, account, container)
        return await staticweb.serve_object(request, caller, account, container, name, read)
    return await _object_request(request, caller, account, container, name)


def object_reader(caller: Caller, account: str, container: str) -> staticweb.ReadObject:
    """A GET (HEAD) of the container's objects by this caller, for static web pages."""

    async def read(request: Request, name: str) -> Response:
        return await _get(request, caller, account, container, name)

    return read


async def _with_tempurl(request: Request, account: str, container: str, name: str):
    """A signed URL stands for the account's owner, for this object and method only."""
    if request.method not in tempurl.METHODS:
        raise tempurl.TempUrlInvalid(request.method == "HEAD")
    if request.method not in ("GET", "HEAD") and "x-symlink-target" in request.headers:
        raise SwiftError(400, "The header 'X-Symlink-Target' is not allowed in this tempurl")
    keys = await tempurl.keys_for(store_of(request), account, container)
    tempurl.verify(request, request.url.path, keys)
    signed = Caller(None, True, container_scope=container)
    response = await _object_request(request, signed, account, container, name)
    if request.method in ("GET", "HEAD") and isinstance(response, ObjectBody):
        response.set_header(
            "Content-Disposition",
            tempurl.disposition(request, name, response.header("content-disposition")),
        )
        expires = tempurl.parse_expires(request.query_params["temp_url_expires"]) or 0
        response.set_header("Expires", timestamps.http_date(expires))
        response.drop_headers(
            lambda k: k.startswith("x-object-meta-") and not k.startswith("x-object-meta-public-")
        )
    return response


async def _with_sync_auth(request: Request, account: str, container: str, name: str):
    """A container sync request (Swift's container_sync middleware): signed with the
    realm's key and this container's X-Container-Sync-Key, it acts as the owner here,
    keeping the X-Timestamp the source object has."""
    if request.method not in ("GET", "HEAD", "PUT", "DELETE"):
        raise SwiftError(405)
    info = await store_of(request).proxy.container_info(account, container)
    key = (info.metadata or {}).get(container_sync.SYNC_KEY) if info.status == 200 else None
    raw_timestamp = request.headers.get("x-timestamp", "0")
    container_sync.verify_auth(
        store_of(request).config,
        request.headers["x-container-sync-auth"],
        request.method,
        quote(request.scope.get("root_path", "") + request.scope["path"]),
        raw_timestamp,
        key,
    )
    if request.method in ("PUT", "DELETE"):
        _keep_sync_timestamp(request, raw_timestamp)
    signed = Caller(None, True, container_scope=container)
    return await _object_request(request, signed, account, container, name)


async def _old_style_sync(request: Request, account: str, container: str) -> bool:
    """An old-style (full URL) sync PUT or DELETE: X-Container-Sync-Key is the
    container's own, with an X-Timestamp (Swift's keystoneauth allows it unconfirmed)."""
    given = request.headers.get("x-container-sync-key")
    if request.method not in ("PUT", "DELETE") or not given or "x-timestamp" not in request.headers:
        return False
    info = await store_of(request).proxy.container_info(account, container)
    key = (info.metadata or {}).get(container_sync.SYNC_KEY) if info.status == 200 else None
    if not key or not hmac.compare_digest(key.encode(), given.encode()):
        return False  # then as any other request: the token decides
    _keep_sync_timestamp(request, request.headers["x-timestamp"])
    return True


def _keep_sync_timestamp(request: Request, raw: str) -> None:
    try:
        request.scope[SYNC_TIMESTAMP] = timestamps.normalize(raw)
    except ValueError:
        raise SwiftError(
            400, f"X-Timestamp should be a UNIX timestamp float value; was {raw!r}"
        ) from None
    # Manifests and links the proxy writes itself keep the source's time too.
    request.scope[PUT_METADATA] = {
        **put_metadata(request),
        "X-Timestamp": request.scope[SYNC_TIMESTAMP],
    }


# The X-Timestamp a container sync request writes with (the source's).
SYNC_TIMESTAMP = "cumulo.container_sync_timestamp"
# Swift's config_true_value.
TRUE_VALUES = {"true", "1", "yes", "on", "t", "y"}


async def _object_request(
    request: Request, caller: Caller, account: str, container: str, name: str
) -> Response:
    method = request.method
    if method in ("GET", "HEAD"):
        return await _get(request, caller, account, container, name)
    policy = await _writable_container(request, caller, account, container)
    if method == "PUT" and "extract-archive" in request.query_params:
        return await extract_archive(request, caller, account, f"{container}/{name}")
    if method == "PUT":
        await object_versioning.before_put(request, policy, account, container, name)
        await versioning.archive_current(request, caller, policy, account, container, name)
        synced = SYNC_TIMESTAMP in request.scope
        if "x-symlink-target" in request.headers:
            return await symlinks.put_link(
                request, caller, policy, account, container, name, synced=synced
            )
        if request.query_params.get("multipart-manifest") == "put":
            return await large.put_manifest(request, caller, policy, account, container, name)
        if synced and "x-static-large-object" in request.headers:
            # A manifest container sync sends as it is stored (Swift's slo_override).
            if request.headers["x-static-large-object"].lower() in TRUE_VALUES:
                return await large.put_synced_manifest(
                    request, caller, policy, account, container, name
                )
            return await _put(request, caller, policy, account, container, name)
        if "x-static-large-object" in request.headers:
            raise SwiftError(
                400,
                "X-Static-Large-Object is a reserved header. To create a "
                "static large object add query param multipart-manifest=put.",
            )
        if "x-copy-from" in request.headers:
            source = _split_path(request.headers["x-copy-from"], "X-Copy-From")
            src_account = request.headers.get("x-copy-from-account", account)
            return await _copy(request, (src_account, *source), (account, container, name))
        return await _put(request, caller, policy, account, container, name)
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
        if "version-id" in request.query_params and request.scope.get("cumulo.s3"):
            container, name = await object_versioning.version_location(
                request, policy, account, container, name
            )
        else:
            object_versioning.refuse_version_id(request)
        return await _post(request, policy, account, container, name)
    if method == "DELETE":
        if request.query_params.get("multipart-manifest") == "delete":
            return await large.delete_manifest(request, caller, policy, account, container, name)
        versioned = await object_versioning.delete(request, policy, account, container, name)
        if versioned is not None:
            return versioned
        if await versioning.delete_restoring(request, caller, policy, account, container, name):
            return empty(request, 204)
        await versioning.archive_current(request, caller, policy, account, container, name)
        at = request.scope.get(SYNC_TIMESTAMP)
        if not await store_of(request).proxy.object_delete(
            policy, account, container, name, timestamp=at
        ):
            raise SwiftError(404)
        return empty(request, 204)
    raise SwiftError(405)


def _split_path(value: str, header: str) -> tuple[str, str]:
    path = unquote(value).lstrip("/")
    container, _, name = path.partition("/")
    if not container or not name:
        raise SwiftError(412, f"{header} header must be of the form <container name>/<object name>")
    return container, name


async def _writable_container(
    request: Request, caller: Caller, account: str, container: str
) -> StoragePolicy:
    return await container_policy(request, caller, account, container, "X-Container-Write")


def object_headers(request: Request, stored: StoredObject) -> dict[str, str]:
    meta = stored.metadata
    # User metadata may be empty (kept, as Swift); other headers only when set.
    headers = {
        k: v
        for k, v in meta.items()
        if k not in HIDDEN
        and not k.startswith(SYSMETA)
        and (v != "" or k.startswith("X-Object-Meta-"))
    }
    headers.update(object_versioning.response_headers(meta))
    headers.update(
        {
            "ETag": meta["ETag"],
            "Last-Modified": timestamps.http_date(meta["X-Timestamp"]),
            "X-Timestamp": meta["X-Timestamp"],
            "Accept-Ranges": "bytes",
        }
    )
    if request.scope.get("cumulo.s3"):  # the S3 front reads its own sysmeta back
        headers.update({k: v for k, v in meta.items() if k.lower().startswith(S3_SYSMETA)})
    return {**headers}


def _etag_matches(header: str, etag: str) -> bool:
    tags = [t.strip().strip('"') for t in header.split(",")]
    return "*" in tags or etag in tags


def _date(value: str) -> float | None:
    try:
        return parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError):
        return None


CONDITIONS = ("if-match", "if-unmodified-since", "if-none-match", "if-modified-since")


def check_conditions(request: Request, etag: str, headers: dict[str, str]) -> None:
    """RFC 7232 in its order: If-Match, If-Unmodified-Since (412), If-None-Match,
    If-Modified-Since (304 for GET/HEAD)."""
    etag = etag.strip('"')
    h = request.headers
    if not any(name in h for name in CONDITIONS):
        return
    last_modified = _date(headers["Last-Modified"]) or 0
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
    policy = await container_policy(request, caller, account, container, "X-Container-Read")
    if "version-id" in request.query_params:
        stored = await object_versioning.open_version(request, policy, account, container, name)
    else:
        stored = await open_object(request, policy, account, container, name)
    if stored is None:
        if "if-match" in request.headers:
            raise SwiftError(412)
        raise SwiftError(404)
    if symlinks.wants_link_itself(request):
        headers = {**object_headers(request, stored), **symlinks.link_headers(stored.metadata)}
    else:
        followed = await symlinks.follow(
            stored, account, symlinks.target_opener(request, caller, account)
        )
        if followed.account != account:
            caller = await caller_for(request, followed.account)
        account, stored = followed.account, followed.stored
        headers = object_headers(request, stored)
        if followed.location:
            headers["Content-Location"] = followed.location
    manifest_get = request.query_params.get("multipart-manifest") == "get"
    segments = [(reading.source_of(stored), 0, int(stored.metadata["Content-Length"]))]
    etag = stored.metadata["ETag"]
    if stored.metadata.get("X-Static-Large-Object") and manifest_get:
        return await large.manifest_response(request, stored, headers)
    if stored.metadata.get("X-Static-Large-Object") or (
        "X-Object-Manifest" in stored.metadata and not manifest_get
    ):
        assembled = await large.assemble(request, caller, account, stored)
        segments = [(s.source, s.start, s.end) for s in assembled.segments]
        etag = f'"{assembled.etag}"'
        headers["ETag"] = etag
    size = sum(end - start for _, start, end in segments)
    check_conditions(request, etag, headers)
    try:
        ranges = parse_range(request.headers.get("range"), size)
    except Unsatisfiable:
        raise SwiftError(416, headers={"Content-Range": f"bytes */{size}"}) from None
    if_range = request.headers.get("if-range")
    validators = (etag.strip('"'), headers["Last-Modified"])
    if ranges and if_range and if_range.strip('"') not in validators:
        ranges = None
    return ObjectBody(
        segments,
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


async def _put(
    request: Request,
    caller: Caller,
    policy: StoragePolicy,
    account: str,
    container: str,
    name: str,
) -> Response:
    store = store_of(request)
    max_size = store.config.max_file_size
    length = _content_length(request, max_size)
    check_metadata(request.headers, "object")
    await quotas.check_upload(request, caller, account, container, length or 0)
    metadata = {"Content-Type": content_type(request, name), **user_metadata(request)}
    if SYNC_TIMESTAMP in request.scope:  # a synced object keeps its source's time
        metadata["X-Timestamp"] = request.scope[SYNC_TIMESTAMP]
    await _check_if_none_match(request, policy, account, container, name)
    stored = await store.proxy.object_put(
        policy,
        account,
        container,
        name,
        {**metadata, **put_metadata(request)},
        request.stream(),
        max_size=max_size,
        expected_etag=request.headers.get("etag"),
        content_length=length,
    )
    return created(request, stored)


async def _check_if_none_match(request, policy, account, container, name) -> None:
    value = request.headers.get("if-none-match")
    if value is None:
        return
    if value.strip() != "*":
        raise SwiftError(400, "If-None-Match only supports *")
    if await open_object(request, policy, account, container, name) is not None:
        raise SwiftError(412)


async def _copy(request: Request, source: tuple[str, str, str], dest: tuple[str, str, str]):
    """COPY and PUT with X-Copy-From: the source's bytes and metadata (with the
    request's metadata over them, or only the request's with X-Fresh-Metadata)."""
    store = store_of(request)
    src_account, src_container, src_name = source
    src_caller = await caller_for(request, src_account)
    src_policy = await container_policy(
        request, src_caller, src_account, src_container, "X-Container-Read"
    )
    stored = await open_object(request, src_policy, src_account, src_container, src_name)
    if stored is None:
        raise SwiftError(404)
    link: dict[str, str] = {}
    if symlinks.wants_link_itself(request):
        link = symlinks.copied_link(stored, src_account, dest[0])
    else:
        opener = symlinks.target_opener(request, src_caller, src_account)
        stored = (await symlinks.follow(stored, src_account, opener)).stored
    length = request.headers.get("content-length")
    if request.method == "PUT" and length not in (None, "0"):
        raise SwiftError(400, "Copy requests require a zero byte body")
    check_metadata(request.headers, "object")
    dest_account, dest_container, dest_name = dest
    check_name("Object", dest_name, MAX_OBJECT_NAME_LENGTH)
    dest_caller = await caller_for(request, dest_account)
    dest_policy = await container_policy(
        request, dest_caller, dest_account, dest_container, "X-Container-Write"
    )
    size = int(stored.metadata["Content-Length"])
    await quotas.check_upload(request, dest_caller, dest_account, dest_container, size)
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
    metadata["Content-Type"] = request.headers.get(
        "content-type", stored.metadata.get("Content-Type", "application/octet-stream")
    )
    metadata.update(link)
    result = await store.proxy.object_put(
        dest_policy,
        dest_account,
        dest_container,
        dest_name,
        {**metadata, **put_metadata(request)},
        reading.chunks_of(stored),
        max_size=store.config.max_file_size,
        expected_etag=None,
        content_length=None,
        listing=symlinks.listing_etag(metadata),
    )
    # The answer shows the copy's metadata too (Swift's copy middleware).
    extra = {k: v for k, v in metadata.items() if k.startswith("X-Object-Meta-")}
    extra |= {
        "X-Copied-From": f"{src_container}/{src_name}",
        "X-Copied-From-Last-Modified": timestamps.http_date(stored.metadata["X-Timestamp"]),
    }
    if src_account != dest_account:
        extra["X-Copied-From-Account"] = src_account
    return created(request, result, extra)


async def _post(
    request: Request, policy: StoragePolicy, account: str, container: str, name: str
) -> Response:
    store = store_of(request)
    if "x-symlink-target" in request.headers:
        raise symlinks.plain(400, "A PUT request is required to set a symlink target")
    check_metadata(request.headers, "object")
    stored = await open_object(request, policy, account, container, name)
    if stored is None:
        raise SwiftError(404)
    metadata = user_metadata(request)
    metadata["Content-Type"] = request.headers.get(
        "content-type", stored.metadata.get("Content-Type", "application/octet-stream")
    )
    for kept in ("X-Static-Large-Object", "X-Object-Manifest"):
        if kept in stored.metadata and title(kept.lower()) not in metadata:
            metadata[kept] = stored.metadata[kept]
    # System metadata (SLO, S3) outlives a POST, as in Swift; only the S3 front changes it.
    for key, value in stored.metadata.items():
        if key.startswith(SYSMETA) and key not in metadata:
            metadata[key] = value
    await store.proxy.object_post(policy, account, container, name, metadata)
    redirect = symlinks.post_answer(stored.metadata, account)
    if redirect is not None:
        return redirect
    return Response(
        b"<html><h1>Accepted</h1><p>The request is accepted for processing.</p></html>",
        status_code=202,
        headers={"Content-Type": "text/html; charset=UTF-8"},
    )
