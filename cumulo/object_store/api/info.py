"""GET /info: what this cluster offers (Swift's capabilities); /healthcheck and
/crossdomain.xml."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from cumulo.object_store import constraints
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
        "keystoneauth": {},
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
    }


async def info(request: Request) -> Response:
    body = capabilities(request)
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
