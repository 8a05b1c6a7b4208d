"""The compute host's image cache and signed images: what is verified, what is kept
(the Image service and Key Manager stood in for by small ASGI apps)."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from cumulo.common.service_client import ServiceClient
from cumulo.compute.image_cache import ImageCache
from cumulo.compute.image_signature import (
    ImageSignatureFailed,
    ImageSignatures,
    SignatureOptions,
    trusted_certs_of,
    with_trusted_certs,
)
from cumulo.testing.signing import issue, signature_properties

DATA = b"\0" * 65536  # raw data the format inspection accepts


def _apps(data: bytes, certs: dict[str, bytes]) -> tuple[Starlette, Starlette, list[str]]:
    downloads: list[str] = []

    async def image_file(request: Request) -> Response:
        downloads.append(request.path_params["id"])
        return Response(data, media_type="application/octet-stream")

    async def secret(request: Request) -> Response:
        cert_id = request.path_params["id"]
        if cert_id not in certs:
            return JSONResponse({"code": 404}, status_code=404)
        return JSONResponse({"secret_type": "certificate"})

    async def payload(request: Request) -> Response:
        return Response(certs[request.path_params["id"]])

    images = Starlette(routes=[Route("/v2/images/{id}/file", image_file)])
    keys = Starlette(
        routes=[Route("/v1/secrets/{id}", secret), Route("/v1/secrets/{id}/payload", payload)]
    )
    return images, keys, downloads


def _meta(image_id: str, data: bytes, props: dict[str, str]) -> dict:
    return {
        "id": image_id,
        "status": "active",
        "size": len(data),
        "disk_format": "raw",
        "os_hash_algo": "sha512",
        "os_hash_value": hashlib.sha512(data).hexdigest(),
        **props,
    }


@pytest.fixture
def pki() -> dict:
    ca = issue("CA", ca=True, path_length=0)
    signer = issue("signer", issuer=ca)
    return {"ca": ca, "signer": signer, "certs": {"ca": ca.pem, "signer": signer.der}}


def _cache(tmp_path: Path, pki: dict, data: bytes = DATA, **options) -> tuple[ImageCache, list]:
    images, keys, downloads = _apps(data, pki["certs"])
    signatures = ImageSignatures(
        ServiceClient("key-manager", app=keys), SignatureOptions(**options)
    )
    return ImageCache(tmp_path, ServiceClient("image", app=images), signatures), downloads


def test_signed_image_is_verified_once_then_served_from_the_cache(tmp_path, pki):
    cache, downloads = _cache(tmp_path, pki)
    meta = _meta("img", DATA, signature_properties(DATA, pki["signer"], "signer"))
    path, _ = asyncio.run(cache.fetch("token", "img", meta, ["ca"]))
    assert path.read_bytes() == DATA
    asyncio.run(cache.fetch("token", "img", meta, ["ca"]))
    assert downloads == ["img"]
    # Another signature (the property changed): the data is downloaded and verified
    # again; the cached file (the backing file of the guests booted before) stays.
    other = signature_properties(b"other", pki["signer"], "signer")
    with pytest.raises(ImageSignatureFailed, match="Signature verification for the image failed"):
        asyncio.run(cache.fetch("token", "img", {**meta, **other}))
    assert downloads == ["img", "img"] and path.read_bytes() == DATA


def test_bad_signature_fails_and_nothing_is_cached(tmp_path, pki):
    cache, _ = _cache(tmp_path, pki, data=DATA[:-1] + b"\1")
    meta = _meta("img", DATA[:-1] + b"\1", signature_properties(DATA, pki["signer"], "signer"))
    with pytest.raises(ImageSignatureFailed, match="Signature verification failed"):
        asyncio.run(cache.fetch("token", "img", meta))
    assert [p.name for p in tmp_path.iterdir()] == []


def test_untrusted_chain_fails_before_any_download(tmp_path, pki):
    other = issue("other CA", ca=True)
    pki["certs"]["other"] = other.pem
    cache, downloads = _cache(tmp_path, pki)
    meta = _meta("img", DATA, signature_properties(DATA, pki["signer"], "signer"))
    with pytest.raises(ImageSignatureFailed, match="certificate validation failed.*signer"):
        asyncio.run(cache.fetch("token", "img", meta, ["other", "missing"]))
    assert downloads == []


def test_what_is_verified_follows_the_options(tmp_path, pki):
    unsigned = _meta("plain", DATA, {})
    partial = _meta("partial", DATA, {"img_signature": "AAAA"})
    cache, _ = _cache(tmp_path, pki)
    asyncio.run(cache.fetch("token", "plain", unsigned))  # unsigned images boot
    with pytest.raises(ImageSignatureFailed, match="Missing property"):
        asyncio.run(cache.fetch("token", "partial", partial))
    with pytest.raises(ImageSignatureFailed, match="Missing property"):
        asyncio.run(cache.fetch("token", "plain", unsigned, ["ca"]))  # trusted certs need one
    off, _ = _cache(tmp_path / "off", pki, verify_glance_signatures=False)
    asyncio.run(off.fetch("token", "partial", partial))
    strict, _ = _cache(tmp_path / "strict", pki, enable_certificate_validation=True)
    signed = _meta("img", DATA, signature_properties(DATA, pki["signer"], "signer"))
    with pytest.raises(ImageSignatureFailed, match="no trusted certificate IDs were provided"):
        asyncio.run(strict.fetch("token", "img", signed))
    defaults, _ = _cache(
        tmp_path / "defaults",
        pki,
        enable_certificate_validation=True,
        default_trusted_certificate_ids=("ca",),
    )
    asyncio.run(defaults.fetch("token", "img", signed))


def test_trusted_certificates_kept_in_system_metadata():
    sysmeta = with_trusted_certs({"boot_roles": "member"}, ["a", "b"])
    assert trusted_certs_of(sysmeta) == ["a", "b"]
    assert with_trusted_certs(sysmeta, None) == {"boot_roles": "member"}
    assert trusted_certs_of({}) is None
