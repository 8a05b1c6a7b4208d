"""Swift's timestamps: seconds since the epoch, fixed width, so they sort as strings."""

from __future__ import annotations

import time
from email.utils import formatdate


def normalize(value: float | str) -> str:
    return f"{float(value):016.5f}"


def now() -> str:
    return normalize(time.time())


def after(timestamp: str) -> str:
    """The next timestamp (10 µs later): what supersedes this one and nothing newer."""
    whole, _, fraction = normalize(timestamp).partition(".")
    ticks = int(whole) * 100000 + int(fraction) + 1
    return f"{ticks // 100000:010d}.{ticks % 100000:05d}"


def http_date(timestamp: str | float) -> str:
    """Last-Modified: the timestamp rounded up to the second (as Swift)."""
    value = float(timestamp)
    return formatdate(int(value) + (1 if value % 1 else 0), usegmt=True)


def iso(timestamp: str | float) -> str:
    """Listings' last_modified: 2014-01-15T16:41:49.390270."""
    value = float(timestamp)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(value)) + f".{int(value % 1 * 1e6):06d}"
