"""Containers: GET (object listing), HEAD, PUT, POST, DELETE. Object Storage API v1."""

from __future__ import annotations

import contextlib

from starlette.requests import Request
from starlette.responses import Response

from cumulo.common.openapi import describes
from cumulo.object_store.api import object_versioning, objects, staticweb
from cumulo.object_store.api.bulk import extract_archive
from cumulo.object_store.api.common import (
    acl_allows,
    caller_for,
    deny,
    empty,
    metadata_updates,
    require_account_writer,
    store_of,
    without_owner_headers,
)
from cumulo.object_store.api.formpost import form_post, is_form_post
from cumulo.object_store.api.listing import (
    CONTENT_TYPES,
    listing_format,
    listing_query,
    object_entry,
    render,
)
from cumulo.object_store.api.quotas import check_container_quota_headers
from cumulo.object_store.api.versioning import check_flags
from cumulo.object_store.constraints import (
    MAX_CONTAINER_NAME_LENGTH,
    check_metadata,
    check_name,
)
from cumulo.object_store.container_sync import validate_sync_to
from cumulo.object_store.errors import SwiftError
from cumulo.object_store.proxy import ContainerInfo
from cumulo.object_store.storage import timestamps

# Container headers kept as metadata besides X-Container-Meta-*.
SYSTEM_HEADERS = (
    "x-container-read",
    "x-container-write",
    "x-versions-location",
    "x-history-location",
    "x-container-sync-to",
    "x-container-sync-key",
)


def container_headers(request: Request, info: ContainerInfo) -> dict[str, str]:
    assert info.policy is not None
    headers = {
        "X-Container-Object-Count": str(info.object_count),
        "X-Container-Bytes-Used": str(info.bytes_used),
        "X-Timestamp": info.created_at,
        "X-Put-Timestamp": info.put_timestamp,
        "X-Storage-Policy": info.policy.name,
        "Last-Modified": timestamps.http_date(info.put_timestamp),
        "Accept-Ranges": "bytes",
        **(info.metadata or {}),
    }
    if not request.scope.get("cumulo.s3"):  # the S3 front's bucket settings are its own
        headers = {k: v for k, v in headers.items() if not k.startswith("X-Container-Sysmeta-")}
    return {**headers}


@describes(
    content_type=None,
    query=(
        "format",
        "prefix",
        "delimiter",
        "marker",
        "end_marker",
        "limit",
        "reverse",
        "bulk-delete",
    ),
    headers=(
        "X-Storage-Policy",
        "X-Container-Read",
        "X-Container-Write",
        "X-Versions-Location",
        "X-History-Location",
        "X-Versions-Enabled",
        "X-Container-Meta-Quota-Bytes",
        "X-Container-Meta-Quota-Count",
        "X-Container-Meta-Web-Index",
        "X-Container-Sync-To",
    ),
)
async def container(request: Request) -> Response:
    account = request.path_params["account"]
    name = request.path_params["container"]
    check_name("Container", name, MAX_CONTAINER_NAME_LENGTH)
    if is_form_post(request):
        return await form_post(request, account, name, "")
    caller = await caller_for(request, account)
    if staticweb.applies(request, caller):
        read = objects.object_reader(caller, account, name)
        page = await staticweb.serve_container(request, caller, account, name, read)
        if page is not None:
            return page
    store = store_of(request)
    method = request.method
    if method == "PUT" and "extract-archive" in request.query_params:
        return await extract_archive(request, caller, account, name)
    if method == "PUT":
        return await _put(request, caller, account, name)
    if method in ("POST", "DELETE"):
        require_account_writer(caller)
        if method == "DELETE":
            hidden = await object_versioning.before_container_delete(request, account, name)
            await store.proxy.container_delete(account, name)
            if hidden is not None:  # the versions' container goes with it
                with contextlib.suppress(SwiftError):
                    await store.proxy.container_delete(account, hidden)
            return empty(request, 204)
        check_metadata(request.headers, "container")
        check_container_quota_headers(request)
        check_flags(request)
        await check_sync_to(request, account, name)
        info = await store.proxy.container_info(account, name)
        if info.status != 200 or info.policy is None:
            raise SwiftError(404)
        updates = without_owner_headers(
            caller, metadata_updates(request, "container", SYSTEM_HEADERS)
        )
        updates |= await object_versioning.configure(request, account, name, info.policy)
        await store.proxy.container_post(account, name, updates)
        return empty(request, 204)
    info = await store.proxy.container_info(account, name, fresh=True)
    if not caller.owner:
        # A missing container has no ACL: only account readers learn it is missing.
        acl = (info.metadata or {}).get("X-Container-Read")
        if not acl_allows(caller, acl, request, listing=True):
            raise deny(caller)
    if info.status != 200:
        raise SwiftError(404)
    # Only owners see who else may read and write, and the keys (as Swift).
    headers = without_owner_headers(caller, container_headers(request, info))
    if method == "HEAD":
        return empty(request, 204, {**headers, "Content-Length": "0"})
    if "versions" in request.query_params:
        return await object_versioning.listing(request, account, name, headers)
    query, children_only = listing_query(request, store.config.container_listing_limit)
    found = await store.proxy.container_listing(account, name, query)
    if found is None:
        raise SwiftError(404)
    _, rows = found
    fmt = listing_format(request)
    entries = [object_entry(r, account) for r in rows if not (children_only and "subdir" in r)]
    headers["Content-Type"] = CONTENT_TYPES[fmt]
    if not entries and fmt == "plain":
        return Response(b"", status_code=204, headers=headers)
    return Response(render(fmt, "container", name, "object", entries), 200, headers=headers)


async def check_sync_to(request: Request, account: str, name: str) -> None:
    """A 400 for an X-Container-Sync-To naming no known realm and cluster (or a full
    URL not allowed), or set on a versioned container, before anything is stored
    (Swift's container_sync middleware)."""
    value = request.headers.get("x-container-sync-to")
    if value is None:
        return
    store = store_of(request)
    if value and (request.headers.get("x-versions-enabled") is not None or (
        (await store.proxy.container_info(account, name)).metadata or {}
    ).get(object_versioning.FLAG) is not None):  # fmt: skip
        raise SwiftError(400, "Cannot configure container sync on a container with object "
                              "versioning configured.")  # fmt: skip
    validate_sync_to(store.cloud_config, value)


async def _put(request: Request, caller, account: str, name: str) -> Response:
    require_account_writer(caller)
    store = store_of(request)
    check_metadata(request.headers, "container")
    check_container_quota_headers(request)
    check_flags(request)
    await check_sync_to(request, account, name)
    existing = await store.proxy.container_info(account, name)
    requested = request.headers.get("x-storage-policy")
    if requested is not None:
        policy = store.policies.by_name(requested)
        if policy is None:
            raise SwiftError(400, f'Invalid X-Storage-Policy "{requested}"')
        if existing.status == 200 and existing.policy is not policy:
            raise SwiftError(409)
        if policy.deprecated and existing.status != 200:
            raise SwiftError(400, f'Storage Policy "{policy.name}" is deprecated')
    elif existing.status == 200 and existing.policy is not None:
        policy = existing.policy
    else:
        policy = store.policies.default
    updates = without_owner_headers(caller, metadata_updates(request, "container", SYSTEM_HEADERS))
    updates |= await object_versioning.configure(request, account, name, policy)
    status = await store.proxy.container_put(account, name, policy, updates)
    return empty(request, status)
