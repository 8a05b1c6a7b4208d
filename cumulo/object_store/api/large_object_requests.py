"""The HTTP side of large objects: assembling a manifest's segments for a GET, and
?multipart-manifest=put|get|delete (the rules are in large_objects)."""

from __future__ import annotations

import hashlib
import json

from starlette.requests import Request
from starlette.responses import Response

from cumulo.object_store.api.bulk import bulk_result
from cumulo.object_store.api.common import Caller, caller_for, store_of
from cumulo.object_store.api.large_objects import (
    MAX_MANIFEST_SIZE,
    SLO_ETAG,
    SLO_SIZE,
    Assembled,
    SegmentReader,
    build_manifest,
    manifest_totals,
    raw_manifest,
    stored_entries,
    synced_entries,
)
from cumulo.object_store.api.object_common import (
    container_policy,
    content_type,
    open_object,
    put_bytes,
    user_metadata,
)
from cumulo.object_store.errors import SwiftError
from cumulo.object_store.policies import StoragePolicy
from cumulo.object_store.storage import reading
from cumulo.object_store.storage.diskfile import StoredObject


def _segment_opener(request: Request, caller: Caller, caller_account: str):
    """Open a segment with the caller's read rights on its container."""
    callers = {caller_account: caller}

    async def open_segment(account: str, container: str, name: str) -> StoredObject | None:
        if account not in callers:
            callers[account] = await caller_for(request, account)
        policy = await container_policy(
            request, callers[account], account, container, "X-Container-Read"
        )
        return await open_object(request, policy, account, container, name)

    return open_segment


async def assemble(
    request: Request, caller: Caller, account: str, stored: StoredObject
) -> Assembled:
    reader = SegmentReader(account, _segment_opener(request, caller, account))
    if stored.metadata.get("X-Static-Large-Object"):
        return await reader.slo(stored)
    store = store_of(request)

    async def list_prefix(acct: str, container: str, prefix: str, limit: int):
        await container_policy(request, caller, acct, container, "X-Container-Read")
        found = await store.proxy.container_listing(
            acct, container, {"prefix": prefix, "limit": limit}
        )
        return [(row["name"], row["etag"]) for row in (found[1] if found else [])]

    return await reader.dlo(stored.metadata["X-Object-Manifest"], list_prefix)


async def manifest_response(request: Request, stored: StoredObject, headers: dict) -> Response:
    entries = json.loads(await reading.read_all(stored))
    raw = request.query_params.get("format") == "raw"
    body = json.dumps(raw_manifest(entries) if raw else stored_entries(entries)).encode()
    headers = {
        **headers,
        "Content-Type": "application/json; charset=utf-8",
        "X-Static-Large-Object": "True",
    }
    headers.pop("Content-Length", None)
    status = 200
    if request.method == "HEAD":
        return Response(b"", status, headers={**headers, "Content-Length": str(len(body))})
    return Response(body, status, headers=headers)


async def put_manifest(
    request: Request,
    caller: Caller,
    policy: StoragePolicy,
    account: str,
    container: str,
    name: str,
) -> Response:
    body = await request.body()
    opener = _segment_opener(request, caller, account)
    manifest, etag, size = await build_manifest(request, body, account, opener)
    expected = request.headers.get("etag")
    if expected is not None and expected.strip('"') != etag:
        raise SwiftError(422)
    return await _store_manifest(request, caller, policy, (account, container, name), manifest)


async def _store_manifest(
    request: Request,
    caller: Caller,
    policy: StoragePolicy,
    where: tuple[str, str, str],
    entries: list[dict],
) -> Response:
    """The manifest object: its entries as JSON, with the SLO's ETag and size."""
    etag, size = manifest_totals(entries)
    metadata = {
        "Content-Type": content_type(request, where[2]),
        **user_metadata(request),
        "X-Static-Large-Object": "True",
        SLO_ETAG: etag,
        SLO_SIZE: str(size),
    }
    data = json.dumps(entries).encode()
    return await put_bytes(request, caller, policy, where, metadata, data, (etag, size))


async def put_synced_manifest(
    request: Request,
    caller: Caller,
    policy: StoragePolicy,
    account: str,
    container: str,
    name: str,
) -> Response:
    """A container sync PUT with X-Static-Large-Object (Swift's slo_override): the body
    is the source's stored manifest, kept as it is; its segments, synced with their own
    container, may not be here yet (a GET answers 409 until they are)."""
    body = await request.body()
    if len(body) > MAX_MANIFEST_SIZE:
        raise SwiftError(413, f"Manifest File > {MAX_MANIFEST_SIZE} bytes")
    expected = request.headers.get("etag")
    if expected and expected.strip('"') != hashlib.md5(body, usedforsecurity=False).hexdigest():
        raise SwiftError(422)
    try:
        entries = synced_entries(body)
    except ValueError as exc:
        raise SwiftError(400, str(exc)) from None
    return await _store_manifest(request, caller, policy, (account, container, name), entries)


async def delete_manifest(
    request: Request,
    caller: Caller,
    policy: StoragePolicy,
    account: str,
    container: str,
    name: str,
) -> Response:
    """Delete an SLO's segments (those of nested manifests too), then the manifest;
    the bulk-delete answer (text, or JSON when asked)."""
    store = store_of(request)
    stored = await open_object(request, policy, account, container, name)
    if stored is None or not stored.metadata.get("X-Static-Large-Object"):
        if stored is None or not await store.proxy.object_delete(policy, account, container, name):
            raise SwiftError(404)
        return Response(b"", 204, headers={})
    deleted = not_found = 0
    errors: list[list[str]] = []
    todo = [(account, container, name, stored)]
    targets: list[tuple[str, str, str]] = []
    while todo:
        acct, cont, obj, manifest = todo.pop()
        targets.append((acct, cont, obj))
        for entry in json.loads(await reading.read_all(manifest)):
            seg_container, _, seg_name = entry["name"].lstrip("/").partition("/")
            if entry.get("sub_slo"):
                sub_policy = await container_policy(
                    request, caller, acct, seg_container, "X-Container-Write"
                )
                sub = await open_object(request, sub_policy, acct, seg_container, seg_name)
                if sub is not None:
                    todo.append((acct, seg_container, seg_name, sub))
                    continue
            targets.append((acct, seg_container, seg_name))
    for acct, cont, obj in reversed(targets):
        try:
            seg_policy = await container_policy(request, caller, acct, cont, "X-Container-Write")
        except SwiftError as exc:
            if exc.status == 404:
                not_found += 1
            else:
                errors.append([f"/{cont}/{obj}", f"{exc.status} {exc.title}"])
            continue
        if await store.proxy.object_delete(seg_policy, acct, cont, obj):
            deleted += 1
        else:
            not_found += 1
    return bulk_result(request, deleted, not_found, errors)
