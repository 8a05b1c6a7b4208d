"""Accounts: GET (container listing), HEAD, POST (metadata). Object Storage API v1."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from cumulo.common.openapi import describes
from cumulo.object_store.api.bulk import bulk_delete, extract_archive
from cumulo.object_store.api.common import (
    caller_for,
    empty,
    metadata_updates,
    require_owner,
    store_of,
)
from cumulo.object_store.api.listing import (
    CONTENT_TYPES,
    container_entry,
    listing_format,
    listing_query,
    render,
)
from cumulo.object_store.api.quotas import account_quota_headers, check_account_quota_headers
from cumulo.object_store.constraints import check_metadata
from cumulo.object_store.errors import SwiftError
from cumulo.object_store.storage import timestamps


def account_headers(request: Request, info: dict | None) -> dict[str, str]:
    store = store_of(request)
    info = info or {
        "containers": 0,
        "objects": 0,
        "bytes": 0,
        "put_timestamp": timestamps.now(),
        "created_at": timestamps.now(),
        "metadata": {},
        "policies": [],
    }
    headers = {
        "X-Account-Container-Count": str(info["containers"]),
        "X-Account-Object-Count": str(info["objects"]),
        "X-Account-Bytes-Used": str(info["bytes"]),
        "X-Timestamp": info["created_at"],
        "X-Put-Timestamp": info["put_timestamp"],
        "Accept-Ranges": "bytes",
    }
    for stat in info["policies"]:
        policy = store.policies.by_index.get(stat["policy"])
        if policy is None:
            continue
        name = f"X-Account-Storage-Policy-{policy.name}"
        headers[f"{name}-Container-Count"] = str(stat["containers"])
        headers[f"{name}-Object-Count"] = str(stat["objects"])
        headers[f"{name}-Bytes-Used"] = str(stat["bytes"])
    for key, (value, _ts) in info["metadata"].items():
        if value != "":
            headers[key] = value
    return {**headers}


@describes(
    content_type=None,
    query=("format", "prefix", "delimiter", "marker", "end_marker", "limit", "reverse"),
    headers=(
        "X-Account-Meta-Temp-URL-Key",
        "X-Account-Meta-Quota-Bytes",
        "X-Remove-Account-Meta-Quota-Bytes",
        "X-Account-Meta-Color",
    ),
)
async def account(request: Request) -> Response:
    name = request.path_params["account"]
    caller = await caller_for(request, name)
    if request.method in ("POST", "DELETE") and "bulk-delete" in request.query_params:
        return await bulk_delete(request, caller, name)
    if request.method == "PUT" and "extract-archive" in request.query_params:
        return await extract_archive(request, caller, name, "")
    require_owner(caller)
    store = store_of(request)
    if request.method in ("PUT", "DELETE", "COPY"):
        # allow_account_management is off: accounts come and go with their projects.
        raise SwiftError(405)
    if request.method == "POST":
        check_metadata(request.headers, "account")
        check_account_quota_headers(request, caller)
        updates = metadata_updates(request, "account", account_quota_headers(request))
        await store.proxy.account_post(name, updates)
        return empty(request, 204)
    if request.method == "HEAD":
        info = await store.proxy.account_info(name)
        return empty(request, 204, {**account_headers(request, info), "Content-Length": "0"})
    query, children_only = listing_query(request, store.config.account_listing_limit)
    info, rows = await store.proxy.account_listing(name, query)
    fmt = listing_format(request)
    entries = [
        container_entry(r) for r in rows
        if not (children_only and "subdir" in r)
        and not r.get("name", "").startswith("\x00")  # object versioning's hidden ones
    ]  # fmt: skip
    headers = {**account_headers(request, info), "Content-Type": CONTENT_TYPES[fmt]}
    if not entries and fmt == "plain":
        return Response(b"", status_code=204, headers=headers)
    return Response(render(fmt, "account", name, "container", entries), 200, headers=headers)
