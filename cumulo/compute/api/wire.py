"""Small wire-format rules the admin resources share: Nova's input checks for integer,
boolean and name fields (with Nova's messages), timestamps, and the admin test."""

from __future__ import annotations

import binascii
import ipaddress
import re
import uuid
from datetime import datetime
from typing import Any

from starlette.requests import Request

from cumulo.common.context import RequestContext
from cumulo.common.faults import BadRequest
from cumulo.compute.api.common import compute_of

_DIGITS = re.compile(r"^-?[0-9]+$")
_TRUE = {"1", "t", "true", "on", "y", "yes"}
_FALSE = {"0", "f", "false", "off", "n", "no"}


def invalid(field: str, value: Any, reason: str) -> BadRequest:
    return BadRequest(f"Invalid input for field/attribute {field}. Value: {value}. {reason}")


def integer(field: str, value: Any, minimum: int, maximum: int = 2**31 - 1) -> int:
    """An integer given as a JSON number or a string of digits (Nova accepts both)."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise invalid(field, value, f"{value!r} is not of type 'integer', 'string'")
    if isinstance(value, str):
        if not _DIGITS.match(value.strip()):
            raise invalid(field, value, f"{value!r} does not match '^-?[0-9]+$'")
        value = int(value)
    if value < minimum:
        raise invalid(field, value, f"{value} is less than the minimum of {minimum}")
    if value > maximum:
        raise invalid(field, value, f"{value} is greater than the maximum of {maximum}")
    return value


def boolean(field: str, value: Any) -> bool:
    """A JSON boolean or one of the strings Nova's schema accepts for booleans."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
        return value.lower() in _TRUE
    raise invalid(field, value, f"{value!r} is not of type 'boolean'")


def query_boolean(name: str, raw: str) -> bool:
    lowered = raw.lower()
    if lowered in _TRUE | _FALSE:
        return lowered in _TRUE
    raise BadRequest(f"Invalid input for query parameters {name}. Value: {raw}.")


def name(field: str, value: Any, max_length: int = 255) -> str:
    """Nova's parameter_types.name: 1-255 printable characters, no edge whitespace."""
    if not isinstance(value, str):
        raise invalid(field, value, f"{value!r} is not of type 'string'")
    if not 1 <= len(value) <= max_length:
        raise invalid(field, value, f"Length must be between 1 and {max_length}")
    if value != value.strip() or not value.isprintable():
        raise invalid(field, value, "Invalid name: no leading or trailing whitespace allowed")
    return value


def object_body(body: Any, key: str) -> dict[str, Any]:
    """The object under the body's top-level key ({"flavor": {...}} etc.)."""
    if not isinstance(body, dict) or not isinstance(body.get(key), dict):
        raise BadRequest(f"Invalid input for field/attribute {key}. '{key}' is a required property")
    return body[key]


def mapping(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object.")
    return body


def name_matches(pattern: str, value: str | None) -> bool:
    """Nova's name filters: a regular expression searched in the value (a pattern that
    is not one: a substring)."""
    try:
        return re.search(pattern, value or "") is not None
    except re.error:
        return pattern in (value or "")


def reject_unknown(body: dict[str, Any], allowed: set[str]) -> None:
    extra = sorted(set(body) - allowed)
    if extra:
        listed = ", ".join(repr(k) for k in extra)
        raise BadRequest(
            f"Additional properties are not allowed ({listed} "
            f"{'was' if len(extra) == 1 else 'were'} unexpected)"
        )


def access_ip(field: str, value: Any) -> str | None:
    """accessIPv4 / accessIPv6: an address of that family, kept in canonical form (Nova
    stores it as an IP address: `0000::babe:220.12.22.2` reads back `::babe:dc0c:1602`);
    empty or null clears it."""
    if value is None or value == "":
        return None
    family = ipaddress.IPv4Address if field == "accessIPv4" else ipaddress.IPv6Address
    try:
        return str(family(value))
    except (ValueError, TypeError):
        kind = "ipv4" if family is ipaddress.IPv4Address else "ipv6"
        raise invalid(field, value, f"{value!r} is not a '{kind}'") from None


_HOSTNAME = re.compile(r"^[a-zA-Z0-9]+[a-zA-Z0-9-]*[a-zA-Z0-9]+$")


_FQDN = re.compile(r"^[a-zA-Z0-9-._]*$")


def hostname(value: Any, fqdn: bool = False) -> str:
    """2.90's `hostname` (Nova's parameter_types.hostname): 2-63 letters, digits and
    hyphens, a letter or digit at each end; from 2.94 (`fqdn`, Nova's parameter_types.fqdn)
    a fully qualified name: 1-255 letters, digits, hyphens, dots and underscores."""
    if not isinstance(value, str):
        raise invalid("hostname", value, f"{value!r} is not of type 'string'")
    low, high, pattern = (1, 255, _FQDN) if fqdn else (2, 63, _HOSTNAME)
    if not low <= len(value) <= high:
        raise invalid("hostname", value, f"Length must be between {low} and {high}")
    if not pattern.match(value):
        raise invalid("hostname", value, f"{value!r} does not match '{pattern.pattern}'")
    return value


def personality(value: Any, microversion: tuple[int, int]) -> list[tuple[str, str]]:
    """Nova's `personality` (create and rebuild, removed in 2.57): a list of
    {path, contents} objects, contents base64 (Nova's format check: binascii's lenient
    decoding). The files as (path, base64 contents) pairs, as Nova's API passes them on."""
    if microversion >= (2, 57):
        raise BadRequest("Additional properties are not allowed ('personality' was unexpected)")
    if not isinstance(value, list):
        raise invalid("personality", value, f"{value!r} is not of type 'array'")
    files = []
    for item in value:
        if not isinstance(item, dict):
            raise invalid("personality", item, f"{item!r} is not of type 'object'")
        extra = sorted(set(item) - {"path", "contents"})
        if extra:
            names = ", ".join(repr(k) for k in extra)
            raise BadRequest(
                "Invalid input for field/attribute personality. Additional properties are "
                f"not allowed ({names} {'was' if len(extra) == 1 else 'were'} unexpected)"
            )
        for field in ("path", "contents"):
            given = item.get(field)
            if not isinstance(given, str):
                raise invalid(field, given, f"{given!r} is not of type 'string'")
        try:
            binascii.a2b_base64(item["contents"].encode())
        except (binascii.Error, UnicodeEncodeError):
            raise invalid(
                "contents", item["contents"], f"{item['contents']!r} is not a 'base64'"
            ) from None
        files.append((item["path"], item["contents"]))
    return files


def tag(field: str, value: Any) -> str:
    """Nova's parameter_types.tag (device role tags): 1-60 characters, no '/' or ','."""
    if not isinstance(value, str):
        raise invalid(field, value, f"{value!r} is not of type 'string'")
    if not 1 <= len(value) <= 60:
        raise invalid(field, value, "Length must be between 1 and 60")
    if "/" in value or "," in value:
        raise invalid(field, value, f"{value!r} does not match '^[^,/]*$'")
    return value


def trusted_certs(value: Any) -> list[str] | None:
    """Nova's parameter_types.trusted_certs (2.63): null, or 1-50 distinct non-empty
    certificate IDs."""
    field = "trusted_image_certificates"
    if value is None:
        return None
    if not isinstance(value, list):
        raise invalid(field, value, f"{value!r} is not of type 'array', 'null'")
    if not 1 <= len(value) <= 50:
        raise invalid(field, value, "It must hold between 1 and 50 certificate IDs")
    if not all(isinstance(v, str) and v for v in value):
        raise invalid(field, value, "Each certificate ID is a non-empty string")
    if len(set(value)) != len(value):
        raise invalid(field, value, f"{value!r} has non-unique elements")
    return value


def is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def timestamp(value: datetime | None) -> str | None:
    """Nova's timestamps in admin views (no zone, microseconds)."""
    return value.strftime("%Y-%m-%dT%H:%M:%S.%f") if value else None


def is_admin(request: Request, ctx: RequestContext) -> bool:
    return compute_of(request).policy.check("cloud_admin", ctx)


def check_metadata(meta: Any) -> dict[str, str]:
    if not isinstance(meta, dict):
        raise BadRequest("Malformed request body: metadata must be an object.")
    for key, value in meta.items():
        if not isinstance(key, str) or not 1 <= len(key) <= 255:
            raise BadRequest(
                "Invalid input for field/attribute metadata: keys are 1-255 characters."
            )
        if not isinstance(value, str) or len(value) > 255:
            raise BadRequest(
                f"Invalid input for field/attribute metadata.{key}: a string of "
                "at most 255 characters."
            )
    return meta
