"""Barbican's input rules: new secrets, payloads and their media types, orders,
containers, ACLs, user metadata and list filters. Pure functions, no HTTP, no database.

Errors are raised as the statuses Barbican answers (400, 413, 415, 406) with Barbican's
client messages ("Provided object does not match schema 'Secret': ...").
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cumulo.common.faults import (
    BadRequest,
    NotAcceptable,
    PayloadTooLarge,
    UnsupportedMediaType,
)

SECRET_TYPES = ("symmetric", "public", "private", "passphrase", "certificate", "opaque")
CONTAINER_TYPES = ("generic", "rsa", "certificate")
ORDER_TYPES = ("key", "asymmetric")
ACL_OPERATIONS = ("read",)
SMALL_INT_MAX = 32767  # Barbican's bit_length bound (a MySQL SMALLINT)

# Barbican's mime_types: what a client may name, and the internal type each maps to.
PLAIN_TEXT = ("text/plain", "text/plain;charset=utf-8", "text/plain; charset=utf-8")
BINARY = ("application/octet-stream", "application/pkcs8")
SUPPORTED = PLAIN_TEXT + BINARY
# Encodings each internal type accepts in a JSON body (None: none may be named).
ENCODINGS: dict[str, tuple[str, ...] | None] = {
    "text/plain": None,
    "application/octet-stream": ("base64", "binary"),
    "application/pkcs8": ("base64", "binary"),
}
PUT_CONTENT_TYPES = ("application/octet-stream", "text/plain")
PAYLOAD_TOO_LARGE = "Provided information too large to process"
_URL_SAFE = re.compile(r"^[A-Za-z0-9_-]*$")


def invalid(schema: str, reason: str, prop: str) -> BadRequest:
    return BadRequest(
        f"Provided object does not match schema '{schema}': {reason}. Invalid property: '{prop}'"
    )


def normalize_content_type(content_type: str) -> str:
    """text/plain with a utf-8 charset -> text/plain; anything unknown unchanged."""
    parts = [p.strip() for p in content_type.split(";")]
    mime = parts[0].lower()
    if len(parts) > 1:
        if "=" not in parts[1]:
            return content_type
        if parts[1].split("=", 1)[1].strip().lower() != "utf-8":
            return content_type
    return mime if mime in ENCODINGS else content_type


def is_supported(content_type: str) -> bool:
    return normalize_content_type(content_type) in SUPPORTED


def too_big(payload: str | bytes, limit: int) -> bool:
    size = (
        len(payload.encode("utf-8", "surrogatepass")) if isinstance(payload, str) else len(payload)
    )
    return size > limit


def parse_time(value: str) -> datetime:
    """ISO 8601 -> naive UTC (ValueError when not a time)."""
    text = value.strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(UTC).replace(tzinfo=None)
    return parsed


@dataclass
class NewSecret:
    name: str | None
    secret_type: str
    algorithm: str | None
    bit_length: int | None
    mode: str | None
    expiration: datetime | None
    payload: bytes | None  # the raw bytes to keep (base64 decoded)
    content_type: str | None  # normalized


def _string(body: dict, key: str, schema: str, max_len: int = 255, null: bool = False) -> Any:
    value = body.get(key)
    if value is None and (null or key not in body):
        return None
    if not isinstance(value, str):
        raise invalid(schema, f"{value!r} is not of type 'string'", key)
    if len(value) > max_len:
        raise invalid(schema, f"{value!r} is too long", key)
    return value.strip()


def new_secret(
    body: Any, now: datetime, max_bytes: int, schema: str = "Secret", in_order: bool = False
) -> NewSecret:
    """POST /v1/secrets (or an order's meta, `in_order`): Barbican's NewSecretValidator."""
    if not isinstance(body, dict):
        raise invalid(schema, f"{body!r} is not of type 'object'", "")
    name = _string(body, "name", schema, null=True)
    algorithm = _string(body, "algorithm", schema)
    mode = _string(body, "mode", schema)
    bit_length = body.get("bit_length")
    if "bit_length" in body:
        if not isinstance(bit_length, int) or isinstance(bit_length, bool):
            raise invalid(schema, f"{bit_length!r} is not of type 'integer'", "bit_length")
        if bit_length < 1:
            raise invalid(schema, f"{bit_length} is less than the minimum of 1", "bit_length")
        if bit_length > SMALL_INT_MAX:
            raise invalid(
                schema, f"{bit_length} is greater than the maximum of {SMALL_INT_MAX}", "bit_length"
            )
    secret_type = body.get("secret_type", "opaque")
    if secret_type not in SECRET_TYPES:
        raise invalid(schema, f"{secret_type!r} is not one of {list(SECRET_TYPES)}", "secret_type")
    content_type = _string(body, "payload_content_type", schema, null=True)
    encoding = body.get("payload_content_encoding")
    if "payload_content_encoding" in body and encoding != "base64":
        raise invalid(schema, f"{encoding!r} is not one of ['base64']", "payload_content_encoding")
    payload_raw = body.get("payload")
    if "payload" in body and not isinstance(payload_raw, str):
        raise invalid(schema, f"{payload_raw!r} is not of type 'string'", "payload")
    expiration = _expiration(body.get("expiration"), schema, now)
    payload: bytes | None = None
    if "payload" in body:
        assert isinstance(payload_raw, str)
        if content_type is None:
            raise invalid(
                schema,
                "If 'payload' is supplied, 'payload_content_type' must also be supplied.",
                "payload_content_type",
            )
        _check_content_type(content_type, schema)
        normalized = normalize_content_type(content_type)
        allowed = ENCODINGS[normalized]
        if (allowed is None and encoding is not None) or (
            allowed is not None and encoding not in allowed
        ):
            raise invalid(
                schema,
                f"payload_content_encoding is not one of {list(allowed) if allowed else None}",
                "payload_content_encoding",
            )
        if too_big(payload_raw, max_bytes):
            raise PayloadTooLarge(PAYLOAD_TOO_LARGE)
        text = payload_raw.strip()
        if not text:
            raise invalid(schema, "If 'payload' specified, must be non empty", "payload")
        payload = decode_base64(text, schema) if encoding == "base64" else _utf8(text, schema)
        content_type = normalized
    elif content_type is not None:
        if not in_order:
            raise invalid(
                schema,
                "payload must be provided when payload_content_type is specified",
                "payload",
            )
        _check_content_type(content_type, schema)
        content_type = normalize_content_type(content_type)
    return NewSecret(
        name=name,
        secret_type=secret_type,
        algorithm=algorithm,
        bit_length=bit_length,
        mode=mode,
        expiration=expiration,
        payload=payload,
        content_type=content_type,
    )


def _utf8(text: str, schema: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate escaped in the JSON
        raise invalid(schema, "Invalid payload for payload_content_type", "payload") from None


def _check_content_type(content_type: str, schema: str) -> None:
    if not is_supported(content_type):
        raise invalid(
            schema, f"payload_content_type is not one of {list(SUPPORTED)}", "payload_content_type"
        )


def _expiration(raw: Any, schema: str, now: datetime) -> datetime | None:
    if raw is None:
        return None
    if not isinstance(raw, str):
        raise invalid(schema, f"{raw!r} is not of type 'string'", "expiration")
    if not raw.strip():
        return None
    try:
        expiration = parse_time(raw)
    except ValueError:
        raise invalid(schema, "Invalid date for 'expiration'", "expiration") from None
    if expiration <= now:
        raise invalid(schema, "'expiration' is before current time", "expiration")
    return expiration


def decode_base64(text: str | bytes, schema: str = "Secret") -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise invalid(schema, "Invalid payload for payload_content_encoding", "payload") from None


def put_payload(
    body: bytes, content_type: str | None, content_encoding: str | None, max_bytes: int
) -> tuple[bytes, str]:
    """PUT /v1/secrets/{id}: the raw bytes to keep and their normalized media type."""
    mime = (content_type or "").split(";")[0].strip().lower()
    if not mime or mime == "application/json" or mime not in PUT_CONTENT_TYPES:
        raise UnsupportedMediaType(
            f"Unexpected content type. Expected content types are: {list(PUT_CONTENT_TYPES)}"
        )
    if not body:
        raise BadRequest("No data supplied to process.")
    if too_big(body, max_bytes):
        raise PayloadTooLarge(PAYLOAD_TOO_LARGE)
    if mime == "text/plain" or not content_encoding:
        return body, mime
    if content_encoding.strip().lower() == "base64":
        try:
            return base64.b64decode(body, validate=True), mime
        except (binascii.Error, ValueError):
            raise BadRequest("Unable to decode request data.") from None
    raise BadRequest(
        "Text-based binary secret payloads must specify a content-encoding of 'base64'"
    )


def payload_for(stored: bytes, stored_type: str, accept: str | None) -> tuple[bytes, str]:
    """GET /v1/secrets/{id}/payload: the bytes in the media type asked for (Accept; none:
    application/octet-stream; */*: the stored type), or 406 as Barbican."""
    wanted = (accept or "").strip() or "application/octet-stream"
    if wanted == "*/*":
        wanted = stored_type
    if wanted not in SUPPORTED:
        raise NotAcceptable("Wrong payload content-type")
    if wanted in PLAIN_TEXT:
        try:
            stored.decode("utf-8")
        except UnicodeDecodeError:
            raise NotAcceptable("Wrong payload content-type") from None
    return stored, wanted


# -- orders -------------------------------------------------------------------------


@dataclass
class NewOrder:
    type: str
    meta: dict[str, Any]
    secret: NewSecret


def new_order(body: Any, now: datetime, max_bytes: int) -> NewOrder:
    """POST /v1/orders: Barbican's TypeOrderValidator (key and asymmetric)."""
    schema = "Order"
    if not isinstance(body, dict):
        raise invalid(schema, f"{body!r} is not of type 'object'", "")
    order_type = body.get("type")
    if order_type is None:
        raise invalid(schema, "'type' is a required property", "type")
    if order_type not in ORDER_TYPES:
        raise invalid(schema, f"{order_type!r} is not one of {list(ORDER_TYPES)}", "type")
    meta = body.get("meta")
    if meta is None:
        raise invalid(schema, "'meta' is a required property", "meta")
    if not isinstance(meta, dict):
        raise invalid(schema, f"{meta!r} is not of type 'object'", "meta")
    kind = "key" if order_type == "key" else "asymmetric key"
    secret = new_secret(
        {k: v for k, v in meta.items() if k != "passphrase"},
        now,
        max_bytes,
        schema=f"Secret' within '{schema}",
        in_order=True,
    )
    if meta.get("payload") is not None:
        raise invalid(schema, f"'payload' not allowed for {order_type} type order", "meta")
    if not meta.get("algorithm"):
        raise invalid(schema, f"'algorithm' is required field for {kind} type order", "meta")
    if not meta.get("bit_length"):
        raise invalid(schema, f"'bit_length' is required field for {kind} type order", "meta")
    if int(meta["bit_length"]) % 8 != 0:
        raise BadRequest("Provided field value is not supported")
    passphrase = meta.get("passphrase")
    if passphrase is not None and not isinstance(passphrase, str):
        raise invalid(schema, f"{passphrase!r} is not of type 'string'", "meta")
    return NewOrder(order_type, meta, secret)


# -- containers ---------------------------------------------------------------------


@dataclass
class NewContainer:
    name: str | None
    type: str
    secret_refs: list[tuple[str | None, str]]  # (name, secret id)


def secret_id_of_ref(ref: str) -> str:
    """The last path segment of a secret reference (a trailing slash allowed)."""
    ref = ref.rstrip("/")
    return ref.rsplit("/", 1)[-1]


def new_container(body: Any, host_href: str) -> NewContainer:
    """POST /v1/containers: Barbican's ContainerValidator."""
    schema = "Container"
    if not isinstance(body, dict):
        raise invalid(schema, f"{body!r} is not of type 'object'", "")
    ctype = body.get("type")
    if ctype is None:
        raise invalid(schema, "'type' is a required property", "type")
    if ctype not in CONTAINER_TYPES:
        raise invalid(schema, f"{ctype!r} is not one of {list(CONTAINER_TYPES)}", "type")
    name = _string(body, "name", schema, null=True)
    refs = body.get("secret_refs") or []
    if not isinstance(refs, list):
        raise invalid(schema, f"{refs!r} is not of type 'array'", "secret_refs")
    pairs: list[tuple[str | None, str]] = []
    for item in refs:
        if not isinstance(item, dict) or "secret_ref" not in item:
            raise invalid(schema, "'secret_ref' is a required property", "secret_refs")
        ref, ref_name = item["secret_ref"], item.get("name")
        if not isinstance(ref, str) or not ref:
            raise invalid(schema, f"{ref!r} is not of type 'string'", "secret_refs")
        if ref_name is not None and (not isinstance(ref_name, str) or len(ref_name) > 255):
            raise invalid(schema, f"{ref_name!r} is not of type 'string'", "secret_refs")
        if not ref.startswith(host_href):
            raise BadRequest("Provided field value is not supported")
        pairs.append((ref_name.strip() if ref_name else ref_name, secret_id_of_ref(ref)))
    names = {n or "" for n, _ in pairs}
    if pairs and len(names) != len(pairs):
        raise invalid(schema, "Duplicate reference names are not allowed", "secret_refs")
    if len({sid for _, sid in pairs}) != len(pairs):
        raise invalid(schema, "Duplicate secret ids are not allowed", "secret_refs")
    if pairs and ctype == "rsa":
        _names_allowed(
            names,
            {"public_key", "private_key"},
            {"private_key_passphrase"},
            "only 'private_key', 'public_key' and 'private_key_passphrase' reference names "
            "are allowed for RSA type",
            "The minimum required reference names are 'public_key' and'private_key' for RSA type",
        )
    elif pairs and ctype == "certificate":
        _names_allowed(
            names,
            {"certificate"},
            {"private_key", "private_key_passphrase", "intermediates"},
            "only 'private_key', 'certificate' , 'private_key_passphrase',  or "
            "'intermediates' reference names are allowed for Certificate type",
            "The minimum required reference name is 'certificate' for Certificate type",
        )
    return NewContainer(name, ctype, pairs)


def _names_allowed(
    names: set[str], required: set[str], optional: set[str], unsupported: str, missing: str
) -> None:
    if names - (required | optional):
        raise invalid("Container", unsupported, "secret_refs")
    if not required <= names:
        raise invalid("Container", missing, "secret_refs")


def container_secret(body: Any) -> tuple[str | None, str]:
    """POST/DELETE /v1/containers/{id}/secrets: (name, secret id)."""
    schema = "ContainerSecret"
    if not isinstance(body, dict) or "secret_ref" not in body:
        raise invalid(schema, "'secret_ref' is a required property", "secret_ref")
    ref, name = body["secret_ref"], body.get("name")
    if not isinstance(ref, str) or not ref:
        raise invalid(schema, f"{ref!r} is not of type 'string'", "secret_ref")
    if name is not None and (not isinstance(name, str) or len(name) > 255):
        raise invalid(schema, f"{name!r} is not of type 'string'", "name")
    return (name.strip() if name else name), secret_id_of_ref(ref.strip())


# -- ACLs, metadata, consumers -------------------------------------------------------------


def acl_body(body: Any) -> dict[str, dict[str, Any]]:
    """PUT/PATCH .../acl: {"read": {"users": [...], "project-access": bool}}."""
    schema = "ACL"
    if not isinstance(body, dict):
        raise invalid(schema, f"{body!r} is not of type 'object'", "")
    for key, value in body.items():
        if key not in ACL_OPERATIONS:
            raise invalid(
                schema, f"Additional properties are not allowed ({key!r} was unexpected)", key
            )
        if not isinstance(value, dict):
            raise invalid(schema, f"{value!r} is not of type 'object'", key)
        for field, item in value.items():
            if field == "users":
                if not isinstance(item, list) or not all(
                    isinstance(u, str) and len(u) <= 255 for u in item
                ):
                    raise invalid(schema, f"{item!r} is not of type 'array'", key)
            elif field == "project-access":
                if not isinstance(item, bool):
                    raise invalid(schema, f"{item!r} is not of type 'boolean'", key)
            else:
                raise invalid(
                    schema,
                    f"Additional properties are not allowed ({field!r} was unexpected)",
                    key,
                )
    return body


def metadata_body(body: Any) -> dict[str, str]:
    """PUT .../metadata: {"metadata": {key: value}}; keys URL-safe, lowered."""
    if not isinstance(body, dict) or not isinstance(body.get("metadata"), dict):
        raise invalid("SecretMetadata", "'metadata' is a required property", "metadata")
    metadata: dict[str, str] = {}
    for key, value in body["metadata"].items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise BadRequest("Invalid Metadata. Keys and Values must be Strings.")
        if not _URL_SAFE.match(key):
            raise BadRequest("Invalid Key. Key must be URL safe.")
        if len(key) > 255 or len(value) > 255:
            raise invalid("SecretMetadata", "is too long", key)
        metadata[key.lower()] = value
    return metadata


def metadatum_body(body: Any) -> tuple[str, str]:
    """POST .../metadata, PUT .../metadata/{key}: {"key": ..., "value": ...}."""
    schema = "SecretMetadatum"
    if not isinstance(body, dict):
        raise invalid(schema, f"{body!r} is not of type 'object'", "")
    extra = set(body) - {"key", "value"}
    if extra:
        raise invalid(
            schema,
            f"Additional properties are not allowed ({sorted(extra)[0]!r} was unexpected)",
            "",
        )
    for field in ("key", "value"):
        value = body.get(field)
        if value is None:
            raise invalid(schema, f"'{field}' is a required property", field)
        if not isinstance(value, str):
            raise invalid(schema, f"{value!r} is not of type 'string'", field)
        if len(value) > 255:
            raise invalid(schema, f"{value!r} is too long", field)
    if not _URL_SAFE.match(body["key"]):
        raise BadRequest("Invalid Key. Key must be URL safe.")
    return body["key"].lower(), body["value"]


def _required_strings(body: Any, schema: str, max_lengths: dict[str, int]) -> list[str]:
    """The non-empty strings `body` must hold, each within its length (consumers)."""
    if not isinstance(body, dict):
        raise invalid(schema, f"{body!r} is not of type 'object'", "")
    values = []
    for field, max_len in max_lengths.items():
        value = body.get(field)
        if value is None:
            raise invalid(schema, f"'{field}' is a required property", field)
        if not isinstance(value, str) or not value:
            raise invalid(schema, f"{value!r} is not a non-empty string", field)
        if len(value) > max_len:
            raise invalid(schema, f"{value!r} is too long", field)
        values.append(value)
    return values


def consumer_body(body: Any) -> tuple[str, str, str]:
    """POST/DELETE /v1/secrets/{id}/consumers: (service, resource_type, resource_id)."""
    limits = {"service": 64, "resource_type": 64, "resource_id": 255}
    service, resource_type, resource_id = _required_strings(body, "Secret Consumer", limits)
    return service, resource_type, resource_id


# -- list filters -------------------------------------------------------------------

SORT_KEYS = (
    "algorithm",
    "bit_length",
    "created",
    "expiration",
    "mode",
    "name",
    "secret_type",
    "status",
    "updated",
)
BAD_QUERY = "URI provided invalid query string parameters."


def date_filter(value: str) -> list[tuple[str, datetime]]:
    """'gt:2020-01-01T00:00:00,lt:...' -> [(op, time)]; 400 as Barbican when malformed."""
    seen: dict[str, datetime] = {}
    for part in value.split(","):
        op, stamp = "eq", part
        for prefix in ("gte", "gt", "lte", "lt"):
            if part.startswith(prefix + ":"):
                op, stamp = prefix, part[len(prefix) + 1 :]
                break
        try:
            when = parse_time(stamp)
        except ValueError:
            raise BadRequest(BAD_QUERY) from None
        conflicts = {
            "gt": ("gt", "gte"),
            "gte": ("gt", "gte", "eq"),
            "lt": ("lt", "lte"),
            "lte": ("lt", "lte", "eq"),
            "eq": ("eq", "gte", "lte"),
        }[op]
        if any(c in seen for c in conflicts):
            raise BadRequest(BAD_QUERY)
        seen[op] = when
    return list(seen.items())


def sort_keys(value: str) -> list[tuple[str, str]]:
    """'created:desc,name' -> [(key, direction)]; 400 as Barbican when malformed."""
    keys: list[tuple[str, str]] = []
    for part in value.split(","):
        pieces = part.split(":")
        if len(pieces) > 2:
            raise BadRequest(BAD_QUERY)
        key, direction = (pieces[0], pieces[1]) if len(pieces) == 2 else (pieces[0], "asc")
        if key not in SORT_KEYS or direction not in ("asc", "desc"):
            raise BadRequest(BAD_QUERY)
        if any(k == key for k, _ in keys):
            raise BadRequest(BAD_QUERY)
        keys.append((key, direction))
    return keys


def paging(offset: str | None, limit: str | None, default: int, maximum: int) -> tuple[int, int]:
    """Barbican's clean_paging_values: bad values fall back, limit within 1..maximum."""
    try:
        start = max(int(offset or 0), 0)
    except ValueError:
        start = 0
    try:
        size = int(limit) if limit else default
    except ValueError:
        size = default
    return start, min(max(size, 1), maximum)


def container_consumer_body(body: Any) -> tuple[str, str]:
    """POST/DELETE /v1/containers/{id}/consumers: (name, URL)."""
    name, url = _required_strings(body, "Consumer", {"name": 36, "URL": 255})
    return name, url
