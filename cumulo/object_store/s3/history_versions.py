"""Buckets versioned through S3 before it used Swift's version ids: Swift's history mode
(`X-History-Location: <bucket>+versions`, old versions named
`<3-hex length><key>/<timestamp>`, a version id being the timestamp of the object it
names). Such a bucket keeps working this way, as it did, until its owner puts a
versioning configuration again (versions.put_versioning switches it; the old versions
then stay in `<bucket>+versions`, a Swift container the owner still reads)."""

from __future__ import annotations

import json

from cumulo.object_store.s3.acl import owner_element
from cumulo.object_store.s3.errors import S3Error
from cumulo.object_store.s3.gateway import Call, SwiftAnswer
from cumulo.object_store.s3.xmldoc import document, element, iso8601, sub

VERSIONS = "+versions"


def archived_name(key: str, version: str) -> str:
    return f"{len(key.encode()):03x}{key}/{version}"


def version_id_of_put(answer: SwiftAnswer, status: str) -> str | None:
    """A PUT's version id: the new object's timestamp while versioning is enabled."""
    return answer.headers.get("x-timestamp", "null") if status == "Enabled" else None


async def versions_of(call: Call, prefix: str) -> list[dict]:
    """Every version of the bucket's keys under prefix, newest first per key:
    {key, version, latest, entry}."""
    bucket = call.req.bucket
    current = await call.swift(
        "GET",
        call.swift_path(bucket),
        query={"format": "json", "prefix": prefix} if prefix else {"format": "json"},
    )
    if current.status == 404:
        raise S3Error("NoSuchBucket", BucketName=bucket)
    if current.status >= 300:
        raise S3Error("AccessDenied" if current.status in (401, 403) else "InternalError")
    found = []
    for entry in json.loads(current.body or b"[]"):
        head = await call.swift("HEAD", call.swift_path(bucket, entry["name"]))
        version = head.headers.get("x-timestamp", "null") if head.status == 200 else "null"
        found.append({"key": entry["name"], "version": version, "latest": True, "entry": entry})
    old = await call.swift("GET", call.swift_path(bucket + VERSIONS), query={"format": "json"})
    if old.status == 200:
        for entry in json.loads(old.body or b"[]"):
            name = entry["name"]
            try:
                length = int(name[:3], 16)
            except ValueError:
                continue
            key, version = name[3 : 3 + length], name[4 + length :]
            if key.startswith(prefix):
                found.append({"key": key, "version": version, "latest": False, "entry": entry})
    found.sort(key=lambda v: (v["key"], -float(v["version"]) if v["version"] != "null" else 0))
    return found


async def list_versions(call: Call) -> None:
    p = call.req.params
    prefix = p.get("prefix", "")
    max_keys = min(int(p.get("max-keys", "1000") or 1000), 1000)
    found = await versions_of(call, prefix)
    key_marker = p.get("key-marker", "")
    if key_marker:
        found = [v for v in found if v["key"] > key_marker]
    truncated = len(found) > max_keys
    found = found[:max_keys]
    root = element("ListVersionsResult", ns=True)
    for tag, value in (("Name", call.req.bucket), ("Prefix", prefix), ("KeyMarker", key_marker),
                       ("VersionIdMarker", p.get("version-id-marker", "")), ("MaxKeys", max_keys),
                       ("IsTruncated", "true" if truncated else "false")):  # fmt: skip
        sub(root, tag, value)
    if truncated and found:
        sub(root, "NextKeyMarker", found[-1]["key"])
        sub(root, "NextVersionIdMarker", found[-1]["version"])
    for v in found:
        entry = v["entry"]
        item = sub(root, "Version")
        sub(item, "Key", v["key"])
        sub(item, "VersionId", v["version"])
        sub(item, "IsLatest", "true" if v["latest"] else "false")
        sub(item, "LastModified", iso8601(entry["last_modified"]))
        sub(item, "ETag", f'"{entry["hash"]}"')
        sub(item, "Size", entry["bytes"])
        item.append(owner_element(call))
        sub(item, "StorageClass", "STANDARD")
    await call.xml(document(root))


async def version_path(call: Call, key: str, version: str, bucket: str | None = None) -> str | None:
    """Where a version of the key is: the object itself (None) or its archived copy."""
    bucket = bucket or call.req.bucket
    if version == "null":
        return None
    head = await call.swift("HEAD", call.swift_path(bucket, key))
    if head.status == 200 and head.headers.get("x-timestamp") == version:
        return None
    return call.swift_path(bucket + VERSIONS, archived_name(key, version))


async def delete_version(call: Call, key: str, version: str) -> None:
    """One version gone for good: the current object (its archived copy too, as history
    mode keeps one on delete) or an old version."""
    bucket = call.req.bucket
    if await version_path(call, key, version) is None:
        answer = await call.swift("DELETE", call.swift_path(bucket, key))
        if answer.status >= 300 and answer.status != 404:
            raise S3Error("AccessDenied" if answer.status in (401, 403) else "InternalError")
    await call.swift("DELETE", call.swift_path(bucket + VERSIONS, archived_name(key, version)))
