"""S3 bucket versioning on Swift's object versioning with version ids
(api/object_versioning.py): PutBucketVersioning sets `X-Versions-Enabled`, an S3 version
id is Swift's `X-Object-Version-Id` (`null` for what was written while suspended), a
DELETE writes Swift's delete marker, ListObjectVersions reads the `?versions` listing.

Where S3's rules differ from Swift's they are kept here: a GET of a delete marker by id
is 405 MethodNotAllowed (Swift: 404), a key whose latest version is a delete marker
answers 404 with `x-amz-delete-marker`, deleting the latest version makes the one
before it current, and a DELETE while versioning is suspended replaces the `null` version
by a `null` delete marker (Swift does these two for requests from the S3 front).

Buckets versioned through S3 before (Swift's history mode) are history_versions.py's
until their owner puts a versioning configuration again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

from cumulo.object_store.api.object_versioning import (
    DELETE_MARKER,
    FLAG,
    TIMESTAMP_IDS,
    parse_flag,
)
from cumulo.object_store.api.versioning import HISTORY
from cumulo.object_store.s3 import configs, history_versions
from cumulo.object_store.s3.acl import owner_element
from cumulo.object_store.s3.errors import S3Error
from cumulo.object_store.s3.gateway import SEGMENTS, Call, SwiftAnswer
from cumulo.object_store.s3.request import int_param
from cumulo.object_store.s3.xmldoc import (
    document,
    element,
    iso8601,
    key_encoder,
    parse_body,
    sub,
)
from cumulo.object_store.storage import timestamps

ENABLED, SUSPENDED, HISTORY_MODE = "Enabled", "Suspended", "History"
MAX_KEYS = 1000


# -- the bucket's configuration ----------------------------------------------------------


async def status(call: Call, *, fresh: bool = True, bucket: str | None = None) -> str | None:
    """The bucket's versioning: Enabled or Suspended (Swift's version ids), History
    (versioned through S3 before, history_versions.py), or None (never versioned)."""
    bucket = bucket or call.req.bucket
    info = await call.store.proxy.container_info(call.account or "", bucket, fresh=fresh)
    meta = info.metadata or {}
    if meta.get(FLAG) is not None:
        return ENABLED if parse_flag(meta[FLAG]) else SUSPENDED
    legacy_location = bucket + history_versions.VERSIONS
    if meta.get(configs.SYSMETA + "Versioning") or meta.get(HISTORY) == legacy_location:
        return HISTORY_MODE
    return None


async def _post_bucket(call: Call, headers: dict[str, str]) -> None:
    answer = await call.swift("POST", call.swift_path(call.req.bucket), headers=headers)
    if answer.status == 400:  # e.g. the container has versioning of Swift's legacy kinds
        raise S3Error("InvalidRequest", answer.body.decode("utf-8", "replace")[:300] or None)
    if answer.status >= 300:
        raise S3Error("InternalError")


async def put_versioning(call: Call) -> None:
    await configs.owner_check(call)
    root = parse_body(await call.read_body(64 * 1024))
    wanted = root.findtext("Status") if root.tag == "VersioningConfiguration" else None
    if wanted not in (ENABLED, SUSPENDED):
        raise S3Error("MalformedXML")
    if root.findtext("MfaDelete") == "Enabled":
        raise S3Error("NotImplemented", "MFA delete is not implemented.")
    if await status(call) == HISTORY_MODE:
        # Swift refuses version ids beside a history location: the bucket leaves history
        # mode, and its old versions stay in <bucket>+versions for Swift clients.
        await _post_bucket(call, {"x-remove-history-location": "x"})
        await configs.store_setting(call, "Versioning", "")
        # Its objects keep the timestamps S3 gave them as version ids.
        await call.store.proxy.container_post(
            call.account or "", call.req.bucket, {TIMESTAMP_IDS: timestamps.now()}
        )
    await _post_bucket(call, {"x-versions-enabled": "true" if wanted == ENABLED else "false"})
    await call.respond(200)


async def get_versioning(call: Call) -> None:
    await configs.owner_check(call)
    root = element("VersioningConfiguration", ns=True)
    current = await status(call)
    if current == HISTORY_MODE:
        current = await configs.setting(call, "Versioning") or ENABLED
    if current is not None:  # a bucket never versioned has no Status
        sub(root, "Status", current)
    await call.xml(document(root))


def check_version_id(version: str) -> None:
    """Version ids are Swift's timestamps (or `null`); anything else is refused as S3 does."""
    if version != "null":
        try:
            float(version)
        except ValueError:
            raise S3Error("InvalidArgument", "Invalid version id specified",
                          ArgumentName="versionId", ArgumentValue=version) from None  # fmt: skip


# -- the version a request names -----------------------------------------------------------


@dataclass
class ObjectVersion:
    """The object a request names, or the version its `?versionId=` names: where Swift
    reads it and changes its metadata (object ACL and tagging calls)."""

    path: str
    query: dict[str, str] = field(default_factory=dict)
    history_id: str | None = None  # history mode: the id asked for (Swift does not say it)

    def version_header(self, head: SwiftAnswer) -> dict[str, str]:
        """x-amz-version-id of the version Swift answered for (none unversioned)."""
        found = head.headers.get("x-object-version-id") or self.history_id
        return {"x-amz-version-id": found} if found else {}


async def object_version(call: Call) -> ObjectVersion:
    req = call.req
    path = call.swift_path(req.bucket, req.key)
    version = req.params.get("versionId")
    if version is None:
        return ObjectVersion(path)
    check_version_id(version)
    if await status(call, fresh=False) == HISTORY_MODE:
        archived = await history_versions.version_path(call, req.key, version)
        return ObjectVersion(archived or path, history_id=version)
    return ObjectVersion(path, {"version-id": version})


async def missing_version(call: Call, version: str) -> S3Error:
    """S3's error for a version Swift did not find: 405 for a delete marker (with
    x-amz-delete-marker and its id), else NoSuchVersion."""
    versioned = await status(call, fresh=False) in (ENABLED, SUSPENDED)
    if versioned and await note_delete_marker(call, call.req.key, version):
        return S3Error("MethodNotAllowed", Method=call.req.method, ResourceType="DeleteMarker")
    return S3Error("NoSuchVersion", Key=call.req.key, VersionId=version)


# -- Swift's ?versions listing ------------------------------------------------------------


def is_marker(row: dict[str, Any]) -> bool:
    return row.get("content_type") == DELETE_MARKER


async def _listing(
    call: Call, query: dict[str, str], bucket: str | None = None
) -> list[dict[str, Any]]:
    bucket = bucket or call.req.bucket
    answer = await call.swift(
        "GET", call.swift_path(bucket), query={"versions": "", "format": "json", **query}
    )
    if answer.status == 404:
        raise S3Error("NoSuchBucket", BucketName=bucket)
    if answer.status in (401, 403):
        raise S3Error("AccessDenied")
    if answer.status >= 300:
        raise S3Error("InternalError")
    return json.loads(answer.body or b"[]") if answer.status == 200 else []


async def versions_of_key(call: Call, key: str, bucket: str | None = None) -> list[dict[str, Any]]:
    """The key's versions and delete markers, newest first."""
    # The hidden container names a version `<key>\x00<id>`: below `<key>\x01`.
    rows = await _listing(call, {"prefix": key, "end_marker": key + "\x01"}, bucket)
    return [row for row in rows if row["name"] == key]


async def find_version(
    call: Call, key: str, version: str, bucket: str | None = None
) -> dict[str, Any] | None:
    for row in await versions_of_key(call, key, bucket):
        if row["version_id"] == version:
            return row
    return None


async def note_delete_marker(call: Call, key: str, version: str | None = None) -> bool:
    """After Swift's 404 for a key (or one version of it): when it is a delete marker,
    the answer carries x-amz-delete-marker and the marker's id (True)."""
    rows = await versions_of_key(call, key)
    row = next((r for r in rows if r["version_id"] == version or version is None), None)
    if row is None or not is_marker(row) or (version is None and not row["is_latest"]):
        return False
    call.extra_headers.update(
        {
            "x-amz-delete-marker": "true",
            "x-amz-version-id": row["version_id"],
            "last-modified": _http_date(row["last_modified"]),
        }
    )
    return True


def _http_date(listing_time: str) -> str:
    when = datetime.fromisoformat(listing_time).replace(tzinfo=UTC)
    return format_datetime(when, usegmt=True)


# -- ListObjectVersions --------------------------------------------------------------------


async def list_versions(call: Call) -> None:
    """ListObjectVersions: versions and delete markers by key, newest first, paged by
    key-marker and version-id-marker; a delimiter folds keys into CommonPrefixes."""
    p = call.req.params
    max_keys = min(int_param(p.get("max-keys"), MAX_KEYS, "max-keys"), MAX_KEYS)
    encoding = p.get("encoding-type")
    if encoding not in (None, "url"):
        raise S3Error("InvalidArgument", "Invalid Encoding Method specified in Request")
    prefix, delimiter = p.get("prefix", ""), p.get("delimiter", "")
    key_marker, version_marker = p.get("key-marker", ""), p.get("version-id-marker", "")
    if version_marker and not key_marker:
        raise S3Error(
            "InvalidArgument", "A version-id marker cannot be specified without a key marker.",
            ArgumentName="version-id-marker", ArgumentValue=version_marker,
        )  # fmt: skip
    query: dict[str, str] = {}
    if prefix:
        query["prefix"] = prefix
    if key_marker:
        past_prefix = delimiter and key_marker.endswith(delimiter) and not version_marker
        # A common prefix as marker: past every key under it.
        query["marker"] = key_marker + "\U0010ffff" if past_prefix else key_marker
        if version_marker:
            query["version_marker"] = version_marker
    if not max_keys:
        query["limit"] = "0"  # nothing listed, but the bucket must exist all the same
    rows = await _listing(call, query)
    full = len(rows) >= call.store.config.container_listing_limit
    items: list[tuple[str, dict[str, Any] | str]] = []  # ("version", row) or ("prefix", p)
    for row in rows:
        if delimiter:
            cut = row["name"].find(delimiter, len(prefix))
            if cut >= 0:
                common = row["name"][: cut + len(delimiter)]
                if common != key_marker and (not items or items[-1] != ("prefix", common)):
                    items.append(("prefix", common))
                continue
        items.append(("version", row))
    truncated = len(items) > max_keys or (full and bool(items))
    items = items[:max_keys]

    enc = key_encoder(encoding)
    root = element("ListVersionsResult", ns=True)
    sub(root, "Name", call.req.bucket)
    sub(root, "Prefix", enc(prefix))
    sub(root, "KeyMarker", enc(key_marker))
    sub(root, "VersionIdMarker", version_marker)
    if truncated and items:
        last = items[-1][1]
        if isinstance(last, dict):
            sub(root, "NextKeyMarker", enc(last["name"]))
            sub(root, "NextVersionIdMarker", last["version_id"])
        else:
            sub(root, "NextKeyMarker", enc(last))
    sub(root, "MaxKeys", max_keys)
    if delimiter:
        sub(root, "Delimiter", enc(delimiter))
    if encoding:
        sub(root, "EncodingType", encoding)
    sub(root, "IsTruncated", "true" if truncated else "false")
    for _, row in items:
        if isinstance(row, dict):
            root.append(_version_element(call, row, enc))
    for _, common in items:
        if isinstance(common, str):
            sub(sub(root, "CommonPrefixes"), "Prefix", enc(common))
    await call.xml(document(root))


def _version_element(call: Call, row: dict[str, Any], enc) -> Any:
    marker = is_marker(row)
    item = element("DeleteMarker" if marker else "Version")
    sub(item, "Key", enc(row["name"]))
    sub(item, "VersionId", row["version_id"])
    sub(item, "IsLatest", "true" if row["is_latest"] else "false")
    sub(item, "LastModified", iso8601(row["last_modified"]))
    if not marker:
        sub(item, "ETag", f'"{row["hash"]}"')
        sub(item, "Size", row["bytes"])
        sub(item, "StorageClass", "STANDARD")
    item.append(owner_element(call))
    return item


# -- deleting -------------------------------------------------------------------------------


async def _deleted(call: Call, answer: SwiftAnswer) -> None:
    """A Swift DELETE's answer: fine when it went or was not there (S3 deletes are
    idempotent) while the bucket is there."""
    if answer.status < 300:
        return
    if answer.status in (401, 403):
        raise S3Error("AccessDenied")
    if answer.status == 404:
        info = await call.store.proxy.container_info(call.account or "", call.req.bucket)
        if info.status != 200:
            raise S3Error("NoSuchBucket", BucketName=call.req.bucket)
        return
    raise S3Error("ServiceUnavailable" if answer.status == 503 else "InternalError")


async def _parts_of(call: Call, key: str, version: str) -> list[str]:
    """The parts of a version made by a multipart upload (`/<bucket>+segments/...`): a
    delete marker keeps them for the version, deleting the version for good frees them."""
    path = call.swift_path(call.req.bucket, key)
    head = await call.swift("HEAD", path, query={"version-id": version})
    if head.status != 200 or "x-static-large-object" not in head.headers:
        return []
    query = {"version-id": version, "multipart-manifest": "get"}
    manifest = await call.swift("GET", path, query=query)
    if manifest.status != 200:
        return []
    mine = f"/{call.req.bucket}{SEGMENTS}/"
    return [e["name"] for e in json.loads(manifest.body) if e.get("name", "").startswith(mine)]


async def delete_key(call: Call, key: str, version: str | None) -> dict[str, str]:
    """DeleteObject of one key (of one version of it): the answer's x-amz-version-id and
    x-amz-delete-marker (a delete marker was made, or the version deleted was one)."""
    path = call.swift_path(call.req.bucket, key)
    state = await status(call, fresh=False)
    if version is not None:
        check_version_id(version)
        if state == HISTORY_MODE:
            await history_versions.delete_version(call, key, version)
            return {"x-amz-version-id": version}
        found = await find_version(call, key, version) if state is not None else None
        parts = await _parts_of(call, key, version) if found and not is_marker(found) else []
        await _deleted(call, await call.swift("DELETE", path, query={"version-id": version}))
        for part in parts:
            await call.swift("DELETE", f"/v1/{call.account}{part}")
        headers = {"x-amz-version-id": version}
        if found is not None and is_marker(found):
            headers["x-amz-delete-marker"] = "true"
        return headers
    if state in (ENABLED, SUSPENDED):
        # Not multipart-manifest=delete: the segments belong to the version kept.
        answer = await call.swift("DELETE", path)
        await _deleted(call, answer)
        # Enabled: a new delete marker; suspended: the `null` one, in the null version's place.
        marker = answer.headers.get("x-object-version-id")
        if marker:
            return {"x-amz-delete-marker": "true", "x-amz-version-id": marker}
        return {}
    answer = await call.swift("DELETE", path, query={"multipart-manifest": "delete"})
    await _deleted(call, answer)
    return {}
