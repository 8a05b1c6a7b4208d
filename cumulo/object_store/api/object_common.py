"""What object handlers and large objects share: the container a caller may use,
the live object, the metadata an object keeps from its request, and the 201 answer."""

from __future__ import annotations

import mimetypes
import time
from urllib.parse import unquote

from starlette.requests import Request
from starlette.responses import Response

from cumulo.object_store.api import quotas
from cumulo.object_store.api.common import Caller, acl_allows, deny, empty, store_of
from cumulo.object_store.api.large_objects import SLO_ETAG
from cumulo.object_store.constraints import delete_at, title
from cumulo.object_store.errors import SwiftError
from cumulo.object_store.policies import StoragePolicy
from cumulo.object_store.storage import timestamps
from cumulo.object_store.storage.diskfile import POST_HEADERS, StoredObject


async def container_policy(
    request: Request, caller: Caller, account: str, container: str, acl_header: str
) -> StoragePolicy:
    info = await store_of(request).proxy.container_info(account, container)
    if not caller.owner:
        # A missing container has no ACL: only account ACL grantees learn it is missing.
        acl = (info.metadata or {}).get(acl_header)
        write = acl_header == "X-Container-Write"
        if not acl_allows(caller, acl, request, write=write):
            raise deny(caller)
    if info.status != 200 or info.policy is None:
        raise SwiftError(404)
    return info.policy


def _expired(stored: StoredObject) -> bool:
    at = stored.metadata.get("X-Delete-At")
    return bool(at) and int(at) <= time.time()


async def open_object(request: Request, policy: StoragePolicy, account, container, name):
    stored = await store_of(request).proxy.object_open(policy, account, container, name)
    if stored is None or _expired(stored):
        return None
    return stored


# Request scope: what the object a PUT makes keeps besides its request's metadata (the
# version id object versioning gives it).
PUT_METADATA = "cumulo.put_metadata"
VERSION_ID = "X-Object-Sysmeta-Version-Id"


def put_metadata(request: Request) -> dict[str, str]:
    return request.scope.get(PUT_METADATA, {})


# What the S3 front keeps beside an object (its multipart ETag, storage class).
S3_SYSMETA = "x-object-sysmeta-s3api-"


def user_metadata(request: Request) -> dict[str, str]:
    """X-Object-Meta-* and the other headers an object keeps (Content-Disposition, ...)."""
    manifest = request.headers.get("x-object-manifest")
    if manifest is not None and "/" not in unquote(manifest).lstrip("/"):
        raise SwiftError(400, "X-Object-Manifest must be in the format container/prefix")
    meta = {}
    for key, value in request.headers.items():
        lower = key.lower()
        if lower in ("content-type", "x-delete-at", "x-static-large-object"):
            continue
        if lower.startswith("x-object-meta-") or lower in POST_HEADERS:
            meta[title(lower)] = value
        elif lower.startswith(S3_SYSMETA) and request.scope.get("cumulo.s3"):
            meta[title(lower)] = value  # set by the S3 front only, never by a client
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


async def put_bytes(
    request: Request,
    caller: Caller,
    policy: StoragePolicy,
    where: tuple[str, str, str],
    metadata: dict,
    data: bytes,
    listing: tuple[str, int] | None,
) -> Response:
    """Store an object whose body the proxy made (a manifest, a link) and answer 201;
    listing: the ETag and size its container listing row shows instead."""
    account, container, name = where
    await quotas.check_upload(request, caller, account, container, len(data))
    store = store_of(request)

    async def body():
        yield data

    stored = await store.proxy.object_put(
        policy,
        account,
        container,
        name,
        {**metadata, **put_metadata(request)},
        body(),
        max_size=store.config.max_file_size,
        expected_etag=None,
        content_length=len(data),
        listing=listing,
    )
    return created(request, stored)


def created(request: Request, stored: dict, extra: dict | None = None) -> Response:
    if request.scope.get("cumulo.s3"):  # the S3 front names versions by their timestamp
        extra = {**(extra or {}), "X-Timestamp": stored["X-Timestamp"]}
    return empty(
        request,
        201,
        {
            "ETag": f'"{stored[SLO_ETAG]}"' if SLO_ETAG in stored else stored["ETag"],
            "Last-Modified": timestamps.http_date(stored["X-Timestamp"]),
            **({"X-Object-Version-Id": stored[VERSION_ID]} if VERSION_ID in stored else {}),
            **(extra or {}),
        },
    )
