"""S3 operations, each carried out as Swift requests (see gateway.Call.swift)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import ipaddress
import json
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import quote, unquote

from cumulo.object_store.s3 import acl, configs, history_versions, post_object, versions
from cumulo.object_store.s3.acl import owner_element
from cumulo.object_store.s3.errors import S3Error
from cumulo.object_store.s3.gateway import SEGMENTS, Call, SwiftAnswer
from cumulo.object_store.s3.request import int_param, split_query
from cumulo.object_store.s3.xmldoc import document as xml_document
from cumulo.object_store.s3.xmldoc import (
    element,
    http_to_iso,
    iso8601,
    key_encoder,
    parse_body,
    sub,
)

MIN_PART = 5 * 1024 * 1024
MAX_PARTS = 10000
MAX_KEYS = 1000
S3_ETAG = "x-object-sysmeta-s3api-etag"
S3_CLASS = "x-object-sysmeta-s3api-storage-class"
STORAGE_CLASSES = {
    "STANDARD", "REDUCED_REDUNDANCY", "STANDARD_IA", "ONEZONE_IA", "INTELLIGENT_TIERING",
    "GLACIER", "DEEP_ARCHIVE", "GLACIER_IR",
}  # fmt: skip
MAX_KEY_BYTES = 1024  # S3's limit (and Swift's object name limit)
BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
# Headers an object keeps as they are (S3 and Swift agree on them).
PLAIN_HEADERS = ("content-disposition", "content-encoding", "content-language",
                 "cache-control", "expires")  # fmt: skip
# The headers of a Swift object answer an S3 answer carries as they are.
OBJECT_ANSWER_HEADERS = frozenset(
    (*PLAIN_HEADERS, "content-type", "content-length", "last-modified", "content-range",
     "accept-ranges", "etag")
)  # fmt: skip
RESPONSE_OVERRIDES = {
    "response-content-type": "content-type",
    "response-content-language": "content-language",
    "response-expires": "expires",
    "response-cache-control": "cache-control",
    "response-content-disposition": "content-disposition",
    "response-content-encoding": "content-encoding",
}


# -- dispatch ---------------------------------------------------------------------------

# ?tagging, ?cors, ?lifecycle on a bucket: (PUT, GET); DELETE clears the setting.
BUCKET_SETTINGS = {
    "tagging": (configs.put_bucket_tagging, configs.get_bucket_tagging),
    "cors": (configs.put_bucket_cors, configs.get_bucket_cors),
    "lifecycle": (configs.put_bucket_lifecycle, configs.get_bucket_lifecycle),
}


async def dispatch(call: Call) -> None:
    req = call.req
    m = req.method
    if not req.bucket:
        if m in ("GET", "HEAD"):
            return await list_buckets(call)
        raise S3Error("MethodNotAllowed", Method=m, ResourceType="SERVICE")
    owner = await call.gateway.bucket_account(req.bucket)
    if owner is not None:
        call.account = owner
    elif call.credential is not None:
        call.account = own_account(call)
    else:
        raise S3Error("NoSuchBucket", BucketName=req.bucket)
    if len(req.key.encode()) > MAX_KEY_BYTES:
        raise S3Error("KeyTooLongError", Size=str(len(req.key.encode())), MaxSizeAllowed="1024")
    p = req.params
    if m == "OPTIONS":
        return await configs.preflight(call)
    await configs.add_cors_headers(call)
    await acl.resolve_grant_emails(call, req.headers)  # grants name projects from here on
    settings = [name for name in ("tagging", "cors", "lifecycle") if name in p]
    if not req.key:
        if m == "PUT":
            if "acl" in p:
                return await put_bucket_acl(call)
            if "versioning" in p:
                return await versions.put_versioning(call)
            if settings:
                return await BUCKET_SETTINGS[settings[0]][0](call)
            return await create_bucket(call)
        if m == "DELETE":
            if settings:
                return await configs.delete_setting(call, settings[0].capitalize())
            return await delete_bucket(call)
        if m == "HEAD":
            return await head_bucket(call)
        if m == "POST" and "delete" in p:
            return await delete_objects(call)
        if post_object.is_post_object(call):
            return await post_object.post_object(call)
        if m == "GET":
            if "location" in p:
                return await bucket_location(call)
            if "acl" in p:
                return await get_bucket_acl(call)
            if "versioning" in p:
                return await versions.get_versioning(call)
            if "uploads" in p:
                return await list_uploads(call)
            if "versions" in p:
                if await versions.status(call) == versions.HISTORY_MODE:
                    return await history_versions.list_versions(call)
                return await versions.list_versions(call)
            if settings:
                return await BUCKET_SETTINGS[settings[0]][1](call)
            return await list_objects(call, v2=p.get("list-type") == "2")
        raise S3Error("MethodNotAllowed", Method=m, ResourceType="BUCKET")
    if "uploadId" in p:
        if m == "PUT":
            return await upload_part(call)
        if m == "POST":
            return await complete_upload(call)
        if m == "DELETE":
            return await abort_upload(call)
        if m == "GET":
            return await list_parts(call)
    if m == "POST" and "uploads" in p:
        return await create_upload(call)
    if ("acl" in p and m in ("GET", "PUT")) or ("tagging" in p and m in ("GET", "PUT", "DELETE")):
        return await object_acl_or_tagging(call)
    if "versionId" in p:
        versions.check_version_id(p["versionId"])
    if m == "PUT":
        if "x-amz-copy-source" in req.headers:
            return await copy_object(call)
        return await put_object(call)
    if m in ("GET", "HEAD"):
        try:
            return await get_object(call)
        except _Answered:
            return
    if m == "DELETE":
        return await delete_object(call)
    raise S3Error("MethodNotAllowed", Method=m, ResourceType="OBJECT")


async def object_acl_or_tagging(call: Call) -> None:
    """GetObjectAcl, PutObjectAcl, Get/Put/DeleteObjectTagging: of the current object, or
    of the version `?versionId=` names (NoSuchVersion when there is none)."""
    p, m = call.req.params, call.req.method
    where = await versions.object_version(call)
    try:
        if "acl" in p:
            return await (get_object_acl if m == "GET" else put_object_acl)(call, where)
        if m == "GET":
            return await configs.get_object_tagging(call, where)
        return await configs.put_object_tagging(call, where, [] if m == "DELETE" else None)
    except S3Error as exc:
        if exc.code != "NoSuchKey" or "versionId" not in p:
            raise
        raise await versions.missing_version(call, p["versionId"]) from None


def own_account(call: Call) -> str:
    assert call.credential is not None
    return f"{call.store.config.reseller_prefix}{call.credential.project_id}"


async def require_bucket(call: Call) -> None:
    answer = await call.swift("HEAD", call.swift_path(call.req.bucket))
    fail(call, answer, bucket_only=True)


async def bucket_exists(call: Call) -> bool:
    info = await call.store.proxy.container_info(call.account or "", call.req.bucket)
    return info.status == 200


def fail(call: Call, answer: SwiftAnswer, *, bucket_only: bool = False, bucket_missing=None):
    """Raise the S3 error for a Swift answer that is not a success."""
    s = answer.status
    if s < 300:
        return
    req = call.req
    if s in (401, 403):
        raise S3Error("AccessDenied")
    if s == 404:
        if bucket_only or bucket_missing:
            raise S3Error("NoSuchBucket", BucketName=req.bucket)
        raise S3Error("NoSuchKey", Key=req.key)
    if s in (304, 412):
        raise S3Error("PreconditionFailed", Condition="If-Match")
    if s == 413:
        raise S3Error("EntityTooLarge")
    if s == 416:
        raise S3Error("InvalidRange")
    if s == 422:
        raise S3Error("BadDigest")
    if s == 411:
        raise S3Error("MissingContentLength")
    if s == 400:
        raise S3Error("InvalidArgument", answer.body.decode("utf-8", "replace")[:300] or None)
    if s == 503:
        raise S3Error("ServiceUnavailable")
    raise S3Error("InternalError")


async def fail_object(call: Call, answer: SwiftAnswer) -> None:
    if answer.status == 404:
        fail(call, answer, bucket_missing=not await bucket_exists(call))
    fail(call, answer)


# -- service and buckets ----------------------------------------------------------------


async def list_buckets(call: Call) -> None:
    if call.credential is None:
        raise S3Error("AccessDenied")
    call.account = own_account(call)
    answer = await call.swift("GET", call.swift_path(), query={"format": "json"})
    fail(call, answer)
    buckets = element("Buckets")
    for entry in json.loads(answer.body or b"[]"):
        # Parts, and the old versions of buckets once in history mode: not buckets.
        if entry["name"].endswith((SEGMENTS, history_versions.VERSIONS)):
            continue
        sub_el = sub(buckets, "Bucket")
        sub(sub_el, "Name", entry["name"])
        sub(sub_el, "CreationDate", iso8601(entry.get("last_modified", "1970-01-01T00:00:00")))
    root = element("ListAllMyBucketsResult", owner_element(call), buckets, ns=True)
    await call.xml(xml_document(root))


def check_bucket_name(name: str) -> None:
    bad = not BUCKET_NAME.match(name) or ".." in name or ".-" in name or "-." in name
    try:
        ipaddress.ip_address(name)
        bad = True
    except ValueError:
        pass
    if bad:
        raise S3Error("InvalidBucketName", BucketName=name)


async def create_bucket(call: Call) -> None:
    req = call.req
    if call.credential is None:
        raise S3Error("AccessDenied")
    check_bucket_name(req.bucket)
    body = await call.read_body(64 * 1024)
    if body.strip():
        root = parse_body(body)
        if root.tag != "CreateBucketConfiguration":
            raise S3Error("MalformedXML")
        location = root.findtext("LocationConstraint") or ""
        if location not in ("", call.store.cloud_config.region):
            raise S3Error(
                "InvalidLocationConstraint",
                "The specified location-constraint is not valid",
                LocationConstraint=location,
            )
    mine = own_account(call)
    if call.account != mine:
        raise S3Error("BucketAlreadyExists", BucketName=req.bucket)
    call.account = mine
    headers = acl.container_headers_from_request(req.headers)
    answer = await call.swift("PUT", call.swift_path(req.bucket), headers=headers)
    fail(call, answer)
    await call.gateway.claim_bucket(req.bucket, mine)
    if answer.status == 202:
        raise S3Error("BucketAlreadyOwnedByYou", BucketName=req.bucket)
    await call.respond(200, headers={"location": f"/{req.bucket}"})


async def delete_bucket(call: Call) -> None:
    req = call.req
    answer = await call.swift("DELETE", call.swift_path(req.bucket))
    if answer.status == 409:
        raise S3Error("BucketNotEmpty", BucketName=req.bucket)
    fail(call, answer, bucket_only=True)
    assert call.account is not None
    await call.gateway.release_bucket(req.bucket, call.account)
    # The parts container goes with its bucket when nothing is left in it.
    await call.swift("DELETE", call.swift_path(req.bucket + SEGMENTS))
    await call.respond(204)


async def head_bucket(call: Call) -> None:
    answer = await call.swift("HEAD", call.swift_path(call.req.bucket))
    if answer.status >= 300:
        status = 403 if answer.status in (401, 403) else answer.status
        return await call.respond(status)
    await call.respond(200, headers={"x-amz-bucket-region": call.store.cloud_config.region})


async def bucket_location(call: Call) -> None:
    await require_bucket(call)
    region = call.store.cloud_config.region
    await call.xml(xml_document(element("LocationConstraint", text=region, ns=True)))


async def get_bucket_acl(call: Call) -> None:
    answer = await call.swift("HEAD", call.swift_path(call.req.bucket))
    fail(call, answer, bucket_only=True)
    grants = acl.grants_from_container(answer.headers)
    await call.xml(xml_document(acl.policy_document(owner_element(call), grants)))


async def put_bucket_acl(call: Call) -> None:
    await require_bucket(call)
    body = await call.read_body(64 * 1024)
    if "x-amz-acl" in call.req.headers or not body.strip():
        headers = acl.container_headers_from_request(call.req.headers, default="private")
    else:
        policy = await acl.resolve_policy_emails(call, parse_body(body))
        headers = acl.container_headers_from_policy(policy)
    answer = await call.swift("POST", call.swift_path(call.req.bucket), headers=headers)
    fail(call, answer, bucket_only=True)
    await call.respond(200)


# -- listings ---------------------------------------------------------------------------


async def list_objects(call: Call, *, v2: bool = False) -> None:
    req = call.req
    p = req.params
    max_keys = min(int_param(p.get("max-keys"), MAX_KEYS, "max-keys"), MAX_KEYS)
    encoding = p.get("encoding-type")
    if encoding not in (None, "url"):
        raise S3Error("InvalidArgument", "Invalid Encoding Method specified in Request")
    prefix, delimiter = p.get("prefix", ""), p.get("delimiter", "")
    if v2:
        token = p.get("continuation-token")
        if token is not None:
            try:
                marker = base64.urlsafe_b64decode(token.encode()).decode()
            except (binascii.Error, UnicodeDecodeError):
                raise S3Error(
                    "InvalidArgument", "The continuation token provided is incorrect"
                ) from None
        else:
            marker = p.get("start-after", "")
    else:
        marker = p.get("marker", "")
    swift_marker = marker
    if delimiter and marker.endswith(delimiter):
        swift_marker = marker + "\U0010ffff"  # past every key of that common prefix
    query = {"format": "json", "limit": str(max_keys + 1)}
    for name, value in (("prefix", prefix), ("delimiter", delimiter), ("marker", swift_marker)):
        if value:
            query[name] = value
    entries: list[dict] = []
    if max_keys:
        answer = await call.swift("GET", call.swift_path(req.bucket), query=query)
        fail(call, answer, bucket_only=True)
        entries = json.loads(answer.body or b"[]")
    else:
        await require_bucket(call)
    truncated = len(entries) > max_keys
    entries = entries[:max_keys]

    enc = key_encoder(encoding)
    root = element("ListBucketResult", ns=True)
    sub(root, "Name", req.bucket)
    sub(root, "Prefix", enc(prefix))
    if v2:
        if "continuation-token" in p:
            sub(root, "ContinuationToken", p["continuation-token"])
        if "start-after" in p:
            sub(root, "StartAfter", enc(p["start-after"]))
        sub(root, "KeyCount", len(entries))
    else:
        sub(root, "Marker", enc(marker))
    sub(root, "MaxKeys", max_keys)
    if delimiter:
        sub(root, "Delimiter", enc(delimiter))
    if encoding:
        sub(root, "EncodingType", encoding)
    sub(root, "IsTruncated", "true" if truncated else "false")
    if truncated and entries:
        last = entries[-1].get("name") or entries[-1]["subdir"]
        if v2:
            sub(root, "NextContinuationToken", base64.urlsafe_b64encode(last.encode()).decode())
        else:
            sub(root, "NextMarker", enc(last))
    with_owner = not v2 or p.get("fetch-owner") == "true"
    for entry in entries:
        if "subdir" in entry:
            continue
        item = sub(root, "Contents")
        sub(item, "Key", enc(entry["name"]))
        sub(item, "LastModified", iso8601(entry["last_modified"]))
        sub(item, "ETag", f'"{entry["hash"]}"')
        sub(item, "Size", entry["bytes"])
        if with_owner:
            item.append(owner_element(call))
        sub(item, "StorageClass", "STANDARD")
    for entry in entries:
        if "subdir" in entry:
            prefixes = sub(root, "CommonPrefixes")
            sub(prefixes, "Prefix", enc(entry["subdir"]))
    await call.xml(xml_document(root))


# -- objects ----------------------------------------------------------------------------


def swift_object_headers(call: Call, given: dict[str, str] | None = None) -> dict[str, str]:
    """The Swift headers of a new object from the S3 request's (or `given`: a POST
    form's fields)."""
    h = call.req.headers if given is None else given
    out: dict[str, str] = {}
    for name, value in h.items():
        if name.startswith("x-amz-meta-"):
            out["x-object-meta-" + name[len("x-amz-meta-") :]] = value
        elif name in PLAIN_HEADERS:
            out[name] = value
    out["content-type"] = h.get("content-type", "application/octet-stream")
    storage_class = h.get("x-amz-storage-class", "STANDARD")
    if storage_class not in STORAGE_CLASSES:
        raise S3Error("InvalidStorageClass",
                      "The storage class you specified is not valid")  # fmt: skip
    if storage_class != "STANDARD":
        out[S3_CLASS] = storage_class
    grants = acl.object_grants_from_request(h)
    if grants is not None:
        out[acl.OBJECT_ACL] = acl.encode_grants(grants)
    return out


def s3_object_headers(headers: dict[str, str]) -> dict[str, str]:
    """The S3 answer headers of a Swift object answer."""
    out: dict[str, str] = {}
    for name, value in headers.items():
        if name.startswith("x-object-meta-"):
            out["x-amz-meta-" + name[len("x-object-meta-") :]] = value
        elif name in OBJECT_ANSWER_HEADERS:
            out[name] = value
    if S3_ETAG in headers:
        out["etag"] = f'"{headers[S3_ETAG]}"'
    elif "etag" in out and not out["etag"].startswith('"'):
        out["etag"] = f'"{out["etag"]}"'
    if S3_CLASS in headers:
        out["x-amz-storage-class"] = headers[S3_CLASS]
    if "x-object-version-id" in headers:
        out["x-amz-version-id"] = headers["x-object-version-id"]
    return out


def content_md5(call: Call) -> str | None:
    given = call.req.headers.get("content-md5")
    if given is None:
        return None
    try:
        raw = base64.b64decode(given, validate=True)
    except (binascii.Error, ValueError):
        raise S3Error("InvalidDigest") from None
    if len(raw) != 16:
        raise S3Error("InvalidDigest")
    return raw.hex()


def body_length(call: Call) -> str:
    h = call.req.headers
    if (
        "aws-chunked" in h.get("content-encoding", "")
        or call.signed
        and call.signed.payload_hash.startswith("STREAMING-")
    ):
        decoded = h.get("x-amz-decoded-content-length")
        if decoded is None:
            raise S3Error("MissingContentLength")
        return decoded
    if "content-length" not in h:
        raise S3Error("MissingContentLength")
    return h["content-length"]


async def put_object(call: Call) -> None:
    req = call.req
    headers = swift_object_headers(call)
    if "content-encoding" in headers:
        encodings = [
            e for e in headers["content-encoding"].split(",") if e.strip() != "aws-chunked"
        ]
        headers["content-encoding"] = ",".join(encodings)
        if not headers["content-encoding"]:
            del headers["content-encoding"]
    headers["content-length"] = body_length(call)
    md5 = content_md5(call)
    if md5 is not None:
        headers["etag"] = md5
    if "x-amz-tagging" in req.headers:
        headers[configs.OBJECT_TAGGING] = configs.tagging_header(req.headers["x-amz-tagging"])
    expires = await configs.lifecycle_delete_at(call)
    if expires is not None:
        headers["x-delete-at"] = expires
    answer = await call.swift(
        "PUT", call.swift_path(req.bucket, req.key), headers=headers, receive=call.body_receive()
    )
    await fail_object(call, answer)
    reply = {"etag": f'"{answer.headers.get("etag", "").strip(chr(34))}"'}
    await call.respond(200, headers={**reply, **await version_id_of_put(call, answer)})


async def version_id_of_put(call: Call, answer: SwiftAnswer) -> dict[str, str]:
    """x-amz-version-id for what a PUT made: Swift's version id (in a bucket that has
    been versioned), or the timestamp of a bucket still in history mode."""
    if "x-object-version-id" in answer.headers:
        return {"x-amz-version-id": answer.headers["x-object-version-id"]}
    if await versions.status(call, fresh=False) == versions.HISTORY_MODE:
        legacy = await configs.setting(call, "Versioning", fresh=False) or "Enabled"
        version = history_versions.version_id_of_put(answer, legacy)
        return {"x-amz-version-id": version} if version else {}
    return {}


def header_value(value: str) -> str:
    """A value the client asked to see as a response header (response-content-type...):
    one HTTP can carry, or S3's 400."""
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        message = "Header value cannot be represented using ISO-8859-1."
        raise S3Error("InvalidArgument", message) from None
    if any(c in value for c in "\r\n\0"):
        raise S3Error("InvalidArgument", "Header value contains a line break.")
    return value


async def get_object(call: Call) -> None:
    req = call.req
    forward = {
        k: v
        for k, v in req.headers.items()
        if k in ("range", "if-match", "if-none-match", "if-modified-since", "if-unmodified-since")
    }
    overrides = {
        header: header_value(req.params[param])
        for param, header in RESPONSE_OVERRIDES.items()
        if param in req.params
    }
    path = call.swift_path(req.bucket, req.key)
    query: dict[str, str] = {}
    version = req.params.get("versionId")
    state = await versions.status(call, fresh=False)
    if version is not None and state == versions.HISTORY_MODE:
        path = await history_versions.version_path(call, req.key, version) or path
        overrides["x-amz-version-id"] = version
    elif version is not None:
        query["version-id"] = version
    try:
        privileged = bool(await acl.object_access(call, path, query, "READ"))
    except S3Error:
        if req.method == "HEAD":
            return await call.respond(403)
        raise
    if "if-match" in forward or "if-none-match" in forward:
        await etag_conditions(call, forward, path, query, privileged)
    if overrides and call.credential is None:
        raise S3Error(
            "InvalidRequest",
            "Request specific response headers cannot be used for anonymous GET requests.",
        )

    async def start(status: int, headers: dict[str, str]) -> bool:
        if status not in (200, 206):
            return False
        await call.start(status, {**s3_object_headers(headers), **overrides})
        return True

    answer = await call.swift(
        req.method, path, query=query, headers=forward, stream_to=start, as_service=privileged
    )
    if answer.status in (200, 206):
        return
    if answer.status == 404 and state in (versions.ENABLED, versions.SUSPENDED):
        marker = await versions.note_delete_marker(call, req.key, version)
        if marker and version is not None:  # a delete marker has nothing to GET
            if req.method == "HEAD":
                return await call.respond(405)
            raise S3Error("MethodNotAllowed", Method=req.method, ResourceType="DeleteMarker")
    if answer.status == 404 and version is not None:
        if req.method == "HEAD":
            return await call.respond(404)
        raise S3Error("NoSuchVersion", Key=req.key, VersionId=version)
    if answer.status == 304:
        return await call.respond(304, headers=s3_object_headers(answer.headers))
    if answer.status == 416 and req.method == "HEAD":
        return await call.respond(416)
    if req.method == "HEAD" and answer.status >= 400:
        # A HEAD answer has no body: the status alone.
        status = 403 if answer.status in (401, 403) else answer.status
        return await call.respond(status)
    await fail_object(call, answer)


def _etag_in(header: str, etag: str) -> bool:
    tags = [t.strip().strip('"') for t in header.split(",")]
    return "*" in tags or etag in tags


async def etag_conditions(
    call: Call, forward: dict[str, str], path: str, query: dict[str, str], as_service: bool
) -> None:
    """If-Match/If-None-Match against the S3 ETag where it is not Swift's (multipart
    uploads): checked here, and taken off what Swift sees."""
    req = call.req
    head = await call.swift("HEAD", path, query=query, as_service=as_service)
    if head.status != 200 or S3_ETAG not in head.headers:
        return
    etag = head.headers[S3_ETAG]
    if "if-match" in forward and not _etag_in(forward.pop("if-match"), etag):
        raise S3Error("PreconditionFailed", Condition="If-Match")
    forward.pop("if-unmodified-since", None) if "if-match" in req.headers else None
    if "if-none-match" in forward and _etag_in(forward.pop("if-none-match"), etag):
        forward.pop("if-modified-since", None)
        if req.method in ("GET", "HEAD"):
            await call.respond(304, headers=s3_object_headers(head.headers))
            raise _Answered()
        raise S3Error("PreconditionFailed", Condition="If-None-Match")


class _Answered(Exception):
    """The answer has been sent already (a 304 decided before Swift was asked)."""


async def delete_object(call: Call) -> None:
    req = call.req
    headers = await versions.delete_key(call, req.key, req.params.get("versionId"))
    await call.respond(204, headers=headers)


async def delete_objects(call: Call) -> None:
    body = await call.read_body(2 * 1024 * 1024)
    md5 = content_md5(call)
    if md5 is not None and hashlib.md5(body, usedforsecurity=False).hexdigest() != md5:
        raise S3Error("BadDigest")
    root = parse_body(body)
    if root.tag != "Delete":
        raise S3Error("MalformedXML")
    quiet = (root.findtext("Quiet") or "false").strip().lower() == "true"
    wanted = [(o.findtext("Key"), o.findtext("VersionId")) for o in root.findall("Object")]
    if not wanted or len(wanted) > 1000 or any(not key for key, _ in wanted):
        raise S3Error("MalformedXML")
    await require_bucket(call)
    result = element("DeleteResult", ns=True)
    for key, version in wanted:
        assert key is not None
        try:
            headers = await versions.delete_key(call, key, version)
        except S3Error as exc:
            err = sub(result, "Error")
            sub(err, "Key", key)
            if version is not None:
                sub(err, "VersionId", version)
            sub(err, "Code", exc.code)
            sub(err, "Message", exc.message)
            continue
        if quiet:
            continue
        done = sub(result, "Deleted")
        sub(done, "Key", key)
        if version is not None:
            sub(done, "VersionId", version)
        if headers.get("x-amz-delete-marker") == "true":
            sub(done, "DeleteMarker", "true")
            sub(done, "DeleteMarkerVersionId", headers["x-amz-version-id"])
    await call.xml(xml_document(result))


@dataclass
class CopySource:
    """x-amz-copy-source: the bucket, key and version; where Swift reads it."""

    bucket: str
    key: str
    version: str | None
    account: str = ""
    container: str = ""  # the version's Swift container and object name (history mode
    name: str = ""  # keeps old versions in <bucket>+versions), read with `query`
    query: dict[str, str] = field(default_factory=dict)
    head: SwiftAnswer | None = None
    granted: bool = False  # read by what the source's own ACL grants (acl.object_access)


def copy_source(call: Call) -> CopySource:
    raw = call.req.headers["x-amz-copy-source"]
    path, _, query = raw.partition("?")
    bucket, _, key = unquote(path).lstrip("/").partition("/")
    if not bucket or not key:
        raise S3Error(
            "InvalidArgument",
            "Copy Source must mention the source bucket and key: sourcebucket/sourcekey",
        )
    version = dict(split_query(query)).get("versionId")
    if version is not None:
        versions.check_version_id(version)
    return CopySource(bucket, key, version)


def copy_conditions(headers: dict[str, str]) -> dict[str, str]:
    names = {
        "x-amz-copy-source-if-match": "if-match",
        "x-amz-copy-source-if-none-match": "if-none-match",
        "x-amz-copy-source-if-modified-since": "if-modified-since",
        "x-amz-copy-source-if-unmodified-since": "if-unmodified-since",
    }
    return {swift: headers[amz] for amz, swift in names.items() if amz in headers}


async def source_account(call: Call, bucket: str) -> str:
    return await call.gateway.bucket_account(bucket) or own_account(call)


async def check_source(call: Call) -> CopySource:
    """The copy source found (HEAD with the copy conditions: PreconditionFailed when one
    fails), and where Swift reads it."""
    src = copy_source(call)
    src.account = await source_account(call, src.bucket)
    src.container, src.name = src.bucket, src.key
    saved = call.account
    call.account = src.account
    try:
        if src.version is not None:
            state = await versions.status(call, bucket=src.bucket)
            if state != versions.HISTORY_MODE:
                src.query = {"version-id": src.version}
            elif await history_versions.version_path(call, src.key, src.version, src.bucket):
                src.container = src.bucket + history_versions.VERSIONS
                src.name = history_versions.archived_name(src.key, src.version)
        where = call.swift_path(src.container, src.name)
        src.granted = bool(await acl.object_access(call, where, src.query, "READ"))
        answer = await call.swift(
            "HEAD", where, query=src.query, headers=copy_conditions(call.req.headers),
            as_service=src.granted,
        )  # fmt: skip
        if answer.status in (304, 412):
            raise S3Error("PreconditionFailed", Condition="x-amz-copy-source-If-Match")
        if answer.status == 404:
            info = await call.store.proxy.container_info(src.account, src.bucket)
            if info.status != 200:
                raise S3Error("NoSuchBucket", BucketName=src.bucket)
            if src.version is None:
                raise S3Error("NoSuchKey", Key=src.key)
            found = await versions.find_version(call, src.key, src.version, src.bucket)
            if found is not None and versions.is_marker(found):
                raise S3Error(
                    "InvalidRequest",
                    "The source of a copy request may not specifically refer to a delete "
                    "marker by version id.",
                )
            raise S3Error("NoSuchVersion", Key=src.key, VersionId=src.version)
        fail(call, answer)
        src.head = answer
        return src
    finally:
        call.account = saved


async def copy_bytes(
    call: Call,
    src: CopySource,
    wanted: dict[str, str],
    dest: str,
    headers_of: Callable[[SwiftAnswer], dict[str, str]],
) -> SwiftAnswer:
    """A copy Swift cannot make (a version, a range): the source's bytes piped from a GET
    (with `wanted`: a range) into a PUT to dest (with headers_of(the GET's answer))."""
    saved = call.account
    call.account = src.account
    path = call.swift_path(src.container, src.name)
    call.account = saved
    piped = call.swift_piped(path, query=src.query, headers=wanted, as_service=src.granted)
    async with piped as (source, receive):
        if source.status == 416:
            raise S3Error("InvalidRange")
        fail(call, source)
        headers = headers_of(source)
        if "content-length" in source.headers:
            headers["content-length"] = source.headers["content-length"]
        else:
            headers["transfer-encoding"] = "chunked"
        return await call.swift("PUT", dest, headers=headers, receive=receive)


async def copy_object(call: Call) -> None:
    req = call.req
    if call.credential is None:
        raise S3Error("AccessDenied")
    directive = req.headers.get("x-amz-metadata-directive", "COPY")
    if directive not in ("COPY", "REPLACE"):
        raise S3Error("InvalidArgument", "Unknown metadata directive.")
    src = copy_source(call)
    # Copying a version over its own key is how an old version is brought back.
    if (src.bucket, src.key, src.version) == (req.bucket, req.key, None) and directive == "COPY":
        raise S3Error(
            "InvalidRequest",
            "This copy request is illegal because it is trying to copy an object to itself "
            "without changing the object's metadata, storage class, website redirect "
            "location or encryption attributes.",
        )
    src = await check_source(call)
    dest = call.swift_path(req.bucket, req.key)
    own_acl = acl.object_grants_from_request(req.headers)  # a copy has its own, or none
    # Swift copies only current objects, and with the caller's rights.
    if src.query or src.granted:

        def metadata(source: SwiftAnswer) -> dict[str, str]:
            if directive == "REPLACE":
                return swift_object_headers(call)
            kept = (*PLAIN_HEADERS, "content-type")
            headers = {k: v for k, v in source.headers.items()
                       if k.startswith("x-object-meta-") or k in kept}  # fmt: skip
            if own_acl is not None:
                headers[acl.OBJECT_ACL] = acl.encode_grants(own_acl)
            return headers

        answer = await copy_bytes(call, src, {}, dest, metadata)
    else:
        headers = {
            "x-copy-from": quote(f"/{src.container}/{src.name}"),
            "x-copy-from-account": src.account,
            "content-length": "0",
        }
        if directive == "REPLACE":
            headers.update(swift_object_headers(call))
            headers["x-fresh-metadata"] = "true"
        elif own_acl is not None:
            headers[acl.OBJECT_ACL] = acl.encode_grants(own_acl)
        answer = await call.swift("PUT", dest, headers=headers)
    await fail_object(call, answer)
    reply = await version_id_of_put(call, answer)
    assert src.head is not None
    source_version = src.version or src.head.headers.get("x-object-version-id")
    if source_version is not None:
        reply["x-amz-copy-source-version-id"] = source_version
    await copy_result(call, "CopyObjectResult", answer, reply)


async def copy_result(
    call: Call, tag: str, answer: SwiftAnswer, headers: dict[str, str] | None = None
) -> None:
    """What a copy answers: the new object's (or part's) time and ETag."""
    result = element(
        tag,
        element("LastModified", text=http_to_iso(answer.headers.get("last-modified", ""))),
        element("ETag", text=f'"{answer.headers.get("etag", "").strip(chr(34))}"'),
        ns=True,
    )
    await call.xml(xml_document(result), headers=headers)


async def object_acl_access(
    call: Call, where: versions.ObjectVersion, permission: str
) -> SwiftAnswer:
    """The object's (or version's) HEAD for GetObjectAcl/PutObjectAcl: its owner's, or
    that of a caller its own ACL grants `permission` (READ_ACP, WRITE_ACP); AccessDenied
    for the rest."""
    granted = await acl.object_access(call, where.path, where.query, permission)
    if not granted and not acl.owns_bucket(call):
        raise S3Error("AccessDenied")
    # The object's own ACL: a symlink's, not its target's.
    answer = await call.swift(
        "HEAD", where.path, query={**where.query, "symlink": "get"}, as_service=bool(granted)
    )
    await fail_object(call, answer)
    return answer


async def get_object_acl(call: Call, where: versions.ObjectVersion) -> None:
    """GetObjectAcl: the object's own grants, or its bucket's when it has none."""
    req = call.req
    answer = await object_acl_access(call, where, "READ_ACP")
    grants = acl.decode_grants(answer.headers.get(acl.OBJECT_ACL))
    if grants is None:
        bucket = await call.swift("HEAD", call.swift_path(req.bucket), as_service=True)
        grants = acl.grants_from_container(bucket.headers)
    document = xml_document(acl.policy_document(owner_element(call), grants))
    await call.xml(document, headers=where.version_header(answer))


async def put_object_acl(call: Call, where: versions.ObjectVersion) -> None:
    """PutObjectAcl: a canned ACL, x-amz-grant-* headers or an AccessControlPolicy,
    kept in the object's system metadata (a Swift POST keeping the rest as it is)."""
    req = call.req
    answer = await object_acl_access(call, where, "WRITE_ACP")
    body = await call.read_body(64 * 1024)
    grants = acl.object_grants_from_request(req.headers)
    if grants is None:
        if not body.strip():
            raise S3Error("MissingSecurityHeader", MissingHeaderName="x-amz-acl")
        owner_id = owner_element(call).findtext("ID") or ""
        policy = await acl.resolve_policy_emails(call, parse_body(body))
        grants = acl.object_grants_from_policy(policy, owner_id)
    elif body.strip():
        raise S3Error("UnexpectedContent", "This request does not support content")
    headers = configs.kept_metadata(answer.headers)
    headers[acl.OBJECT_ACL] = acl.encode_grants(grants)
    posted = await call.swift(
        "POST", where.path, query=where.query, headers=headers,
        as_service=not acl.owns_bucket(call),
    )  # fmt: skip
    if posted.status != 307:  # 307: a symlink, whose own metadata Swift has updated
        await fail_object(call, posted)
    await call.respond(200, headers=where.version_header(answer))


# -- multipart uploads ------------------------------------------------------------------


def upload_path(call: Call, upload_id: str, part: int | None = None) -> str:
    name = f"{call.req.key}/{upload_id}" + (f"/{part}" if part is not None else "")
    return call.swift_path(call.req.bucket + SEGMENTS, name)


async def require_upload(call: Call, upload_id: str) -> SwiftAnswer:
    if not re.fullmatch(r"[0-9a-f]{32}", upload_id):
        raise S3Error("NoSuchUpload", UploadId=upload_id)
    answer = await call.swift("HEAD", upload_path(call, upload_id))
    if answer.status == 404:
        await require_bucket(call)
        raise S3Error("NoSuchUpload", UploadId=upload_id)
    fail(call, answer)
    return answer


async def create_upload(call: Call) -> None:
    req = call.req
    await require_bucket(call)
    headers = swift_object_headers(call)
    upload_id = uuid.uuid4().hex
    segments = call.swift_path(req.bucket + SEGMENTS)
    answer = await call.swift("PUT", segments)
    fail(call, answer)
    # The upload's marker object keeps the object's metadata until Complete.
    marker_headers = {"x-object-meta-s3-upload": "1"}
    for name, value in headers.items():
        marker_headers["x-object-meta-s3-h-" + quote(name, safe="")] = quote(value, safe="")
    answer = await call.swift("PUT", upload_path(call, upload_id), headers=marker_headers)
    fail(call, answer)
    root = element("InitiateMultipartUploadResult", ns=True)
    sub(root, "Bucket", req.bucket)
    sub(root, "Key", req.key)
    sub(root, "UploadId", upload_id)
    await call.xml(xml_document(root))


def part_number(call: Call) -> int:
    number = int_param(call.req.params.get("partNumber"), -1, "partNumber")
    if not 1 <= number <= MAX_PARTS:
        raise S3Error(
            "InvalidArgument", "Part number must be an integer between 1 and 10000, inclusive"
        )
    return number


async def upload_part(call: Call) -> None:
    req = call.req
    number = part_number(call)
    upload_id = req.params["uploadId"]
    await require_upload(call, upload_id)
    if "x-amz-copy-source" in req.headers:
        return await upload_part_copy(call, upload_id, number)
    headers = {"content-length": body_length(call), "content-type": "application/octet-stream"}
    md5 = content_md5(call)
    if md5 is not None:
        headers["etag"] = md5
    answer = await call.swift(
        "PUT", upload_path(call, upload_id, number), headers=headers, receive=call.body_receive()
    )
    fail(call, answer)
    await call.respond(200, headers={"etag": f'"{answer.headers.get("etag", "").strip(chr(34))}"'})


async def upload_part_copy(call: Call, upload_id: str, number: int) -> None:
    src = await check_source(call)
    headers = {}
    wanted = call.req.headers.get("x-amz-copy-source-range")
    if wanted:
        if not re.fullmatch(r"bytes=\d+-\d+", wanted):
            raise S3Error(
                "InvalidArgument",
                "The x-amz-copy-source-range value must be of the form bytes=first-last "
                "where first and last are the zero-based offsets of the first and last "
                "bytes to copy",
            )
        headers["range"] = wanted
    answer = await copy_bytes(
        call, src, headers, upload_path(call, upload_id, number),
        lambda _: {"content-type": "application/octet-stream"},
    )  # fmt: skip
    fail(call, answer)
    await copy_result(call, "CopyPartResult", answer)


async def _parts(call: Call, upload_id: str, marker: int = 0, limit: int = MAX_PARTS + 1):
    prefix = f"{call.req.key}/{upload_id}/"
    query = {"format": "json", "prefix": prefix, "limit": str(MAX_PARTS)}
    answer = await call.swift("GET", call.swift_path(call.req.bucket + SEGMENTS), query=query)
    fail(call, answer)
    parts = []
    for entry in json.loads(answer.body or b"[]"):
        rest = entry["name"][len(prefix) :]
        if rest.isdecimal() and int(rest) > marker:
            parts.append((int(rest), entry))
    parts.sort(key=lambda p: p[0])
    return parts[:limit]


async def list_parts(call: Call) -> None:
    req = call.req
    upload_id = req.params["uploadId"]
    await require_upload(call, upload_id)
    max_parts = min(int_param(req.params.get("max-parts"), 1000, "max-parts"), 1000)
    marker = int_param(req.params.get("part-number-marker"), 0, "part-number-marker")
    parts = await _parts(call, upload_id, marker, max_parts + 1)
    truncated = len(parts) > max_parts
    parts = parts[:max_parts]
    root = element("ListPartsResult", ns=True)
    sub(root, "Bucket", req.bucket)
    sub(root, "Key", req.key)
    sub(root, "UploadId", upload_id)
    root.append(
        element("Initiator", element("ID", text=call.credential.user_id if call.credential else ""))
    )
    root.append(owner_element(call))
    sub(root, "StorageClass", "STANDARD")
    sub(root, "PartNumberMarker", marker)
    if parts:
        sub(root, "NextPartNumberMarker", parts[-1][0])
    sub(root, "MaxParts", max_parts)
    sub(root, "IsTruncated", "true" if truncated else "false")
    for number, entry in parts:
        item = sub(root, "Part")
        sub(item, "PartNumber", number)
        sub(item, "LastModified", iso8601(entry["last_modified"]))
        sub(item, "ETag", f'"{entry["hash"]}"')
        sub(item, "Size", entry["bytes"])
    await call.xml(xml_document(root))


async def list_uploads(call: Call) -> None:
    req = call.req
    await require_bucket(call)
    p = req.params
    prefix = p.get("prefix", "")
    query = {"format": "json", "limit": "10000"}
    if prefix:
        query["prefix"] = prefix
    answer = await call.swift("GET", call.swift_path(req.bucket + SEGMENTS), query=query)
    entries = json.loads(answer.body or b"[]") if answer.status == 200 else []
    max_uploads = min(int_param(p.get("max-uploads"), 1000, "max-uploads"), 1000)
    key_marker = p.get("key-marker", "")
    uploads = []
    for entry in entries:
        key, _, upload_id = entry["name"].rpartition("/")
        if re.fullmatch(r"[0-9a-f]{32}", upload_id) and key and key > key_marker:
            uploads.append((key, upload_id, entry))
    truncated = len(uploads) > max_uploads
    uploads = uploads[:max_uploads]
    root = element("ListMultipartUploadsResult", ns=True)
    sub(root, "Bucket", req.bucket)
    sub(root, "KeyMarker", key_marker)
    sub(root, "UploadIdMarker", p.get("upload-id-marker", ""))
    if uploads:
        sub(root, "NextKeyMarker", uploads[-1][0])
        sub(root, "NextUploadIdMarker", uploads[-1][1])
    sub(root, "Prefix", prefix)
    sub(root, "MaxUploads", max_uploads)
    sub(root, "IsTruncated", "true" if truncated else "false")
    for key, upload_id, entry in uploads:
        item = sub(root, "Upload")
        sub(item, "Key", key)
        sub(item, "UploadId", upload_id)
        item.append(owner_element(call))
        sub(item, "StorageClass", "STANDARD")
        sub(item, "Initiated", iso8601(entry["last_modified"]))
    await call.xml(xml_document(root))


async def complete_upload(call: Call) -> None:
    req = call.req
    upload_id = req.params["uploadId"]
    marker = await require_upload(call, upload_id)
    root = parse_body(await call.read_body(2 * 1024 * 1024))
    if root.tag != "CompleteMultipartUpload":
        raise S3Error("MalformedXML")
    wanted: list[tuple[int, str]] = []
    for part in root.findall("Part"):
        try:
            number = int(part.findtext("PartNumber") or "")
        except ValueError:
            raise S3Error("MalformedXML") from None
        wanted.append((number, (part.findtext("ETag") or "").strip().strip('"')))
    if not wanted:
        raise S3Error(
            "MalformedXML",
            "The XML you provided was not well-formed or did not validate against our "
            "published schema",
        )
    if [n for n, _ in wanted] != sorted({n for n, _ in wanted}):
        raise S3Error("InvalidPartOrder")
    stored = {number: entry for number, entry in await _parts(call, upload_id)}
    manifest, md5s = [], b""
    for i, (number, etag) in enumerate(wanted):
        entry = stored.get(number)
        if entry is None or entry["hash"] != etag:
            raise S3Error("InvalidPart", UploadId=upload_id, PartNumber=str(number), ETag=etag)
        if i < len(wanted) - 1 and entry["bytes"] < MIN_PART:
            raise S3Error(
                "EntityTooSmall", ProposedSize=str(entry["bytes"]), MinSizeAllowed=str(MIN_PART),
                PartNumber=str(number), ETag=etag,
            )  # fmt: skip
        manifest.append(
            {
                "path": f"/{req.bucket}{SEGMENTS}/{req.key}/{upload_id}/{number}",
                "etag": etag,
                "size_bytes": entry["bytes"],
            }
        )
        md5s += bytes.fromhex(etag)
    s3_etag = f"{hashlib.md5(md5s, usedforsecurity=False).hexdigest()}-{len(wanted)}"
    headers = {S3_ETAG: s3_etag}
    prefix = "x-object-meta-s3-h-"
    for name, value in marker.headers.items():
        if name.startswith(prefix):
            headers[unquote(name[len(prefix) :])] = unquote(value)
    body = json.dumps(manifest).encode()
    answer = await call.swift(
        "PUT",
        call.swift_path(req.bucket, req.key),
        query={"multipart-manifest": "put"},
        headers=headers,
        body=body,
    )
    fail(call, answer)
    await call.swift("DELETE", upload_path(call, upload_id))
    result = element("CompleteMultipartUploadResult", ns=True)
    sub(result, "Location", f"/{req.bucket}/{req.key}")
    sub(result, "Bucket", req.bucket)
    sub(result, "Key", req.key)
    sub(result, "ETag", f'"{s3_etag}"')
    await call.xml(xml_document(result), headers=await version_id_of_put(call, answer))


async def abort_upload(call: Call) -> None:
    upload_id = call.req.params["uploadId"]
    await require_upload(call, upload_id)
    for number, _entry in await _parts(call, upload_id):
        await call.swift("DELETE", upload_path(call, upload_id, number))
    await call.swift("DELETE", upload_path(call, upload_id))
    await call.respond(204)
