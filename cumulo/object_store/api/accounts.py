"""Accounts: GET (container listing), HEAD, POST (metadata and the account ACL).
Object Storage API v1."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from cumulo.common.openapi import describes
from cumulo.object_store.acl import AccountAclInvalid, format_account_acl, parse_account_acl
from cumulo.object_store.api.bulk import bulk_delete, extract_archive
from cumulo.object_store.api.common import (
    ACCOUNT_ACL_SYSMETA,
    Caller,
    caller_for,
    deny,
    empty,
    metadata_updates,
    require_owner,
    store_of,
    without_owner_headers,
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


def account_headers(request: Request, caller: Caller, info: dict | None) -> dict[str, str]:
    """The account's usage and metadata; its ACL and temp URL keys to owners only."""
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
        if value != "" and not key.startswith("X-Account-Sysmeta-"):
            headers[key] = value
    acl = info["metadata"].get(ACCOUNT_ACL_SYSMETA, ("", ""))[0]
    if acl:
        headers["X-Account-Access-Control"] = acl
    return without_owner_headers(caller, headers)


def account_acl_update(request: Request) -> dict[str, str]:
    """The account ACL a POST sets (checked, kept in Swift's form) or removes
    (X-Remove-Account-Access-Control, or an empty value); tempauth's 400 otherwise."""
    value = request.headers.get("x-account-access-control")
    if value is None:
        removed = "x-remove-account-access-control" in request.headers
        return {ACCOUNT_ACL_SYSMETA: ""} if removed else {}
    try:
        acl = parse_account_acl(value)
    except AccountAclInvalid as exc:
        raise SwiftError(
            400,
            f"X-Account-Access-Control invalid: {exc}\n\nInput: {value}\n",
            headers={"Content-Type": "text/plain; charset=UTF-8"},
        ) from None
    return {ACCOUNT_ACL_SYSMETA: format_account_acl(acl)}


@describes(
    content_type=None,
    query=("format", "prefix", "delimiter", "marker", "end_marker", "limit", "reverse"),
    headers=(
        "X-Account-Meta-Temp-URL-Key",
        "X-Account-Meta-Quota-Bytes",
        "X-Remove-Account-Meta-Quota-Bytes",
        "X-Account-Meta-Color",
        "X-Account-Access-Control",
        "X-Remove-Account-Access-Control",
    ),
)
async def account(request: Request) -> Response:
    name = request.path_params["account"]
    caller = await caller_for(request, name)
    if request.method in ("POST", "DELETE") and "bulk-delete" in request.query_params:
        return await bulk_delete(request, caller, name)
    if request.method == "PUT" and "extract-archive" in request.query_params:
        return await extract_archive(request, caller, name, "")
    store = store_of(request)
    if request.method not in ("GET", "HEAD"):
        # Account ACL readers and writers only read the account itself (as Swift).
        require_owner(caller)
    elif not caller.reads_account:
        raise deny(caller)
    if request.method in ("PUT", "DELETE", "COPY"):
        # allow_account_management is off: accounts come and go with their projects.
        raise SwiftError(405)
    if request.method == "POST":
        check_metadata(request.headers, "account")
        check_account_quota_headers(request, caller)
        updates = metadata_updates(request, "account", account_quota_headers(request))
        updates |= account_acl_update(request)
        await store.proxy.account_post(name, updates)
        return empty(request, 204)
    if request.method == "HEAD":
        info = await store.proxy.account_info(name)
        headers = account_headers(request, caller, info)
        return empty(request, 204, {**headers, "Content-Length": "0"})
    query, children_only = listing_query(request, store.config.account_listing_limit)
    info, rows = await store.proxy.account_listing(name, query)
    fmt = listing_format(request)
    entries = [
        container_entry(r) for r in rows
        if not (children_only and "subdir" in r)
        and not r.get("name", "").startswith("\x00")  # object versioning's hidden ones
    ]  # fmt: skip
    headers = {**account_headers(request, caller, info), "Content-Type": CONTENT_TYPES[fmt]}
    if not entries and fmt == "plain":
        return Response(b"", status_code=204, headers=headers)
    return Response(render(fmt, "account", name, "container", entries), 200, headers=headers)
