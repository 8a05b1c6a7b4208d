"""What an S3 request signs (Signature Version 4 and 2, header and query forms), checked
with the credential's secret; and the aws-chunked body of streaming SigV4 uploads.

The signing rules are those of the AWS documentation ("Authenticating Requests (AWS
Signature Version 4)" and "Signing and Authenticating REST Requests" for version 2).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from urllib.parse import quote

from cumulo.identity.ec2_signature import v4_signing_key
from cumulo.object_store.s3.errors import S3Error
from cumulo.object_store.s3.request import S3Request

V4 = "AWS4-HMAC-SHA256"
UNSIGNED = "UNSIGNED-PAYLOAD"
STREAMING = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
MAX_SKEW = timedelta(minutes=15)
MAX_PRESIGN_SECONDS = 7 * 24 * 3600
# Query parameters that are part of a SigV2 canonical resource.
V2_SUBRESOURCES = {
    "acl", "cors", "delete", "lifecycle", "location", "logging", "notification",
    "partNumber", "policy", "requestPayment", "tagging", "torrent", "uploadId", "uploads",
    "versionId", "versioning", "versions", "website",
    "response-cache-control", "response-content-disposition", "response-content-encoding",
    "response-content-language", "response-content-type", "response-expires",
}  # fmt: skip


@dataclass
class Signed:
    """A request's claim: who signs, what string they signed, and the signature."""

    access: str
    signature: str
    string_to_sign: str
    version: int  # 2 or 4
    scope: tuple[str, str, str] | None = None  # v4: date, region, service
    timestamp: str = ""  # v4: the x-amz-date
    payload_hash: str = ""  # v4: the x-amz-content-sha256 (or UNSIGNED-PAYLOAD)

    def expected(self, secret: str) -> str:
        if self.version == 4:
            key = self.signing_key(secret)
            return hmac.digest(key, self.string_to_sign.encode(), "sha256").hex()
        mac = hmac.new(secret.encode(), self.string_to_sign.encode("utf-8"), hashlib.sha1)
        return base64.b64encode(mac.digest()).decode()

    def matches(self, secret: str) -> bool:
        return hmac.compare_digest(self.expected(secret).encode(), self.signature.encode())

    def signing_key(self, secret: str) -> bytes:
        assert self.scope is not None
        return _signing_key(secret, self.scope)


@functools.lru_cache(maxsize=1024)
def _signing_key(secret: str, scope: tuple[str, str, str]) -> bytes:
    """A day's key of a secret (four HMACs, the same for every request of that day)."""
    return v4_signing_key(secret, *scope)


def _uri_encode(value: str) -> str:
    return quote(value, safe="-_.~")


@functools.lru_cache(maxsize=64)
def _parse_time(value: str) -> datetime | None:
    """A request's time (x-amz-date, Date, X-Amz-Date): the same second's requests share
    it, so it is parsed once per value (datetimes are immutable)."""
    try:
        if len(value) == 16 and value[8] == "T" and value.endswith("Z"):  # 20261205T011500Z
            v = value
            return datetime(
                int(v[:4]), int(v[4:6]), int(v[6:8]), int(v[9:11]), int(v[11:13]), int(v[13:15]),
                tzinfo=UTC,
            )  # fmt: skip
        parsed = parsedate_to_datetime(value)
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    except (TypeError, ValueError, IndexError):
        return None


def _check_skew(when: datetime | None) -> None:
    if when is None:
        raise S3Error(
            "AccessDenied", "AWS authentication requires a valid Date or x-amz-date header"
        )
    now = datetime.now(UTC)
    if abs(now - when) > MAX_SKEW:
        raise S3Error(
            "RequestTimeTooSkewed",
            RequestTime=when.strftime("%Y%m%dT%H%M%SZ"),
            ServerTime=now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            MaxAllowedSkewMilliseconds="900000",
        )


def claim(req: S3Request) -> Signed | None:
    """The signature a request carries (None: anonymous), its freshness checked."""
    auth = req.headers.get("authorization", "")
    p = req.params
    if auth.startswith(V4 + " "):
        return _v4_header(req, auth)
    if auth.startswith("AWS "):
        return _v2_header(req, auth)
    if auth:
        raise S3Error("AccessDenied", "Unsupported Authorization Type")
    if p.get("X-Amz-Algorithm"):
        return _v4_query(req)
    if "AWSAccessKeyId" in p or "Signature" in p:
        return _v2_query(req)
    return None


def sign_policy(secret: str, policy: str, scope: tuple[str, str, str] | None) -> str:
    """A POST form's signature of its (base64) policy: SigV4's (hex, with the key of the
    credential's scope), or SigV2's (base64 HMAC-SHA1) when there is no scope."""
    if scope is None:
        mac = hmac.new(secret.encode(), policy.encode(), hashlib.sha1)
        return base64.b64encode(mac.digest()).decode()
    return hmac.new(_signing_key(secret, scope), policy.encode(), hashlib.sha256).hexdigest()


# -- Signature Version 4 ------------------------------------------------------------


def _v4_fields(auth: str) -> dict[str, str]:
    fields = {}
    for part in auth[len(V4) :].split(","):
        name, sep, value = part.strip().partition("=")
        if sep:
            fields[name] = value.strip()
    if not all(fields.get(n) for n in ("Credential", "SignedHeaders", "Signature")):
        raise S3Error("AuthorizationHeaderMalformed", "The authorization header is malformed.")
    return fields


def _scope(credential: str) -> tuple[str, tuple[str, str, str]]:
    parts = credential.split("/")
    if len(parts) != 5 or parts[4] != "aws4_request" or parts[3] != "s3":
        raise S3Error(
            "AuthorizationHeaderMalformed",
            f"The authorization header is malformed; the Credential is mal-formed; "
            f'expecting "<YOUR-AKID>/YYYYMMDD/REGION/SERVICE/aws4_request". ({credential})',
        )
    return parts[0], (parts[1], parts[2], parts[3])


def _canonical_query(req: S3Request, exclude: str | None = None) -> str:
    if not req.query:
        return ""
    pairs = sorted((_uri_encode(k), _uri_encode(v)) for k, v in req.query if k != exclude)
    return "&".join(f"{k}={v}" for k, v in pairs)


def _canonical_request(req: S3Request, signed_headers: str, payload: str, query: str) -> str:
    names = signed_headers.split(";")
    missing = [n for n in names if n not in req.headers]
    if missing:
        raise S3Error("AccessDenied", f"Signed header {missing[0]} is missing")
    lines = "".join(f"{n}:{' '.join(req.headers[n].split())}\n" for n in names)
    return "\n".join((req.method, req.raw_path, query, lines, signed_headers, payload))


def _string_to_sign(timestamp: str, scope: tuple[str, str, str], canonical: str) -> str:
    digest = hashlib.sha256(canonical.encode("utf-8")).hexdigest()
    return "\n".join((V4, timestamp, "/".join((*scope, "aws4_request")), digest))


def _v4_header(req: S3Request, auth: str) -> Signed:
    fields = _v4_fields(auth)
    access, scope = _scope(fields["Credential"])
    timestamp = req.headers.get("x-amz-date") or ""
    when = _parse_time(timestamp or req.headers.get("date", ""))
    _check_skew(when)
    if not timestamp:
        timestamp = when.strftime("%Y%m%dT%H%M%SZ")  # type: ignore[union-attr]
    if not timestamp.startswith(scope[0]):
        raise S3Error("SignatureDoesNotMatch", "The credential date does not match the request.")
    payload = req.headers.get("x-amz-content-sha256")
    if payload is None:
        raise S3Error(
            "InvalidRequest", "Missing required header for this request: x-amz-content-sha256"
        )
    canonical = _canonical_request(req, fields["SignedHeaders"], payload, _canonical_query(req))
    return Signed(
        access, fields["Signature"], _string_to_sign(timestamp, scope, canonical), 4, scope,
        timestamp, payload,
    )  # fmt: skip


def _v4_query(req: S3Request) -> Signed:
    p = req.params
    if p.get("X-Amz-Algorithm") != V4:
        raise S3Error("AuthorizationQueryParametersError",
                      "X-Amz-Algorithm only supports \"AWS4-HMAC-SHA256\"")  # fmt: skip
    for name in ("X-Amz-Credential", "X-Amz-Date", "X-Amz-SignedHeaders", "X-Amz-Signature",
                 "X-Amz-Expires"):  # fmt: skip
        if not p.get(name):
            raise S3Error("AccessDenied", f"Query-string authentication requires {name}.")
    access, scope = _scope(p["X-Amz-Credential"])
    when = _parse_time(p["X-Amz-Date"])
    try:
        expires = int(p["X-Amz-Expires"])
    except ValueError:
        raise S3Error("AccessDenied", "X-Amz-Expires should be a number") from None
    if not 0 <= expires <= MAX_PRESIGN_SECONDS:
        raise S3Error("AccessDenied", "X-Amz-Expires must be between 0 and 604800 seconds")
    if when is None:
        raise S3Error("AccessDenied", "X-Amz-Date must be in the ISO8601 Long Format")
    now = datetime.now(UTC)
    if when - now > MAX_SKEW:
        raise S3Error("AccessDenied", "Request is not valid yet")
    if now > when + timedelta(seconds=expires):
        raise S3Error(
            "AccessDenied", "Request has expired", Expires=str(when + timedelta(seconds=expires))
        )
    canonical = _canonical_request(
        req, p["X-Amz-SignedHeaders"], UNSIGNED, _canonical_query(req, exclude="X-Amz-Signature")
    )
    return Signed(
        access, p["X-Amz-Signature"], _string_to_sign(p["X-Amz-Date"], scope, canonical), 4,
        scope, p["X-Amz-Date"], UNSIGNED,
    )  # fmt: skip


# -- Signature Version 2 ------------------------------------------------------------


def _v2_string(req: S3Request, date_line: str) -> str:
    h = req.headers
    amz = sorted(
        (k, ",".join(v.strip() for v in h[k].split(","))) for k in h if k.startswith("x-amz-")
    )
    amz_lines = "".join(f"{k}:{v}\n" for k, v in amz)
    resource = (f"/{req.bucket}" if req.virtual_host else "") + req.raw_path
    subs = sorted((k, v) for k, v in req.query if k in V2_SUBRESOURCES)
    if subs:
        resource += "?" + "&".join(f"{k}={v}" if v else k for k, v in subs)
    return (
        "\n".join((req.method, h.get("content-md5", ""), h.get("content-type", ""), date_line))
        + "\n"
        + amz_lines
        + resource
    )


def _v2_header(req: S3Request, auth: str) -> Signed:
    access, sep, signature = auth[4:].rpartition(":")
    if not sep or not access:
        raise S3Error(
            "AccessDenied",
            "AWS authorization header is invalid.  Expected AwsAccessKeyId:signature",
        )
    amz_date = req.headers.get("x-amz-date")
    _check_skew(_parse_time(amz_date or req.headers.get("date", "")))
    date_line = "" if amz_date else req.headers.get("date", "")
    return Signed(access, signature, _v2_string(req, date_line), 2)


def _v2_query(req: S3Request) -> Signed:
    p = req.params
    if not all(p.get(n) for n in ("AWSAccessKeyId", "Signature", "Expires")):
        raise S3Error(
            "AccessDenied",
            "Query-string authentication requires the Signature, Expires and "
            "AWSAccessKeyId parameters",
        )
    try:
        expires = int(p["Expires"])
    except ValueError:
        raise S3Error("AccessDenied", "Expires should be a number") from None
    if datetime.now(UTC).timestamp() > expires:
        raise S3Error("AccessDenied", "Request has expired")
    return Signed(p["AWSAccessKeyId"], p["Signature"], _v2_string(req, p["Expires"]), 2)


# -- aws-chunked bodies (STREAMING-AWS4-HMAC-SHA256-PAYLOAD) -------------------------


class ChunkDecoder:
    """Feeds on the raw body; yields the payload, each chunk's signature checked against
    the previous one (the seed is the request's own signature)."""

    def __init__(self, signed: Signed, signing_key: bytes) -> None:
        self.signed = signed
        self.key = signing_key
        self.previous = signed.signature
        self.buffer = b""
        self.remaining = -1  # bytes of chunk data still to read (+2 for CRLF)
        self.chunk_signature = ""
        self.chunk = hashlib.sha256()
        self.done = False

    def _check(self, data_hash: str) -> None:
        scope = "/".join((*self.signed.scope, "aws4_request"))  # type: ignore[misc]
        string = "\n".join(
            ("AWS4-HMAC-SHA256-PAYLOAD", self.signed.timestamp, scope, self.previous,
             hashlib.sha256(b"").hexdigest(), data_hash)
        )  # fmt: skip
        expected = hmac.digest(self.key, string.encode(), "sha256").hex()
        if not hmac.compare_digest(expected.encode(), self.chunk_signature.encode()):
            raise S3Error("SignatureDoesNotMatch")
        self.previous = expected

    def feed(self, data: bytes) -> bytes:
        self.buffer += data
        out = bytearray()
        while True:
            if self.remaining < 0:
                line, sep, rest = self.buffer.partition(b"\r\n")
                if not sep:
                    if len(self.buffer) > 4096:
                        raise S3Error("IncompleteBody", "Malformed aws-chunked body")
                    break
                size, _, ext = line.decode("latin-1").partition(";")
                name, _, value = ext.partition("=")
                try:
                    length = int(size, 16)
                except ValueError:
                    raise S3Error("IncompleteBody", "Malformed aws-chunked body") from None
                if name.strip() != "chunk-signature" or not value:
                    raise S3Error("SignatureDoesNotMatch", "A chunk has no chunk-signature")
                self.chunk_signature = value.strip()
                self.chunk = hashlib.sha256()
                self.remaining = length
                self.buffer = rest
                if length == 0:
                    self._check(self.chunk.hexdigest())
                    self.done = True
                    self.buffer = b""
                    break
            take = self.buffer[: self.remaining]
            self.chunk.update(take)
            out += take
            self.remaining -= len(take)
            self.buffer = self.buffer[len(take) :]
            if self.remaining > 0:
                break
            if len(self.buffer) < 2:
                # Wait for the CRLF that ends the chunk data.
                self.remaining = 0
                if not self.buffer:
                    break
            if self.buffer[:2] != b"\r\n":
                if len(self.buffer) < 2:
                    break
                raise S3Error("IncompleteBody", "Malformed aws-chunked body")
            self._check(self.chunk.hexdigest())
            self.buffer = self.buffer[2:]
            self.remaining = -1
        return bytes(out)
