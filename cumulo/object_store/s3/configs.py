"""Bucket settings (tagging, CORS, lifecycle) and object tagging.

Bucket settings are kept as the container's system metadata (hidden from the Swift
API); lifecycle expiration sets `X-Delete-At` and the expirer deletes. Versioning is
Swift's own (versions.py).
"""

from __future__ import annotations

import json
import math
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, quote, unquote

from cumulo.object_store.s3.errors import S3Error
from cumulo.object_store.s3.gateway import Call
from cumulo.object_store.s3.xmldoc import document, element, parse_body, sub

if TYPE_CHECKING:
    from cumulo.object_store.s3.versions import ObjectVersion

SYSMETA = "X-Container-Sysmeta-S3api-"
OBJECT_TAGGING = "x-object-sysmeta-s3api-tagging"
MAX_TAGS_BUCKET, MAX_TAGS_OBJECT = 50, 10
CORS_METHODS = {"GET", "PUT", "HEAD", "POST", "DELETE"}


# -- storage of bucket settings -----------------------------------------------------------


async def owner_check(call: Call) -> None:
    """Only the bucket's owner changes or reads its settings (a metadata-less POST asks
    Swift whether the caller owns the container)."""
    answer = await call.swift("POST", call.swift_path(call.req.bucket))
    if answer.status == 404:
        raise S3Error("NoSuchBucket", BucketName=call.req.bucket)
    if answer.status in (401, 403):
        raise S3Error("AccessDenied")
    if answer.status >= 300:
        raise S3Error("InternalError")


async def setting(call: Call, name: str, *, fresh: bool = True) -> str | None:
    """A bucket setting; fresh=False takes the proxy's cached container info (the hot
    path of PUTs: this proxy forgets it whenever the container's metadata changes)."""
    info = await call.store.proxy.container_info(call.account or "", call.req.bucket, fresh=fresh)
    return (info.metadata or {}).get(SYSMETA + name)


async def stored_setting(call: Call, name: str, missing: str):
    """A bucket setting (JSON) its owner asks for; the S3 error `missing` when unset."""
    await owner_check(call)
    stored = await setting(call, name)
    if not stored:
        raise S3Error(missing, BucketName=call.req.bucket)
    return json.loads(stored)


async def store_setting(call: Call, name: str, value: str) -> None:
    await call.store.proxy.container_post(
        call.account or "", call.req.bucket, {SYSMETA + name: value}
    )


# -- tagging ------------------------------------------------------------------------------


def parse_tagging(body: bytes, limit: int) -> list[tuple[str, str]]:
    root = parse_body(body)
    if root.tag != "Tagging":
        raise S3Error("MalformedXML")
    tags = [(t.findtext("Key") or "", t.findtext("Value") or "") for t in root.iter("Tag")]
    keys = [k for k, _ in tags]
    if len(keys) != len(set(keys)):
        raise S3Error("InvalidTag", "Cannot provide multiple Tags with the same key")
    if len(tags) > limit:
        what = "Object tags" if limit == MAX_TAGS_OBJECT else "Bucket tag count"
        raise S3Error("InvalidTag", f"{what} cannot be greater than {limit}")
    for key, value in tags:
        if not 1 <= len(key) <= 128 or len(value) > 256:
            raise S3Error("InvalidTag", "The TagKey you have provided is invalid")
    return tags


def tagging_document(tags: list[tuple[str, str]]) -> bytes:
    root = element("Tagging", ns=True)
    tag_set = sub(root, "TagSet")
    for key, value in tags:
        tag = sub(tag_set, "Tag")
        sub(tag, "Key", key)
        sub(tag, "Value", value)
    return document(root)


async def put_bucket_tagging(call: Call) -> None:
    await owner_check(call)
    tags = parse_tagging(await call.read_body(64 * 1024), MAX_TAGS_BUCKET)
    await store_setting(call, "Tagging", json.dumps(tags))
    await call.respond(204)


async def get_bucket_tagging(call: Call) -> None:
    stored = await stored_setting(call, "Tagging", "NoSuchTagSet")
    await call.xml(tagging_document(stored))


async def delete_setting(call: Call, name: str) -> None:
    await owner_check(call)
    await store_setting(call, name, "")
    await call.respond(204)


def tagging_header(value: str) -> str:
    """x-amz-tagging (`k1=v1&k2=v2`) as the object's stored tagging."""
    tags = parse_qsl(value, keep_blank_values=True)
    if len(tags) > MAX_TAGS_OBJECT:
        raise S3Error("InvalidTag", "Object tags cannot be greater than 10")
    return quote(json.dumps(tags))


async def get_object_tagging(call: Call, where: ObjectVersion) -> None:
    """The tags of the object, or of the version `where` names."""
    head = await call.swift("HEAD", where.path, query=where.query)
    await _object_missing(call, head.status)
    tags = json.loads(unquote(head.headers.get(OBJECT_TAGGING, "")) or "[]")
    await call.xml(tagging_document([tuple(t) for t in tags]), headers=where.version_header(head))


async def put_object_tagging(
    call: Call, where: ObjectVersion, tags: list[tuple[str, str]] | None = None
) -> None:
    """The tags of the object (or version) replaced: a Swift POST that sends its
    metadata back unchanged; `tags` [] deletes them (DeleteObjectTagging)."""
    if tags is None:
        tags = parse_tagging(await call.read_body(64 * 1024), MAX_TAGS_OBJECT)
    head = await call.swift("HEAD", where.path, query=where.query)
    await _object_missing(call, head.status)
    kept = kept_metadata(head.headers)
    kept[OBJECT_TAGGING] = quote(json.dumps(tags)) if tags else ""
    answer = await call.swift("POST", where.path, query=where.query, headers=kept)
    await _object_missing(call, answer.status)
    await call.respond(204 if not tags else 200, headers=where.version_header(head))


def kept_metadata(headers: dict[str, str]) -> dict[str, str]:
    """What a Swift POST to an object must send back to keep the object's metadata (it
    replaces user metadata; system metadata stays unless named)."""
    plain = ("content-type", "content-disposition", "content-encoding", "cache-control",
             "content-language", "expires", "x-delete-at")  # fmt: skip
    return {k: v for k, v in headers.items() if k.startswith("x-object-meta-") or k in plain}


async def _object_missing(call: Call, status: int) -> None:
    if status < 300:
        return
    if status in (401, 403):
        raise S3Error("AccessDenied")
    if status == 404:
        info = await call.store.proxy.container_info(call.account or "", call.req.bucket)
        if info.status != 200:
            raise S3Error("NoSuchBucket", BucketName=call.req.bucket)
        raise S3Error("NoSuchKey", Key=call.req.key)
    if status == 400:
        raise S3Error("InvalidArgument")
    raise S3Error("InternalError")


# -- CORS ---------------------------------------------------------------------------------


def parse_cors(body: bytes) -> list[dict]:
    root = parse_body(body)
    if root.tag != "CORSConfiguration":
        raise S3Error("MalformedXML")
    rules = []
    for rule in root.findall("CORSRule"):
        methods = [m.text or "" for m in rule.findall("AllowedMethod")]
        origins = [o.text or "" for o in rule.findall("AllowedOrigin")]
        if not methods or not origins:
            raise S3Error("MalformedXML")
        bad = [m for m in methods if m not in CORS_METHODS]
        if bad:
            raise S3Error(
                "InvalidRequest",
                f"Found unsupported HTTP method in CORS config. Unsupported method is {bad[0]}",
            )
        rules.append(
            {
                "methods": methods,
                "origins": origins,
                "headers": [h.text or "" for h in rule.findall("AllowedHeader")],
                "expose": [h.text or "" for h in rule.findall("ExposeHeader")],
                "max_age": rule.findtext("MaxAgeSeconds"),
            }
        )
    if not rules:
        raise S3Error("MalformedXML")
    return rules


async def put_bucket_cors(call: Call) -> None:
    await owner_check(call)
    await store_setting(call, "Cors", json.dumps(parse_cors(await call.read_body(64 * 1024))))
    await call.respond(200)


async def get_bucket_cors(call: Call) -> None:
    stored = await stored_setting(call, "Cors", "NoSuchCORSConfiguration")
    root = element("CORSConfiguration", ns=True)
    for rule in stored:
        el = sub(root, "CORSRule")
        for tag, key in (("AllowedHeader", "headers"), ("AllowedMethod", "methods"),
                         ("AllowedOrigin", "origins"), ("ExposeHeader", "expose")):  # fmt: skip
            for value in rule[key]:
                sub(el, tag, value)
        if rule["max_age"]:
            sub(el, "MaxAgeSeconds", rule["max_age"])
    await call.xml(document(root))


def _matches(pattern: str, value: str) -> bool:
    if "*" not in pattern:
        return pattern.lower() == value.lower()
    head, _, tail = pattern.partition("*")
    return value.lower().startswith(head.lower()) and value.lower().endswith(tail.lower())


def cors_rule(rules: list[dict], origin: str, method: str, headers: list[str]) -> dict | None:
    for rule in rules:
        if not any(_matches(o, origin) for o in rule["origins"]):
            continue
        if method not in rule["methods"]:
            continue
        if all(any(_matches(a, h) for a in rule["headers"]) for h in headers if h):
            return rule
    return None


def cors_headers(rule: dict, origin: str, method: str) -> dict[str, str]:
    headers = {
        "access-control-allow-origin": "*" if rule["origins"] == ["*"] else origin,
        "access-control-allow-methods": ", ".join(rule["methods"]),
        "vary": "Origin, Access-Control-Request-Headers, Access-Control-Request-Method",
    }
    if rule["expose"]:
        headers["access-control-expose-headers"] = ", ".join(rule["expose"])
    if rule["max_age"]:
        headers["access-control-max-age"] = rule["max_age"]
    return headers


async def preflight(call: Call) -> None:
    """OPTIONS: the browser asks whether a cross-origin request is allowed."""
    req = call.req
    origin = req.headers.get("origin")
    method = req.headers.get("access-control-request-method")
    if not origin or not method:
        raise S3Error(
            "InvalidRequest" if origin else "AccessDenied",
            "Insufficient information. Origin request header needed.",
        )
    info = await call.store.proxy.container_info(call.account or "", req.bucket)
    if info.status != 200:
        raise S3Error("NoSuchBucket", BucketName=req.bucket)
    stored = (info.metadata or {}).get(SYSMETA + "Cors")
    wanted = [
        h.strip().lower() for h in req.headers.get("access-control-request-headers", "").split(",")
    ]
    rule = cors_rule(json.loads(stored), origin, method, wanted) if stored else None
    if rule is None:
        raise S3Error(
            "AccessDenied",
            "CORSResponse: This CORS request is not allowed. This is usually because the "
            "evalution of Origin, request method / Access-Control-Request-Method or "
            "Access-Control-Request-Headers are not whitelisted by the resource's CORS spec.",
        )
    headers = cors_headers(rule, origin, method)
    if wanted != [""]:
        headers["access-control-allow-headers"] = ", ".join(wanted)
    await call.respond(200, headers=headers)


async def add_cors_headers(call: Call) -> None:
    """Access-Control-* on an ordinary answer to a request from another origin."""
    origin = call.req.headers.get("origin")
    if not origin or not call.req.bucket or call.account is None:
        return
    info = await call.store.proxy.container_info(call.account, call.req.bucket)
    stored = (info.metadata or {}).get(SYSMETA + "Cors") if info.status == 200 else None
    rule = cors_rule(json.loads(stored), origin, call.req.method, []) if stored else None
    if rule is not None:
        call.extra_headers.update(cors_headers(rule, origin, call.req.method))


# -- lifecycle ----------------------------------------------------------------------------


def parse_lifecycle(body: bytes) -> list[dict]:
    root = parse_body(body)
    if root.tag != "LifecycleConfiguration":
        raise S3Error("MalformedXML")
    rules = []
    for rule in root.findall("Rule"):
        status = rule.findtext("Status")
        if status not in ("Enabled", "Disabled"):
            raise S3Error("MalformedXML")
        prefix = rule.findtext("Filter/Prefix") or rule.findtext("Prefix") or ""
        if rule.find("Filter/Tag") is not None or rule.find("Filter/And") is not None:
            raise S3Error("NotImplemented", "Lifecycle filters on tags are not implemented.")
        days, date = rule.findtext("Expiration/Days"), rule.findtext("Expiration/Date")
        if (
            rule.find("Transition") is not None
            or rule.find("NoncurrentVersionExpiration") is not None
        ):
            raise S3Error("NotImplemented", "Only Expiration lifecycle actions are implemented.")
        if (days is None) == (date is None):
            raise S3Error("MalformedXML")
        if days is not None and (not days.isdecimal() or int(days) < 1):
            raise S3Error(
                "InvalidArgument", "'Days' for Expiration action must be a positive integer"
            )
        rules.append({"id": rule.findtext("ID") or "", "status": status, "prefix": prefix,
                      "days": int(days) if days else None, "date": date})  # fmt: skip
    if not rules:
        raise S3Error("MalformedXML")
    return rules


def expiry_of(rules: list[dict], key: str, created: float) -> int | None:
    """When a key made at `created` expires by the rules (S3 rounds up to midnight UTC)."""
    found = None
    for rule in rules:
        if rule["status"] != "Enabled" or not key.startswith(rule["prefix"]):
            continue
        if rule["days"] is not None:
            at = math.ceil((created + rule["days"] * 86400) / 86400) * 86400
        else:
            at = int(
                datetime.fromisoformat(rule["date"].replace("Z", "+00:00"))
                .astimezone(UTC)
                .timestamp()
            )
        found = at if found is None else min(found, at)
    return found


async def put_bucket_lifecycle(call: Call) -> None:
    await owner_check(call)
    rules = parse_lifecycle(await call.read_body(256 * 1024))
    await store_setting(call, "Lifecycle", json.dumps(rules))
    # Objects already there get their X-Delete-At too (the expirer does the rest).
    listing = await call.swift("GET", call.swift_path(call.req.bucket), query={"format": "json"})
    for entry in json.loads(listing.body or b"[]") if listing.status == 200 else []:
        created = datetime.fromisoformat(entry["last_modified"]).replace(tzinfo=UTC).timestamp()
        at = expiry_of(rules, entry["name"], created)
        if at is None:
            continue
        head = await call.swift("HEAD", call.swift_path(call.req.bucket, entry["name"]))
        if head.status != 200:
            continue
        kept = {
            k: v
            for k, v in head.headers.items()
            if k.startswith(("x-object-meta-", "x-object-sysmeta-s3api-")) or k == "content-type"
        }
        await call.swift(
            "POST",
            call.swift_path(call.req.bucket, entry["name"]),
            headers={**kept, "x-delete-at": str(at)},
        )
    await call.respond(200)


async def get_bucket_lifecycle(call: Call) -> None:
    stored = await stored_setting(call, "Lifecycle", "NoSuchLifecycleConfiguration")
    root = element("LifecycleConfiguration", ns=True)
    for rule in stored:
        el = sub(root, "Rule")
        sub(el, "ID", rule["id"])
        sub(sub(el, "Filter"), "Prefix", rule["prefix"])
        sub(el, "Status", rule["status"])
        exp = sub(el, "Expiration")
        if rule["days"] is not None:
            sub(exp, "Days", rule["days"])
        else:
            sub(exp, "Date", rule["date"])
    await call.xml(document(root))


async def lifecycle_delete_at(call: Call) -> str | None:
    """X-Delete-At for a new object of this bucket, by its lifecycle rules."""
    info = await call.store.proxy.container_info(call.account or "", call.req.bucket)
    stored = (info.metadata or {}).get(SYSMETA + "Lifecycle") if info.status == 200 else None
    if not stored:
        return None
    at = expiry_of(json.loads(stored), call.req.key, time.time())
    return str(at) if at is not None else None
