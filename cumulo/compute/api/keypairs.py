"""Key pairs: import or generate, ssh or x509 (api-ref: Keypairs (keypairs))."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import string
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cumulo.common.app import json_body
from cumulo.common.auth import request_context
from cumulo.common.context import RequestContext
from cumulo.common.faults import BadRequest, Conflict, Forbidden, NotFound
from cumulo.common.openapi import describes, wrapped
from cumulo.compute import quotas
from cumulo.compute.api import wire
from cumulo.compute.api.common import (
    authorize,
    compute_of,
    json,
    limit_and_marker,
    next_link,
    no_content,
    version,
)
from cumulo.compute.models import KeyPair

_NAME_CHARS = set("_- " + string.digits + string.ascii_letters)
# 2.92 lets names have '@' and '.' too.
_NAME_CHARS_V292 = _NAME_CHARS | set("@.")


class InvalidKeypair(BadRequest):
    def __init__(self, reason: str) -> None:
        super().__init__(f"Keypair data is invalid: {reason}")


# -- key material ------------------------------------------------------------------------


def _colon_hex(digest: bytes) -> str:
    return ":".join(f"{b:02x}" for b in digest)


def ssh_fingerprint(public_key: str) -> str:
    """MD5 of the key blob, colon separated (what `ssh-keygen -l -E md5` prints)."""
    try:
        key = serialization.load_ssh_public_key(public_key.strip().encode())
        blob = key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        raw = base64.b64decode(blob.split()[1])
    except (ValueError, IndexError, TypeError, UnicodeError, UnsupportedAlgorithm):
        raise InvalidKeypair("failed to generate fingerprint") from None
    return _colon_hex(hashlib.md5(raw, usedforsecurity=False).digest())


def x509_fingerprint(pem: str) -> str:
    """SHA-1 of the certificate's DER form, colon separated."""
    try:
        cert = x509.load_pem_x509_certificate(pem.encode())
    except (ValueError, TypeError, UnicodeError) as exc:
        raise InvalidKeypair(f"failed to generate X509 fingerprint. Error message: {exc}") from None
    return _colon_hex(cert.fingerprint(hashes.SHA1()))  # noqa: S303 - Nova's fingerprint


def generate_ssh(name: str) -> tuple[str, str]:
    """A 2048-bit RSA key: (private key PEM, OpenSSH public key)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )
    return private, f"{public} Generated-by-Cumulo"


def generate_x509(user_id: str) -> tuple[str, str]:
    """A self-signed certificate for the user (WinRM style): (private key PEM, cert PEM)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, user_id)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=3650))
        .sign(key, hashes.SHA256())
    )
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return private, cert.public_bytes(serialization.Encoding.PEM).decode()


# -- views -------------------------------------------------------------------------------


def keypair_summary(request: Request, key: KeyPair) -> dict[str, Any]:
    body = {"name": key.name, "public_key": key.public_key, "fingerprint": key.fingerprint}
    if version(request) >= (2, 2):
        body["type"] = key.type
    return body


def keypair_detail(request: Request, key: KeyPair) -> dict[str, Any]:
    body = keypair_summary(request, key)
    body.update(
        user_id=key.user_id,
        id=key.id,
        created_at=wire.timestamp(key.created_at),
        updated_at=None,
        deleted=False,
        deleted_at=None,
    )
    return body


# -- handlers ------------------------------------------------------------------------------


async def _owner(request: Request, user_id: Any = None) -> tuple[RequestContext, str]:
    """The caller, and whose key pairs the request is about (user_id: admins, 2.10)."""
    ctx = await request_context(request)
    if user_id is None and version(request) >= (2, 10):
        user_id = request.query_params.get("user_id")
    if user_id is None or version(request) < (2, 10):
        user_id = ctx.user_id
    await authorize(request, "compute:keypairs", {"user_id": user_id})
    return ctx, user_id


async def _get(request: Request, user_id: str, name: str) -> KeyPair:
    async with compute_of(request).db.read() as s:
        key = await s.scalar(
            select(KeyPair).where(KeyPair.user_id == user_id, KeyPair.name == name)
        )
    if key is None:
        raise NotFound(f"Keypair {name} not found for user {user_id}")
    return key


async def list_keypairs(request: Request) -> Response:
    """GET /os-keypairs: limit and marker (a key name) from 2.35."""
    _, user_id = await _owner(request)
    query = select(KeyPair).where(KeyPair.user_id == user_id).order_by(KeyPair.name)
    paged = version(request) >= (2, 35)
    limit, marker = limit_and_marker(request) if paged else (None, None)
    async with compute_of(request).db.read() as s:
        if marker is not None:
            if (
                await s.scalar(
                    select(KeyPair.id).where(KeyPair.user_id == user_id, KeyPair.name == marker)
                )
                is None
            ):
                raise BadRequest(f"Marker {marker} could not be found.")
            query = query.where(KeyPair.name > marker)
        if limit is not None:
            query = query.limit(limit + 1)
        keys = list((await s.scalars(query)).all())
    more = limit is not None and len(keys) > limit
    keys = keys[:limit] if limit is not None else keys
    body: dict[str, Any] = {"keypairs": [{"keypair": keypair_summary(request, k)} for k in keys]}
    if more and keys:
        body["keypairs_links"] = next_link(request, "os-keypairs", keys[-1].name)
    return json(body)


def _check_name(name: Any, allowed: set[str] = _NAME_CHARS) -> str:
    if not isinstance(name, str) or not 1 <= len(name) <= 255:
        raise InvalidKeypair("Keypair name must be string and between 1 and 255 characters long")
    if not set(name) <= allowed:
        raise InvalidKeypair("Keypair name contains unsafe characters")
    return name


@describes(
    body=wrapped("keypair", ("name", "public_key", "type", "user_id"), required=("name",)),
    resource="keypair",
    key="name",
)
async def create_keypair(request: Request) -> Response:
    """POST /os-keypairs: import public_key, or (before 2.92) generate one and return
    private_key once."""
    v = version(request)
    body = wire.object_body(await json_body(request), "keypair")
    allowed = {"name", "public_key"}
    allowed |= {"type"} if v >= (2, 2) else set()
    allowed |= {"user_id"} if v >= (2, 10) else set()
    wire.reject_unknown(body, allowed)
    if "name" not in body:
        raise BadRequest("Invalid input for field/attribute keypair. 'name' is a required property")
    if v >= (2, 92) and "public_key" not in body:
        # Nova stopped generating private keys (they travelled back in the answer).
        raise BadRequest(
            "Invalid input for field/attribute keypair. 'public_key' is a required property"
        )
    name = _check_name(body["name"], _NAME_CHARS_V292 if v >= (2, 92) else _NAME_CHARS)
    key_type = body.get("type", "ssh")
    if key_type not in ("ssh", "x509"):
        raise wire.invalid("type", key_type, f"'{key_type}' is not one of ['ssh', 'x509']")
    user_id = body.get("user_id")
    if user_id is not None and not isinstance(user_id, str):
        raise wire.invalid("user_id", user_id, f"{user_id!r} is not of type 'string'")
    ctx, user_id = await _owner(request, user_id)
    public_key = body.get("public_key")
    private_key = None
    if public_key is None:
        generate = generate_x509 if key_type == "x509" else generate_ssh
        # RSA key generation takes tens of milliseconds: off the event loop.
        private_key, public_key = await asyncio.to_thread(
            generate, user_id if key_type == "x509" else name
        )
    elif not isinstance(public_key, str):
        raise wire.invalid("public_key", public_key, f"{public_key!r} is not of type 'string'")
    fingerprint = (
        x509_fingerprint(public_key) if key_type == "x509" else ssh_fingerprint(public_key)
    )
    key = KeyPair(
        name=name, user_id=user_id, fingerprint=fingerprint, public_key=public_key, type=key_type
    )
    async with compute_of(request).db.write() as s:
        try:
            await s.run_sync(quotas.check, ctx.project_id, {"key_pairs": 1}, user_id)
        except quotas.QuotaExceeded:
            raise Forbidden("Quota exceeded, too many key pairs.") from None
        s.add(key)
        try:
            await s.flush()  # the (user_id, name) unique constraint
        except IntegrityError:
            raise Conflict(f"Key pair '{name}' already exists.") from None
    view = keypair_summary(request, key)
    view["user_id"] = user_id
    if private_key is not None:
        view["private_key"] = private_key
    return json({"keypair": view}, status=201 if v >= (2, 2) else 200)


async def show_keypair(request: Request) -> Response:
    _, user_id = await _owner(request)
    key = await _get(request, user_id, request.path_params["name"])
    return json({"keypair": keypair_detail(request, key)})


async def delete_keypair(request: Request) -> Response:
    _, user_id = await _owner(request)
    name = request.path_params["name"]
    key = await _get(request, user_id, name)
    async with compute_of(request).db.write() as s:
        await s.delete(await s.merge(key))
    return no_content(204 if version(request) >= (2, 2) else 202)


routes = [
    Route("/v2.1/os-keypairs", list_keypairs, methods=["GET"]),
    Route("/v2.1/os-keypairs", create_keypair, methods=["POST"]),
    Route("/v2.1/os-keypairs/{name}", show_keypair, methods=["GET"]),
    Route("/v2.1/os-keypairs/{name}", delete_keypair, methods=["DELETE"]),
]
