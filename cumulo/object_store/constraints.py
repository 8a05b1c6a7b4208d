"""The api-ref's limits (Swift's constraints), checked before anything is written."""

from __future__ import annotations

import time
from collections.abc import Mapping

from cumulo.object_store.errors import SwiftError

MAX_META_NAME_LENGTH = 128
MAX_META_VALUE_LENGTH = 256
MAX_META_COUNT = 90
MAX_META_OVERALL_SIZE = 4096
MAX_HEADER_SIZE = 8192
MAX_OBJECT_NAME_LENGTH = 1024
MAX_ACCOUNT_NAME_LENGTH = 256
MAX_CONTAINER_NAME_LENGTH = 256


def title(name: str) -> str:
    """A header name as Swift stores and shows it: X-Container-Meta-Book."""
    return "-".join(w[:1].upper() + w[1:].lower() for w in name.split("-"))


def check_metadata(headers: Mapping[str, str], target: str) -> None:
    """Swift's check_metadata for x-<target>-meta-* headers."""
    prefix = f"x-{target}-meta-"
    count = size = 0
    for name, value in headers.items():
        lower = name.lower()
        if len(value) > MAX_HEADER_SIZE:
            raise SwiftError(400, f"Header value too long: {name[:MAX_META_NAME_LENGTH]}")
        if not lower.startswith(prefix):
            continue
        key = name[len(prefix) :]
        if not key:
            raise SwiftError(400, "Metadata name cannot be empty")
        count += 1
        size += len(key) + len(value)
        if len(key) > MAX_META_NAME_LENGTH:
            raise SwiftError(400, f"Metadata name too long: {prefix}{key}")
        if len(value) > MAX_META_VALUE_LENGTH:
            raise SwiftError(
                400, f"Metadata value longer than {MAX_META_VALUE_LENGTH}: {prefix}{key}"
            )
        if count > MAX_META_COUNT:
            raise SwiftError(400, f"Too many metadata items; max {MAX_META_COUNT}")
        if size > MAX_META_OVERALL_SIZE:
            raise SwiftError(400, f"Total metadata too large; max {MAX_META_OVERALL_SIZE}")


def check_name(kind: str, name: str, limit: int) -> None:
    if not name:
        raise SwiftError(400, f"{kind} name cannot be empty")
    if len(name.encode()) > limit:
        raise SwiftError(400, f"{kind} name length of {len(name.encode())} longer than {limit}")
    if "\x00" in name:
        raise SwiftError(412, "Invalid UTF8 or contains NULL")


def delete_at(headers: Mapping[str, str]) -> str | None:
    """X-Delete-At from X-Delete-At or X-Delete-After (Swift's check_delete_headers)."""
    now = time.time()
    if "x-delete-after" in headers:
        try:
            after = int(headers["x-delete-after"])
        except ValueError:
            raise SwiftError(400, "Non-integer X-Delete-After") from None
        if after < 0:
            raise SwiftError(400, "X-Delete-After in past")
        return str(int(now + after))
    if "x-delete-at" in headers:
        try:
            at = int(headers["x-delete-at"])
        except ValueError:
            raise SwiftError(400, "Non-integer X-Delete-At") from None
        if at < now:
            raise SwiftError(400, "X-Delete-At in past")
        return str(at)
    return None
