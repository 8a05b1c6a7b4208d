"""GET /info: what this cluster offers (Swift's capabilities); /healthcheck and
/crossdomain.xml."""

from __future__ import annotations

import hashlib
import hmac
import time

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from cumulo.object_store import constraints, container_sync
from cumulo.object_store.api import (
    bulk,
    formpost,
    large_objects,
    object_versioning,
    staticweb,
    symlinks,
    tempurl,
    versioning,
)
from cumulo.object_store.api.common import store_of
from cumulo.object_store.errors import SwiftError

SWIFT_VERSION = "2.35.0"


def capabilities(request: Request) -> dict:
    store = store_of(request)
    osc = store.config
    return {
        "swift": {
            "version": SWIFT_VERSION,
            "max_file_size": osc.max_file_size,
            "max_meta_name_length": constraints.MAX_META_NAME_LENGTH,
            "max_meta_value_length": constraints.MAX_META_VALUE_LENGTH,
            "max_meta_count": constraints.MAX_META_COUNT,
            "max_meta_overall_size": constraints.MAX_META_OVERALL_SIZE,
            "max_header_size": constraints.MAX_HEADER_SIZE,
            "max_object_name_length": constraints.MAX_OBJECT_NAME_LENGTH,
            "container_listing_limit": osc.container_listing_limit,
            "account_listing_limit": osc.account_listing_limit,
            "max_account_name_length": constraints.MAX_ACCOUNT_NAME_LENGTH,
            "max_container_name_length": constraints.MAX_CONTAINER_NAME_LENGTH,
            "extra_header_count": 0,
            "valid_api_versions": ["v1", "v1.0"],
            "strict_cors_mode": True,
            "allow_account_management": False,
            "account_autocreate": True,
            "policies": store.policies.info(),
        },
        # As tempauth reports them: X-Account-Access-Control is honoured.
        "keystoneauth": {"account_acls": True},
        "crossdomain": {},
        "formpost": formpost.info(),
        "slo": {
            "max_manifest_segments": large_objects.MAX_MANIFEST_SEGMENTS,
            "max_manifest_size": large_objects.MAX_MANIFEST_SIZE,
            "min_segment_size": large_objects.MIN_SEGMENT_SIZE,
        },
        "tempurl": tempurl.info(),
        "bulk_delete": bulk.info(),
        "bulk_upload": {
            "max_containers_per_extraction": bulk.MAX_CONTAINERS_PER_EXTRACTION,
            "max_failed_extractions": 1000,
        },
        "container_quotas": {},
        "versioned_writes": versioning.info(),
        "object_versioning": object_versioning.info(),
        "account_quotas": {},
        "dlo": {"max_segments": large_objects.MAX_DLO_SEGMENTS},
        "staticweb": staticweb.info(),
        "symlink": symlinks.info(),
        "container_sync": container_sync.info(store.cloud_config),
    }


def admin_request(request: Request) -> bool:
    """Whether /info was asked with a valid admin signature (Swift's swiftinfo_sig);
    403 when no admin key is set, 401 for a bad or expired one."""
    params = request.query_params
    sig, expires = params.get("swiftinfo_sig", ""), params.get("swiftinfo_expires", "")
    if not sig and not expires:
        return False
    key = store_of(request).config.info_admin_key
    if not key:
        raise SwiftError(403)
    if not expires.isdecimal() or int(expires) < time.time():
        raise SwiftError(401)
    message = f"{request.method}\n{expires}\n/info".encode()
    wanted = hmac.new(key.encode(), message, hashlib.sha1).hexdigest()
    if not hmac.compare_digest(sig, wanted):
        raise SwiftError(401)
    return True


async def info(request: Request) -> Response:
    body = capabilities(request)
    if admin_request(request):
        # What only operators are shown: here, where every ring device is served.
        store = store_of(request)
        rings = {"account": store.account_ring, "container": store.container_ring}
        rings |= {f"object-{p.index}": p.ring for p in store.policies.by_index.values()}
        body["admin"] = {
            "disallowed_sections": [],
            "rings": {
                name: {
                    "replicas": ring.replica_count,
                    "part_power": ring.part_power,
                    "devices": [
                        {
                            "id": d.id,
                            "region": d.region,
                            "zone": d.zone,
                            "ip": d.ip,
                            "port": d.port,
                            "device": d.device,
                            "weight": d.weight,
                        }
                        for d in ring.devices
                    ],  # fmt: skip
                }
                for name, ring in rings.items()
            },
        }
    if request.method == "HEAD":
        return Response(b"", headers={"Content-Type": "application/json; charset=UTF-8"})
    return JSONResponse(body)


# Swift's crossdomain middleware with its default policy (Flash and Silverlight clients).
CROSS_DOMAIN_POLICY = '<allow-access-from domain="*" secure="false" />'


async def crossdomain(_request: Request) -> Response:
    body = (
        '<?xml version="1.0"?>\n'
        "<!DOCTYPE cross-domain-policy SYSTEM "
        '"http://www.adobe.com/xml/dtds/cross-domain-policy.dtd" >\n'
        f"<cross-domain-policy>\n{CROSS_DOMAIN_POLICY}\n</cross-domain-policy>"
    )
    return Response(body.encode(), media_type="application/xml")


async def healthcheck(_request: Request) -> Response:
    return Response(b"OK", media_type="text/plain")


routes = [
    Route("/info", info, methods=["GET", "HEAD"]),
    Route("/healthcheck", healthcheck, methods=["GET"]),
    Route("/crossdomain.xml", crossdomain, methods=["GET"]),
]
