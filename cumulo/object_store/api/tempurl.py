"""TempURL (Swift's tempurl middleware): an object URL signed with an account or
container key, valid for one method until it expires, usable without a token.

Signature: HMAC(key, "<METHOD>\\n<expires>\\n<path>") in hex (SHA1 40, SHA256 64,
SHA512 128 digits) or "<digest>:<base64>"; a prefix URL signs "prefix:<path prefix>"
and carries temp_url_prefix. temp_url_expires is seconds since the epoch or ISO 8601
(2030-01-01T00:00:00Z).
"""

from __future__ import annotations

import base64
import binascii
import calendar
import hashlib
import hmac
import time
from urllib.parse import quote

from starlette.requests import Request

from cumulo.object_store.errors import SwiftError

DIGESTS = {"sha1": hashlib.sha1, "sha256": hashlib.sha256, "sha512": hashlib.sha512}
HEX_LENGTHS = {40: "sha1", 64: "sha256", 128: "sha512"}
METHODS = ["GET", "HEAD", "PUT", "POST", "DELETE"]
ISO8601 = "%Y-%m-%dT%H:%M:%SZ"
KEY_HEADERS = ("Temp-Url-Key", "Temp-Url-Key-2")


class TempUrlInvalid(SwiftError):
    def __init__(self, head: bool) -> None:
        super().__init__(401, "" if head else "401 Unauthorized: Temp URL invalid\n")


def info() -> dict:
    return {
        "methods": METHODS,
        "incoming_remove_headers": ["x-timestamp"],
        "incoming_allow_headers": [],
        "outgoing_remove_headers": ["x-object-meta-*"],
        "outgoing_allow_headers": ["x-object-meta-public-*"],
        "allowed_digests": sorted(DIGESTS),
        "deprecated_digests": ["sha1"],
    }


def is_tempurl(request: Request) -> bool:
    return "temp_url_sig" in request.query_params


def parse_expires(value: str) -> int | None:
    try:
        return int(value)
    except ValueError:
        pass
    try:
        return calendar.timegm(time.strptime(value, ISO8601))
    except ValueError:
        return None


def _signature(sig: str) -> tuple[str, bytes] | None:
    if ":" in sig:
        algorithm, _, encoded = sig.partition(":")
        try:
            raw = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
        except (binascii.Error, ValueError):
            return None
        return (algorithm, raw) if algorithm in DIGESTS else None
    algorithm = HEX_LENGTHS.get(len(sig))
    try:
        return (algorithm, bytes.fromhex(sig)) if algorithm else None
    except ValueError:
        return None


def verify(request: Request, path: str, keys: list[str]) -> None:
    """Raise 401 unless the query signs this request's path with one of the keys."""
    head = request.method == "HEAD"
    params = request.query_params
    expires = parse_expires(params.get("temp_url_expires", ""))
    parsed = _signature(params.get("temp_url_sig", ""))
    if expires is None or parsed is None or expires < time.time() or not keys:
        raise TempUrlInvalid(head)
    algorithm, given = parsed
    prefix = params.get("temp_url_prefix")
    if prefix is not None:
        account_container = "/".join(path.split("/")[:4])  # /v1/AUTH_x/container
        if not path.startswith(f"{account_container}/{prefix}"):
            raise TempUrlInvalid(head)
        signed_path = f"prefix:{account_container}/{prefix}"
    else:
        signed_path = path
    # HEAD is allowed with a signature for GET, HEAD or PUT (as Swift).
    methods = ["HEAD", "GET", "PUT"] if head else [request.method]
    for key in keys:
        for method in methods:
            body = f"{method}\n{expires}\n{signed_path}"
            mac = hmac.new(key.encode(), body.encode(), DIGESTS[algorithm]).digest()
            if hmac.compare_digest(mac, given):
                return
    raise TempUrlInvalid(head)


async def keys_for(store, account: str, container: str) -> list[str]:
    """The account's and the container's keys (X-*-Meta-Temp-URL-Key and -Key-2)."""
    keys = []
    info = await store.proxy.account_info(account, cached=True)
    meta = {k: v for k, (v, _ts) in (info or {}).get("metadata", {}).items() if v}
    keys += [meta[f"X-Account-Meta-{h}"] for h in KEY_HEADERS if f"X-Account-Meta-{h}" in meta]
    cinfo = await store.proxy.container_info(account, container)
    cmeta = cinfo.metadata or {}
    keys += [
        cmeta[f"X-Container-Meta-{h}"] for h in KEY_HEADERS if f"X-Container-Meta-{h}" in cmeta
    ]
    return keys


def disposition(request: Request, name: str, existing: str | None) -> str:
    filename = request.query_params.get("filename")
    if "inline" in request.query_params:
        return f'inline; filename="{filename}"' if filename else "inline"
    if filename:
        return f"attachment; filename=\"{filename}\"; filename*=UTF-8''{quote(filename)}"
    if existing:
        return existing
    base = name.rstrip("/").rsplit("/", 1)[-1]
    return f"attachment; filename=\"{base}\"; filename*=UTF-8''{quote(base)}"
