"""AWS request signatures, checked against a stored EC2 secret (no HTTP here).

What /v3/ec2tokens and /v3/s3tokens receive is the signed request taken apart by
the front end (EC2 API, S3): verb, host, path, query params, headers and the
hash of the body. From those and the secret we compute the signature the client
must have sent, the way AWS defines it:

- Signature Version 2 (EC2 Query API): HMAC-SHA256 or HMAC-SHA1 over
  "VERB\\nhost\\npath\\ncanonical-query", base64.
- Signature Version 4 (AWS4-HMAC-SHA256): from the Authorization header, or
  from X-Amz-* query parameters (pre-signed URLs), hex.
- S3 (s3tokens): the front end sends the string to sign itself; v2 is
  base64 HMAC-SHA1 of it, v4 is the SigV4 HMAC with the key of its scope.

Comparisons are constant-time (hmac.compare_digest).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import urllib.parse
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

V4_ALGORITHM = "AWS4-HMAC-SHA256"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
_V2_DIGESTS = {"HmacSHA256": hashlib.sha256, "HmacSHA1": hashlib.sha1}


class SignatureError(ValueError):
    """The request cannot be checked: unsupported version, missing or malformed parts."""


# -- shared pieces --------------------------------------------------------------


def _quote(value: Any, safe: str = "-_.~") -> str:
    if not isinstance(value, str | bytes):
        value = str(value)
    return urllib.parse.quote(value, safe=safe)


def canonical_query(params: Mapping[str, Any], exclude: str | None = None) -> str:
    """Params sorted by name, names and values percent-encoded (RFC 3986 unreserved kept)."""
    pairs = sorted((_quote(k), _quote(v)) for k, v in params.items() if k != exclude)
    return "&".join(f"{k}={v}" for k, v in pairs)


def _hmac(key: bytes, msg: str | bytes, digest=hashlib.sha256) -> bytes:
    return hmac.new(key, msg.encode() if isinstance(msg, str) else msg, digest).digest()


def signatures_match(given: Any, expected: str) -> bool:
    if not isinstance(given, str):
        return False
    return hmac.compare_digest(given.encode(), expected.encode())


def _lower_keys(headers: Mapping[str, Any]) -> dict[str, str]:
    return {str(k).strip().lower(): str(v) for k, v in headers.items()}


# -- Signature Version 2 ---------------------------------------------------------


def sign_v2(secret: str, verb: str, host: str, path: str, params: Mapping[str, Any]) -> str:
    """The SigV2 signature of a query request; the method comes from params["SignatureMethod"]."""
    method = params.get("SignatureMethod", "HmacSHA256")
    digest = _V2_DIGESTS.get(method)
    if digest is None:
        raise SignatureError(f"Unsupported SignatureMethod: {method}.")
    # Sorted by name before encoding (SigV2's rule, as boto and keystoneclient sign):
    # unlike SigV4's, a name such as `{` comes after `Version`, not before it.
    query = "&".join(
        f"{_quote(k, safe='')}={_quote(params[k])}" for k in sorted(params) if k != "Signature"
    )
    string_to_sign = "\n".join((verb.upper(), host, path or "/", query))
    return base64.b64encode(_hmac(secret.encode(), string_to_sign, digest)).decode()


# -- Signature Version 4 ---------------------------------------------------------


def v4_signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    key = _hmac(f"AWS4{secret}".encode(), date)
    key = _hmac(key, region)
    key = _hmac(key, service)
    return _hmac(key, "aws4_request")


def parse_v4_authorization(header: str) -> dict[str, str]:
    """'AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=...' as a dict."""
    algorithm, _, rest = header.strip().partition(" ")
    if algorithm != V4_ALGORITHM:
        raise SignatureError(f"Unsupported authorization algorithm: {algorithm}.")
    fields = {}
    for part in rest.split(","):
        name, sep, value = part.strip().partition("=")
        if sep:
            fields[name] = value
    for name in ("Credential", "SignedHeaders", "Signature"):
        if not fields.get(name):
            raise SignatureError(f"The Authorization header has no {name}.")
    return fields


def _v4_auth_fields(params: Mapping[str, Any], headers: Mapping[str, str]) -> dict[str, str]:
    """Credential, SignedHeaders, Signature and Date: from the header, else the query."""
    if "authorization" in headers:
        fields = parse_v4_authorization(headers["authorization"])
        fields["Date"] = headers.get("x-amz-date") or str(params.get("X-Amz-Date", ""))
        return fields
    if params.get("X-Amz-Algorithm") != V4_ALGORITHM:
        raise SignatureError("Not a Signature Version 4 request.")
    fields = {
        name: str(params.get(f"X-Amz-{name}", ""))
        for name in ("Credential", "SignedHeaders", "Signature", "Date")
    }
    if not all(fields[n] for n in ("Credential", "SignedHeaders", "Date")):
        raise SignatureError("The X-Amz-* query parameters are incomplete.")
    return fields


def v4_canonical_request(
    verb: str,
    path: str,
    params: Mapping[str, Any],
    headers: Mapping[str, str],
    signed_headers: str,
    body_hash: str,
    *,
    post_query: bool = False,
) -> str:
    # Keystone's rule: an EC2 Query API POST carries its parameters in the (hashed) body
    # and its canonical query is empty (params may hold the form's). As AWS signs a POST,
    # post_query: its canonical query is that of its URL's parameters (params).
    query = (
        canonical_query(params, exclude="X-Amz-Signature")
        if verb.upper() != "POST" or post_query
        else ""
    )
    lines = [
        f"{name}:{' '.join(headers[name].split())}"
        for name in signed_headers.split(";")
        if name in headers
    ]
    canonical_headers = "\n".join(lines) + "\n"
    return "\n".join(
        (verb.upper(), path or "/", query, canonical_headers, signed_headers, body_hash)
    )


def v4_string_to_sign(timestamp: str, scope: str, canonical_request: str) -> str:
    digest = hashlib.sha256(canonical_request.encode()).hexdigest()
    return "\n".join((V4_ALGORITHM, timestamp, scope, digest))


def sign_v4(
    secret: str,
    verb: str,
    path: str,
    params: Mapping[str, Any],
    headers: Mapping[str, Any],
    body_hash: str | None = None,
    *,
    post_query: bool = False,
) -> str:
    """The SigV4 signature (hex) the request must carry (post_query: v4_canonical_request)."""
    lower = _lower_keys(headers)
    fields = _v4_auth_fields(params, lower)
    # Credential = <access>/<date>/<region>/<service>/aws4_request
    parts = fields["Credential"].split("/")
    if len(parts) != 5 or parts[4] != "aws4_request":
        raise SignatureError("Malformed credential scope.")
    date, region, service = parts[1:4]
    timestamp = fields["Date"]
    if not timestamp.startswith(date):
        raise SignatureError("The request date does not match the credential scope.")
    body_hash = body_hash or lower.get("x-amz-content-sha256") or EMPTY_SHA256
    canonical = v4_canonical_request(
        verb, path, params, lower, fields["SignedHeaders"], body_hash, post_query=post_query
    )
    string_to_sign = v4_string_to_sign(timestamp, "/".join(parts[1:]), canonical)
    key = v4_signing_key(secret, date, region, service)
    return hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()


# -- /v3/ec2tokens ---------------------------------------------------------------


def is_v4(credentials: Mapping[str, Any]) -> bool:
    headers = _lower_keys(credentials.get("headers") or {})
    params = credentials.get("params") or {}
    return headers.get("authorization", "").startswith(V4_ALGORITHM) or (
        params.get("X-Amz-Algorithm") == V4_ALGORITHM
    )


def expected_ec2_signature(
    secret: str, credentials: Mapping[str, Any], host: str, *, post_query: bool = False
) -> str:
    params = credentials.get("params") or {}
    if not isinstance(params, Mapping):
        raise SignatureError("params must be an object.")
    version = params.get("SignatureVersion")
    verb = str(credentials.get("verb") or "")
    path = str(credentials.get("path") or "/")
    if version == "2":
        return sign_v2(secret, verb, host, path, params)
    if version is None and is_v4(credentials):
        return sign_v4(
            secret,
            verb,
            path,
            params,
            credentials.get("headers") or {},
            credentials.get("body_hash"),
            post_query=post_query,
        )
    raise SignatureError(f"Unsupported signature version: {version or 'unknown'}.")


def verify_ec2(
    secret: str, credentials: Mapping[str, Any], *, post_query: bool | None = None
) -> bool:
    """Whether credentials["signature"] is the request's signature under the secret.

    Some clients sign the host without its port, so that form is tried too. A SigV4
    POST's canonical query (v4_canonical_request): post_query True, that of params (the
    URL's parameters, as AWS signs: what the EC2 API checks); False, empty (Keystone's
    rule); None, either (what /v3/ec2tokens takes: from Keystone's callers, whose params
    may be the form's, and from the EC2 API, whose params are the URL's, checked already).
    """
    given = credentials.get("signature")
    if not given:
        raise SignatureError("EC2 signature not supplied.")
    host = str(credentials.get("host") or "")
    hosts = [host]
    if ":" in host:
        bare = urllib.parse.urlsplit("//" + host).hostname
        if bare and bare != host:
            hosts.append(bare)
    ways = [False, True] if post_query is None else [post_query]
    post = str(credentials.get("verb") or "").upper() == "POST"
    params = credentials.get("params")
    if not (post and params and isinstance(params, Mapping) and is_v4(credentials)):
        ways = ways[:1]  # the two ways are the same
    return any(
        signatures_match(given, expected_ec2_signature(secret, credentials, h, post_query=w))
        for h in hosts
        for w in ways
    )


# -- /v3/s3tokens ----------------------------------------------------------------


def sign_s3(secret: str, string_to_sign: bytes) -> str:
    """S3's signature of a string to sign: v4 when it is an AWS4 string, else v2 (HMAC-SHA1)."""
    if not string_to_sign.startswith(b"AWS4"):
        return base64.b64encode(_hmac(secret.encode(), string_to_sign, hashlib.sha1)).decode()
    lines = string_to_sign.split(b"\n")
    if len(lines) != 4 or lines[0] != V4_ALGORITHM.encode():
        raise SignatureError("Malformed AWS4 string to sign.")
    scope = lines[2].decode(errors="replace").split("/")
    if len(scope) != 4 or scope[3] != "aws4_request":
        raise SignatureError("Malformed credential scope.")
    key = v4_signing_key(secret, *scope[:3])
    return hmac.new(key, string_to_sign, hashlib.sha256).hexdigest()


def decode_s3_token(token: Any) -> bytes:
    """The string to sign, which the S3 front end sends base64-encoded (url-safe or not)."""
    if not isinstance(token, str) or not token:
        raise SignatureError("The S3 string to sign (token) is missing.")
    padded = token + "=" * (-len(token) % 4)
    try:
        return base64.b64decode(padded.replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError("The S3 string to sign is not base64.") from None


def verify_s3(secret: str, credentials: Mapping[str, Any]) -> bool:
    given = credentials.get("signature")
    if not given:
        raise SignatureError("S3 signature not supplied.")
    return signatures_match(given, sign_s3(secret, decode_s3_token(credentials.get("token"))))


# -- freshness -------------------------------------------------------------------


def parse_timestamp(value: str) -> datetime:
    """An AWS timestamp (ISO 8601, or SigV4's 20150830T123600Z) as aware UTC."""
    text = value.strip()
    try:
        return datetime.strptime(text, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise SignatureError(f"Credential timestamp is invalid: {value}.") from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def request_timestamp(credentials: Mapping[str, Any]) -> datetime | None:
    """When the request says it was signed (v2 Timestamp, v4 X-Amz-Date), if it says."""
    params = credentials.get("params") or {}
    headers = _lower_keys(credentials.get("headers") or {})
    raw = params.get("Timestamp") or headers.get("x-amz-date") or params.get("X-Amz-Date")
    return parse_timestamp(str(raw)) if raw else None
